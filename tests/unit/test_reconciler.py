"""The reconciler against the in-memory FakeKernel: plans, idempotence, drift, ownership."""

from __future__ import annotations

import dataclasses

import pytest

from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.kernel import Fdb, Link, Neigh, Route
from vxlab.agent.reconciler import Reconciler
from vxlab.model import Change, Endpoint, Host, Network, WatchBatch

ME = HostInfo(name="h1", underlay_ip="172.30.0.11", underlay_mtu=1500, netns_prefix="vxt-h1-")


def ep(name: str, net: str, host: str, ip: str, mac: str, created: str = "1") -> Endpoint:
    return Endpoint(name=name, network=net, host=host, ip=ip, mac=mac, id=(name + net + host).ljust(64, "0"),
                    created=created)


def snapshot() -> StateCache:
    s = StateCache()
    s.apply(WatchBatch(revision=10, snapshot=True, hosts=(
        Host("h1", "172.30.0.11", alive=True), Host("h2", "172.30.0.12", alive=True),
        Host("h3", "172.30.0.13", alive=True)),
        networks=(Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096),
                  Network("red", subnet="10.20.0.0/24", gateway="10.20.0.1", vni=4097, internal=True, mtu=1400)),
        endpoints=(ep("web", "blue", "h1", "10.10.0.2", "02:00:00:00:00:01"),
                   ep("db", "blue", "h2", "10.10.0.3", "02:00:00:00:00:02"))))
    return s


@pytest.fixture
def rig():
    k = FakeKernel()
    return k, Reconciler(k, ME), snapshot()


def test_first_pass_builds_everything_second_pass_writes_nothing(rig):
    k, r, s = rig
    res = r.reconcile(s, full=True)
    assert res.ok and sum(res.writes.values()) > 0
    net, ctr = k.ns["vxt-h1-n-blue"], k.ns["vxt-h1-c-web"]
    assert net.marker == "vxlab:h1:net:blue" and ctr.marker == "vxlab:h1:ctr:web"
    vx = net.links["vxv-blue"]
    assert (vx.vni, vx.local, vx.port, vx.learning, vx.proxy, vx.mtu) == (4096, "172.30.0.11", 4789, False, True, 1450)
    assert net.links["vxb-blue"].kind == "bridge"
    assert set(net.fdb.values()) == {Fdb("vxv-blue", "02:00:00:00:00:02", "172.30.0.12")}
    assert set(net.neigh.values()) == {Neigh("vxv-blue", "10.10.0.3", "02:00:00:00:00:02")}
    eth0 = ctr.links["eth0"]
    assert eth0.mac == "02:00:00:00:00:01" and eth0.mtu == 1450
    assert ctr.addrs == {("eth0", "10.10.0.2/24")}
    assert ctr.routes == {Route("default", "10.10.0.1", "eth0")}
    for full in (False, True):
        again = r.reconcile(s, full=full)
        assert again.actions == [] and sum(again.writes.values()) == 0, again.actions


def test_restarted_agent_adopts_without_writes(rig):
    k, r, s = rig
    r.reconcile(s, full=True)
    fresh = Reconciler(k, ME)  # a new agent process on the same kernel
    res = fresh.reconcile(snapshot(), full=True)
    assert res.actions == [] and sum(res.writes.values()) == 0


def test_dead_host_entries_removed_then_restored(rig):
    k, r, s = rig
    r.reconcile(s, full=True)
    s.apply(WatchBatch(revision=11, changes=(Change("put", Host("h2", "172.30.0.12", alive=False)),)))
    res = r.reconcile(s)
    assert {a.kind for a in res.actions} == {"fdb", "neigh"} and all(a.op == "delete" for a in res.actions)
    assert not k.ns["vxt-h1-n-blue"].fdb and not k.ns["vxt-h1-n-blue"].neigh
    s.apply(WatchBatch(revision=12, changes=(Change("put", Host("h2", "172.30.0.12", alive=True)),)))
    r.reconcile(s)
    assert len(k.ns["vxt-h1-n-blue"].fdb) == 1 and len(k.ns["vxt-h1-n-blue"].neigh) == 1


def test_ip_reused_on_another_host_leaves_no_stale_entry(rig):
    k, r, s = rig
    r.reconcile(s, full=True)
    s.apply(WatchBatch(revision=11, changes=(
        Change("delete", Endpoint("db", "blue", "")),
        Change("put", ep("db2", "blue", "h3", "10.10.0.3", "02:00:00:00:00:03")))))
    res = r.reconcile(s)
    net = k.ns["vxt-h1-n-blue"]
    assert set(net.fdb.values()) == {Fdb("vxv-blue", "02:00:00:00:00:03", "172.30.0.13")}
    assert set(net.neigh.values()) == {Neigh("vxv-blue", "10.10.0.3", "02:00:00:00:00:03")}
    assert [a.op for a in res.actions if a.kind == "neigh"] == ["replace"]
    # the local container may cache db's old MAC for 10.10.0.3: it is told to drop it
    arp = [a for a in res.actions if a.kind == "arp"]
    assert [(a.ns, a.args, dict(a.kwargs)) for a in arp] == [
        ("vxt-h1-c-web", ("vxt-h1-c-web", "eth0"), {"entries": (("10.10.0.3", "02:00:00:00:00:03"),)})]


