"""What callers make of the ops channel's answers: the wire round trip of every op and
event, and `trace`'s hops built from two agents' kernel views (lab/trace.py `build`)."""

from __future__ import annotations

import pytest

from vxlab import ops, wire
from vxlab.lab.trace import Places, build
from vxlab.model import Endpoint, Network

NET = Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096)
WEB = Endpoint("web", "blue", "h1", "10.10.0.2", "02:00:00:00:00:01", id="a" * 64)
DB = Endpoint("db", "blue", "h2", "10.10.0.3", "02:00:00:00:00:02", id="b" * 64)


def view(host: str, ep: Endpoint, peer: Endpoint, underlay: str, peer_underlay: str) -> ops.KernelState:
    net = ops.NamespaceView(
        f"vx-{host}-n-blue", f"vxlab:{host}:net:blue",
        links=(ops.LinkView("vxb-blue", "bridge", "vxlab:bridge:blue"),
               ops.LinkView("vxv-blue", "vxlan", "vxlab:vxlan:blue", vni=4096, local=underlay, port=4789),
               ops.LinkView(f"vxe-{ep.id[:11]}", "veth", f"vxlab:ep:{ep.id}", master="vxb-blue")),
        fdb=(("vxv-blue", peer.mac, peer_underlay),), neigh=(("vxv-blue", peer.ip, peer.mac),))
    ctr = ops.NamespaceView(f"vx-{host}-c-{ep.name}", f"vxlab:{host}:ctr:{ep.name}",
                            addrs=(("eth0", f"{ep.ip}/24"),), routes=(("default", "10.10.0.1", "eth0"),))
    return ops.KernelState((net, ctr), underlay_ip=underlay, underlay_dev="ens3", underlay_mtu=1500)


def test_the_hops_come_from_both_agents_views() -> None:
    t = build(WEB, DB, NET, src_view=view("h1", WEB, DB, "192.0.2.11", "192.0.2.12"),
              dst_view=view("h2", DB, WEB, "192.0.2.12", "192.0.2.11"))
    assert len(t.hops) == 10
    assert t.hops[0] == type(t.hops[0])("vx-h1-c-web", "eth0", "10.10.0.2 (02:00:00:00:00:01); route: "
                                                               "10.10.0.3 dev eth0 src 10.10.0.2")
    assert t.hops[1].what == f"vxe-{WEB.id[:11]}"
    assert t.hops[3].detail == ("VXLAN vni 4096, local 192.0.2.11; ARP proxy: 10.10.0.3 lladdr 02:00:00:00:00:02 "
                                "PERMANENT; FDB: 02:00:00:00:00:02 dst 192.0.2.12 self permanent")
    assert (t.hops[4].where, t.hops[4].what) == ("host h1", "ens3")  # the agent's underlay device, not assumed
    assert t.hops[4].detail.startswith("UDP 192.0.2.11 -> 192.0.2.12:4789")
    assert t.hops[-1] == type(t.hops[0])("vx-h2-c-db", "eth0", "10.10.0.3 (02:00:00:00:00:02)")


def test_what_a_view_lacks_is_said_not_invented() -> None:
    src = view("h1", WEB, DB, "192.0.2.11", "192.0.2.12")
    src = ops.KernelState((ops.NamespaceView(src.namespaces[0].name, src.namespaces[0].marker,
                                             links=src.namespaces[0].links),), "192.0.2.11", "ens3")
    lab = Places(host=lambda h: f"vx-lab.{h}", underlay=("underlay switch", "vxsw", "bridged"))
    t = build(WEB, DB, NET, src_view=src, dst_view=ops.KernelState(), places=lab)
    assert t.hops[0].where == "(no container namespace on h1)"
    assert "(no FDB entry for 02:00:00:00:00:02: the packet would be dropped)" in t.hops[3].detail
    assert "(no neighbour entry for 10.10.0.3)" in t.hops[3].detail
    assert t.hops[4].where == "vx-lab.h1" and t.hops[5] == type(t.hops[0])("underlay switch", "vxsw", "bridged")
    assert t.hops[8].what == "(no veth for db)"


def test_same_host_is_bridged_locally() -> None:
    local = Endpoint("db", "blue", "h1", "10.10.0.3", "02:00:00:00:00:02", id="b" * 64)
    v = view("h1", WEB, local, "192.0.2.11", "192.0.2.11")
    t = build(WEB, local, NET, src_view=v, dst_view=v)
    assert [h.detail for h in t.hops][2] == "bridged locally: same host, no VXLAN" and len(t.hops) == 4


@pytest.mark.parametrize("op", [
    ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3"), ops.ProbeSpec("web", "10.10.0.3", "tcp", 80, 0.5))),
    ops.PingStream("web", "10.10.0.3", 0.2, 3, 1.0), ops.Capture("eth0", ("udp", "port", "4789"), 6, 5.0),
    ops.KernelView("blue", ("web", "db")), ops.Drift(), ops.Exec("web", ("sh", "-c", "exit 7")),
    ops.IperfServer("db", 5201), ops.IperfClient("web", "10.10.0.3", 5201, 1.0, 0.5), ops.Cancel("3"),
])
def test_every_op_survives_the_wire(op: ops.Op) -> None:
    request = ops.OpRequest("h1", op, id="3", timeout=9.0)
    assert wire.op_request_from_pb(wire.op_request_to_pb(request)) == request


@pytest.mark.parametrize("event", [
    ops.Ready("listening on eth0"), ops.ProbeResults((ops.ProbeResult(0, True, 0.25), ops.ProbeResult(1, False, 0, "x"))),
    ops.PingSample(4, 1700000000.25, None), ops.PingSample(5, 1700000000.5, 0.75), ops.Line("IP a > b"),
    view("h1", WEB, DB, "192.0.2.11", "192.0.2.12"),
    ops.DriftReport((ops.DriftEntry("", "stale", "vteps", "t", "r"),), revision=9, applied_revision=8),
    ops.ExecResult(-9, b"\x00\xff", b"err", True), ops.IperfReport("{}"), ops.Done("boom"),
])
def test_every_event_survives_the_wire(event: ops.Event) -> None:
    assert wire.op_event_from_pb(wire.op_event_to_pb(ops.OpEvent("3", event))) == ops.OpEvent("3", event)
