"""Embedded DNS benchmark: a question to 127.0.0.11 answered by the host's agent, with
100 and 1000 names on the network.

A one-host lab (a real agent, at the lab's nice 10) and a container `c0`; the network
is filled with endpoints on phantom hosts (registered, never alive: DNS answers for
them all the same), each with one alias. From a socket made inside c0's namespace the
bench sends prebuilt queries one after another and times each round trip (send until
the answer is read; the answer is checked after the clock stopped): A questions for
names and aliases over UDP and over one TCP connection, a name of no network
(NXDOMAIN), and the first question after a change (the agent rebuilds its index of
names once per revision). Writes dns.json (`vxlab bench dns`, or `python -m
vxlab.bench.dns`). Target (issue 17): p99 <= 2 ms.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode

from vxlab.bench import machine
from vxlab.bench.agent import TOPOLOGY  # one host, network blue (a /16), container c0
from vxlab.client import Client
from vxlab.icmp import socket_in_netns
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse
from vxlab.model import Endpoint, Host

PHANTOMS = 10
SERVER = ("127.0.0.11", 53)


def _udp(sock: socket.socket, wire: bytes) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    sock.send(wire)
    data = sock.recv(4096)
    return time.perf_counter() - t0, data


def _tcp(sock: socket.socket, wire: bytes) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    sock.sendall(len(wire).to_bytes(2, "big") + wire)
    head = sock.recv(2, socket.MSG_WAITALL)
    data = sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
    return time.perf_counter() - t0, data


def _series(ask: Any, sock: socket.socket, names: list[str], *, expect: int, count: int) -> list[float]:
    """`count` round trips for random names of `names`; every answer has rcode `expect`."""
    out = []
    for _ in range(count):
        q = dns.message.make_query(random.choice(names), "A")
        seconds, data = ask(sock, q.to_wire())
        r = dns.message.from_wire(data)
        if r.id != q.id or r.rcode() != expect or (expect == dns.rcode.NOERROR and not r.answer):
            raise RuntimeError(f"unexpected answer for {q.question[0].name}: {r}")
        out.append(seconds)
    return out


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(machine.percentile(ms, 50), 3), "p90_ms": round(machine.percentile(ms, 90), 3),
            "p99_ms": round(machine.percentile(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "max_ms": round(max(ms), 3)}


async def _fill(c: Client, *, start: int, upto: int) -> None:
    sem = asyncio.Semaphore(32)

    async def make(i: int) -> None:
        async with sem:
            await c.create_endpoint(Endpoint(name=f"e{i}", network="blue", host=f"r{i % PHANTOMS}",
                                             aliases=(f"a{i}",)))
    await asyncio.gather(*(make(i) for i in range(start, upto)))


async def _phantoms(c: Client) -> None:
    for i in range(PHANTOMS):
        await c.register_host(Host(name=f"r{i}", underlay_ip=f"172.30.1.{i + 10}"))


def _measure(lab: Lab, *, levels: list[int], queries: int, changes: int) -> list[dict[str, Any]]:
    ns = lab.namespace_of("c0")
    rows = []
    lab.call(_phantoms)
    made = 0
    for level in levels:
        lab.call(lambda c, start=made, upto=level: _fill(c, start=start, upto=upto))
        lab.wait_converged(timeout=120)
        made = level
        names = [f"e{i}" for i in range(level)] + [f"a{i}" for i in range(level)]
        udp = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM, 0)
        tcp = socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM, 0)
        try:
            for s in (udp, tcp):
                s.settimeout(5)
                s.connect(SERVER)
            _series(_udp, udp, names, expect=dns.rcode.NOERROR, count=200)  # warm up
            row: dict[str, Any] = {"names": len(names), "queries": queries}
            row["udp"] = _stats(_series(_udp, udp, names, expect=dns.rcode.NOERROR, count=queries))
            row["tcp"] = _stats(_series(_tcp, tcp, names, expect=dns.rcode.NOERROR, count=queries))
            row["nxdomain_udp"] = _stats(_series(_udp, udp, ["nosuch.blue"], expect=dns.rcode.NXDOMAIN,
                                                 count=queries // 4))
            first = []
            for j in range(changes):  # the first question after a revision: the index is rebuilt
                lab.call(lambda c, j=j: c.create_endpoint(Endpoint(name=f"x{level}-{j}", network="blue", host="r0")))
                lab.wait_converged(timeout=60)
                first += _series(_udp, udp, names, expect=dns.rcode.NOERROR, count=1)
            row["after_change_udp"] = _stats(first)
            row["after_change_samples"] = changes
        finally:
            udp.close()
            tcp.close()
        rows.append(row)
        print(f"{len(names)} names: udp p50 {row['udp']['p50_ms']} ms p99 {row['udp']['p99_ms']} ms; "
              f"tcp p50 {row['tcp']['p50_ms']} p99 {row['tcp']['p99_ms']}; first after a change p50 "
              f"{row['after_change_udp']['p50_ms']} p99 {row['after_change_udp']['p99_ms']}", flush=True)
    return rows


def run(out_dir: Path, *, levels: list[int] | None = None, queries: int = 5000, changes: int = 30) -> dict[str, Any]:
    levels = levels or [100, 1000]
    lab = Lab("vxbenchdns")
    lab.down()
    try:
        lab.up(parse(TOPOLOGY.format(name=lab.name)))
        load = machine.loadavg()
        rows = _measure(lab, levels=[n // 2 for n in levels], queries=queries, changes=changes)
    finally:
        lab.down()
    result = {
        "benchmark": "embedded DNS: round trip of a question to 127.0.0.11 from inside a container, answered by"
                     " its host's agent from the watch cache (names: endpoints + one alias each)",
        "target": "p99 <= 2 ms", "machine": machine.describe(), "loadavg_before": load, "levels": rows,
    }
    result["path"] = str(machine.write(out_dir, "dns", result))
    return result


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--levels", default="100,1000", help="names on the network (half endpoints, half aliases)")
    a = p.parse_args()
    run(a.out, levels=[int(x) for x in a.levels.split(",")], queries=a.queries)


if __name__ == "__main__":
    main()
