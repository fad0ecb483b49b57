"""The desired-state view (vxlab/view.py): objects keyed by identity at a revision; what
a snapshot or a change batch changed, with old and new objects; one shared snapshot
object until the next change; copies that do not follow the original; spec diffs per
object and field."""

from __future__ import annotations

import dataclasses

from vxlab.agent.cache import StateCache
from vxlab.model import Change, Endpoint, Host, Network, Policy, WatchBatch
from vxlab.view import FieldChange, View, key_of

H1 = Host("h1", "172.30.0.11", alive=True, lease_ttl=5, registered_at="t0")
H2 = Host("h2", "172.30.0.12", alive=True)
BLUE = Network("blue", id="n1", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096, created="t0")
WEB = Endpoint("web", "blue", "h1", "10.10.0.2", "02:00:00:00:00:01", id="e1", created="t0")
DB = Endpoint("db", "blue", "h2", "10.10.0.3", "02:00:00:00:00:02", id="e2", created="t0")
RULE = Policy("nodb", "blue", "deny", protocol="tcp", ports=("5432",), created="t0")


def snap(revision: int = 10, **over: object) -> WatchBatch:
    fields: dict[str, object] = dict(hosts=(H2, H1), networks=(BLUE,), endpoints=(WEB, DB), policies=(RULE,))
    return WatchBatch(revision=revision, snapshot=True, **{**fields, **over})  # type: ignore[arg-type]


def changes(revision: int, *cs: tuple[str, object]) -> WatchBatch:
    return WatchBatch(revision=revision, changes=tuple(Change(k, o) for k, o in cs))  # type: ignore[arg-type]


def test_objects_are_keyed_by_identity() -> None:
    v = View.of(snap())
    assert v.revision == 10 and set(v.hosts) == {"h1", "h2"} and set(v.networks) == {"blue"}
    assert v.endpoints[("blue", "web")] is WEB and v.policies[("blue", "nodb")] is RULE
    assert key_of(DB) == ("endpoints", ("blue", "db")) and key_of(H1) == ("hosts", "h1")
    assert View.of_objects([H1, WEB, RULE]).endpoints == {("blue", "web"): WEB}


def test_a_change_batch_reports_added_removed_and_changed_with_old_and_new() -> None:
    v = View.of(snap())
    moved = dataclasses.replace(WEB, host="h2", ip="10.10.0.9")
    cache = Endpoint("cache", "blue", "h2", "10.10.0.4")
    d = v.apply(changes(11, ("put", moved), ("put", cache), ("delete", Endpoint("db", "blue", "")),
                        ("delete", Network("red")), ("put", H1)))  # red is not there, H1 unchanged
    assert v.revision == 11 and set(v.endpoints) == {("blue", "web"), ("blue", "cache")}
    assert [(x.op, x.key) for x in d] == [("changed", ("blue", "web")), ("added", ("blue", "cache")),
                                          ("removed", ("blue", "db"))]
    assert [x.new for x in d.added("endpoints")] == [cache] and [x.old for x in d.removed("endpoints")] == [DB]
    (web,) = d.changed("endpoints")
    assert web.old is WEB and web.new is moved
    assert web.changes == (FieldChange("host", "h1", "h2"), FieldChange("ip", "10.10.0.2", "10.10.0.9"))
    assert web.fields == ("host", "ip") and d.get("endpoints", ("blue", "web")) == web
    assert not d.of("hosts") and not d.of("networks") and len(d) == 3


def test_nothing_changed_is_an_empty_report_and_heartbeats_move_the_revision() -> None:
    v = View.of(snap())
    assert not v.apply(changes(11, ("put", WEB), ("delete", Endpoint("gone", "blue", ""))))
    assert not v.apply(WatchBatch(revision=12)) and v.revision == 12
    assert not v.apply(WatchBatch(revision=5)) and v.revision == 12  # never backwards


def test_the_same_object_twice_in_one_batch_is_one_difference() -> None:
    v = View.of(snap())
    new = Endpoint("tmp", "blue", "h1")
    assert not v.apply(changes(11, ("put", new), ("delete", new)))
    relabelled = dataclasses.replace(WEB, labels={"a": "b"})
    d = v.apply(changes(12, ("put", relabelled), ("put", dataclasses.replace(relabelled, labels={"a": "c"}))))
    (web,) = d
    assert web.old is WEB and web.new.labels == {"a": "c"}
    assert not v.apply(changes(13, ("put", WEB), ("put", dataclasses.replace(WEB, labels={"a": "c"}))))


