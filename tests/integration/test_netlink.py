"""NetlinkKernel against the real kernel (root), beyond the kernel contract suite
(tests/contract_kernel.py, run on it by test_kernel_contract_netlink.py): the requests
each call sends, the VXLAN socket's namespace, the vxlan replace and its VNI freed with
its namespace, underlay selection over real routes, a reconciler pass stopped between
create and mark, and a ping between two containers on two simulated hosts across VXLAN.

Every test works under a unique `vxt<6 hex>-` prefix; the fixture deletes every
namespace with it, also when the test fails. The driver runs in a thread that entered a
throwaway "host" namespace (setns changes only the calling thread), so the pytest
process itself never changes namespace.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from vxlab import netns
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.agent.kernel import Fdb, KernelError, Neigh, Route, Underlay
from vxlab.agent.netlink import NetlinkKernel
from vxlab.agent.reconciler import Reconciler
from vxlab.model import Endpoint, Host, Network, WatchBatch

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]

T = TypeVar("T")


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=20).stdout


class Lab:
    """Throwaway namespaces under one prefix; `run` drives a NetlinkKernel in a host."""

    def __init__(self) -> None:
        self.prefix = f"vxt{secrets.token_hex(3)}-"

    def ns(self, name: str) -> str:
        return self.prefix + name

    def host(self, name: str, *cmds: str) -> str:
        """A plain namespace (no marker), lo up, then `ip -n <host> <cmd>` for each cmd."""
        host = self.ns(name)
        sh("ip", "netns", "add", host)
        sh("ip", "-n", host, "link", "set", "lo", "up")
        for cmd in cmds:
            sh("ip", "-n", host, *cmd.split())
        return host

    def run(self, host: str, fn: Callable[[NetlinkKernel], T]) -> T:
        """fn(kernel) with a fresh NetlinkKernel in a thread inside `host`."""
        box: dict[str, object] = {}

        def body() -> None:
            try:
                netns.enter(host)
                kernel = NetlinkKernel()
                try:
                    box["ok"] = fn(kernel)
                finally:
                    kernel.close()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test
                box["err"] = exc

        worker = threading.Thread(target=body, daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "driver thread hung"
        if "err" in box:
            raise box["err"]  # type: ignore[misc]
        return box["ok"]  # type: ignore[return-value]

    def cleanup(self) -> None:
        for name in sh("ip", "netns", "list", check=False).split():
            if name.startswith(self.prefix):
                sh("ip", "netns", "del", name, check=False)
                netns.remove_etc(name)  # the resolv.conf the agent wrote for a container namespace
        for line in sh("ip", "-o", "link", "show", check=False).splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(self.prefix):
                sh("ip", "link", "del", name, check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    own_ns = os.readlink("/proc/self/ns/net")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.cleanup()
        assert os.readlink("/proc/self/ns/net") == own_ns
        assert not [n for n in sh("ip", "netns", "list").split() if n.startswith(lab.prefix)]


def writes(kernel: NetlinkKernel) -> int:
    return sum(kernel.writes.values())


def test_requests_per_call_and_the_vxlan_socket_in_the_agents_namespace(lab: Lab) -> None:
    """How many requests each call sends on this kernel (create, then mark: two for a
    link; the kernel contract suite checks only which method counts them), and the
    VXLAN device's UDP socket bound in the agent's namespace, not in the network's."""
    host = lab.host("h", "link add u0 type veth peer name u1", "addr add 172.31.7.1/24 dev u0",
                    "link set u0 up", "link set u1 up")
    net, ctr = lab.ns("net"), lab.ns("ctr")
    rmac = "02:42:00:00:00:02"

    def ensure_all(k: NetlinkKernel) -> None:
        k.create_netns(net, marker="vxlab:net")
        k.create_netns(ctr, marker="vxlab:ctr")
        k.add_bridge(net, "br0", mtu=1450, alias="vxlab:br")
        k.add_vxlan(net, "vx0", vni=4242, local="172.31.7.1", port=4789, mtu=1450, alias="vxlab:vx", master="br0")
        k.add_veth(net, "ve0", alias="vxlab:ve", master="br0", mtu=1450, peer_ns=ctr, peer_name="eth0",
                   peer_mac="02:42:00:00:00:01", peer_alias="vxlab:eth0")
        k.add_addr(ctr, "eth0", "10.99.0.1/24")
        k.add_route(ctr, Route("default", "10.99.0.254", "eth0"))
        k.add_fdb(net, Fdb("vx0", rmac, "172.31.7.2"))
        k.add_neigh(net, Neigh("vx0", "10.99.0.2", rmac))

    def scenario(k: NetlinkKernel) -> None:
        ensure_all(k)
        assert dict(k.writes) == {"create_netns": 2, "add_bridge": 2, "add_vxlan": 2, "add_veth": 3,
                                  "add_addr": 1, "add_route": 1, "add_fdb": 1, "add_neigh": 1}
        before = writes(k)
        ensure_all(k)
        assert writes(k) == before, "a second ensure pass must write nothing"
        assert ":4789" in sh("ip", "netns", "exec", host, "ss", "-Hluna")
        assert ":4789" not in sh("ip", "netns", "exec", net, "ss", "-Hluna")
        assert "vxtmp" not in sh("ip", "netns", "exec", host, "ip", "-o", "link")

    lab.run(host, scenario)


