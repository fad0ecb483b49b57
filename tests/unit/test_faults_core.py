"""Faults in the controller core (controller/faults.py) against the in-memory store: ids,
validation that writes nothing, claims refused, the lease of a duration, reports, delete,
the Watch stream, and who may do what (controller/authz.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest

from vxlab.controller.authz import authorize
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from vxlab.model import Fault, FaultStatus, Host
from vxlab.tls import Identity

from test_core import unchanged


@pytest.fixture
async def ctl():
    store = MemoryStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=60))
    for i in (1, 2, 3):
        await c.hosts.register(Host(name=f"h{i}", underlay_ip=f"172.30.0.{10 + i}"))
    yield c
    await store.close()


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_create_numbers_targets_and_normalises(ctl: Controller) -> None:
    f = await ctl.faults.create(Fault(id="", kind="partition", params={"hosts": "h2,h1", "from": "h3"}))
    g = await ctl.faults.create(Fault(id="", kind="loss", params={"host": "h3", "percent": "30"}))
    assert (f.id, g.id) == ("f1", "f2")
    assert f.targets == ("h1", "h2", "h3") and f.params == {"hosts": "h1,h2", "from": "h3", "oneway": "false"}
    assert g.params == {"host": "h3", "percent": "30", "direction": "egress"} and g.expires_at == ""
    assert [s.state for s in f.status] == ["pending"] * 3
    listed, _ = await ctl.faults.list()
    assert [x.id for x in listed] == ["f1", "f2"]
    await ctl.faults.delete("f2")
    assert (await ctl.faults.create(Fault(id="", kind="rate", params={"host": "h1", "mbit": "5"}))).id == "f3"


@pytest.mark.parametrize("fault, error", [
    (Fault(id="", kind="wobble"), "fault.kind: unknown fault kind 'wobble'"),
    (Fault(id="", kind="loss", params={"host": "h1", "percent": "130"}),
     "fault.params.percent: must be > 0 and <= 100, not '130'"),
    (Fault(id="", kind="loss", params={"host": "h9", "percent": "5"}), "fault.params.host: unknown host 'h9'"),
    (Fault(id="", kind="link-down", params={"host": "h1"}), "fault.duration: a link-down can cut an agent"),
    (Fault(id="", kind="loss", params={"host": "h1", "percent": "5"}, duration=-1), "fault.duration: must be"),
    (Fault(id="", kind="etcd-stop"), "fault.kind: etcd-stop acts on a lab's own processes"),
])
async def test_bad_input_writes_nothing(ctl: Controller, fault: Fault, error: str) -> None:
    e = await unchanged(ctl, ctl.faults.create(fault), InvalidArgument)
    assert str(e).startswith(error), e
    assert (await ctl.faults.list())[0] == []


async def test_conflicting_claims_are_refused(ctl: Controller) -> None:
    await ctl.faults.create(Fault(id="", kind="link-down", params={"host": "h2"}, duration=30))
    e = await unchanged(ctl, ctl.faults.create(Fault(id="", kind="host-crash", params={"host": "h2"}, duration=5)),
                        FailedPrecondition)
    assert "host-crash: conflicts with active fault f1 (link-down h2) on the link of h2" in str(e)
    await ctl.faults.create(Fault(id="", kind="link-down", params={"host": "h3"}, duration=30))


async def test_concurrent_conflicting_creates_let_one_through(ctl: Controller) -> None:
    made = await asyncio.gather(*(ctl.faults.create(Fault(id="", kind="rate", params={"host": "h1", "mbit": "5"}))
                                  for _ in range(8)), return_exceptions=True)
    assert sum(isinstance(m, Fault) for m in made) == 1
    assert all(isinstance(m, FailedPrecondition) for m in made if not isinstance(m, Fault))


async def test_a_duration_is_a_lease_that_takes_record_and_reports(ctl: Controller) -> None:
    f = await ctl.faults.create(Fault(id="", kind="loss", params={"host": "h1", "percent": "5"}, duration=2.5))
    assert _t(f.expires_at) - _t(f.created) == dt.timedelta(seconds=2.5)
    kv = await ctl.store.get(ctl.ctx.keys.fault(f.id))
    assert kv is not None and kv.lease
    assert ctl.store._leases[kv.lease].ttl == 3  # ceil(2.5)
    await ctl.faults.report(f.id, FaultStatus("h1", "applied"))
    ctl.store.expire_lease(kv.lease)
    with pytest.raises(NotFound, match="^fault: no active fault 'f1'$"):
        await ctl.faults.get(f.id)
    assert (await ctl.store.range(ctl.ctx.keys.fault_statuses))[0] == []


async def test_reports_only_from_targets_and_only_changes(ctl: Controller) -> None:
    f = await ctl.faults.create(Fault(id="", kind="partition", params={"hosts": "h1", "from": "h2"}))
    await ctl.faults.report(f.id, FaultStatus("h1", "failed", "this kernel has no sch_netem"))
    got = await ctl.faults.get(f.id)
    assert [(s.host, s.state, s.reason) for s in got.status] == [
        ("h1", "failed", "this kernel has no sch_netem"), ("h2", "pending", "")]
    assert got.status[0].at
    before = await ctl.store.revision()
    await ctl.faults.report(f.id, FaultStatus("h1", "failed", "this kernel has no sch_netem"))
    assert await ctl.store.revision() == before  # said already: nothing written
    e = await unchanged(ctl, ctl.faults.report(f.id, FaultStatus("h3", "applied")), InvalidArgument)
    assert str(e) == "status.host: 'h3' is not a target of fault f1"
    await unchanged(ctl, ctl.faults.report(f.id, FaultStatus("h1", "sideways")), InvalidArgument)
    await unchanged(ctl, ctl.faults.report("f9", FaultStatus("h1", "applied")), NotFound)
    await unchanged(ctl, ctl.faults.report("x1", FaultStatus("h1", "applied")), InvalidArgument)


async def test_delete_takes_the_reports_with_it(ctl: Controller) -> None:
    f = await ctl.faults.create(Fault(id="", kind="loss", params={"host": "h1", "percent": "5"}, duration=60))
    await ctl.faults.report(f.id, FaultStatus("h1", "applied"))
    await ctl.faults.delete(f.id)
    assert (await ctl.store.range(ctl.ctx.keys.fault_statuses))[0] == []
    assert (await ctl.store.range(ctl.ctx.keys.faults))[0] == []
    await unchanged(ctl, ctl.faults.delete(f.id), NotFound)


async def test_watch_carries_faults_without_status(ctl: Controller) -> None:
    f = await ctl.faults.create(Fault(id="", kind="loss", params={"host": "h1", "percent": "5"}))
    await ctl.faults.report(f.id, FaultStatus("h1", "applied"))
    it = ctl.watcher.watch()
    snap = await it.__anext__()
    assert [(x.id, x.status) for x in snap.faults] == [("f1", ())]
    g = await ctl.faults.create(Fault(id="", kind="rate", params={"host": "h2", "mbit": "5"}))
    await ctl.faults.report(g.id, FaultStatus("h2", "applied"))  # a report: no change on the stream
    await ctl.faults.delete(f.id)
    seen = []
    while len(seen) < 2:
        batch = await asyncio.wait_for(it.__anext__(), 5)
        seen += [(c.kind, c.obj.id) for c in batch.changes]
    assert seen == [("put", "f2"), ("delete", "f1")]
    await it.aclose()


def test_hosts_may_not_create_or_delete_faults_but_report_as_themselves() -> None:
    h1 = Identity("host", "h1")
    for method in ("CreateFault", "DeleteFault"):
        with pytest.raises(PermissionDenied, match=r"^fault: host 'h1' may not .* faults \(admin only\)$"):
            authorize(h1, method, SimpleNamespace())
    authorize(h1, "ReportFaultStatus", SimpleNamespace(status=SimpleNamespace(host="h1")))
    with pytest.raises(PermissionDenied, match="^host: certificate is for 'h1', not 'h2'$"):
        authorize(h1, "ReportFaultStatus", SimpleNamespace(status=SimpleNamespace(host="h2")))
    for method in ("GetFault", "ListFaults"):
        authorize(h1, method, SimpleNamespace())
