"""Underlay selection (agent/underlay.py) over fake kernel facts: explicit flags, the
route towards the controller(s), the default route, and every ambiguity as one error."""

from __future__ import annotations

import pytest

from vxlab.agent.kernel import KernelError, Underlay
from vxlab.agent.underlay import NO_ROUTE, UnderlayFacts, controller_ips, select_underlay

# A Vagrant VM: eth0 = NAT with the default route, eth1 = the private network to the peers.
VM = UnderlayFacts(
    mtus={"lo": 65536, "eth0": 1500, "eth1": 9000, "vxgw0": 1500},
    addrs=[("lo", "127.0.0.1"), ("eth0", "10.0.2.15"), ("eth1", "192.168.56.11"), ("vxgw0", "169.254.0.1")],
    defaults=["eth0"],
    routes={"192.168.56.12": "eth1", "192.168.56.11": "lo", "10.9.9.9": "eth0", "172.16.0.1": NO_ROUTE},
)


def facts(**kw: object) -> UnderlayFacts:
    return UnderlayFacts(**{**VM.__dict__, **kw})  # type: ignore[arg-type]


def test_route_towards_the_controller_beats_the_default_route() -> None:
    assert select_underlay(VM, towards=["192.168.56.12"]) == Underlay("192.168.56.11", "eth1", 9000)


def test_a_controller_on_this_machine_counts_through_the_device_holding_its_address() -> None:
    assert select_underlay(VM, towards=["192.168.56.11"]).dev == "eth1"
    assert select_underlay(VM, towards=["192.168.56.11", "192.168.56.12"]).dev == "eth1"


def test_loopback_or_unix_controllers_fall_back_to_the_default_route() -> None:
    assert select_underlay(VM, towards=["127.0.0.1"]) == Underlay("10.0.2.15", "eth0", 1500)
    assert select_underlay(VM, towards=[]) == Underlay("10.0.2.15", "eth0", 1500)


def test_explicit_device_or_ip_override_detection() -> None:
    assert select_underlay(VM, dev="eth0", towards=["192.168.56.12"]) == Underlay("10.0.2.15", "eth0", 1500)
    assert select_underlay(VM, ip="10.0.2.15", towards=["192.168.56.12"]).dev == "eth0"
    with pytest.raises(KernelError, match="^underlay: 10.0.2.15 is on eth0, not on eth1$"):
        select_underlay(VM, ip="10.0.2.15", dev="eth1")
    with pytest.raises(KernelError, match="^underlay: no device 'eth9' in the agent's namespace"):
        select_underlay(VM, dev="eth9")


@pytest.mark.parametrize(("kw", "towards", "message"), [
    ({}, ["172.16.0.1"], "underlay: no route to the controller at 172.16.0.1; give --underlay-dev or --underlay-ip"),
    ({}, ["192.168.56.12", "10.9.9.9"],
     "underlay: ambiguous, the controllers are reached through different devices "
     "(192.168.56.12 via eth1, 10.9.9.9 via eth0); give --underlay-dev"),
    ({"addrs": [*VM.addrs, ("eth1", "192.168.56.99")]}, ["192.168.56.12"],
     "underlay: eth1 (the route towards the controller) has several IPv4 addresses "
     "(192.168.56.11, 192.168.56.99); give --underlay-ip"),
    ({"addrs": [("eth0", "10.0.2.15")]}, ["192.168.56.12"],
     "underlay: eth1 (the route towards the controller) has no global IPv4 address; found: 10.0.2.15 on eth0"),
    ({"defaults": ["eth0", "eth1"]}, [], "underlay: ambiguous, default routes via eth0, eth1; give --underlay-dev"),
    ({"defaults": ["?"]}, [], "underlay: ambiguous, default routes via ?"),
    ({"defaults": []}, [], "underlay: no route towards a controller, no default route and more than one device "
                           "with a global IPv4 address (found: 10.0.2.15 on eth0, 192.168.56.11 on eth1)"),
    ({"defaults": [], "addrs": [("lo", "127.0.0.1")]}, [], "underlay: no route towards a controller, no default "
                                                           "route and no device with a global IPv4 address"),
    ({"addrs": [*VM.addrs, ("eth0", "10.0.2.16")]}, [], "underlay: eth0 (the default route) has several"),
])
def test_ambiguities_are_one_clear_error(kw: dict[str, object], towards: list[str], message: str) -> None:
    with pytest.raises(KernelError) as e:
        select_underlay(facts(**kw), towards=towards)
    assert str(e.value).startswith(message), str(e.value)


def test_without_a_default_route_the_only_addressed_device() -> None:
    only = facts(defaults=[], addrs=[("lo", "127.0.0.1"), ("eth0", "172.31.0.11"), ("vxgw0", "169.254.0.1")])
    assert select_underlay(only) == Underlay("172.31.0.11", "eth0", 1500)


def test_controller_ips() -> None:
    assert controller_ips(["unix:/run/x.sock", "10.1.2.3:7070", "ipv4:10.1.2.4:7070", "[fd00::1]:7070"]) == [
        "10.1.2.3", "10.1.2.4"]
    assert controller_ips(["localhost:7070"]) == ["127.0.0.1"]
    with pytest.raises(KernelError, match="cannot resolve controller host 'no-such-host.invalid'"):
        controller_ips(["no-such-host.invalid:7070"])
