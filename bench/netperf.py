"""Measuring tools of the data-plane benchmarks: iperf3 TCP, iputils ping RTTs and a
CPU profile from /proc/stat, each run inside a named network namespace.

Used for vxlab's overlay and for Docker's alike, so both are measured the same way:
`Server` keeps one iperf3 server in a namespace (started with its pid recorded, killed
by that pid), `tcp_gbit` runs one client and returns what the receiver got,
`rtts_us` returns one RTT per echo (ping's per-packet lines, so medians are exact),
`CpuSampler` reads /proc/stat before and after and splits the busy time into user,
system and softirq (where encapsulation and the veth/bridge hops are paid).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_TIME = re.compile(r"time=([0-9.]+) ms")


def in_ns(ns: str, *cmd: str) -> list[str]:
    """The command line that runs `cmd` inside namespace `ns` (a /run/netns name)."""
    return ["ip", "netns", "exec", ns, *cmd]


class Server:
    """An iperf3 server run with `argv_prefix` (e.g. `in_ns(ns)`) on `port` until the
    context exits."""

    def __init__(self, argv_prefix: list[str], *, port: int = 5201) -> None:
        self.port = port
        self.argv = [*argv_prefix, "iperf3", "-s", "-p", str(port)]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def tcp_gbit(argv_prefix: list[str], dst_ip: str, *, seconds: float, port: int = 5201) -> float:
    """One iperf3 TCP run from inside `argv_prefix` (e.g. `in_ns(ns)`): the receiver's
    Gbit/s, 0.0 when it failed."""
    out = subprocess.run([*argv_prefix, "iperf3", "-c", dst_ip, "-p", str(port), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    try:
        report = json.loads(out.stdout or "{}")
    except ValueError:
        return 0.0
    return float(report.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0)) / 1e9


def rtts_us(argv_prefix: list[str], dst_ip: str, *, count: int, interval: float = 0.005,
            size: int = 56) -> list[float]:
    """`count` echoes with ping every `interval` s: the RTT of each reply in µs."""
    out = subprocess.run([*argv_prefix, "ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-s", str(size),
                          "-W", "1", dst_ip], capture_output=True, text=True, timeout=count * interval + 30)
    return parse_ping(out.stdout)


def parse_ping(text: str) -> list[float]:
    """Per-reply RTTs in µs from ping's output ("… time=0.046 ms" lines)."""
    return [float(m.group(1)) * 1000 for m in _TIME.finditer(text)]


@dataclass(frozen=True)
class CpuShare:
    """Busy share of all cores over an interval, in percent of total CPU time."""

    user: float
    system: float
    softirq: float
    idle: float

    def to_json(self) -> dict[str, float]:
        return {"user_pct": self.user, "system_pct": self.system, "softirq_pct": self.softirq,
                "idle_pct": self.idle}


def _cpu_totals(stat: str) -> list[int]:
    return [int(x) for x in stat.splitlines()[0].split()[1:]]


def cpu_share(before: str, after: str) -> CpuShare:
    """The user/system/softirq/idle shares between two /proc/stat snapshots."""
    a, b = _cpu_totals(before), _cpu_totals(after)
    d = [y - x for x, y in zip(a, b, strict=False)]
    total = sum(d[:8]) or 1  # user nice system idle iowait irq softirq steal
    pct = [round(100 * v / total, 1) for v in d]
    return CpuShare(user=round(pct[0] + pct[1], 1), system=round(pct[2] + pct[5], 1), softirq=pct[6],
                    idle=round(pct[3] + pct[4], 1))


class CpuSampler:
    """`with CpuSampler() as s: …` then `s.share`: what the machine's CPUs did meanwhile."""

    def __enter__(self) -> CpuSampler:
        self._before = Path("/proc/stat").read_text()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.share = cpu_share(self._before, Path("/proc/stat").read_text())
