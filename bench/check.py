"""`vxlab bench check`: `check` through the agents against the local check it replaced,
in one lab, in one run.

A lab `vxbenchck` of N hosts (default 20) with one container each on one network:
N·(N-1) pairs (380 for 20). Each repetition times both, alternating which goes first:

- agents: `Lab.check()`, what `vxlab check` does now: one probe batch per source host
  through the ops channel, every host at once, raw ICMP sockets in the containers'
  namespaces (lab/check.py `run`);
- local: the same expectations pinged from this machine, `ip netns exec … ping` per
  pair, 16 at a time, a failed must-reach probe tried once more (lab/check.py
  `run_local`, what `check` did before the ops channel).

The first check after `up` (cold neighbour caches) is recorded apart. Target (issue
15): agents ≤ 1.5 × local.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab.bench import machine, summary
from vxlab.lab import check as lab_check
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse

NAME = "vxbenchck"
TARGET = 1.5


def topology(hosts: int) -> str:
    containers = "".join(f"  - {{name: c{i}, host: h{i}, networks: [blue]}}\n" for i in range(1, hosts + 1))
    return f"name: {NAME}\nhosts: {hosts}\nnetworks:\n  - {{name: blue, subnet: 10.86.0.0/16}}\ncontainers:\n{containers}"


def measure(*, hosts: int, reps: int, progress: Callable[[str], None]) -> dict[str, Any]:
    lab = Lab(NAME)
    lab.down()
    times: dict[str, list[float]] = {"agents": [], "local": []}
    cold: dict[str, float] = {}
    try:
        progress(f"check: bringing up {hosts} hosts")
        lab.up(parse(topology(hosts)))
        probes = lab_check.expectations(lab.call(lambda c: c.list_endpoints()))

        def local() -> lab_check.CheckResult:  # as Lab.check did: read the state, then ping
            eps, rules = lab.call(lambda c: asyncio.gather(c.list_endpoints(), c.list_policies()))
            host = {e.name: e.host for e in eps}
            return lab_check.run_local(lab_check.expectations(eps, rules), lambda c: lab.container_ns(host[c], c))
        runs: dict[str, Callable[[], lab_check.CheckResult]] = {"agents": lab.check, "local": local}
        for rep in range(reps + 1):
            order = ("agents", "local") if rep % 2 == 0 else ("local", "agents")
            for kind in order:
                progress(f"check: {kind}, repetition {rep}/{reps}" + (" (cold)" if rep == 0 else ""))
                start = time.perf_counter()
                result = runs[kind]()
                took = time.perf_counter() - start
                if not result.ok:
                    raise RuntimeError(f"{kind} check failed: {[f'{p.src}->{p.dst}' for p in result.failures][:5]}")
                if rep == 0:
                    cold[kind] = round(took, 3)
                else:
                    times[kind].append(took)
    finally:
        lab.down()
    agents, local = summary.median(times["agents"]), summary.median(times["local"])
    over = summary.ratio(agents, local)
    return {"hosts": hosts, "pairs": len(probes), "reps": reps,
            "agents_s": round(agents, 3), "local_s": round(local, 3), "agents_over_local": over,
            "verdict": summary.verdict(over, TARGET, at_most=True), "cold_s": cold,
            "raw_s": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def run(out_dir: Path, *, hosts: int = 20, reps: int = 5, progress: Callable[[str], None] = lambda s: None,
        write: bool = True) -> dict[str, Any]:
    row = measure(hosts=hosts, reps=reps, progress=progress)
    result = {"benchmark": "check over every pair: through the agents (ops channel) vs pinged from this machine",
              "target": f"agents <= {TARGET}x local", "machine": machine.describe(), "vxlab": row}
    if write:
        result["path"] = str(machine.write(out_dir, "check", result))
    return result
