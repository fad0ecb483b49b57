"""The experiment runner's planning (vxlab.lab.expplan) and the runner itself over a fake
of our own adapter (vxlab.lab.expsite.Site): no root, no lab, no controller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vxlab import ops
from vxlab.lab import experiment, expplan, expwatch, report, scenario
from vxlab.lab.expplan import Pair, Step
from vxlab.model import Endpoint, Host

EPS = [Endpoint("c1", "blue", "h1", "10.0.0.11"), Endpoint("c2", "blue", "h2", "10.0.0.12"),
       Endpoint("c3", "blue", "h3", "10.0.0.13"), Endpoint("c4", "red", "h3", "10.0.1.14")]
HOSTS = ["h1", "h2", "h3"]


def sc(timeline: list[dict[str, Any]], *, probes: list[Any] | None = None, duration: str = "10s",
       lab: bool = False) -> scenario.Scenario:
    data: dict[str, Any] = {"probes": probes or ["all"], "timeline": timeline, "duration": duration}
    if lab:
        data["lab"] = {"name": "x", "hosts": 3}
    return scenario.parse(data, base=Path("."))


def test_agent_kinds_go_through_the_api_and_for_is_the_lease() -> None:
    p = expplan.plan(sc([{"at": "1s", "fault": {"kind": "loss", "host": "h2", "percent": 20}, "for": "3s"},
                         {"at": "2s", "fault": {"kind": "partition", "hosts": ["h1"], "from": ["h3"]}}]),
                     endpoints=EPS, hosts=HOSTS, lab=False)
    loss, cut = p.steps
    assert (loss.via, loss.lease, loss.heal_at, loss.targets) == ("api", 3.0, 4.0, ("h2",))
    assert (cut.via, cut.heal_at) == ("api", None) and cut.lease == 10 - 2 + expplan.LEASE_MARGIN  # until the end
    assert [(x.name, x.src_host, x.dst_host) for x in p.pairs] == [("c1->c2", "h1", "h2"), ("c1->c3", "h1", "h3"),
                                                                   ("c2->c3", "h2", "h3")]  # c4 shares no network


def test_host_kinds_run_by_the_lab_in_a_lab_and_by_the_agents_without() -> None:
    entry = [{"at": "1s", "fault": {"kind": "host-crash", "host": "h3"}, "for": "2s"}]
    assert expplan.plan(sc(entry, lab=True), endpoints=EPS, hosts=HOSTS, lab=True).steps[0].via == "lab"
    remote = expplan.plan(sc(entry), endpoints=EPS, hosts=HOSTS, lab=False).steps[0]
    assert (remote.via, remote.lease) == ("api", 2.0)


@pytest.mark.parametrize("timeline, probes, error", [
    ([{"at": "1s", "fault": {"kind": "controller-kill"}, "for": "2s"}], None,
     "timeline[0].fault.kind: controller-kill acts on a lab's own processes: it runs only in a lab"),
    ([{"at": "1s", "fault": {"kind": "loss", "host": "h9", "percent": 5}}], None,
     "timeline[0].fault.host: no host 'h9' in this deployment"),
    ([{"at": "1s", "fault": {"kind": "partition", "hosts": ["h1"], "from": ["h7", "control"]}, "for": "1s"}], None,
     "timeline[0].fault.from: no host 'h7' in this deployment"),
    ([], [{"src": "c1", "dst": "c9"}], "probes[0].dst: no container 'c9' in this deployment"),
    ([], [{"src": "c1", "dst": "c4"}], "probes[0]: 'c1' and 'c4' share no network"),
])
def test_refusals_name_the_entry(timeline: list[Any], probes: list[Any] | None, error: str) -> None:
    with pytest.raises(scenario.ScenarioError) as e:
        expplan.plan(sc(timeline, probes=probes), endpoints=EPS, hosts=HOSTS, lab=False)
    assert str(e.value).startswith(error), str(e.value)


def test_a_scenario_without_a_lab_refuses_to_run_in_one() -> None:
    with pytest.raises(scenario.ScenarioError, match="lab: required to run in a lab"):
        experiment.run(sc([]))


class FakeSite:
    """The runner's adapter over a pretend deployment: a partition from the control plane
    makes its hosts' leases expire (the peers then purge them); pings across it are lost."""

    lab = None
    where = "controller fake"

    def __init__(self) -> None:
        self.faults: dict[str, Step] = {}
        self.calls: list[str] = []
        self.cut_at: float | None = None

    def _cut(self) -> set[str]:
        cut: set[str] = set()
        for s in self.faults.values():
            if s.kind == "partition":
                cut |= set(s.params["hosts"])
        return cut

    async def hosts(self) -> list[Host]:
        late = self.cut_at is not None and time.monotonic() - self.cut_at > 0.1
        return [Host(h, f"172.31.0.{i}", alive=not (late and h in self._cut()), lease_ttl=1)
                for i, h in enumerate(HOSTS, 1)]

    async def endpoints(self) -> list[Endpoint]:
        return EPS

    async def inject(self, step: Step) -> tuple[str, str]:
        fid = f"f{len(self.calls) + 1}"
        self.calls.append(f"create {step.kind} lease {step.lease:g}")
        self.faults[fid], self.cut_at = step, time.monotonic()
        return fid, step.kind

    async def heal(self, fault_id: str) -> str:
        self.calls.append(f"delete {fault_id}")
        self.faults.pop(fault_id)
        self.cut_at = None
        return "delete"

    async def ping(self, pair: Pair, *, count: int) -> AsyncIterator[ops.Event]:
        seq = 0
        while seq < count:
            across = (pair.src_host in self._cut()) != (pair.dst_host in self._cut())
            yield ops.PingSample(seq, time.time(), None if across else 0.1)
            seq += 1
            await asyncio.sleep(pair.interval)

    async def iperf(self, pair: Pair, *, seconds: float, port: int) -> dict[str, Any]:
        return {"intervals": [{"sum": {"end": 0.5, "bits_per_second": 8e6}}]}

    async def fdb_towards(self, peer: str, networks: list[str], vtep: str) -> int | None:
        host = HOSTS[int(vtep.rsplit(".", 1)[1]) - 1]
        if peer in self._cut():
            return None  # cut from the controller: its agent cannot answer
        return 0 if host in self._cut() and (await self.hosts())[HOSTS.index(host)].alive is False else 1

    async def drifted(self, host: str) -> int | None:
        return 0


