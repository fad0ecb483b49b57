"""Timed experiments: bring a lab up, probe it, inject faults on a timeline, record it all.

`run(scenario, out=DIR)` brings the scenario's lab up (or applies the difference to it
when it runs already), starts the probes (ICMP at >= 10 Hz, optional iperf3 TCP), then
applies and heals each fault at its time. For faults that kill a host's agent
(host-crash, agent-kill) a watcher measures how long the peers took to purge the host's
FDB entries and, after the heal, to program them again. At the end every fault still
active is healed, the lab is taken down if the experiment brought it up (unless
`keep`), and the results are written by vxlab.lab.report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vxlab import faultkinds
from vxlab.lab import faultspec, observe
from vxlab.lab.lab import Lab
from vxlab.lab.probe import Pinger, Throughput
from vxlab.lab.procs import LabError
from vxlab.lab.scenario import ProbeSpec, Scenario, ScenarioError

WATCHED = ("host-crash", "agent-kill")  # faults whose host's lease can expire
LEASE_MARGIN = 2.0  # seconds an agents' fault outlives its heal time (its lease: a safety net)


@dataclass
class Pair:
    src: str
    dst: str
    network: str
    ip: str
    samples: list[tuple[float, float | None]] = field(default_factory=list)  # (t, rtt ms | None)
    rates: list[tuple[float, float]] = field(default_factory=list)           # (t, Mbit/s)
    tcp_error: str = ""

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"


@dataclass
class FaultRun:
    id: str
    kind: str
    description: str
    host: str
    start: float                      # seconds since the probes started
    end: float | None = None          # when healed
    purged_after: float | None = None     # WATCHED: peers had no entry towards the host
    restored_after: float | None = None   # WATCHED: every peer had them again, after the heal
    error: str = ""


@dataclass
class Result:
    scenario: Scenario
    started: float                    # wall clock (time.time()) at t = 0
    duration: float
    lease_ttl: int
    pairs: list[Pair]
    faults: list[FaultRun]


def resolve(lab: Lab, sc: Scenario) -> list[Pair]:
    """The probes as (src, dst, network, address), from the controller's endpoints."""
    eps = lab.call(lambda c: c.list_endpoints())
    nets: dict[str, dict[str, str]] = {}
    for e in eps:
        nets.setdefault(e.name, {})[e.network] = e.ip
    specs = list(sc.probes)
    if sc.all_pairs:  # every pair sharing a network, once, unless a probe names it already
        named = {frozenset((p.src, p.dst)) for p in specs}
        names = sorted(nets)
        specs += [ProbeSpec(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                  if set(nets[a]) & set(nets[b]) and frozenset((a, b)) not in named]
    pairs = []
    for i, p in enumerate(specs):
        shared = sorted(set(nets.get(p.src, {})) & set(nets.get(p.dst, {})))
        if p.network:
            shared = [n for n in shared if n == p.network]
        if not shared:
            raise ScenarioError(f"probes[{i}]", f"{p.src!r} and {p.dst!r} share no network"
                                + (f" named {p.network!r}" if p.network else ""))
        pairs.append(Pair(p.src, p.dst, shared[0], nets[p.dst][shared[0]]))
    return pairs


def run(sc: Scenario, *, out: Path | None = None, keep: bool = False,
        progress: Callable[[str], None] = lambda s: None) -> Result:
    lab = Lab(sc.topology.name)
    was_running = lab.running()
    progress(f"lab {lab.name}: up")
    lab.up(sc.topology)
    try:
        result = _probe_and_inject(lab, sc, progress)
    finally:
        for f in lab.faults():
            try:
                lab.heal(f.id)
            except LabError:
                pass
        if not was_running and not keep:
            progress(f"lab {lab.name}: down")
            lab.down()
    if out is not None:
        from vxlab.lab import report

        report.write(result, out)
    return result


def _probe_and_inject(lab: Lab, sc: Scenario, progress: Callable[[str], None]) -> Result:
    pairs = resolve(lab, sc)
    specs = {(p.src, p.dst): p for p in sc.probes}
    pingers = [Pinger(lab.namespace_of(p.src), p.ip,
                      interval=specs.get((p.src, p.dst), ProbeSpec(p.src, p.dst)).interval) for p in pairs]
    tcps = {i: Throughput(lab.namespace_of(p.src), lab.namespace_of(p.dst), p.ip, seconds=sc.duration,
                          port=5201 + i) for i, p in enumerate(pairs) if specs.get((p.src, p.dst), ProbeSpec("", "")).tcp}
    t0, wall0 = time.monotonic(), time.time()
    for pg in pingers:
        pg.start()
    for t in tcps.values():
        t.start()
    runs: list[FaultRun] = []
    actions = sorted([(e.at, 0, i) for i, e in enumerate(sc.timeline)]
                     + [(e.at + e.duration, 1, i) for i, e in enumerate(sc.timeline) if e.duration is not None])
    by_event: dict[int, tuple[Any, FaultRun, _Watcher | None]] = {}
    for at, heal, i in actions:
        if at >= sc.duration:
            continue
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        e = sc.timeline[i]
        if not heal:
            # The agents' faults get a lease a little longer than their time here: the run
            # heals them on time, and a run that dies leaves no fault behind.
            lease = (e.duration if e.duration is not None else sc.duration - e.at) + LEASE_MARGIN
            by_event[i] = _apply(lab, e.kind, e.params, t0, progress, lease=lease)
            runs.append(by_event[i][1])
        elif i in by_event:
            _heal(lab, *by_event[i], t0=t0, progress=progress)
    time.sleep(max(0.0, t0 + sc.duration - time.monotonic()))
    for i, entry in by_event.items():
        if entry[1].end is None:
            _heal(lab, *entry, t0=t0, progress=progress)
    progress("collecting samples")
    for p, pg in zip(pairs, pingers):
        p.samples = [(s.t - t0, s.rtt_ms) for s in pg.stop()]
    for i, t in tcps.items():
        t.join()
        pairs[i].rates = [(r.t - t0, r.mbit) for r in t.rates]
        pairs[i].tcp_error = t.error
    for entry in by_event.values():
        if entry[2] is not None:
            entry[2].stop()
    return Result(sc, wall0, sc.duration, lab.lease_ttl, pairs, runs)


def _apply(lab: Lab, kind: str, params: dict[str, Any], t0: float, progress: Callable[[str], None], *,
           lease: float) -> tuple[Any, FaultRun, _Watcher | None]:
    host = params.get("host", "")
    watcher = _Watcher(lab, host) if kind in WATCHED else None
    start = time.monotonic() - t0
    try:
        f = lab.add_fault(kind, duration=lease if faultkinds.KINDS[kind].runs == faultkinds.AGENT else None,
                          **params)
    except LabError as err:
        run = FaultRun("-", kind, faultspec.describe(kind, params), host, start, start, error=str(err))
        progress(f"t={start:5.1f}s  FAILED {run.description}: {err}")
        return None, run, None
    run = FaultRun(f.id, kind, f.describe(), host, start)
    progress(f"t={start:5.1f}s  + {run.description} [{f.id}]")
    if watcher is not None:
        watcher.start(t0 + start, run)
    return f, run, watcher


def _heal(lab: Lab, fault: Any, run: FaultRun, watcher: _Watcher | None, *, t0: float,
          progress: Callable[[str], None]) -> None:
    if fault is None:
        return
    at = time.monotonic()
    try:
        lab.heal(fault.id)
    except LabError as err:
        run.error = str(err)
    run.end = at - t0
    progress(f"t={run.end:5.1f}s  - healed {run.description} [{fault.id}]")
    if watcher is not None:
        watcher.healed(at)


class _Watcher:
    """Polls the peers' FDB entries towards one host: purge time, restore time."""

    def __init__(self, lab: Lab, host: str) -> None:
        self.lab, self.host = lab, host
        self.baseline = sum(observe.vtep_entries(lab, host).values())
        self._healed_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, started: float, run: FaultRun) -> None:
        self._thread = threading.Thread(target=self._loop, args=(started, run), daemon=True)
        self._thread.start()

    def healed(self, at: float) -> None:
        self._healed_at = at

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self, started: float, run: FaultRun) -> None:
        if not self.baseline:
            return
        while not self._stop.wait(0.05):
            counts = observe.vtep_entries(self.lab, self.host)
            now = time.monotonic()
            if run.purged_after is None and self._healed_at is None and not any(counts.values()):
                run.purged_after = now - started
            if self._healed_at is not None and run.purged_after is not None and all(counts.values()):
                run.restored_after = now - self._healed_at
                return
            if self._healed_at is not None and run.purged_after is None:
                return  # never purged: nothing to restore
