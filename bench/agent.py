"""Agent benchmark: Watch event -> kernel programmed, with 100 and 1000 remote endpoints;
agent RSS and idle CPU.

A one-host lab (a real agent in a namespace) plus phantom remote hosts that the bench
registers and keeps alive itself. For each level it fills the network with remote
endpoints, waits for convergence, then creates endpoints one at a time and measures
from the create's return until the agent's status file reports that revision
programmed (the agent writes it right after the kernel calls). Writes agent.json.
Targets (issue 3): p99 <= 20 ms per event at 1000 remote endpoints; RSS <= 60 MB;
idle CPU ~ 0.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from vxlab.bench import machine
from vxlab.client import Client
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse
from vxlab.model import Endpoint, Host

TOPOLOGY = """name: {name}
hosts: 1
networks:
  - {{name: blue, subnet: 10.50.0.0/16}}
containers:
  - {{name: c0, host: h1, networks: [blue]}}
"""
PHANTOMS = 20


def _proc_stat(pid: int) -> tuple[float, int]:
    """(cpu seconds, rss bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


async def _keepalive(c: Client, leases: dict[str, int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for name, lease in list(leases.items()):
            leases[name], _, _ = await c.keepalive(name, lease)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def _measure(lab: Lab, *, levels: list[int], samples: int) -> list[dict[str, Any]]:
    out = []
    async with lab.client(timeout=10.0) as c:
        leases = {}
        for i in range(PHANTOMS):
            _, leases[f"r{i}"], _ = await c.register_host(Host(name=f"r{i}", underlay_ip=f"172.30.1.{i + 10}"))
        stop = asyncio.Event()
        ka = asyncio.create_task(_keepalive(c, leases, stop))
        made = 0
        for level in levels:
            sem = asyncio.Semaphore(32)

            async def make(i: int) -> None:
                async with sem:
                    await c.create_endpoint(Endpoint(name=f"e{i}", network="blue", host=f"r{i % PHANTOMS}"))
            await asyncio.gather(*(make(i) for i in range(made, level)))
            made = level
            await asyncio.to_thread(lab.wait_converged, timeout=120)
            lat = []
            for j in range(samples):
                await c.create_endpoint(Endpoint(name=f"s{level}-{j}", network="blue", host=f"r{j % PHANTOMS}"))
                t0 = time.perf_counter()
                rev = await c.revision()
                while (st := lab.agent_status("h1")).applied_revision < rev:
                    await asyncio.sleep(0.0005)
                lat.append(time.perf_counter() - t0)
                if lat[-1] > 0.025 and os.environ.get("VXLAB_BENCH_DEBUG"):
                    print(f"slow {lat[-1] * 1000:.1f} ms: last pass {st.last_pass}", flush=True)
            pid = lab.processes()["agent/h1"].pid
            cpu0, rss = _proc_stat(pid)
            await asyncio.sleep(10)
            cpu1, _ = _proc_stat(pid)
            out.append({"remote_endpoints": level, "samples": samples,
                        "p50_ms": round(machine.percentile(lat, 50) * 1000, 2), "p99_ms": round(machine.percentile(lat, 99) * 1000, 2),
                        "mean_ms": round(statistics.fmean(lat) * 1000, 2),
                        "p90_ms": round(machine.percentile(lat, 90) * 1000, 2), "max_ms": round(max(lat) * 1000, 2),
                        "agent_rss_mb": round(rss / 2**20, 1), "agent_idle_cpu_pct": round((cpu1 - cpu0) / 10 * 100, 2)})
        stop.set()
        await ka
    return out


def run(out_dir: Path, *, levels: list[int] | None = None, samples: int = 100) -> dict[str, Any]:
    levels = levels or [100, 1000]
    name = "vxbench"
    with tempfile.TemporaryDirectory(prefix="vxlab-bench-"):
        lab = Lab(name)
        lab.down()
        try:
            lab.up(parse(TOPOLOGY.format(name=name)))
            rows = asyncio.run(_measure(lab, levels=levels, samples=samples))
        finally:
            lab.down()
    result = {
        "benchmark": "agent: event -> kernel programmed (end to end: create returned -> agent status shows it)",
        "target": "p99 <= 20 ms at 1000 remote endpoints; RSS <= 60 MB; idle CPU ~ 0",
        "machine": machine.describe(), "levels": rows,
    }
    result["path"] = str(machine.write(out_dir, "agent", result))
    return result