def test_vxlan_replace_and_its_vni_freed_with_its_namespace(lab: Lab) -> None:
    host = lab.host("h", "link add u0 type veth peer name u1", "addr add 172.31.8.1/24 dev u0",
                    "addr add 172.31.9.1/24 dev u1", "link set u0 up", "link set u1 up")
    net = lab.ns("net")

    def scenario(k: NetlinkKernel) -> None:
        with pytest.raises(KernelError, match="172.31.8.1 on u0, 172.31.9.1 on u1"):
            k.underlay()  # no default route, two candidates
        assert k.underlay(dev="u1") == Underlay(ip="172.31.9.1", dev="u1", mtu=1500)
        assert k.underlay(ip="172.31.8.1").dev == "u0"
        k.create_netns(net, marker="vxlab:net")
        k.add_bridge(net, "br0", mtu=1500, alias="vxlab:br")
        k.add_vxlan(net, "vx0", vni=100, local="172.31.8.1", port=4789, mtu=1450, alias="vxlab:vx", master="br0")
        k.writes.clear()
        k.add_vxlan(net, "vx0", vni=200, local="172.31.8.1", port=4789, mtu=1450, alias="vxlab:vx", master="br0")
        assert dict(k.writes) == {"add_vxlan": 3}  # delete, create in the own namespace, move + set
        k.add_vxlan(net, "vx0", vni=200, local="172.31.8.1", port=4789, mtu=1400, alias="vxlab:vx", master="br0")
        assert dict(k.writes) == {"add_vxlan": 4}  # only the mtu
        assert "vxtmp" not in sh("ip", "netns", "exec", host, "ip", "-o", "link")
        # deleting the namespace frees the VNI at once (its vxlan is deleted first), so
        # the network can be created again right away
        k.writes.clear()
        k.delete_netns(net)
        assert dict(k.writes) == {"delete_netns": 2}
        k.create_netns(net, marker="vxlab:net")
        k.add_bridge(net, "br0", mtu=1500, alias="vxlab:br")
        k.add_vxlan(net, "vx0", vni=200, local="172.31.8.1", port=4789, mtu=1450, alias="vxlab:vx", master="br0")
        assert k.dump(lab.prefix)[net].links["vx0"].vni == 200

    lab.run(host, scenario)


def test_underlay_follows_the_route_towards_the_controller(lab: Lab) -> None:
    """A VM-like host: the default route on u0 (NAT), the peers and controllers on u2."""
    host = lab.host("h", "link add u0 type veth peer name u1", "link add u2 mtu 9000 type veth peer name u3",
                    "addr add 172.31.7.1/24 dev u0", "addr add 172.31.10.1/24 dev u2",
                    "link set u0 up", "link set u1 up", "link set u2 up", "link set u3 up",
                    "route add default via 172.31.7.254")

    def scenario(k: NetlinkKernel) -> None:
        assert k.underlay() == Underlay(ip="172.31.7.1", dev="u0", mtu=1500)  # the default route
        assert k.underlay(towards=["172.31.10.5"]) == Underlay(ip="172.31.10.1", dev="u2", mtu=9000)
        assert k.underlay(towards=["172.31.10.1", "127.0.0.1"]).dev == "u2"  # a controller on this host
        assert k.underlay(towards=["8.8.8.8"]).dev == "u0"  # via the default route
        assert k.underlay(dev="u0", towards=["172.31.10.5"]).dev == "u0"
        with pytest.raises(KernelError, match="different devices"):
            k.underlay(towards=["172.31.10.5", "8.8.8.8"])
        sh("ip", "-n", host, "route", "del", "default")
        with pytest.raises(KernelError, match="no route to the controller at 8.8.8.8"):
            k.underlay(towards=["8.8.8.8"])
        sh("ip", "-n", host, "addr", "add", "172.31.10.2/24", "dev", "u2")
        with pytest.raises(KernelError, match=r"u2 \(the route towards the controller\) has several"):
            k.underlay(towards=["172.31.10.5"])

    lab.run(host, scenario)


