"""Host faults as agent state (agent/hostfaults.py, fault_nft.py, faultkeeper.py) against
the FakeKernel: rendered per side and direction, planned with the faults' ids as reasons,
adopted after a restart with zero writes, removed when the fault goes or its time runs
out, a delay refused where the kernel has no netem (failed, for good, the rest goes on),
the underlay taken down and brought up with its routes, and the journal that a
restarted agent enforces before it hears the controller."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from vxlab import faultkinds
from vxlab.agent import fault_nft
from vxlab.agent.faultkeeper import FaultKeeper, journal_path
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.kernel import FAULT_IFB, NETEM_MISSING, Qdisc, Route
from vxlab.agent.reconciler import Reconciler
from vxlab.model import Change, Fault, WatchBatch

from test_reconciler import ME, snapshot

HOSTS = {"h1": "172.30.0.11", "h2": "172.30.0.12", "h3": "172.30.0.13"}
T0 = 1_700_000_000.0


def fault(fid: str, kind: str, *, duration: float = 0.0, created: float = T0, **params: object) -> Fault:
    p = faultkinds.validate(kind, params, hosts=set(HOSTS))
    at = dt.datetime.fromtimestamp(created, dt.timezone.utc)
    end = (at + dt.timedelta(seconds=duration)).isoformat().replace("+00:00", "Z") if duration else ""
    return Fault(fid, kind, faultkinds.encode(kind, p), tuple(faultkinds.KINDS[kind].targets(p)), duration, end,
                 at.isoformat())


class Agent:
    """A reconciler and a fault keeper over one FakeKernel, as the runner drives them."""

    def __init__(self, k: FakeKernel, journal: Path | None = None, clock: list[float] | None = None) -> None:
        self.k, self.clock = k, clock or [T0]
        self.r = Reconciler(k, ME, underlay_dev="eth0")
        self.keeper = FaultKeeper("h1", journal=journal, clock=lambda: self.clock[0])
        self.state = snapshot()

    def put(self, *faults: Fault) -> None:
        self.state.apply(WatchBatch(revision=self.state.revision + 1, changes=tuple(Change("put", f) for f in faults)))

    def drop(self, *ids: str) -> None:
        self.state.apply(WatchBatch(revision=self.state.revision + 1,
                                    changes=tuple(Change("delete", Fault(i)) for i in ids)))

    def run(self, *, full: bool = False, synced: bool = True):  # type: ignore[no-untyped-def]
        want, _ = self.keeper.plan(self.state.faults if synced else None, underlay_dev="eth0", hosts=HOSTS,
                                   control=("192.0.2.7",), control_note="192.0.2.7:7070")
        res = self.r.reconcile(self.state, full=full, faults=want) if synced else self.r.reconcile_faults(want)
        self.again = self.keeper.settle(res)
        return res


def rules(k: FakeKernel) -> list[str]:
    assert k.fault_table is not None
    return [line.strip() for line in k.fault_table.script.splitlines() if "drop" in line]


def test_a_partition_drops_both_ways_on_each_side_and_is_adopted() -> None:
    k = FakeKernel()
    a = Agent(k)
    a.run(full=True)
    a.put(fault("f1", "partition", hosts="h1", **{"from": "h2,h3"}))
    res = a.run()
    assert [x.describe() for x in res.actions] == [
        "+ add fault-table inet vxlab_fault in (agent namespace): f1: create (4 rules)"]
    into, out = ('ip saddr { 172.30.0.12, 172.30.0.13 } counter drop comment "f1"',
                 'ip daddr { 172.30.0.12, 172.30.0.13 } counter drop comment "f1"')
    assert rules(k) == [into, out, out, into]  # input, output, forward
    assert a.keeper.outbox["f1"].state == "applied"
    for full in (False, True):
        assert a.run(full=full).writes == {}
    restarted = Agent(k)
    restarted.state = a.state
    assert restarted.run(full=True).writes == {}  # adopted: zero writes
    a.drop("f1")
    res = a.run()
    assert res.writes == {"delete_fault_table": 1} and k.fault_table is None


def test_oneway_and_the_control_side() -> None:
    k = FakeKernel()
    a = Agent(k)
    a.put(fault("f1", "partition", hosts="h2", oneway=True, **{"from": "h1"}))  # h2 -> h1: h1 drops its input
    a.run(full=True)
    assert rules(k) == ['ip saddr { 172.30.0.12 } counter drop comment "f1"'] * 2
    a.put(fault("f2", "partition", hosts="h1", duration=5, **{"from": "control"}))
    a.run()
    assert 'ip daddr { 192.0.2.7 } counter drop comment "f2"' in rules(k)


def test_a_control_side_with_nothing_to_cut_fails_with_the_reason() -> None:
    k = FakeKernel()
    a = Agent(k)
    a.put(fault("f1", "partition", hosts="h1", duration=5, **{"from": "control"}))
    want, out = a.keeper.plan(a.state.faults, underlay_dev="eth0", hosts=HOSTS, control=(), control_note="unix:/s")
    a.keeper.settle(a.r.reconcile(a.state, full=True, faults=want))
    assert k.fault_table is None
    assert a.keeper.outbox["f1"].state == "failed" and "no IPv4 address to cut (unix:/s)" in a.keeper.outbox["f1"].reason


def test_loss_by_direction_on_the_underlay() -> None:
    k = FakeKernel()
    a = Agent(k)
    a.put(fault("f3", "loss", host="h1", percent=30, direction="both"))
    a.run(full=True)
    assert rules(k) == [f'{key} "eth0" numgen random mod 10000 < 3000 counter drop comment "f3"'
                        for key in ("iifname", "oifname", "oifname", "iifname")]  # input, output, forward
    a.put(fault("f3", "loss", host="h1", percent=100, duration=5))  # every packet: no numgen (mod 10000 < 10000)
    a.run()
    assert rules(k) == ['oifname "eth0" counter drop comment "f3"'] * 2


def test_rate_both_ways_through_the_ifb_and_gone_with_the_fault() -> None:
    k = FakeKernel()
    a = Agent(k)
    a.run(full=True)
    a.put(fault("f1", "rate", host="h1", mbit=10))
    res = a.run()
    assert [x.describe() for x in res.actions] == [
        "+ add fault-ingress vxifb0 (the ingress of eth0) in (agent namespace): f1: ingress rate or delay",
        "+ add fault-qdisc root qdisc of eth0 in (agent namespace): f1: tbf 10 Mbit/s",
        "+ add fault-qdisc root qdisc of vxifb0 in (agent namespace): f1: tbf 10 Mbit/s"]
    assert k.qdiscs == {"eth0": Qdisc("tbf", rate=1_250_000), FAULT_IFB: Qdisc("tbf", rate=1_250_000)} and k.ingress
    restarted = Agent(k)
    restarted.state = a.state
    assert restarted.run(full=True).writes == {}
    a.drop("f1")
    res = a.run()
    assert res.writes == {"delete_fault_qdisc": 1, "delete_fault_ingress": 1} and k.qdiscs == {} and not k.ingress


def test_a_delay_without_netem_fails_for_good_and_the_rest_goes_on() -> None:
    k = FakeKernel()
    a = Agent(k)
    a.put(fault("f1", "delay", host="h1", ms=10, direction="both"), fault("f2", "loss", host="h1", percent=5))
    res = a.run(full=True)
    assert not res.ok and a.again  # the delay failed: a pass without it is due
    assert (a.keeper.outbox["f1"].state, a.keeper.outbox["f1"].reason) == ("failed", NETEM_MISSING)
    assert a.keeper.outbox["f2"].state == "applied" and k.fault_table is not None
    res = a.run()
    assert res.ok and not k.ingress and k.qdiscs == {}  # the IFB made for it went again
    assert a.run(full=True).actions == [] and a.keeper.statuses() == {"f1": "failed", "f2": "applied"}


def test_the_local_deadline_heals_and_says_so() -> None:
    k = FakeKernel()
    a = Agent(k)
    a.put(fault("f1", "loss", host="h1", percent=5, duration=4))
    a.run(full=True)
    assert k.fault_table is not None and a.keeper.deadline() == T0 + 4
    a.clock[0] = T0 + 4  # the controller may be gone: the agent's clock is enough
    a.run()
    assert k.fault_table is None and a.keeper.outbox["f1"].state == "healed" and a.keeper.deadline() is None


def test_link_down_keeps_the_routes_and_gives_them_back(tmp_path: Path) -> None:
    k = FakeKernel()
    k.own.routes = {Route("default", "172.30.0.1", "eth0")}
    journal = journal_path(str(tmp_path / "agent-h1.json"))
    a = Agent(k, journal)
    a.put(fault("f1", "link-down", host="h1", duration=30))
    res = a.run(full=True)
    assert [x.describe() for x in res.actions if x.kind.startswith("fault")] == [
        "~ update fault-link eth0 in (agent namespace): f1: down"]
    assert k.down and k.own.routes == set()
    saved = json.loads(journal.read_text())  # type: ignore[union-attr]
    assert saved["taken_down"] == [["default", "172.30.0.1", "eth0"]] and [f["id"] for f in saved["faults"]] == ["f1"]
    restarted = Agent(k, journal)
    restarted.state = a.state
    assert restarted.run(full=True).writes == {}  # restarted: adopted
    a.drop("f1")
    res = a.run()
    assert res.writes == {"set_underlay_state": 1, "add_route": 1} and not k.down
    assert k.own.routes == {Route("default", "172.30.0.1", "eth0")} and a.keeper.taken_down is None


def test_a_restarted_agent_enforces_its_journal_before_a_snapshot(tmp_path: Path) -> None:
    k = FakeKernel()
    journal = journal_path(str(tmp_path / "agent-h1.json"))
    clock = [T0]
    a = Agent(k, journal, clock)
    a.put(fault("f1", "link-down", host="h1", duration=10), fault("f2", "partition", hosts="h1", **{"from": "h2"}))
    a.run(full=True)
    k.down = False  # a reboot, say: the agent's state is the journal alone
    b = Agent(k, journal, clock)
    assert b.keeper.pending
    res = b.run(synced=False)
    assert k.down and res.writes == {"set_underlay_state": 1}  # enforced without the controller; the
    assert k.fault_table is not None and b.keeper.failed == {}  # partition kept: its peers' addresses are noted
    clock[0] = T0 + 10
    b.run(synced=False)
    assert not k.down and k.fault_table is not None  # the link-down healed at its deadline, the partition has none


def test_kills_are_carried_out_once(tmp_path: Path) -> None:
    k = FakeKernel()
    journal = journal_path(str(tmp_path / "agent-h1.json"))
    a = Agent(k, journal)
    a.put(fault("f1", "host-crash", host="h1", duration=10))
    a.run(full=True)
    assert a.keeper.kills() == ["f1"] and not k.down  # not before the agent reported and noted it
    a.keeper.kill("f1", underlay=None)
    a.run()
    assert k.down and a.keeper.kills() == []
    b = Agent(k, journal)
    b.state = a.state
    b.run(full=True)
    assert b.keeper.kills() == [] and k.down  # a restarted agent does not kill itself again


def test_the_table_round_trips_through_its_parser() -> None:
    table = fault_nft.build([("output", 'ip daddr { 10.0.0.1 } counter drop comment "f1"')])
    assert table is not None and table.rules == 1
    listing = {"nftables": [
        {"table": {"family": "inet", "name": "vxlab_fault"}},
        *({"chain": {"name": c, "type": "filter", "hook": c, "policy": "accept"}} for c in fault_nft.CHAINS),
        {"rule": {"chain": "input", "comment": table.tag, "expr": []}},
        {"rule": {"chain": "output", "comment": "f1", "expr": []}}]}
    assert fault_nft.parse(json.dumps(listing)) == table
    listing["nftables"].pop()  # a rule deleted by hand
    assert fault_nft.parse(json.dumps(listing)) is None
