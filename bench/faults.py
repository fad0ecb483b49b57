"""Fault benchmark: a fault created until it is in effect on its hosts, in a 10-host lab.

A lab `vxbenchft` of 10 hosts with one container each. Each sample creates one fault
through the controller (in turn a loss on one host and a partition between two),
with a thread polling the target host's kernel every millisecond for our fault table
(`inet vxlab_fault`, read in-process through the agent's firewall driver), and measures
from the create call until
- the table is in the kernel (`kernel_ms`), and
- every target reported `applied` (`applied_ms`: what `vxlab fault add` waits for, with
  its own polling of the fault's status);
then deletes it and measures until the table is gone again (`healed_ms`).
Writes faults.json. Target (issue 15): applied p99 <= 100 ms.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab import faultapi
from vxlab.agent import fault_nft
from vxlab.agent.nft import Nft
from vxlab.bench import machine, summary
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse

NAME = "vxbenchft"
HOSTS = 10
TABLE = (fault_nft.FAMILY, fault_nft.TABLE)
TOPOLOGY = "name: {name}\nhosts: {hosts}\nnetworks:\n  - {{name: blue, subnet: 10.86.0.0/24}}\ncontainers:\n" + \
    "".join(f"  - {{{{name: c{i}, host: h{i}, networks: [blue]}}}}\n" for i in range(1, HOSTS + 1))


class _Poll(threading.Thread):
    """Until `cond()` holds (every `interval` s): the monotonic time it first did."""

    def __init__(self, cond: Callable[[], bool], *, interval: float = 0.001, timeout: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.cond, self.interval, self.timeout = cond, interval, timeout
        self.at: float | None = None

    def run(self) -> None:
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            if self.cond():
                self.at = time.monotonic()
                return
            time.sleep(self.interval)


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else round((t - t0) * 1000, 2)


async def _samples(lab: Lab, n: int, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    nft = Nft()

    def present(host: str) -> bool:
        return TABLE in nft.read(lab.host_ns(host), (TABLE,))
    rows = []
    async with lab.client(timeout=10.0) as c:
        for i in range(n):
            host, peer = f"h{i % HOSTS + 1}", f"h{(i + 3) % HOSTS + 1}"
            kind, params = ("loss", {"host": host, "percent": 5}) if i % 2 else (
                "partition", {"hosts": host, "from": peer})
            poll = _Poll(lambda: present(host))
            t0 = time.monotonic()
            poll.start()
            made = await faultapi.inject(c, kind, params, duration=60)
            applied = time.monotonic()
            poll.join()
            gone = _Poll(lambda: not present(host))
            t1 = time.monotonic()
            gone.start()
            await c.delete_fault(made.fault.id)
            gone.join()
            rows.append({"kind": kind, "kernel_ms": _ms(poll.at, t0), "applied_ms": _ms(applied, t0),
                         "pending": list(made.pending), "healed_ms": _ms(gone.at, t1)})
            if i % 10 == 9:
                progress(f"faults: {i + 1}/{n}")
            await asyncio.sleep(0.05)
    return rows


def measure(*, samples: int, progress: Callable[[str], None]) -> dict[str, Any]:
    lab = Lab(NAME)
    lab.down()
    try:
        progress(f"faults: a lab of {HOSTS} hosts")
        lab.up(parse(TOPOLOGY.format(name=NAME, hosts=HOSTS)))
        rows = asyncio.run(_samples(lab, samples, progress))
    finally:
        lab.down()
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def of(key: str) -> dict[str, Any]:
        return summary.dist([r[key] for r in rows if r[key] is not None])
    applied = of("applied_ms")
    return {"hosts": HOSTS, "samples": len(rows), "kernel_ms": of("kernel_ms"), "applied_ms": applied,
            "healed_ms": of("healed_ms"), "not_applied": sum(1 for r in rows if r["pending"]),
            "verdict": summary.verdict(applied.get("p99"), 100.0, at_most=True), "raw": rows}


def run(out_dir: Path, *, samples: int = 100, progress: Callable[[str], None] = lambda s: None,
        write: bool = True) -> dict[str, Any]:
    result = {"benchmark": "fault create -> in effect on its hosts (table in the kernel; every target applied), "
                           "delete -> gone, in a 10-host lab",
              "target": "applied p99 <= 100 ms", "machine": machine.describe(), "vxlab": measure(
                  samples=samples, progress=progress)}
    result["machine"]["loadavg_after"] = machine.loadavg()
    if write:
        result["path"] = str(machine.write(out_dir, "faults", result))
    return result
