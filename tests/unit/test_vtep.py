"""The rogue-VTEP allow-list: desired from the cache, planned with reasons, written
only when it differs, adopted after a restart without writes, nft form round-trips."""

from __future__ import annotations

import json

from vxlab.agent import vtep
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.kernel import VtepFilter
from vxlab.agent.reconciler import Reconciler
from vxlab.agent.runner import teardown
from vxlab.model import Change, Host, WatchBatch

from test_reconciler import ME, snapshot

ALL = frozenset({"172.30.0.11", "172.30.0.12", "172.30.0.13"})


def test_first_pass_installs_known_hosts_then_nothing_to_do():
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    first = r.reconcile(s, full=True)
    assert first.ok and k.vteps == VtepFilter(4789, ALL)
    assert first.actions[0].kind == "vteps" and first.actions[0].describe().startswith("+ add vteps inet vxlab_vtep")
    assert first.writes["set_vtep_filter"] == 1
    for full in (False, True):
        again = r.reconcile(s, full=full)
        assert again.actions == [] and sum(again.writes.values()) == 0
    fresh = Reconciler(k, ME)  # a restarted agent adopts: nothing written
    assert fresh.reconcile(s, full=True).writes == {}


def test_new_host_is_one_update_with_its_address_in_the_reason_and_dead_hosts_stay():
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    r.reconcile(s, full=True)
    s.apply(WatchBatch(revision=11, changes=(Change("put", Host("h4", "172.30.0.14", alive=True)),
                                             Change("put", Host("h2", "172.30.0.12", alive=False)))))
    res = r.reconcile(s)
    assert [a.describe() for a in res.actions if a.kind == "vteps"] == [
        "~ update vteps inet vxlab_vtep in (agent namespace): VTEP allow-list: +172.30.0.14"]
    assert res.writes["set_vtep_filter"] == 1 and k.vteps == VtepFilter(4789, ALL | {"172.30.0.14"})
    s.apply(WatchBatch(revision=12, changes=(Change("delete", Host("h3")),)))
    assert "-172.30.0.13" in r.reconcile(s).actions[0].reason


def test_drift_of_the_filter_repaired_by_a_full_pass():
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    r.reconcile(s, full=True)
    k.vteps = VtepFilter(4789, frozenset({"172.30.0.11", "10.9.9.9"}))  # someone edited our set
    assert r.reconcile(s).actions == []  # an event pass trusts what it applied
    res = r.reconcile(s, full=True)
    assert "+172.30.0.12" in res.actions[0].reason and "-10.9.9.9" in res.actions[0].reason
    assert k.vteps == VtepFilter(4789, ALL)


def test_garbage_addresses_never_reach_a_rule():
    f = vtep.desired_filter({"a": "10.0.0.1", "b": "", "c": "1.2.3.4; drop", "d": "::1", "e": "10.0.0.1"},
                            me_ip="10.0.0.2", port=4789)
    assert f == VtepFilter(4789, frozenset({"10.0.0.1", "10.0.0.2"}))


def test_cleanup_removes_the_table():
    k, s = FakeKernel(), snapshot()
    Reconciler(k, ME).reconcile(s, full=True)
    gone = teardown(k, host="h1", netns_prefix=ME.netns_prefix)
    assert k.vteps is None and "nftables table inet vxlab_vtep" in gone
    assert "nftables table inet vxlab_vtep" not in teardown(k, host="h1", netns_prefix=ME.netns_prefix)


def _listing(port: int, elems: list[str], *, extra_rule: bool = False) -> str:
    dport = {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}}
    rules = [[dport, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                "right": "@vteps"}}, {"counter": {"packets": 3, "bytes": 9}}, {"drop": None}],
             [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}, dport,
              {"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]]
    if extra_rule:
        rules.append([{"accept": None}])
    items = [{"metainfo": {}}, {"table": {"family": "inet", "name": "vxlab_vtep"}},
             {"set": {"name": "vteps", "type": "ipv4_addr", "elem": elems}},
             {"chain": {"name": "input", "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}},
             *({"rule": {"chain": "input", "expr": r}} for r in rules)]
    return json.dumps({"nftables": items})


def test_nft_listing_parsed_and_tampering_detected():
    assert vtep.parse(_listing(4789, ["10.0.0.1", "10.0.0.2"])) == VtepFilter(4789, frozenset({"10.0.0.1", "10.0.0.2"}))
    assert vtep.parse(_listing(4789, [])) == VtepFilter(4789)
    assert vtep.parse(_listing(4789, ["10.0.0.1"], extra_rule=True)) is None
    assert vtep.parse("not json") is None and vtep.parse("{}") is None


def test_render_is_our_table_only():
    """The body of `table inet vxlab_vtep` alone (nft.py makes it one transaction)."""
    script = vtep.render(VtepFilter(4789, frozenset({"10.0.0.2", "10.0.0.10"})))
    assert script.startswith("table inet vxlab_vtep {\n") and script.count("table ") == 1
    assert "elements = { 10.0.0.2, 10.0.0.10 }" in script and "udp dport 4789 ip saddr != @vteps" in script
