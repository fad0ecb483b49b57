"""A network changed in place (UpdateNetwork) as the agent plans it: the next pass
changes what follows from the record, in an order the kernel accepts (against the
in-memory FakeKernel; MTU, gateway and internal in the real kernel:
tests/integration/test_up_changes.py)."""

from __future__ import annotations

import dataclasses

from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.kernel import Route
from vxlab.agent.reconciler import Reconciler
from vxlab.model import Change, Endpoint, Host, Network, WatchBatch

ME = HostInfo(name="h1", underlay_ip="172.30.0.11", underlay_mtu=1500, netns_prefix="vxt-h1-")
BLUE = Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096, mtu=1400)
NET, CTR = "vxt-h1-n-blue", "vxt-h1-c-web"


def built() -> tuple[FakeKernel, Reconciler, StateCache]:
    s = StateCache()
    s.apply(WatchBatch(revision=10, snapshot=True, hosts=(Host("h1", "172.30.0.11", alive=True),
                                                          Host("h2", "172.30.0.12", alive=True)),
                       networks=(BLUE,), endpoints=(
                           Endpoint("web", "blue", "h1", "10.10.0.2", "02:00:00:00:00:01", id="a" * 64, created="1"),
                           Endpoint("db", "blue", "h2", "10.10.0.3", "02:00:00:00:00:02", id="b" * 64, created="1"))))
    k = FakeKernel()
    r = Reconciler(k, ME)
    assert r.reconcile(s, full=True).ok
    return k, r, s


def changed(s: StateCache, **fields: object) -> None:
    assert s.apply(WatchBatch(revision=11, changes=(Change("put", dataclasses.replace(BLUE, **fields)),)))


def test_a_gateway_move_deletes_the_old_address_before_adding_the_new() -> None:
    k, r, s = built()
    changed(s, gateway="10.10.0.254")
    res = r.reconcile(s)
    assert res.ok
    addr = [(a.op, a.target) for a in res.actions if a.kind == "addr"]
    # the other order would lose the new one: deleting a primary address takes its subnet's secondaries
    assert addr == [("delete", "10.10.0.1/24 on vxb-blue"), ("add", "10.10.0.254/24 on vxb-blue")]
    assert ("vxb-blue", "10.10.0.254/24") in k.ns[NET].addrs and ("vxb-blue", "10.10.0.1/24") not in k.ns[NET].addrs
    assert k.ns[CTR].routes == {Route("default", "10.10.0.254", "eth0")}
