"""Endpoints whose container namespace belongs to a runtime (Docker, CNI): the field
(validation, immutability, the wire), and the agent's handoff on FakeKernel — the
bridge end as for any endpoint, the container end left in the agent's namespace under
its handoff name, zero writes once the runtime took it, the pair made again when it
vanished, both ends removed with the endpoint."""

from __future__ import annotations

import dataclasses

import pytest

from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo, local_containers
from vxlab.testing.fakekernel import FakeKernel, _Ns
from vxlab.agent.kernel import Fdb, Link
from vxlab.agent.reconciler import Reconciler
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import InvalidArgument
from vxlab.layout import Layout
from vxlab.model import Change, Endpoint, Host, Network, WatchBatch
from vxlab.wire import endpoint_from_pb, endpoint_to_pb

ME = HostInfo(name="h1", underlay_ip="172.30.0.11", underlay_mtu=1500, netns_prefix="vxt-h1-")
NET = "vxt-h1-n-blue"
PID = "a1b2c3d4e5f6" + "0" * 52
POD = Endpoint("pod", "blue", "h1", ip="10.10.0.4", mac="02:00:00:00:00:04", id=PID, created="2", runtime="cni")
HO = Layout.handoff_link(POD)


# --- the field -----------------------------------------------------------------------
@pytest.fixture
async def ctl():
    store = MemoryStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=5))
    await c.hosts.register(Host(name="h1", underlay_ip="172.30.0.11"))
    await c.networks.create(Network(name="blue", subnet="10.10.0.0/24"))
    yield c
    await store.close()


async def test_runtime_is_stored_and_refused_unless_known(ctl: Controller) -> None:
    ep = await ctl.endpoints.create(Endpoint(name="pod", network="blue", host="h1", runtime="docker"))
    assert (await ctl.endpoints.get("blue", "pod")).runtime == "docker"
    before = await ctl.store.revision()
    with pytest.raises(InvalidArgument) as info:
        await ctl.endpoints.create(Endpoint(name="x", network="blue", host="h1", runtime="rkt"))
    assert info.value.field == "endpoint.runtime" and "'rkt'" in info.value.reason and "docker, cni" in info.value.reason
    with pytest.raises(InvalidArgument) as info:
        await ctl.endpoints.update(dataclasses.replace(ep, runtime="cni", labels={"a": "b"}))
    assert info.value.field == "endpoint.runtime" and "cannot be changed" in info.value.reason
    with pytest.raises(InvalidArgument) as info:
        await ctl.endpoints.update(ep, fields=["runtime"])
    assert info.value.field == "endpoint.runtime"
    assert await ctl.store.revision() == before, "a rejected request wrote something"


def test_runtime_crosses_the_wire() -> None:
    assert endpoint_from_pb(endpoint_to_pb(POD)) == POD
    assert endpoint_to_pb(POD).runtime == "cni"


def test_the_handoff_name_is_the_layouts_and_fits_a_link_name() -> None:
    assert HO == "vxha1b2c3d4e5f" == Layout.handoff_link(PID) and len(HO) == 14


# --- the agent -------------------------------------------------------------------------
def state(*endpoints: Endpoint) -> StateCache:
    s = StateCache()
    s.apply(WatchBatch(revision=10, snapshot=True, hosts=(Host("h1", "172.30.0.11", alive=True),
                                                          Host("h2", "172.30.0.12", alive=True)),
                       networks=(Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096,
                                         internal=True),),
                       endpoints=endpoints))
    return s


def take(k: FakeKernel, into: str = "vxt-pod") -> None:
    """What the runtime does: the handoff end moved into its own namespace."""
    k.ns.setdefault(into, _Ns(""))
    k._move(("", HO), into)


def quiet(r: Reconciler, s: StateCache) -> None:
    for full in (False, True):
        res = r.reconcile(s, full=full)
        assert res.ok and res.actions == [] and sum(res.writes.values()) == 0, res.actions


