"""A pass that stopped between creating a link and marking it (issue 13.3): the next
pass adopts the unmarked link by its exact name inside a namespace of ours and
converges; outside our namespaces nothing unmarked is ever touched. The kernel calls
themselves (the fault point, adopt_link and its refusals) are in the kernel contract
suite, tests/contract_kernel.py."""

from __future__ import annotations

import dataclasses

import pytest

from vxlab.testing.fakekernel import FakeKernel, _Ns
from vxlab.agent.kernel import Link
from vxlab.agent.reconciler import Reconciler

from test_reconciler import ME, snapshot

NET, CTR = "vxt-h1-n-blue", "vxt-h1-c-web"


@pytest.mark.parametrize("method", ["add_bridge", "add_vxlan", "add_veth", "add_uplink"])
def test_interrupted_between_create_and_mark_then_the_next_pass_converges(method):
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    k.interrupt = {method}
    first = r.reconcile(s, full=True)
    assert not first.ok and any("fault point" in e for e in first.errors), first.errors
    half = {(ns, name) for ns, n in [("", k.own), *k.ns.items()] for name, link in n.links.items()
            if not link.alias and name != "lo"}
    assert half, "the fault point leaves an unmarked object"
    assert all(ns for ns, _ in half), "nothing unmarked is ever left in the agent's own namespace"
    k.interrupt = set()
    second = r.reconcile(s, full=True)
    assert second.ok, second.errors
    assert {(a.ns, a.target) for a in second.actions if a.method == "adopt_link"} == half
    assert not [n for ns in k.ns.values() for n, link in ns.links.items() if not link.alias and n != "lo"]
    third = r.reconcile(s, full=True)
    assert third.actions == [] and sum(third.writes.values()) == 0, [a.describe() for a in third.actions]
    assert Reconciler(k, ME).reconcile(s, full=True).writes == {}  # and a restarted agent adopts it all


def test_unmarked_bridge_left_by_a_stopped_pass_is_adopted_and_reported():
    """The state an agent killed between the two requests leaves (on main: refused with
    `exists without a vxlab: marker` on every pass, for ever)."""
    k, s = FakeKernel(), snapshot()
    k.ns[NET] = _Ns("vxlab:h1:net:blue", links={"vxb-blue": Link("vxb-blue", "bridge", mtu=1450)})
    res = Reconciler(k, ME).reconcile(s, full=True)
    assert res.ok, res.errors
    adopt = [a.describe() for a in res.actions if a.method == "adopt_link"]
    assert adopt == ["~ update link vxb-blue in vxt-h1-n-blue: unmarked, with our name in our namespace "
                     "(a pass stopped between creating and marking it): adopt"]
    assert k.ns[NET].links["vxb-blue"] == Link("vxb-blue", "bridge", alias="vxlab:bridge:blue", mtu=1450, up=True)


def test_unmarked_links_are_left_alone_where_the_namespace_does_not_prove_them_ours():
    k, s = FakeKernel(), snapshot()
    k.ns[NET] = _Ns("vxlab:h2:net:blue", links={"vxb-blue": Link("vxb-blue", "bridge")})   # another host's marker
    k.ns[CTR] = _Ns("vxlab:h1:ctr:web", links={"vxb-blue": Link("vxb-blue", "bridge"),      # not a name given here
                                               "eth7": Link("eth7", "veth", alias="someone:else")})
    k.own.links["vxg-blue"] = Link("vxg-blue", "veth")                                     # the agent's namespace
    res = Reconciler(k, ME).reconcile(s, full=True)
    assert not res.ok
    assert not [a for a in res.actions if a.method == "adopt_link" and a.ns != CTR]
    assert k.ns[NET].links["vxb-blue"].alias == "" and k.own.links["vxg-blue"].alias == ""
    assert k.ns[CTR].links["vxb-blue"].alias == "" and k.ns[CTR].links["eth7"].alias == "someone:else"
    # adopt_link's own refusals: tests/contract_kernel.py, on both kernels


def test_a_container_interface_left_unmarked_keeps_its_name():
    """An unmarked eth0 (the peer of a veth whose pass stopped) is not a taken name: the
    endpoint gets eth0 again, adopted, instead of a second interface eth1."""
    k, s = FakeKernel(), snapshot()
    r = Reconciler(k, ME)
    k.interrupt = {"add_veth"}
    r.reconcile(s, full=True)
    k.interrupt = set()
    assert r.reconcile(s, full=True).ok
    assert set(k.ns[CTR].links) == {"eth0"} and k.ns[CTR].links["eth0"].mac == "02:00:00:00:00:01"
    assert dataclasses.replace(k.ns[CTR].links["eth0"], mac="") == Link(
        "eth0", "veth", alias=k.ns[CTR].links["eth0"].alias, mtu=1450, up=True)
