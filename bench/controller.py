"""Controller benchmark: endpoint creates per second and latency at 1, 4 and 16 clients.

Starts a real etcd (the launcher's choice, recorded) and one `vxlab controller serve`
process, registers a host, and for each concurrency level creates `creates` endpoints
on a fresh /16 network with that many concurrent clients. Then etcd goes away twice,
frozen (SIGSTOP: every store call runs into its deadline) and stopped (nothing listens:
refused at once), and it records how long a call takes to come back UNAVAILABLE (the
figure the store tests used to assert). Writes controller.json.
Target (issue 2): >= 500 creates/s with 16 clients on the 2-core machine.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vxlab.bench import machine
from vxlab.client import Client
from vxlab.controller.store_etcd import EtcdStore
from vxlab.errors import Unavailable, VxError
from vxlab.etcdproc import EtcdProcess, free_port
from vxlab.model import Endpoint, Host, Network


async def _wait_ready(address: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with Client(address, timeout=2) as c:
        while True:
            try:
                await c.list_hosts()
                return
            except VxError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def _level(address: str, network: str, *, clients: int, creates: int) -> dict[str, Any]:
    conns = [Client(address) for _ in range(clients)]
    latencies: list[float] = []
    counter = iter(range(creates))

    async def worker(c: Client) -> None:
        for i in counter:
            t0 = time.perf_counter()
            await c.create_endpoint(Endpoint(name=f"c{i}", network=network, host="h1"))
            latencies.append(time.perf_counter() - t0)

    for c in conns:  # connect outside the timed part
        await c.list_networks()
    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - start
    for c in conns:
        await c.close()
    lat = sorted(latencies)
    return {
        "clients": clients, "creates": creates, "seconds": round(wall, 3),
        "creates_per_s": round(creates / wall, 1),
        "p50_ms": round(machine.percentile(lat, 50) * 1000, 2), "p99_ms": round(machine.percentile(lat, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2),
    }


async def _run(address: str, *, levels: list[int], creates: int) -> list[dict[str, Any]]:
    await _wait_ready(address)
    async with Client(address) as c:
        await c.register_host(Host(name="h1", underlay_ip="172.30.0.11"))
        results = []
        for n in levels:
            net = f"bench{n}"
            await c.create_network(Network(name=net, subnet=f"10.{100 + n}.0.0/16"))
            results.append(await _level(address, net, clients=n, creates=creates))
            await c.delete_network(net, force=True)
    return results


async def _unavailable_after(address: str) -> float | None:
    """Seconds until a read comes back UNAVAILABLE; None if it was answered."""
    async with Client(address, timeout=60) as c:
        start = time.perf_counter()
        try:
            await c.list_networks()
        except Unavailable:
            return round(time.perf_counter() - start, 3)
    return None


async def _outage(address: str, etcd: EtcdProcess) -> dict[str, Any]:
    assert etcd.pid is not None
    out: dict[str, Any] = {"store_deadline_s": inspect.signature(EtcdStore).parameters["timeout"].default}
    os.kill(etcd.pid, signal.SIGSTOP)
    try:
        out["frozen_unavailable_s"] = await _unavailable_after(address)
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
    etcd.stop()
    try:
        out["stopped_unavailable_s"] = await _unavailable_after(address)
    finally:
        etcd.start()
    return out


def run(out_dir: Path, *, levels: list[int] | None = None, creates: int = 2000) -> dict[str, Any]:
    levels = levels or [1, 4, 16]
    with tempfile.TemporaryDirectory(prefix="vxlab-bench-") as tmp, EtcdProcess(Path(tmp) / "etcd") as etcd:
        address = f"127.0.0.1:{free_port()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", address,
             "--etcd", ",".join(etcd.endpoints)],
            stdout=subprocess.DEVNULL, stderr=(Path(tmp) / "controller.log").open("wb"), start_new_session=True)
        try:
            levels_out = asyncio.run(_run(address, levels=levels, creates=creates))
            outage = asyncio.run(_outage(address, etcd))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        result = {
            "benchmark": "controller endpoint creates",
            "target": ">= 500 creates/s with 16 clients",
            "machine": machine.describe(etcd=f"{etcd.version} ({etcd.binary.source})"),
            "levels": levels_out,
            "etcd_outage": outage,
        }
    result["path"] = str(machine.write(out_dir, "controller", result))
    return result