def test_a_runtime_endpoint_gets_its_bridge_end_and_a_handoff_end_but_no_namespace() -> None:
    k, s = FakeKernel(), state(POD)
    r = Reconciler(k, ME)
    actions, _ = r.plan(s, full=True)
    assert [a.method for a in actions if a.kind == "veth"] == ["add_handoff"]
    assert any("for the runtime" in a.describe() for a in actions)
    assert r.reconcile(s, full=True).ok
    assert set(k.ns) == {NET}, "no container namespace for a runtime's endpoint"
    assert k.ns[NET].links["vxe-a1b2c3d4e5f"].master == "vxb-blue"
    assert k.agent_ns().handoffs == {HO: Link(HO, "veth", alias=f"vxlab:ep:{PID}", mac=POD.mac, mtu=1450)}
    assert local_containers(s, ME) == {}
    quiet(r, s)
    quiet(Reconciler(k, ME), s)  # a restarted agent adopts it


def test_once_the_runtime_took_it_nothing_is_written_and_a_vanished_pair_is_made_again() -> None:
    k, s = FakeKernel(), state(POD)
    r = Reconciler(k, ME)
    r.reconcile(s, full=True)
    take(k)
    assert k.agent_ns().handoffs == {}
    quiet(r, s)
    quiet(Reconciler(k, ME), s)
    del k.ns["vxt-pod"]  # the runtime's namespace died and took the pair
    k._remove(NET, "vxe-a1b2c3d4e5f")
    res = r.reconcile(s, full=True)
    assert res.ok and [a.method for a in res.actions] == ["add_handoff"]
    assert set(k.agent_ns().handoffs) == {HO}
    quiet(r, s)


@pytest.mark.parametrize("taken", [False, True])
def test_deleting_the_endpoint_removes_both_ends(taken: bool) -> None:
    web = Endpoint("web", "blue", "h1", ip="10.10.0.2", mac="02:00:00:00:00:01", id="b" * 64, created="1")
    k, s = FakeKernel(), state(POD, web)
    r = Reconciler(k, ME)
    r.reconcile(s, full=True)
    if taken:
        take(k)
    s.apply(WatchBatch(revision=11, changes=(Change("delete", POD),)))
    res = r.reconcile(s)
    assert res.ok and "vxe-a1b2c3d4e5f" not in k.ns[NET].links and HO not in k.own.links
    assert all(ns == "vxt-pod" or ns.startswith("vxt-h1-") for ns in k.ns)
    assert not taken or not k.ns["vxt-pod"].links, "the runtime's end went with its pair"
    quiet(r, s)


def test_a_handoff_end_left_in_the_agents_namespace_goes() -> None:
    k, s = FakeKernel(), state()
    k.own.links[HO] = Link(HO, "veth", alias=f"vxlab:ep:{PID}", mac=POD.mac, mtu=1450)
    res = Reconciler(k, ME).reconcile(s, full=True)
    assert res.ok and [a.method for a in res.actions if a.kind == "link"] == ["delete_link"] and HO not in k.own.links


def test_a_stopped_pass_is_finished_without_anything_unmarked_in_the_agents_namespace() -> None:
    k, s = FakeKernel(), state(POD)
    k.interrupt = {"add_handoff"}
    assert not Reconciler(k, ME).reconcile(s, full=True).ok
    k.interrupt = set()
    assert HO not in k.own.links and HO in k.ns[NET].links
    res = Reconciler(k, ME).reconcile(s, full=True)
    assert res.ok and {a.method for a in res.actions} >= {"adopt_link", "add_handoff"}, res.actions
    assert set(k.agent_ns().handoffs) == {HO} and HO not in k.ns[NET].links
    quiet(Reconciler(k, ME), s)


def test_a_remote_runtime_endpoint_is_a_peer_like_any_other() -> None:
    web = Endpoint("web", "blue", "h1", ip="10.10.0.2", mac="02:00:00:00:00:01", id="b" * 64, created="1")
    remote = dataclasses.replace(POD, host="h2")
    k, s = FakeKernel(), state(web, remote)
    assert Reconciler(k, ME).reconcile(s, full=True).ok
    assert set(k.ns[NET].fdb.values()) == {Fdb("vxv-blue", POD.mac, "172.30.0.12")}
    assert k.agent_ns().handoffs == {}
