"""Footprint benchmark: controller creates/s (bench controller), agent RSS and idle CPU
(bench agent), and etcd keys and bytes per endpoint.

The etcd part brings up a one-host lab `vxbenchfp`, reads every key under the lab's
prefix (/vxlab/v1/, like `vxlab store ls`), creates `endpoints` endpoints through the
API, reads again, and divides the difference (keys, key+value bytes) by the count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab.bench import agent as agent_bench
from vxlab.bench import controller as controller_bench
from vxlab.bench import machine, summary
from vxlab.controller.keys import DEFAULT_PREFIX
from vxlab.controller.store_etcd import EtcdStore
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse
from vxlab.model import Endpoint

NAME = "vxbenchfp"
TOPOLOGY = """name: {name}
hosts: 1
networks:
  - {{name: blue, subnet: 10.95.0.0/16}}
containers:
  - {{name: f0, host: h1, networks: [blue]}}
"""


async def _keys(lab: Lab) -> tuple[int, int]:
    store = EtcdStore(lab.etcd_endpoints, timeout=10, tls=lab.etcd_tls())
    try:
        kvs, _ = await store.range(DEFAULT_PREFIX)
    finally:
        await store.close()
    return len(kvs), sum(len(kv.key.encode()) + len(kv.value) for kv in kvs)


def per_endpoint(before: tuple[int, int], after: tuple[int, int], n: int) -> dict[str, float | None]:
    """Keys and bytes that `n` endpoints added, per endpoint."""
    return {"keys_per_endpoint": summary.ratio(after[0] - before[0], n, digits=2),
            "bytes_per_endpoint": summary.ratio(after[1] - before[1], n, digits=1)}


def etcd_per_endpoint(*, endpoints: int) -> dict[str, Any]:
    lab = Lab(NAME)
    lab.down()
    try:
        lab.up(parse(TOPOLOGY.format(name=NAME)))

        async def go() -> dict[str, Any]:
            before = await _keys(lab)
            async with lab.client() as c:
                sem = asyncio.Semaphore(16)

                async def one(i: int) -> None:
                    async with sem:
                        await c.create_endpoint(Endpoint(name=f"e{i}", network="blue", host="h1"))
                await asyncio.gather(*(one(i) for i in range(endpoints)))
            after = await _keys(lab)
            return {"endpoints": endpoints, "keys_before": before[0], "bytes_before": before[1],
                    "keys_after": after[0], "bytes_after": after[1], **per_endpoint(before, after, endpoints)}
        return asyncio.run(go())
    finally:
        lab.down()


def run(out_dir: Path, *, creates: int = 1000, endpoints: int = 200, agent_levels: list[int] | None = None,
        agent_samples: int = 30, progress: Callable[[str], None] = lambda s: None, write: bool = True) -> dict[str, Any]:
    progress("footprint: controller creates/s")
    ctrl = controller_bench.run(out_dir, levels=[1, 16], creates=creates)
    progress("footprint: agent RSS and idle CPU")
    ag = agent_bench.run(out_dir, levels=agent_levels or [100, 1000], samples=agent_samples)
    progress("footprint: etcd keys and bytes per endpoint")
    et = etcd_per_endpoint(endpoints=endpoints)
    result = {"benchmark": "footprint: controller creates/s, agent RSS and idle CPU, etcd keys/bytes per endpoint",
              "machine": machine.describe(),
              "controller": [{k: lv[k] for k in ("clients", "creates_per_s", "p50_ms", "p99_ms")} for lv in ctrl["levels"]],
              "agent": [{k: lv[k] for k in ("remote_endpoints", "p50_ms", "p99_ms", "agent_rss_mb", "agent_idle_cpu_pct")}
                        for lv in ag["levels"]],
              "etcd": et}
    if write:
        result["path"] = str(machine.write(out_dir, "footprint", result))
    return result
