"""Timed experiments: probe a deployment, inject faults on a timeline, record it all.

One code path, in a lab and against real hosts: `execute(sc, site)` plans the scenario
against the controller (vxlab.lab.expplan: pairs, steps, refusals), starts the probes
from the agents (a ping stream per pair from its source container's host, iperf3
through the agents for `tcp: true`; vxlab.lab.expsite), injects and heals each entry at
its time (the agents' kinds through the fault API, `for:` their lease, the heal their
delete; a lab's own kinds through its runner), and watches the control plane
(vxlab.lab.expwatch). Each ping stream is asked for the rest of the run; one whose
agent is cut from the controller goes on in the agent, which hands its samples over
when its ops channel is back (after the heal; the runner waits up to CATCH_UP for them
after the run). A probe whose op goes (its agent restarts) is started again; the span
without samples is reported as unobserved, never as lost.

`run(sc, out=DIR)` does it in the scenario's lab: brings it up (or applies the
difference when it runs already), and at the end heals whatever is left and takes it
down if it brought it up (unless `keep`). `run_on(sc, client, where=…)` does it against
a deployment (`--controller ADDR --pki DIR`, no lab on this machine). The results are
written by vxlab.lab.report.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vxlab import faultkinds, ops
from vxlab.client import Client
from vxlab.errors import VxError
from vxlab.lab import expplan
from vxlab.lab.expplan import Pair, Step
from vxlab.lab.expsite import Site
from vxlab.lab.expwatch import FaultRun, Watcher, forwarding
from vxlab.lab.procs import LabError
from vxlab.lab.scenario import Scenario, ScenarioError

__all__ = ["FaultRun", "Pair", "Result", "execute", "run", "run_on"]
Progress = Callable[[str], None]
RETRY = 0.25  # seconds before a probe whose op ended is started again
CATCH_UP = 15.0  # seconds, after the run, for the samples of agents that were cut from the controller


@dataclass
class Result:
    scenario: Scenario
    started: float                    # wall clock (time.time()) at t = 0
    duration: float
    lease_ttl: int
    pairs: list[Pair]
    faults: list[FaultRun]
    where: str = ""                   # "lab NAME" or "controller ADDR"


def run(sc: Scenario, *, out: Path | None = None, keep: bool = False, progress: Progress = lambda s: None) -> Result:
    """In the scenario's lab (see the module's docstring)."""
    from vxlab.lab.lab import Lab

    if sc.topology is None:
        raise ScenarioError("lab", "required to run in a lab: a topology file or an inline topology (against a "
                                   "deployment: --controller ADDR --pki DIR)")
    lab = Lab(sc.topology.name)
    was_running = lab.running()
    progress(f"lab {lab.name}: up")
    lab.up(sc.topology)
    try:
        async def go() -> Result:
            async with lab.client() as client:
                return await execute(sc, Site(client, where=f"lab {lab.name}", lab=lab), progress=progress)
        result = asyncio.run(go())
    finally:
        with contextlib.suppress(LabError):
            lab.heal()
        if not was_running and not keep:
            progress(f"lab {lab.name}: down")
            lab.down()
    _write(result, out)
    return result


def run_on(sc: Scenario, client: Client, *, where: str, out: Path | None = None,
           progress: Progress = lambda s: None) -> Result:
    """Against the deployment behind `client` (no lab); call from no event loop."""
    async def go() -> Result:
        site = Site(client, where=where)
        try:
            return await execute(sc, site, progress=progress)
        finally:
            await client.close()
    result = asyncio.run(go())
    _write(result, out)
    return result


def _write(result: Result, out: Path | None) -> None:
    if out is not None:
        from vxlab.lab import report

        report.write(result, out)


async def execute(sc: Scenario, site: Site, *, progress: Progress = lambda s: None) -> Result:
    hosts = await site.hosts()
    plan = expplan.plan(sc, endpoints=await site.endpoints(), hosts=[h.name for h in hosts], lab=site.lab is not None)
    t0 = time.monotonic()
    watcher = Watcher(site, t0=t0)
    await watcher.prepare()
    t0 = watcher.t0 = time.monotonic()
    wall0 = time.time() - (time.monotonic() - t0)
    stop = asyncio.Event()
    probes = [asyncio.create_task(_ping(site, p, wall0, stop, end=t0 + sc.duration)) for p in plan.pairs]
    probes += [asyncio.create_task(_iperf(site, p, wall0, seconds=sc.duration, port=5201 + i))
               for i, p in enumerate(plan.pairs) if p.tcp]
    watching = asyncio.create_task(watcher.run())
    actions = sorted([(s.at, 0, s) for s in plan.steps]
                     + [(s.heal_at, 1, s) for s in plan.steps if s.heal_at is not None], key=lambda a: a[:2])
    made: dict[int, FaultRun] = {}
    try:
        for at, heal, step in actions:
            if at >= sc.duration:
                continue
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            if not heal:
                made[step.index] = await _inject(site, step, t0, progress)
                watcher.runs.append(made[step.index])
            elif step.index in made:
                await _heal(site, made[step.index], t0, progress)
        await asyncio.sleep(max(0.0, t0 + sc.duration - time.monotonic()))
    finally:
        for r in made.values():
            if r.end is None and not r.error:
                await _heal(site, r, t0, progress)
        stop.set()
        progress("collecting samples")
        pings = [t for t in probes if t.get_name() == "ping"]
        if pings:  # their ops end with the run; an agent cut from the controller hands its samples over later
            await asyncio.wait(pings, timeout=CATCH_UP)
        for task in pings:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        watcher.stop()
        await watching
    for p in plan.pairs:
        p.samples.sort(key=lambda x: x[0])  # a probe started again may overlap the one before
    steps = {s.index: s for s in plan.steps}
    for i, r in made.items():
        r.kept_forwarding = forwarding(r, steps[i].params, plan.pairs)
    ttl = max((h.lease_ttl for h in hosts), default=0)
    return Result(sc, wall0, sc.duration, ttl, plan.pairs, [made[i] for i in sorted(made)], site.where)


async def _inject(site: Site, step: Step, t0: float, progress: Progress) -> FaultRun:
    start = time.monotonic() - t0
    run = FaultRun("-", step.kind, faultkinds.describe(step.kind, dict(step.params)), step.targets, round(start, 3),
                   via=step.via, lease=step.lease)
    try:
        run.id, run.description = await site.inject(step)
    except (VxError, LabError) as err:
        run.end, run.error = run.start, getattr(err, "message", str(err))
        progress(f"t={start:5.1f}s  FAILED {run.description}: {run.error}")
        return run
    lease = f", lease {step.lease:g}s" if step.via == expplan.API else ""
    progress(f"t={start:5.1f}s  + {run.description} [{run.id}{lease}]")
    return run


async def _heal(site: Site, run: FaultRun, t0: float, progress: Progress) -> None:
    at = time.monotonic() - t0
    try:
        run.healed_by = await site.heal(run.id)
    except (VxError, LabError) as err:
        run.error = getattr(err, "message", str(err))
    run.end = round(at, 3)
    how = " (its lease had run out)" if run.healed_by == "lease" else ""
    progress(f"t={at:5.1f}s  - healed {run.description} [{run.id}]{how}")


async def _ping(site: Site, pair: Pair, wall0: float, stop: asyncio.Event, *, end: float) -> None:
    """The pair's ping stream from its source's agent until the run's `end` (monotonic),
    started again whenever it ends early. Samples its agent held while it was cut from
    the controller arrive after a Resumed: their span goes to `pair.held`."""
    asyncio.current_task().set_name("ping")  # type: ignore[union-attr]
    while not stop.is_set() and (left := end - time.monotonic()) > 0:
        pending, dropped, first = 0, 0, None
        try:
            async for event in site.ping(pair, count=math.ceil(left / pair.interval)):
                if isinstance(event, ops.Resumed):
                    pending, dropped, first = event.held, event.dropped, None
                elif isinstance(event, ops.PingSample):
                    t = round(event.sent - wall0, 4)
                    pair.samples.append((t, event.rtt_ms))
                    if pending:
                        first, pending = t if first is None else first, pending - 1
                        if not pending:
                            pair.held.append((first, t, dropped))
        except VxError as err:
            pair.probe_error = err.message
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETRY)


async def _iperf(site: Site, pair: Pair, wall0: float, *, seconds: float, port: int) -> None:
    """iperf3 through the agents for the whole run; each interval at its end, counted from
    when it was asked for (the server's start-up, ~0.1 s, is the error: the agents'
    clocks need not match ours)."""
    asked = time.time() - wall0
    try:
        report = await site.iperf(pair, seconds=seconds, port=port)
    except VxError as err:
        pair.tcp_error = err.message
        return
    intervals = [iv["sum"] for iv in report.get("intervals", [])]
    pair.rates = [(round(asked + s["end"], 3), s["bits_per_second"] / 1e6) for s in intervals]
    pair.tcp_error = report.get("error", "")
