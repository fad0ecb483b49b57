"""Network policy without a kernel: what a rule means (vxlab.policy), the controller's
validation and storage (every rejection writes nothing), Watch and the agent's cache,
the nftables table an agent derives (agent/policy_nft.py), its plan, the wire form,
authorization, and `check`'s expectations."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from vxlab import policy, wire
from vxlab.agent import policy_nft
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.reconciler import Reconciler
from vxlab.controller.authz import authorize
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from vxlab.lab.check import expectations
from vxlab.model import Change, Endpoint, Host, Network, Policy, Selector, WatchBatch, from_json, to_json
from vxlab.tls import Identity
from vxlab.v1 import vxlab_pb2 as pb
from test_core import unchanged


def ep(name: str, ip: str, host: str = "h1", net: str = "blue", **labels: str) -> Endpoint:
    return Endpoint(name=name, network=net, host=host, ip=ip, mac="02:00:00:00:00:" + ip.rsplit(".", 1)[1].zfill(2),
                    id=(name + net).ljust(64, "0"), labels=labels)


WEB, DB, TOOL = ep("web", "10.10.0.2", tier="front"), ep("db", "10.10.0.3", "h2", tier="data"), ep("tool", "10.10.0.4")


def rule(name: str, action: str = "deny", **kw: object) -> Policy:
    return policy.check(Policy(name=name, network="blue", action=action, **kw))  # type: ignore[arg-type]


# --- semantics ---------------------------------------------------------------------------

@pytest.mark.parametrize("p, field, reason", [
    (Policy("", "blue", "deny"), "policy.name", "required"),
    (Policy("x", "blue", "block"), "policy.action", "not one of allow, deny"),
    (Policy("x", "blue", "deny", protocol="sctp"), "policy.protocol", "not one of"),
    (Policy("x", "blue", "deny", protocol="icmp", ports=("80",)), "policy.ports", "need protocol tcp or udp"),
    (Policy("x", "blue", "deny", protocol="tcp", ports=("0",)), "policy.ports", "not a port"),
    (Policy("x", "blue", "deny", protocol="tcp", ports=("90-80",)), "policy.ports", "ends below its start"),
    (Policy("x", "blue", "deny", protocol="tcp", ports=tuple(str(i) for i in range(1, 18))), "policy.ports", "at most 16"),
    (Policy("x", "blue", "deny", priority=70000), "policy.priority", "out of range"),
    (Policy("x", "blue", "deny", source=Selector(container="a", cidr="10.0.0.0/8")), "policy.source", "not container and cidr"),
    (Policy("x", "blue", "deny", source=Selector(cidr="10.0.0.1/8")), "policy.source.cidr", "host bits"),
    (Policy("x", "blue", "deny", destination=Selector(label="novalue")), "policy.destination.label", "not key=value"),
    (Policy("x", "blue", "deny", destination=Selector(container="Bad;rm")), "policy.destination.container", "not a valid name"),
])
def test_check_names_the_field(p: Policy, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        policy.check(p)
    assert info.value.field == field and reason in info.value.message


def test_check_normalises() -> None:
    p = policy.check(Policy("x", "blue", "allow", protocol="", ports=(), priority=0))
    assert (p.protocol, p.priority) == ("any", policy.DEFAULT_PRIORITY)
    p = policy.check(Policy("x", "blue", "allow", protocol="tcp", ports=("80-80", " 8000-8099")))
    assert p.ports == ("80", "8000-8099")


@pytest.mark.parametrize("text, want", [
    ("*", Selector()), ("", Selector()), ("web", Selector(container="web")),
    ("tier=front", Selector(label="tier=front")), ("10.10.0.0/28", Selector(cidr="10.10.0.0/28")),
])
def test_parse_selector(text: str, want: Selector) -> None:
    assert policy.parse_selector(text, field="from") == want


def test_decide_first_match_by_priority_default_allow() -> None:
    rules = [rule("db-closed", destination=Selector(container="db"), priority=200),
             rule("front-to-db", "allow", source=Selector(label="tier=front"), destination=Selector(container="db"),
                  protocol="tcp", ports=("5432",), priority=100)]
    assert policy.decide(rules, WEB, DB, protocol="tcp", port=5432).name == "front-to-db"
    assert policy.decide(rules, WEB, DB, protocol="tcp", port=80).name == "db-closed"
    assert policy.decide(rules, TOOL, DB, protocol="tcp", port=5432).name == "db-closed"
    assert policy.decide(rules, WEB, DB, protocol="icmp").name == "db-closed"
    assert policy.decide(rules, DB, WEB, protocol="icmp") is None  # default allow
    assert policy.allowed(rules, DB, WEB, protocol="icmp") and not policy.allowed(rules, TOOL, DB, protocol="icmp")
    same = [rule("b", destination=Selector(container="db")), rule("a", "allow", destination=Selector(container="db"))]
    assert policy.decide(same, TOOL, DB, protocol="udp", port=53).name == "a"  # equal priority: by name
    cidr = [rule("c", source=Selector(cidr="10.10.0.0/30"))]
    assert policy.decide(cidr, WEB, DB, protocol="icmp") and not policy.decide(cidr, TOOL, DB, protocol="icmp")


def test_pair() -> None:
    assert policy.pair([WEB, DB], "web", "db") == (WEB, DB)
    with pytest.raises(NotFound):
        policy.pair([WEB], "web", "db")
    with pytest.raises(InvalidArgument, match="share no network"):
        policy.pair([WEB, dataclasses.replace(DB, network="red")], "web", "db")


def test_json_round_trip() -> None:
    p = rule("x", source=Selector(label="a=b"), destination=Selector(cidr="10.0.0.0/8"), protocol="udp", ports=("53",))
    assert from_json(Policy, to_json(p)) == p
    assert wire.policy_from_pb(wire.policy_to_pb(p)) == p


# --- the controller ----------------------------------------------------------------------

@pytest.fixture
async def ctl():
    store = MemoryStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=5))
    await c.networks.create(Network(name="blue", subnet="10.10.0.0/24"))
    yield c
    await store.close()


async def test_controller_create_list_delete(ctl: Controller) -> None:
    a = await ctl.policies.create(Policy("zeta", "blue", "deny", priority=10))
    await ctl.policies.create(Policy("alpha", "blue", "allow"))
    assert a.created and a.priority == 10
    found, _ = await ctl.policies.list(network="blue")
    assert [p.name for p in found] == ["zeta", "alpha"]  # evaluation order
    assert await ctl.policies.get("blue", "zeta") == a
    await unchanged(ctl, ctl.policies.create(Policy("zeta", "blue", "allow")), AlreadyExists)
    await unchanged(ctl, ctl.policies.create(Policy("x", "nope", "allow")), NotFound)
    err = await unchanged(ctl, ctl.policies.create(Policy("x", "blue", "maybe")), InvalidArgument)
    assert err.field == "policy.action"
    await ctl.policies.delete("blue", "zeta")
    await unchanged(ctl, ctl.policies.delete("blue", "zeta"), NotFound)
    assert [p.name for p in (await ctl.policies.list())[0]] == ["alpha"]


async def test_watch_carries_policies_and_network_delete_takes_them(ctl: Controller) -> None:
    await ctl.policies.create(Policy("first", "blue", "deny"))
    cache = StateCache()
    stream = ctl.watcher.watch(start_revision=0)
    assert cache.apply(await stream.__anext__()) and set(cache.policies) == {("blue", "first")}
    await ctl.policies.create(Policy("second", "blue", "allow"))
    assert cache.apply(await asyncio.wait_for(stream.__anext__(), 5))
    assert set(cache.policies) == {("blue", "first"), ("blue", "second")}
    assert set(cache.copy().policies) == set(cache.policies)
    await ctl.networks.delete("blue")
    batch = await asyncio.wait_for(stream.__anext__(), 5)
    assert {type(c.obj).__name__ for c in batch.changes} == {"Network", "Policy"}
    cache.apply(batch)
    assert not cache.policies and not cache.networks
    assert not (await ctl.policies.list())[0]
    await stream.aclose()


def test_authz_hosts_may_read_but_not_write_policies() -> None:
    host = Identity("host", "h1")
    authorize(host, "ListPolicies", pb.ListPoliciesRequest())
    with pytest.raises(PermissionDenied) as info:
        authorize(host, "/vxlab.v1.PolicyService/CreatePolicy", pb.CreatePolicyRequest())
    assert info.value.field == "policy"
    authorize(Identity("admin", ""), "CreatePolicy", pb.CreatePolicyRequest())


# --- the agent's table ---------------------------------------------------------------------

def test_build_resolves_selectors_for_the_local_endpoints() -> None:
    rules = [rule("front-to-db", "allow", source=Selector(label="tier=front"), destination=Selector(container="db"),
                  protocol="tcp", ports=("5432", "6000-6001"), priority=100),
             rule("db-closed", destination=Selector(container="db"), priority=200),
             rule("ghost", source=Selector(container="nobody"))]
    members = [WEB, DB, TOOL]
    on_h2 = policy_nft.build("blue", [DB], members, rules)
    assert on_h2 is not None and on_h2.local == ("10.10.0.3",) and on_h2.rules == 2
    assert ('ip saddr { 10.10.0.2 } ip daddr { 10.10.0.3 } meta l4proto tcp tcp dport { 5432, 6000-6001 }'
            ' counter accept comment "p:front-to-db"') in on_h2.script
    assert 'ip daddr { 10.10.0.3 } counter drop comment "p:db-closed"' in on_h2.script
    assert "ghost" not in on_h2.script  # its source is nobody: left out
    assert policy_nft.build("blue", [WEB, TOOL], members, rules[:2]) is None  # db is not on h1
    again = policy_nft.build("blue", [DB], members, list(reversed(rules)))
    assert again == on_h2  # same rules, same tag
    moved = policy_nft.build("blue", [DB], [dataclasses.replace(WEB, ip="10.10.0.9"), DB], rules)
    assert moved != on_h2  # a source's address changed: another table


def _listing(table) -> str:
    """`nft -j list table` as nft 1.0.6 prints the table `build` wrote."""
    rules = [line.strip() for line in table.script.splitlines() if line.startswith("    ") and "type filter" not in line]
    items = [{"metainfo": {}}, {"table": {"family": "inet", "name": policy_nft.TABLE}},
             {"chain": {"name": "forward", "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}]
    items += [{"rule": {"expr": [], **({"comment": r.split('comment "')[1][:-1]} if "comment" in r else {})}}
              for r in rules]
    return json.dumps({"nftables": items})


def test_parse_reads_back_the_tag() -> None:
    table = policy_nft.build("blue", [DB], [WEB, DB], [rule("x", destination=Selector(container="db"))])
    assert table is not None and policy_nft.parse(_listing(table)) == table
    broken = json.loads(_listing(table))
    broken["nftables"].pop()  # a rule deleted by hand: the count no longer matches
    assert policy_nft.parse(json.dumps(broken)) is None
    assert policy_nft.parse("not json") is None


def test_reconciler_plans_one_policy_action_then_nothing() -> None:
    me = HostInfo(name="h2", underlay_ip="172.30.0.12", underlay_mtu=1500, netns_prefix="vxt-h2-")
    state = StateCache()
    state.apply(WatchBatch(revision=5, snapshot=True,
                           hosts=(Host("h1", "172.30.0.11", alive=True), Host("h2", "172.30.0.12", alive=True)),
                           networks=(Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096),),
                           endpoints=(WEB, DB, TOOL)))
    kernel = FakeKernel()
    r = Reconciler(kernel, me)
    assert r.reconcile(state, full=True).ok and not kernel.writes["set_policy"]
    state.apply(WatchBatch(revision=6, changes=(Change("put", rule("db-closed", destination=Selector(container="db"))),)))
    res = r.reconcile(state)
    assert [(a.kind, a.op) for a in res.actions] == [("policy", "add")] and "create (1 rules)" in res.actions[0].reason
    assert r.reconcile(state, full=True).actions == []  # the dump reads it back: nothing to do
    state.apply(WatchBatch(revision=7, changes=(Change("delete", Policy("db-closed", "blue")),)))
    assert [(a.kind, a.op) for a in r.reconcile(state).actions] == [("policy", "delete")]
    assert kernel.writes["delete_policy"] == 1 and r.reconcile(state, full=True).actions == []


def test_check_expects_what_the_rules_allow() -> None:
    rules = [rule("db-closed", destination=Selector(container="db"))]
    probes = {(p.src, p.dst): p for p in expectations([WEB, DB, TOOL], rules)}
    assert not probes[("web", "db")].expect and probes[("web", "db")].rule == "db-closed"
    assert probes[("db", "web")].expect and probes[("db", "web")].rule == ""
