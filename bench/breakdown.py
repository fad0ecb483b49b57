"""Data-plane breakdown: where the overlay's extra RTT and CPU go, hop by hop, on one
2-host lab in one run (`vxlab bench dataplane --breakdown`).

An ablation ladder; each rung adds one thing to the one before:

| rung | from -> to | adds |
|---|---|---|
| underlay | h1's host namespace -> h2's (veth, switch bridge, veth) | – |
| vxlan | the same namespaces, through a bare VXLAN device of the bench (VNI 16000001, addresses on it, no bridge) | encapsulation + outer UDP/IP |
| bridge | bridge <-> bridge in the network namespaces across vxlab's own VXLAN device (no container veth) | the network namespace's bridge (and its netfilter) on each side |
| overlay | container a -> container b | the containers' veth on each side |
| veth | container a -> its local bridge (the gateway address) | the veth hop alone, no VXLAN |

The bridge rung puts the addresses on `lo` of the network namespaces, with a route in
table 99 out of the bridge, a static ARP entry and a *dynamic* FDB entry for the peer
bridge's MAC on the VXLAN device: the agent reconciles the bridge's addresses, main
routes and its own permanent entries, but none of these, so it keeps running. The
dynamic FDB entry ages out (300 s): it is written again before every measurement.

Per rung and repetition (rungs interleaved, medians over repetitions): iperf3 TCP
Gbit/s, ping RTT at a 5 ms interval (median of every reply), and the round-trip *cost*
from a flood ping (`ping -f`, one echo in flight: wall time / echoes, i.e. CPU time of
the whole round trip when nothing waits). With `profile=True`, `perf` samples the
underlay and the overlay under iperf3 and under the flood ping (bench/kprofile.py):
CPU per MB and per round trip, by category.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vxlab.bench import dataplane, kprofile, machine, netperf, summary

NAME = "vxbenchbd"
VXLAN_VNI = 16000001
VXLAN_DEV = "vxbdx0"  # the bare VXLAN device of the vxlan rung, in the host namespaces
RUNGS = ("underlay", "vxlan", "bridge", "overlay", "veth")
_FLOOD_TIME = re.compile(r"(\d+) received.*time (\d+)ms")


@dataclass(frozen=True)
class Rung:
    label: str
    src_ns: str
    dst_ns: str
    dst_ip: str
    what: str


def _sh(ns: str, *argv: str, check: bool = True) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{ns}: {' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout


def _mac(ns: str, dev: str) -> str:
    return str(json.loads(_sh(ns, "ip", "-j", "link", "show", dev))[0]["address"])


class Ladder:
    """The rungs' extra objects on a running `dataplane` lab (network `blue`, containers
    a on h1 and b on h2): `install`, `refresh` before each measurement, `remove`."""

    def __init__(self, bed: dataplane.Bed) -> None:
        self.bed = bed
        self.host = bed.ns["host"]
        self.net = bed.ns["net"]
        self.ctr = bed.ns["ctr"]
        self.under = [bed.underlay_ips["h1"], bed.underlay_ips["h2"]]
        self.br_ip = ["10.99.0.1", "10.99.0.2"]
        self.vx_ip = ["10.98.0.1", "10.98.0.2"]
        self.vx_mac = ["02:76:78:62:64:01", "02:76:78:62:64:02"]
        self.br_mac: list[str] = []

    def rungs(self) -> dict[str, Rung]:
        h, n, c = self.host, self.net, self.ctr
        return {
            "underlay": Rung("underlay", h[0], h[1], self.under[1], "host ns -> host ns over the switch"),
            "vxlan": Rung("vxlan", h[0], h[1], self.vx_ip[1], "+ VXLAN encap/decap (bare device, no bridge)"),
            "bridge": Rung("bridge", n[0], n[1], self.br_ip[1], "+ bridge in the network namespace, each side"),
            "overlay": Rung("overlay", c[0], c[1], self.bed.ips["b"], "+ container veth, each side"),
            "veth": Rung("veth", c[0], n[0], "10.70.0.1", "container -> local bridge: the veth hop alone"),
        }

    def install(self) -> None:
        self.br_mac = [_mac(ns, "vxb-blue") for ns in self.net]
        for i in (0, 1):
            o = 1 - i
            h, n = self.host[i], self.net[i]
            _sh(h, "ip", "link", "add", VXLAN_DEV, "address", self.vx_mac[i], "type", "vxlan", "id", str(VXLAN_VNI),
                "local", self.under[i], "dstport", "4789", "nolearning")
            _sh(h, "ip", "addr", "add", f"{self.vx_ip[i]}/24", "dev", VXLAN_DEV)
            _sh(h, "ip", "link", "set", VXLAN_DEV, "up")
            _sh(h, "ip", "neigh", "replace", self.vx_ip[o], "lladdr", self.vx_mac[o], "dev", VXLAN_DEV, "nud",
                "permanent")
            _sh(h, "bridge", "fdb", "append", self.vx_mac[o], "dev", VXLAN_DEV, "dst", self.under[o], "self",
                "permanent")
            _sh(n, "ip", "addr", "add", f"{self.br_ip[i]}/32", "dev", "lo")
            _sh(n, "ip", "route", "replace", f"{self.br_ip[o]}/32", "dev", "vxb-blue", "src", self.br_ip[i],
                "table", "99")
            _sh(n, "ip", "rule", "add", "to", f"{self.br_ip[o]}/32", "table", "99", "pref", "99")
            _sh(n, "ip", "neigh", "replace", self.br_ip[o], "lladdr", self.br_mac[o], "dev", "vxb-blue", "nud",
                "permanent")
        self.refresh()

    def refresh(self) -> None:
        """The dynamic FDB entries of the bridge rung, (re)written: deleted and added, so
        their age starts again."""
        for i in (0, 1):
            o = 1 - i
            _sh(self.net[i], "bridge", "fdb", "del", self.br_mac[o], "dev", "vxv-blue", "self", check=False)
            _sh(self.net[i], "bridge", "fdb", "add", self.br_mac[o], "dev", "vxv-blue", "dst", self.under[o],
                "self", "dynamic")

    def remove(self) -> None:
        """Best effort (the lab's `down` removes the namespaces anyway)."""
        for i in (0, 1):
            o = 1 - i
            _sh(self.host[i], "ip", "link", "del", VXLAN_DEV, check=False)
            if self.br_mac:
                _sh(self.net[i], "bridge", "fdb", "del", self.br_mac[o], "dev", "vxv-blue", "self", check=False)
            _sh(self.net[i], "ip", "rule", "del", "pref", "99", check=False)
            _sh(self.net[i], "ip", "route", "flush", "table", "99", check=False)
            _sh(self.net[i], "ip", "neigh", "del", self.br_ip[o], "dev", "vxb-blue", check=False)
            _sh(self.net[i], "ip", "addr", "del", f"{self.br_ip[i]}/32", "dev", "lo", check=False)


def flood_us(src_ns: str, dst_ip: str, *, count: int) -> float | None:
    """µs per round trip of a flood ping (one echo in flight): wall time / echoes."""
    out = subprocess.run(netperf.in_ns(src_ns, "ping", "-n", "-q", "-f", "-c", str(count), "-W", "1", dst_ip),
                         capture_output=True, text=True, timeout=120).stdout
    return parse_flood(out)


def parse_flood(text: str) -> float | None:
    """From ping's summary ("N received, … time Tms"): T / N in µs; None without replies."""
    m = _FLOOD_TIME.search(text)
    if not m or int(m.group(1)) == 0:
        return None
    return round(1000 * int(m.group(2)) / int(m.group(1)), 2)


def measure(ladder: Ladder, rungs: list[str], *, reps: int, seconds: float, pings: int, flood: int,
            progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every rung once per repetition (interleaved): Gbit/s, RTT median, flood µs."""
    all_rungs = ladder.rungs()
    chosen = [all_rungs[r] for r in rungs]
    raw: dict[str, dict[str, list[float]]] = {r.label: {"gbit": [], "rtt_us": [], "flood_us": []} for r in chosen}
    servers = [netperf.Server(netperf.in_ns(r.dst_ns), port=5311 + i) for i, r in enumerate(chosen)]
    for s in servers:
        s.__enter__()
    try:
        for rep in range(reps):
            progress(f"breakdown: repetition {rep + 1}/{reps}")
            ladder.refresh()
            for i, r in enumerate(chosen):
                d = raw[r.label]
                d["gbit"].append(netperf.tcp_gbit(netperf.in_ns(r.src_ns), r.dst_ip, seconds=seconds, port=5311 + i))
                rtts = netperf.rtts_us(netperf.in_ns(r.src_ns), r.dst_ip, count=pings)
                if rtts:
                    d["rtt_us"].append(summary.median(rtts))
                f = flood_us(r.src_ns, r.dst_ip, count=flood)
                if f is not None:
                    d["flood_us"].append(f)
    finally:
        for s in servers:
            s.__exit__()
    return {label: {"what": all_rungs[label].what, **med(d)} for label, d in raw.items()}


def med(d: dict[str, list[float]]) -> dict[str, Any]:
    """Medians (and the raw per-repetition values) of one rung."""
    return {"gbit_median": round(summary.median(d["gbit"]), 3) if d["gbit"] else None,
            "rtt_us_median": round(summary.median(d["rtt_us"]), 1) if d["rtt_us"] else None,
            "flood_us_median": round(summary.median(d["flood_us"]), 2) if d["flood_us"] else None,
            "gbit": [round(x, 3) for x in d["gbit"]], "rtt_us": [round(x, 1) for x in d["rtt_us"]],
            "flood_us": d["flood_us"]}


def attribution(rungs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each hop's share of the overlay's extra cost: the differences between rungs."""
    steps = [("VXLAN encap/decap + outer UDP/IP (both ends)", "underlay", "vxlan"),
             ("bridge + network namespace (both ends)", "vxlan", "bridge"),
             ("container veth (both ends)", "bridge", "overlay")]
    out = []
    base = rungs.get("underlay", {})
    top = rungs.get("overlay", {})
    for what, a, b in steps:
        if a not in rungs or b not in rungs:
            continue
        row: dict[str, Any] = {"hop": what, "from": a, "to": b}
        for key, unit in (("rtt_us_median", "rtt_us"), ("flood_us_median", "flood_us")):
            x, y = rungs[a].get(key), rungs[b].get(key)
            total = (top.get(key) or 0) - (base.get(key) or 0)
            row[f"extra_{unit}"] = round(y - x, 2) if x is not None and y is not None else None
            row[f"share_of_extra_{unit}_pct"] = (round(100 * (y - x) / total, 0)
                                                 if x is not None and y is not None and total > 0 else None)
        x, y = rungs[a].get("gbit_median"), rungs[b].get("gbit_median")
        row["throughput_ratio"] = summary.ratio(y, x)
        out.append(row)
    return out


def profiles(ladder: Ladder, *, seconds: float) -> dict[str, Any]:
    """perf profiles of underlay and overlay under iperf3 and under the flood ping,
    normalised: CPU µs per MB received, CPU µs per round trip."""
    rungs = ladder.rungs()
    out: dict[str, Any] = {}
    for label in ("underlay", "overlay"):
        r = rungs[label]
        with netperf.Server(netperf.in_ns(r.dst_ns), port=5331):
            tput = kprofile.record(lambda r=r: netperf.tcp_gbit(netperf.in_ns(r.src_ns), r.dst_ip,
                                                                seconds=seconds + 1.5, port=5331),
                                   seconds=seconds, comms=re.compile(r"^iperf3$"))
        gbit = tput.get("result") or 0.0
        mb = gbit * 1000 / 8 * seconds  # MB moved during the sampled seconds (approximately)
        tput["gbit"] = gbit
        tput["cpu_us_per_mb"] = _per(tput, mb)
        ladder.refresh()
        fl = kprofile.record(lambda r=r: _flood_for(r, seconds + 1.5), seconds=seconds,
                             comms=re.compile(r"^ping$"))
        echoes = fl.get("result") or (0, 0.0)
        rate = echoes[0] / echoes[1] if echoes[1] else 0.0  # echoes per second
        fl["echoes_per_s"] = round(rate, 0)
        fl["cpu_us_per_round_trip"] = _per(fl, rate * seconds)
        out[label] = {"iperf3": tput, "flood_ping": fl}
    return out


def _flood_for(r: Rung, seconds: float) -> tuple[int, float]:
    """A flood ping for `seconds`: (echoes received, ping's own elapsed seconds)."""
    out = subprocess.run(netperf.in_ns(r.src_ns, "ping", "-n", "-q", "-f", "-w", str(math.ceil(seconds)), "-W", "1",
                                       r.dst_ip), capture_output=True, text=True, timeout=seconds + 60).stdout
    m = _FLOOD_TIME.search(out)
    return (int(m.group(1)), int(m.group(2)) / 1000) if m else (0, 0.0)


def _per(prof: dict[str, Any], units: float) -> dict[str, float] | None:
    """CPU µs per unit, by category (and in total)."""
    if not units or "by_category" not in prof:
        return None
    out = {k: round(1000 * v["cpu_ms"] / units, 3) for k, v in prof["by_category"].items()}
    out["total"] = round(1000 * prof["cpu_ms"] / units, 3)
    return out


def run(out_dir: Path, *, mtus: list[int] | None = None, reps: int = 5, seconds: float = 2.0, pings: int = 100,
        flood: int = 20000, profile: bool = True, progress: Callable[[str], None] = lambda s: None,
        write: bool = True, name: str = NAME) -> dict[str, Any]:
    rows = []
    for mtu in mtus or [1500, 9000]:
        load_before = machine.loadavg()
        lab = dataplane.up(mtu, name=name)
        ladder: Ladder | None = None
        try:
            ladder = Ladder(dataplane.Bed(lab))
            ladder.install()
            progress(f"breakdown mtu {mtu}: ladder")
            rungs = measure(ladder, list(RUNGS), reps=reps, seconds=seconds, pings=pings, flood=flood,
                            progress=progress)
            row: dict[str, Any] = {"underlay_mtu": mtu, "rungs": rungs, "attribution": attribution(rungs),
                                   "overlay_vs_underlay": {
                                       "throughput_ratio": summary.ratio(rungs["overlay"]["gbit_median"],
                                                                         rungs["underlay"]["gbit_median"]),
                                       "rtt_ratio": summary.ratio(rungs["overlay"]["rtt_us_median"],
                                                                  rungs["underlay"]["rtt_us_median"]),
                                       "flood_ratio": summary.ratio(rungs["overlay"]["flood_us_median"],
                                                                    rungs["underlay"]["flood_us_median"])}}
            if profile:
                progress(f"breakdown mtu {mtu}: perf profiles")
                row["profile"] = profiles(ladder, seconds=seconds + 1)
        finally:
            if ladder is not None:
                ladder.remove()
            lab.down()
        row["load_before"], row["load_after"] = load_before, machine.loadavg()
        rows.append(row)
    result = {"benchmark": "data-plane breakdown: an ablation ladder underlay -> +vxlan -> +bridge -> +veth "
                           "(overlay), interleaved repetitions, medians; perf profiles of underlay and overlay",
              "reps": reps, "seconds": seconds, "pings": pings, "flood": flood,
              "machine": machine.describe(), "mtus": rows}
    if write:
        result["path"] = str(machine.write(out_dir, "breakdown", result))
        (out_dir / "breakdown.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    """The breakdown as Markdown tables (pure)."""
    parts = [f"# Data-plane breakdown\n\n{result['benchmark']}; {result['reps']} repetitions, iperf3 "
             f"{result['seconds']} s, {result['pings']} pings at 5 ms, flood ping of {result['flood']} echoes.\n"]
    for row in result["mtus"]:
        parts.append(f"\n## Underlay MTU {row['underlay_mtu']} (load {row.get('load_before')} -> "
                     f"{row.get('load_after')})\n\n")
        parts.append(summary.table(
            ["rung", "adds", "Gbit/s", "RTT µs p50", "flood µs/round trip", "per-rep Gbit/s"],
            [[k, v["what"], v["gbit_median"], v["rtt_us_median"], v["flood_us_median"], " ".join(map(str, v["gbit"]))]
             for k, v in row["rungs"].items()]) + "\n")
        parts.append("\n" + summary.table(
            ["hop", "extra RTT µs", "share of extra RTT %", "extra flood µs", "share %", "throughput ×"],
            [[a["hop"], a.get("extra_rtt_us"), a.get("share_of_extra_rtt_us_pct"), a.get("extra_flood_us"),
              a.get("share_of_extra_flood_us_pct"), a.get("throughput_ratio")] for a in row["attribution"]]) + "\n")
        prof = row.get("profile")
        if prof:
            cats = sorted({c for p in prof.values() for w in p.values() for c in (w.get("by_category") or {})})
            for kind, unit, key in (("iperf3", "CPU µs per MB", "cpu_us_per_mb"),
                                    ("flood_ping", "CPU µs per round trip", "cpu_us_per_round_trip")):
                rows = []
                for c in [*cats, "total"]:
                    u = (prof["underlay"][kind].get(key) or {}).get(c)
                    o = (prof["overlay"][kind].get(key) or {}).get(c)
                    rows.append([c, u, o, round(o - u, 3) if u is not None and o is not None else None])
                parts.append(f"\nperf, {kind}: {unit} by category\n\n" + summary.table(
                    ["category", "underlay", "overlay", "overlay - underlay"], rows) + "\n")
    return "".join(parts)