def _overlay_host(lab: Lab, i: int, peer: int) -> Callable[[NetlinkKernel], None]:
    def build(k: NetlinkKernel) -> None:
        net, ctr = lab.ns(f"net{i}"), lab.ns(f"ctr{i}")
        k.create_netns(net, marker=f"vxlab:net{i}")
        k.create_netns(ctr, marker=f"vxlab:ctr{i}")
        k.add_bridge(net, "br0", mtu=1450, alias="vxlab:br")
        k.add_vxlan(net, "vx0", vni=4242, local=f"172.31.250.{i}", port=4789, mtu=1450, alias="vxlab:vx",
                    master="br0")
        k.add_veth(net, "ve0", alias="vxlab:ve", master="br0", mtu=1450, peer_ns=ctr, peer_name="eth0",
                   peer_mac=f"02:42:0a:63:00:0{i}", peer_alias="vxlab:eth0")
        k.add_addr(ctr, "eth0", f"10.99.0.{i}/24")
        k.add_fdb(net, Fdb("vx0", f"02:42:0a:63:00:0{peer}", f"172.31.250.{peer}"))
        k.add_neigh(net, Neigh("vx0", f"10.99.0.{peer}", f"02:42:0a:63:00:0{peer}"))
    return build


def test_ping_across_vxlan(lab: Lab) -> None:
    h1 = lab.host("h1")
    h2 = lab.host("h2")
    sh("ip", "-n", h1, "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", h2)
    for host, dev, i in ((h1, "u1", 1), (h2, "u2", 2)):
        sh("ip", "-n", host, "addr", "add", f"172.31.250.{i}/24", "dev", dev)
        sh("ip", "-n", host, "link", "set", dev, "up")
    lab.run(h1, _overlay_host(lab, 1, 2))
    lab.run(h2, _overlay_host(lab, 2, 1))

    dump = subprocess.Popen(["ip", "netns", "exec", h1, "tcpdump", "-i", "u1", "-c", "1", "-nn", "-l",
                             "udp", "port", "4789"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        deadline = time.monotonic() + 5
        while "listening on" not in dump.stderr.readline() and time.monotonic() < deadline:
            pass
        ping = subprocess.run(["ip", "netns", "exec", lab.ns("ctr1"), "ping", "-c", "2", "-W", "1", "10.99.0.2"],
                              check=False, capture_output=True, text=True, timeout=10)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        out, _ = dump.communicate(timeout=5)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert "VXLAN, flags [I] (0x08), vni 4242" in out, out


def _one_host_state(prefix: str) -> tuple[HostInfo, StateCache]:
    me = HostInfo(name="h1", underlay_ip="172.31.11.1", underlay_mtu=1500, netns_prefix=prefix)
    state = StateCache()
    state.apply(WatchBatch(revision=1, snapshot=True, hosts=(Host("h1", "172.31.11.1", alive=True),
                                                             Host("h2", "172.31.11.2", alive=True)),
                           networks=(Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096),),
                           endpoints=(Endpoint("web", "blue", "h1", ip="10.10.0.2", mac="02:42:0a:0a:00:02",
                                               id="a" * 64, created="1"),
                                      Endpoint("db", "blue", "h2", ip="10.10.0.3", mac="02:42:0a:0a:00:03",
                                               id="b" * 64, created="1"))))
    return me, state


def _unmarked(ns: str) -> list[str]:
    """Links of `ns` without a vxlab: ifalias (lo and the test's underlay left out)."""
    out = []
    for line in sh("ip", "-n", ns, "-o", "-d", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name not in ("lo", "u0", "u1") and " alias vxlab:" not in line:
            out.append(name)
    return out


@pytest.mark.parametrize("method", ["add_bridge", "add_vxlan", "add_veth", "add_uplink"])
def test_a_pass_stopped_between_create_and_mark_is_adopted_by_the_next(lab: Lab, method: str) -> None:
    """Issue 13.3 on the real kernel: the fault point stops the driver right after the
    create request; nothing unmarked is left in the agent's namespace, and the next
    pass adopts the half-made link in our namespace and converges (then writes nothing)."""
    host = lab.host("h", "link add u0 type veth peer name u1", "addr add 172.31.11.1/24 dev u0",
                    "link set u0 up", "link set u1 up")
    me, state = _one_host_state(lab.prefix)

    def scenario(k: NetlinkKernel) -> tuple[list[str], dict[str, list[str]], list[str], list[str], dict[str, int]]:
        r = Reconciler(k, me)
        k.interrupt = {method}
        first = r.reconcile(state, full=True)
        half = {ns: _unmarked(ns) for ns in (host, *k.dump(lab.prefix))}
        k.interrupt = set()
        second = r.reconcile(state, full=True)
        third = Reconciler(k, me).reconcile(state, full=True)  # a restarted agent
        return first.errors, half, second.errors, [a.describe() for a in third.actions], dict(third.writes)

    errors, half, second, again, writes = lab.run(host, scenario)
    assert any("fault point" in e for e in errors), errors
    assert half.pop(host) == [], "an unmarked link in the agent's namespace"
    assert any(half.values()), f"the fault point left nothing half-made: {half}"
    assert second == [] and again == [] and writes == {}
    assert not any(_unmarked(ns) for ns in half)
    web = lab.ns("c-web")
    ping = subprocess.run(["ip", "netns", "exec", web, "ping", "-c1", "-W1", "10.10.0.1"], capture_output=True)
    assert ping.returncode == 0, "the container does not reach its gateway"