def test_arp_refresh_only_for_existing_containers_and_changes(rig):
    k, r, s = rig
    first = r.reconcile(s, full=True)
    assert not [a for a in first.actions if a.kind == "arp"]  # new containers have no cache yet
    s.apply(WatchBatch(revision=11, changes=(Change("put", ep("app", "blue", "h1", "10.10.0.9", "02:00:00:00:00:09")),)))
    res = r.reconcile(s)  # a new local container: web (existing) drops a cached MAC for .9; app is new
    assert [(a.ns, dict(a.kwargs)["entries"]) for a in res.actions if a.kind == "arp"] == [
        ("vxt-h1-c-web", (("10.10.0.9", "02:00:00:00:00:09"),))]
    assert r.reconcile(s).actions == []


def test_drift_repaired_by_full_pass_only(rig):
    k, r, s = rig
    r.reconcile(s, full=True)
    net = k.ns["vxt-h1-n-blue"]
    net.fdb.clear()
    k.delete_link("vxt-h1-n-blue", next(n for n in net.links if n.startswith("vxe-")))
    assert r.reconcile(s).actions == [], "an event pass trusts what it applied"
    res = r.reconcile(s, full=True)
    assert {(a.kind, a.op) for a in res.actions} == {("fdb", "add"), ("veth", "add"), ("addr", "add"), ("route", "add")}
    assert len(net.fdb) == 1 and "eth0" in k.ns["vxt-h1-c-web"].links


def test_multi_network_container_keeps_interface_names(rig):
    k, r, s = rig
    s.apply(WatchBatch(revision=11, changes=(Change("put", ep("web", "red", "h1", "10.20.0.2", "02:00:00:00:00:11", "2")),)))
    r.reconcile(s, full=True)
    ctr = k.ns["vxt-h1-c-web"]
    assert ctr.links["eth0"].mac.endswith(":01") and ctr.links["eth1"].mac.endswith(":11")
    assert ctr.links["eth1"].mtu == 1400
    assert ctr.routes == {Route("default", "10.10.0.1", "eth0")}, "internal network: no default route"
    s.apply(WatchBatch(revision=12, changes=(Change("delete", Endpoint("web", "blue", "")),)))
    r.reconcile(s)
    assert set(ctr.links) == {"eth1"} and "vxt-h1-n-blue" not in k.ns
    assert r.reconcile(s, full=True).actions == []


def test_foreign_objects_never_touched(rig):
    k, r, s = rig
    k.create_netns("vxt-h1-c-web", marker="someone-else")
    k.create_netns("vxt-h1-other", marker="")
    res = r.reconcile(s, full=True)
    assert not res.ok and any("not ours" in e or "marker" in e for e in res.errors)
    assert k.ns["vxt-h1-c-web"].marker == "someone-else" and "vxt-h1-other" in k.ns
    # A link without our mark inside our namespace stays.
    k.ns["vxt-h1-n-blue"].links["dummy0"] = Link("dummy0", "dummy")
    r.reconcile(s, full=True)
    assert "dummy0" in k.ns["vxt-h1-n-blue"].links


def test_vxlan_replaced_when_vni_changes(rig):
    k, r, s = rig
    r.reconcile(s, full=True)
    blue = dataclasses.replace(s.networks["blue"], vni=5000)
    s.apply(WatchBatch(revision=11, changes=(Change("put", blue),)))
    res = r.reconcile(s)
    assert [(a.op, a.kind) for a in res.actions][:1] == [("replace", "link")]
    assert k.ns["vxt-h1-n-blue"].links["vxv-blue"].vni == 5000
    assert len(k.ns["vxt-h1-n-blue"].fdb) == 1, "entries re-added on the new device"


def test_plan_describes_actions(rig):
    _, r, s = rig
    actions, _ = r.plan(s, full=True)
    text = "\n".join(a.describe() for a in actions)
    assert "+ add netns vxt-h1-n-blue" in text and "+ add vxlan vxv-blue (vni 4096, local 172.30.0.11)" in text
    assert "02:00:00:00:00:02 -> 172.30.0.12" in text