def test_the_runner_over_a_fake_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(expwatch, "POLL", 0.02)
    s = sc([{"at": "0.2s", "fault": {"kind": "partition", "hosts": ["h1", "h2"], "from": ["h3", "control"]},
             "for": "0.6s"}], probes=["all", {"src": "c1", "dst": "c2", "interval": "20ms", "tcp": True}],
           duration="1.2s")
    site = FakeSite()
    result = asyncio.run(experiment.execute(s, site))  # type: ignore[arg-type]
    assert site.calls == ["create partition lease 0.6", "delete f1"]  # for: is the lease; the heal a delete
    [run] = result.faults
    assert (run.id, run.via, run.lease, run.healed_by) == ("f1", "api", 0.6, "delete")
    assert set(run.lease_expired) == {"h1", "h2"} and run.purged_on == ["h3"] and run.purged_after is not None
    assert run.restored_after is not None and run.converged_after is not None
    assert run.kept_forwarding["c1->c2"]["sent"] > 0
    assert run.kept_forwarding["c1->c2"]["sent"] == run.kept_forwarding["c1->c2"]["answered"]
    pairs = {p.name: p for p in result.pairs}
    assert any(r is None for _, r in pairs["c1->c3"].samples) and all(r for _, r in pairs["c1->c2"].samples)
    assert pairs["c1->c2"].rates and result.lease_ttl == 1
    md = report.write(result, tmp_path)["report.md"].read_text()
    assert "inside the side it could still reach: c1->c2 kept forwarding" in md
    assert "its peers (h3) had purged its FDB entries" in md
