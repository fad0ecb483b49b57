"""External access as kernel state (issue 13.5, 13.6): the NAT tables of the agent's and
the network namespaces are dumped, planned with reasons, repaired by a full pass,
adopted without writes and removed when no network needs them; uplink /30s are unique
on a host whatever the VNIs, kept across restarts, and a collision is repaired; the
nftables form of NAT round-trips."""

from __future__ import annotations

import json

from vxlab.agent import nat
from vxlab.agent.cache import StateCache
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.kernel import Nat
from vxlab.agent.names import Naming
from vxlab.agent.reconciler import Reconciler
from vxlab.agent.runner import teardown
from vxlab.model import Change, Endpoint, Network, WatchBatch

from test_reconciler import ME, ep, snapshot

NET = "vxt-h1-n-blue"
HOST_NAT = Nat("169.254.0.0/16", "vxg-*", oif_negated=True)


def test_nat_is_state_planned_adopted_and_repaired_by_a_full_pass():
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    first = r.reconcile(s, full=True)
    assert first.ok and k.own.nat == HOST_NAT and k.ns[NET].nat == Nat("10.10.0.0/24", "vxgw0")
    assert [a.describe() for a in first.actions if a.kind == "nat"] == [
        "+ add nat ip vxlab in (agent namespace): NAT: create (169.254.0.0/16 out !vxg-*)",
        "+ add nat ip vxlab in vxt-h1-n-blue: NAT: create (10.10.0.0/24 out vxgw0)"]
    assert Reconciler(k, ME).reconcile(s, full=True).writes == {}  # a restarted agent adopts
    k.own.nat = k.ns[NET].nat = None  # `nft flush ruleset` in both namespaces
    assert r.reconcile(s).actions == []  # an event pass trusts what it applied
    res = r.reconcile(s, full=True)
    assert sorted(a.target for a in res.actions) == ["ip vxlab", "ip vxlab"] and res.writes == {"set_nat": 2}
    assert k.own.nat == HOST_NAT and k.ns[NET].nat == Nat("10.10.0.0/24", "vxgw0")
    k.own.nat = Nat("169.254.0.0/16", "eth0")  # a rule edited by hand
    assert r.reconcile(s, full=True).writes == {"set_nat": 1} and k.own.nat == HOST_NAT


def test_nat_removed_when_no_network_needs_it():
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    r.reconcile(s, full=True)
    s.apply(WatchBatch(revision=11, changes=(Change("put", ep("web", "red", "h1", "10.20.0.2", "02:00:00:00:00:11")),
                                             Change("delete", Endpoint("web", "blue", "")))))
    res = r.reconcile(s)  # only the internal network red is left here: no uplink, no NAT
    assert [a.describe() for a in res.actions if a.kind == "nat"] == [
        "- delete nat ip vxlab in (agent namespace): NAT: no uplink needs it any more"]
    assert k.own.nat is None and k.ns["vxt-h1-n-red"].nat is None and not k.own.links
    assert r.reconcile(s, full=True).actions == []


def test_teardown_removes_the_host_nat():
    k, s = FakeKernel(), snapshot()
    Reconciler(k, ME).reconcile(s, full=True)
    gone = teardown(k, host="h1", netns_prefix=ME.netns_prefix)
    assert "nftables table ip vxlab" in gone and k.own.nat is None and not k.own.links


def _two_networks(vnis: tuple[int, int]) -> StateCache:
    s = snapshot()
    s.apply(WatchBatch(revision=11, changes=(
        Change("put", Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=vnis[0])),
        Change("put", Network("green", subnet="10.30.0.0/24", gateway="10.30.0.1", vni=vnis[1])),
        Change("put", ep("web", "green", "h1", "10.30.0.2", "02:00:00:00:00:21", "2")))))
    return s


def _uplinks(k: FakeKernel) -> dict[str, str]:
    return {name: cidr for name, n in k.ns.items() for dev, cidr in n.addrs if dev == Naming.UPLINK}