def test_a_snapshot_replaces_everything_and_reports_the_differences() -> None:
    v = View.of(snap())
    after = snap(20, endpoints=(WEB,), hosts=(H1, dataclasses.replace(H2, alive=False)))
    d = v.apply(after)
    assert d.snapshot and v.revision == 20 and set(v.endpoints) == {("blue", "web")}
    v.apply(changes(21, ("delete", WEB)))  # later changes do not reach the snapshot's report
    assert sorted((x.op, x.kind, x.key) for x in d) == [("changed", "hosts", "h2"),
                                                        ("removed", "endpoints", ("blue", "db"))]
    assert d.get("hosts", "h2").changes == (FieldChange("alive", True, False),)  # type: ignore[union-attr]
    same = View.of(snap()).apply(snap(30))
    assert same.snapshot and not same


def test_the_snapshot_is_one_object_until_something_changes() -> None:
    first = snap()
    v = View.of(first)
    assert v.snapshot() is first  # the hub's first joiners get the store's snapshot itself
    v.apply(WatchBatch(revision=11))
    v.apply(changes(12, ("put", WEB)))  # unchanged
    assert v.snapshot() is first
    v.apply(changes(13, ("delete", DB)))
    s = v.snapshot()
    assert s is not first and s is v.snapshot() and s.snapshot and not s.compacted and s.revision == 13
    assert [h.name for h in s.hosts] == ["h1", "h2"]  # sorted by key
    assert (s.endpoints, s.networks, s.policies) == ((WEB,), (BLUE,), (RULE,))
    v.apply(WatchBatch(revision=14))
    assert v.snapshot() is s  # a heartbeat changes nothing in it
    compacted = View.of(dataclasses.replace(first, compacted=True)).snapshot()
    assert not compacted.compacted and compacted.revision == 10


def test_a_copy_does_not_follow_the_original() -> None:
    first = snap()
    v = View.of(first)
    c = v.copy()
    v.apply(changes(11, ("delete", WEB), ("put", dataclasses.replace(BLUE, mtu=1400))))
    assert ("blue", "web") in c.endpoints and c.networks["blue"] is BLUE and c.revision == 10
    assert c.snapshot() is first and v.snapshot().endpoints == (DB,)
    c.apply(changes(12, ("delete", DB)))
    assert ("blue", "db") in v.endpoints


def test_diff_compares_specs_not_bookkeeping() -> None:
    v = View.of(snap())
    # The same objects as asked for (no id, no created, no lease): no difference.
    asked = View.of_objects([dataclasses.replace(H1, alive=False, lease_ttl=0, registered_at=""), H2,
                             dataclasses.replace(BLUE, id="", created=""), dataclasses.replace(WEB, id="", created=""),
                             DB, dataclasses.replace(RULE, created="")])
    assert not v.diff(asked)
    want = View.of_objects([H1, H2, dataclasses.replace(BLUE, mtu=1300, labels={"a": "b"}), WEB,
                            Endpoint("cache", "blue", "h2"), dataclasses.replace(RULE, ports=("5433",))])
    d = v.diff(want)
    assert [(x.op, x.kind, x.key) for x in d] == [
        ("changed", "networks", "blue"), ("added", "endpoints", ("blue", "cache")),
        ("removed", "endpoints", ("blue", "db")), ("changed", "policies", ("blue", "nodb"))]
    assert d.get("networks", "blue").fields == ("mtu", "labels")  # type: ignore[union-attr]
    assert d.get("policies", ("blue", "nodb")).changes == (  # type: ignore[union-attr]
        FieldChange("ports", ("5432",), ("5433",)),)


def test_diff_compares_the_fields_asked_for_in_that_order() -> None:
    v = View.of(snap())
    want = View.of_objects([dataclasses.replace(BLUE, mtu=1300, gateway="10.10.0.254", vni=7)])
    d = v.diff(want, fields={"networks": ("mtu", "gateway")})
    assert d.get("networks", "blue").fields == ("mtu", "gateway")  # type: ignore[union-attr]
    assert not v.diff(want, fields={"networks": ("internal",), "hosts": (), "endpoints": (), "policies": ()}) \
        .changed("networks")


def test_the_agent_cache_keeps_its_rule_over_the_report() -> None:
    """What a pass depends on: a host's underlay address and liveness; anything else."""
    c = StateCache()
    assert c.apply(snap()) and c.synced and c.revision == 10 and c.hosts is c.view.hosts
    assert not c.apply(changes(11, ("put", dataclasses.replace(H1, lease_ttl=9, registered_at="t1"))))
    assert c.hosts["h1"].registered_at == "t1"  # kept, though it does not matter to the kernel
    assert c.apply(changes(12, ("put", dataclasses.replace(H1, underlay_ip="172.30.0.99"))))
    assert not c.apply(WatchBatch(revision=13)) and c.revision == 13
    copy = c.copy()
    assert copy.synced and copy.revision == 13 and copy.view is not c.view
