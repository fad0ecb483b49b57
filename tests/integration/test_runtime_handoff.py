"""A runtime endpoint on the real kernel (issue 18's seam): the agent of h1 leaves the
container end of its veth in h1's namespace under the handoff name; the test, as a
runtime would, moves it into a namespace of its own (`vxt…`), names and addresses it,
and pings a vxlab container on h2 across VXLAN. The agent's full passes then write
nothing; when the test's namespace goes (and the pair with it) the agent makes the pair
again; deleting the endpoint removes it."""

from __future__ import annotations

import subprocess

import pytest
from rig import Rig

from vxlab.agent import netlink_handoff
from vxlab.agent.names import Naming

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    r = Rig(tmp_path_factory.mktemp("rig"), hosts=2, resync=1.0)
    try:
        yield r.start_pair("10.78.0.0/24")
    finally:
        r.close()


def full_passes_after(rig: Rig, host: str, since: float, n: int = 2) -> None:
    """Until `host`'s agent has finished `n` full passes after time `since` (the first may
    have started before it)."""
    for _ in range(n):
        rig.wait(lambda: (st := rig.status(host)).time > since and st.last_pass is not None and st.last_pass.full,
                 f"a full pass of {host}'s agent")
        since = rig.status(host).time


def test_a_runtime_takes_the_handoff_end_and_reaches_a_container_across_vxlab(rig: Rig) -> None:
    h1 = rig.hosts["h1"].ns
    layout = rig.layout.agent("h1")
    pod = rig.container("pod", "h1", "blue", runtime="cni")
    rig.settle()
    assert netlink_handoff.wait_programmed(layout, pod, timeout=20, host_ns=h1) == "handoff"
    end = netlink_handoff.interface(h1, layout.handoff_link(pod))
    assert end is not None and (end.mac, end.mtu) == (pod.mac, 1450)
    assert not any(ns.startswith(rig.cns("h1", "pod")) for ns in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout.split()), "no namespace of vxlab's for it"

    mine = f"{rig.id}-pod"  # removed by rig.close() also when the test fails
    subprocess.run(["ip", "netns", "add", mine], check=True)
    got = netlink_handoff.take(layout.handoff_link(pod), into=mine, ifname="eth0", cidr=f"{pod.ip}/24",
                               gateway="10.78.0.1", mtu=1450, host_ns=h1)
    assert (got.name, got.mac, got.addrs, got.up) == ("eth0", pod.mac, (f"{pod.ip}/24",), True)
    assert netlink_handoff.state(layout, pod, host_ns=h1) == "taken"
    db = rig.api(lambda c: c.get_endpoint("blue", "db"))
    assert rig.ping(mine, db.ip, count=3, interval=0.2).returncode == 0
    assert rig.ping(rig.cns("h2", "db"), pod.ip, count=1).returncode == 0

    moved = rig.status("h1").time
    full_passes_after(rig, "h1", moved)
    last = rig.status("h1").last_pass
    assert last is not None and (last.actions, last.writes, last.errors) == (0, 0, ()), last

    subprocess.run(["ip", "netns", "del", mine], check=True)  # the runtime's namespace goes: so does the pair
    rig.wait(lambda: netlink_handoff.state(layout, pod, host_ns=h1) == "handoff", "the pair made again")

    rig.api(lambda c: c.delete_endpoint("blue", "pod"))
    rig.settle()
    assert netlink_handoff.interface(h1, layout.handoff_link(pod)) is None
    assert netlink_handoff.interface(rig.nns("h1", "blue"), Naming.veth(pod.id)) is None


def test_not_programmed_while_the_agent_is_between_making_the_pair_and_moving_its_end(tmp_path) -> None:
    """The agent makes the pair in the network's namespace, then moves the handoff end
    out: in between, a plugin must read "not programmed yet", never "taken" (a CNI ADD or
    a Docker Join would go on with an end that is not there). By hand, in namespaces of
    the test's own (`vxt…`), the three moments: in the network's namespace, in the host's,
    in the runtime's."""
    import secrets

    from vxlab.layout import Layout
    from vxlab.model import Endpoint

    tag = "vxt" + secrets.token_hex(3)
    layout = Layout("h1", f"{tag}.")
    ep = Endpoint(name="pod", network="blue", host="h1", id="ab" * 32, mac="02:00:00:aa:bb:cc")
    bridge_ns, host_ns, pod_ns = layout.network_ns("blue"), f"{tag}.h1", f"{tag}.pod"
    alias = Naming.endpoint_alias(ep.id)
    handoff = layout.handoff_link(ep)

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        for ns in (bridge_ns, host_ns, pod_ns):
            ip("netns", "add", ns)
        ip("-n", bridge_ns, "link", "add", Naming.veth(ep.id), "type", "veth", "peer", "name", handoff,
           "address", ep.mac)
        ip("-n", bridge_ns, "link", "set", handoff, "alias", alias)
        assert netlink_handoff.state(layout, ep, host_ns=host_ns) == ""  # made, not moved out yet
        ip("-n", bridge_ns, "link", "set", handoff, "netns", host_ns)
        assert netlink_handoff.state(layout, ep, host_ns=host_ns) == "handoff"
        ip("-n", host_ns, "link", "set", handoff, "netns", pod_ns)
        assert netlink_handoff.state(layout, ep, host_ns=host_ns) == "taken"
    finally:
        for ns in (pod_ns, host_ns, bridge_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