def test_uplinks_of_vni_4096_and_20479_do_not_collide_and_are_kept():
    """4096 % 16383 == 20479 % 16383: on main both got 169.254.16.8/30."""
    k, s = FakeKernel(), _two_networks((4096, 20479))
    r = Reconciler(k, ME)
    assert r.reconcile(s, full=True).ok
    addrs = _uplinks(k)
    assert addrs == {"vxt-h1-n-blue": "169.254.1.2/30", "vxt-h1-n-green": "169.254.1.6/30"}
    assert set(k.agent_ns().uplinks) == {"vxg-blue", "vxg-green"}
    assert {c for cs in k.agent_ns().uplinks.values() for c in cs} == {"169.254.1.1/30", "169.254.1.5/30"}
    assert Reconciler(k, ME).reconcile(s, full=True).writes == {}  # a restart adopts every uplink
    # blue goes, then comes back: green keeps its /30, blue takes the lowest free one
    s.apply(WatchBatch(revision=12, changes=(Change("delete", Endpoint("web", "blue", "")),)))
    r.reconcile(s)
    s.apply(WatchBatch(revision=13, changes=(Change("put", ep("web", "blue", "h1", "10.10.0.2", "02:00:00:00:00:01")),)))
    r.reconcile(s)
    assert _uplinks(k) == addrs


def test_colliding_uplinks_left_by_an_older_agent_are_readdressed():
    k, s = FakeKernel(), _two_networks((4096, 20479))
    r = Reconciler(k, ME)
    r.reconcile(s, full=True)
    k.ns["vxt-h1-n-green"].addrs = {a if a[0] != Naming.UPLINK else (a[0], "169.254.1.2/30")
                                    for a in k.ns["vxt-h1-n-green"].addrs}
    res = r.reconcile(s, full=True)
    assert res.ok, res.errors
    assert [a.reason for a in res.actions if a.op == "replace"] == [
        "uplink address 169.254.1.2/30 -> 169.254.1.6/30: delete"]
    assert _uplinks(k) == {"vxt-h1-n-blue": "169.254.1.2/30", "vxt-h1-n-green": "169.254.1.6/30"}
    assert k.own.addrs == {("vxg-blue", "169.254.1.1/30"), ("vxg-green", "169.254.1.5/30")}
    assert r.reconcile(s, full=True).actions == []


def test_a_lost_host_end_is_made_again_and_a_stray_one_removed():
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    r.reconcile(s, full=True)
    k.own.addrs.clear()  # the host end lost its address
    k.own.links["vxg-gone"] = k.own.links["vxg-blue"]
    res = r.reconcile(s, full=True)
    assert sorted(a.describe() for a in res.actions) == [
        "+ add uplink vxgw0 <-> vxg-blue in vxt-h1-n-blue: host end lacks its address",
        "- delete link vxg-gone in (agent namespace): an uplink no network uses"]
    assert k.own.addrs == {("vxg-blue", "169.254.1.1/30")} and "vxg-gone" not in k.own.links


def test_nat_nft_form_round_trips_and_tampering_is_detected():
    for want in (Nat("10.10.0.0/24", "vxgw0"), HOST_NAT, Nat("10.9.9.9/32", "vxgw0")):
        body = nat.render(want)
        assert body.startswith("table ip vxlab {\n") and body.count("table ") == 1
        assert nat.parse(_listing(want)) == want
    assert nat.parse(_listing(HOST_NAT, extra=True)) is None
    assert nat.parse("not json") is None and nat.parse("{}") is None
    for bad in (Nat("10.0.0.0/33", "vxgw0"), Nat("10.0.0.0/24", 'x" accept; #')):
        try:
            nat.render(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} rendered")


def _listing(want: Nat, *, extra: bool = False) -> str:
    """`nft -j list table ip vxlab` as nft 1.0.6 prints the table `render` wrote."""
    net_addr, plen = want.source.split("/")
    right = net_addr if plen == "32" else {"prefix": {"addr": net_addr, "len": int(plen)}}
    rule = [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": right}},
            {"match": {"op": "!=" if want.oif_negated else "==", "left": {"meta": {"key": "oifname"}},
                       "right": want.oif}}, {"masquerade": None}]
    items = [{"metainfo": {}}, {"table": {"family": "ip", "name": "vxlab"}},
             {"chain": {"name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
             {"rule": {"chain": "postrouting", "expr": rule}}]
    if extra:
        items.append({"rule": {"chain": "postrouting", "expr": [{"accept": None}]}})
    return json.dumps({"nftables": items})
