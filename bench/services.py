"""Service VIP benchmark: TCP connections per second to a VIP against a direct IP.

A two-host lab: a client container on h1; on h2 three replicas and a fourth container,
`solo`, each running an accept loop (accept, send one line, close). A client process
inside the client's namespace opens connections one after another for a fixed time
(connect, read the line, close with an RST: SO_LINGER 0) and counts them, in three
series. The RST keeps the client from holding a TIME_WAIT socket per connection: with
tens of thousands of them for one destination, connect() spends about 1 ms looking for
a free ephemeral port (measured here: 15 000 connections/s fell to 400), whatever the
destination, VIP or not.

- `direct, no table`: to solo's address before any service exists (the client's
  namespace has no nftables table, so no conntrack either);
- `direct`: the same with the service created (its nat table in the client's namespace
  registers conntrack and the NAT hooks there: every connection pays them);
- `vip`: to the VIP, DNATed by the client's namespace to one of the three replicas.

The direct series go to a container that is not a replica: connecting to a replica both
directly and through the VIP from the same, quickly reused ephemeral ports makes
conntrack entries whose reply tuples clash (a connection then waits for a SYN
retransmit), which is what kube-proxy's clients meet too, and not what this measures.

The series alternate, `rounds` times each, and the median round counts. Writes
services.json (`vxlab bench services`, or `python -m vxlab.bench.services`). Target
(issue 17): vip >= 0.9 x direct. Both ends are Python processes, so the figure is for
connections as a Python client makes them; the NAT's own cost is a small part of each.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from vxlab.bench import machine
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse
from vxlab.model import Service

TOPOLOGY = """name: {name}
hosts: 2
networks:
  - {{name: app, subnet: 10.50.0.0/24}}
containers:
  - {{name: client, host: h1, networks: [app]}}
  - {{name: api1, host: h2, networks: [app]}}
  - {{name: api2, host: h2, networks: [app]}}
  - {{name: api3, host: h2, networks: [app]}}
  - {{name: solo, host: h2, networks: [app]}}
"""
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(1024)
print("listening", flush=True)
line = (sys.argv[1] + "\\n").encode()
while True:
    c, _ = s.accept()
    try:
        c.sendall(line)
    except OSError:
        pass
    c.close()
"""
CLIENT = """
import socket, struct, sys, time
ip, seconds = sys.argv[1], float(sys.argv[2])
n, failed, end = 0, 0, time.perf_counter() + seconds
linger = struct.pack("ii", 1, 0)
start = time.perf_counter()
while time.perf_counter() < end:
    try:
        s = socket.create_connection((ip, 80), timeout=2)
        s.recv(64)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
        n += 1
    except OSError:
        failed += 1
print(n / (time.perf_counter() - start), failed)
"""


def _rate(lab: Lab, ip: str, seconds: float) -> float:
    """Connections per second that completed (connect, a line read); one that fails
    (refused, reset before its line, timed out) does not count."""
    out = subprocess.run(["ip", "netns", "exec", lab.namespace_of("client"), sys.executable, "-c", CLIENT, ip,
                          str(seconds)], capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode:
        raise RuntimeError(f"the client failed: {out.stderr.strip()[-300:]}")
    rate, failed = out.stdout.split()
    if int(failed):
        print(f"{ip}: {failed} connections failed", file=sys.stderr)
    return float(rate)


def _series(lab: Lab, targets: dict[str, str], *, rounds: int, seconds: float) -> dict[str, dict[str, Any]]:
    got: dict[str, list[float]] = {k: [] for k in targets}
    for _ in range(rounds):
        for name, ip in targets.items():
            got[name].append(_rate(lab, ip, seconds))
    return {k: {"median_per_s": round(statistics.median(v), 1), "rounds_per_s": [round(x, 1) for x in v]}
            for k, v in got.items()}


def run(out_dir: Path, *, rounds: int = 7, seconds: float = 3.0) -> dict[str, Any]:
    lab = Lab("vxbenchsvc")
    lab.down()
    servers: list[subprocess.Popen[str]] = []
    try:
        lab.up(parse(TOPOLOGY.format(name=lab.name)))
        for name in ("api1", "api2", "api3", "solo"):
            p = subprocess.Popen(["ip", "netns", "exec", lab.namespace_of(name), sys.executable, "-c", SERVER, name],
                                 stdout=subprocess.PIPE, text=True)
            servers.append(p)
            if p.stdout is None or p.stdout.readline().strip() != "listening":
                raise RuntimeError(f"the server in {name} did not start")
        direct = next(e.ip for e in lab.call(lambda c: c.list_endpoints(name="solo")))
        load = machine.loadavg()
        _rate(lab, direct, 0.5)  # warm up (ARP, caches)
        before = _series(lab, {"direct, no table": direct}, rounds=rounds, seconds=seconds)
        svc = lab.add_service(Service("api", "app", replicas=("api1", "api2", "api3"), ports=("80/tcp",)))
        _rate(lab, svc.vip, 0.5)
        after = _series(lab, {"direct": direct, "vip": svc.vip}, rounds=rounds, seconds=seconds)
    finally:
        for p in servers:
            p.kill()
            p.wait()
        lab.down()
    series = {**before, **after}
    ratio = series["vip"]["median_per_s"] / series["direct"]["median_per_s"]
    result = {
        "benchmark": "TCP connections per second from a container, one after another (connect, read a line,"
                     " close), to a service VIP (DNAT in the client's namespace over 3 replicas on another host)"
                     " against a replica's own address",
        "target": "vip >= 0.9 x direct", "machine": machine.describe(), "loadavg_before": load,
        "rounds": rounds, "seconds_per_round": seconds, "series": series,
        "vip_vs_direct": round(ratio, 3),
        "vip_vs_direct_no_table": round(series["vip"]["median_per_s"] / series["direct, no table"]["median_per_s"], 3),
    }
    result["path"] = str(machine.write(out_dir, "services", result))
    return result


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    print(run(a.out, rounds=a.rounds, seconds=a.seconds))


if __name__ == "__main__":
    main()