def test_unmarked_namespace_in_the_way_is_refused(rig):
    k, r, s = rig
    k.create_netns("vxt-h1-c-web", marker="")  # someone's `ip netns add` with our name
    res = r.reconcile(s, full=True)
    assert not res.ok and k.ns["vxt-h1-c-web"].marker == "" and not k.ns["vxt-h1-c-web"].links


def test_cache_reports_only_changes_the_kernel_depends_on():
    s = snapshot()
    h2 = s.hosts["h2"]
    relabelled = dataclasses.replace(h2, labels={"vxlab/netns-prefix": "vx-h2."}, agent_version="9")
    assert not s.apply(WatchBatch(revision=11, changes=(Change("put", relabelled),)))  # a re-registration
    assert s.revision == 11 and s.hosts["h2"].agent_version == "9"
    assert not s.apply(WatchBatch(revision=12, changes=(Change("put", s.endpoints[("blue", "db")]),)))
    assert s.apply(WatchBatch(revision=13, changes=(Change("put", dataclasses.replace(h2, alive=False)),)))
    assert s.apply(WatchBatch(revision=14, changes=(Change("delete", Endpoint("db", "blue", "")),)))
    assert not s.apply(WatchBatch(revision=15, changes=(Change("delete", Endpoint("db", "blue", "")),)))


def test_an_agent_with_the_default_prefix_leaves_a_labs_namespaces_alone():
    """A real-host agent `h1` (prefix `vx-`) on a machine running a lab with a host `h1`:
    the lab's namespaces start with `vx-` and carry `vxlab:h1:…` markers, but their names
    are not the ones this agent gives, so they are not its own."""
    from vxlab.testing.fakekernel import _Ns

    k = FakeKernel()
    lab_ns = {"vx-mylab.h1.n-blue": "vxlab:h1:net:blue", "vx-mylab.h1.c-web": "vxlab:h1:ctr:web"}
    for name, marker in lab_ns.items():
        k.ns[name] = _Ns(marker)
    k.ns["vx-c-old"] = _Ns("vxlab:h1:ctr:old")  # this agent's own leftover
    r = Reconciler(k, HostInfo(name="h1", underlay_ip="172.30.0.11", underlay_mtu=1500, netns_prefix="vx-"))
    result = r.reconcile(StateCache(revision=1, synced=True), full=True)
    assert [(a.op, a.ns) for a in result.actions if a.kind == "netns"] == [("delete", "vx-c-old")]
    assert set(lab_ns) <= set(k.ns)


def test_container_namespaces_get_the_dns_redirect_planned_repaired_and_adopted(rig):
    """`ip vxlab_dns` (127.0.0.11:53 -> the listeners' port) is planned with a reason in a
    container namespace only, repaired when deleted, and a second pass writes nothing."""
    from vxlab.agent import dns_nft

    k, r, s = rig
    res = r.reconcile(s, full=True)
    want = "+ add dns ip vxlab_dns in vxt-h1-c-web: dns redirect: create (127.0.0.11:53 -> :10053, udp and tcp)"
    assert want in [a.describe() for a in res.actions]
    assert k.ns["vxt-h1-c-web"].dns == dns_nft.build() and k.ns["vxt-h1-n-blue"].dns is None
    assert r.reconcile(s, full=True).writes == {}
    k.ns["vxt-h1-c-web"].dns = None  # deleted by hand
    res = r.reconcile(s, full=True)
    assert [a.describe() for a in res.actions] == [want] and res.writes == {"set_dns_redirect": 1}


def test_container_namespaces_get_the_resolv_conf_of_the_embedded_dns(rig):
    """Planned with the namespace (`--dry-run` shows it), repaired when changed by hand,
    never written to a network namespace, gone with its namespace."""
    from vxlab import netns
    from vxlab.agent.desired import local_containers

    k, r, s = rig
    res = r.reconcile(s, full=True)
    assert "+ add resolv resolv.conf in vxt-h1-c-web: nameserver 127.0.0.11 (the agent's DNS)" in \
        [a.describe() for a in res.actions]
    assert k.ns["vxt-h1-c-web"].resolv == netns.resolv_conf("vxlab:h1:ctr:web")
    assert k.ns["vxt-h1-n-blue"].resolv is None
    assert local_containers(s, ME) == {"vxt-h1-c-web": "web"}
    k.ns["vxt-h1-c-web"].resolv = "nameserver 192.0.2.1\n"
    res = r.reconcile(s, full=True)
    assert [a.describe() for a in res.actions] == ["~ update resolv resolv.conf in vxt-h1-c-web: not what the agent writes"]
    assert res.writes == {"set_resolv": 1}
    s.apply(WatchBatch(revision=11, changes=(Change("delete", s.endpoints["blue", "web"]),)))
    assert r.reconcile(s).ok and "vxt-h1-c-web" not in k.ns and local_containers(s, ME) == {}
