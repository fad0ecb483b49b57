"""Facts of this machine's own namespace that matter to labs: who holds UDP 4789, Docker's
FORWARD drop, bridge-nf-call-iptables, the neighbour-table limits, free memory.

Each returns a `Found` (see kernelcheck); nothing here changes the machine.
"""

from __future__ import annotations

import json
import os

from vxlab.lab import neigh
from vxlab.lab.kernelcheck import Found
from vxlab.lab.sysprobe import System

VXLAN_PORT = 4789
# Memory per simulated host: an agent's resident set at 100-1000 remote endpoints,
# 48.5-50.6 MB (bench/results/footprint.json, `agent_rss_mb`). An upper bound: agents
# forked by the spawner share their imported pages (their PSS was 16 MB each in a lab of
# 10 hosts x 5 containers here, 2026-12-02).
HOST_MB = 51
BASE_MB = 150  # the lab's etcd and controller, and headroom for the CLI


def udp_port(system: System, port: int = VXLAN_PORT) -> Found:
    """Whether something in this namespace already listens on UDP `port`."""
    holders: list[str] = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in (system.read(table) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[1].rsplit(":", 1)[-1].upper() == f"{port:04X}":
                holders.append(_owner(fields[9]))
    if not holders:
        return Found("ok", f"UDP {port} is free in this machine's namespace")
    return Found("warn", f"UDP {port} is bound by {', '.join(sorted(set(holders)))}")


def _owner(inode: str) -> str:
    """Who holds a socket, by its inode: `comm[pid]`, or the kernel (a VXLAN device)."""
    if inode == "0":
        return "the kernel (a VXLAN device)"
    needle = f"socket:[{inode}]"
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == needle for fd in os.listdir(f"/proc/{pid}/fd")):
                with open(f"/proc/{pid}/comm") as f:
                    return f"{f.read().strip()}[{pid}]"
        except OSError:
            continue
    return f"socket inode {inode}"


def forward_drop(system: System) -> Found:
    """A FORWARD hook whose policy is drop (what dockerd sets), in nftables or iptables."""
    drops: list[str] = []
    if system.which("nft"):
        ran = system.run(["nft", "-j", "list", "ruleset"])
        try:
            items = json.loads(ran.out).get("nftables", []) if ran.ok else []
        except ValueError:
            items = []
        drops += [f"{c['family']} {c['table']} {c['name']}" for c in (i.get("chain") for i in items)
                  if c and c.get("hook") == "forward" and c.get("policy") == "drop"]
    if system.which("iptables"):
        ran = system.run(["iptables", "-S", "FORWARD"])
        if "-P FORWARD DROP" in ran.out:
            drops.append("iptables FORWARD")
    if not system.which("nft") and not system.which("iptables"):
        return Found("untested", "neither nft nor iptables to read the rules with")
    if drops:
        return Found("info", f"FORWARD policy drop in {', '.join(sorted(set(drops)))}")
    return Found("ok", "no FORWARD chain with policy drop")


def bridge_nf(system: System) -> Found:
    value = system.read("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if value is None:
        return Found("ok", "br_netfilter is not loaded: bridged frames skip iptables")
    return Found("info" if value.strip() == "1" else "ok", f"bridge-nf-call-iptables = {value.strip()} here")


def neighbour_table(system: System) -> Found:
    values = [system.read(str(p)) for p in neigh.PATHS]
    if any(v is None for v in values):
        return Found("untested", "no IPv4 neighbour settings in /proc/sys")
    now = tuple(int(v.split()[0]) for v in values if v)
    shown, lab = "/".join(map(str, now)), "/".join(map(str, neigh.LAB_VALUES))
    if all(n >= w for n, w in zip(now, neigh.LAB_VALUES, strict=True)):
        return Found("ok", f"gc_thresh1..3 = {shown}, as high as labs need ({lab})")
    if not all(system.writable(str(p)) for p in neigh.PATHS):
        return Found("warn", f"gc_thresh1..3 = {shown} and not writable here (labs raise them to {lab})")
    return Found("ok", f"gc_thresh1..3 = {shown}; `up` raises them to {lab} while labs run")


def memory(system: System) -> Found:
    info = dict(line.split(":", 1) for line in (system.read("/proc/meminfo") or "").splitlines() if ":" in line)
    try:
        avail_mb = int(info["MemAvailable"].split()[0]) // 1024
    except (KeyError, ValueError, IndexError):
        return Found("untested", "no MemAvailable in /proc/meminfo")
    hosts = max(0, (avail_mb - BASE_MB) // HOST_MB)
    text = f"{avail_mb / 1024:.1f} GiB available: room for about {hosts} hosts at ~{HOST_MB} MB each"
    return Found("ok" if hosts >= 2 else "warn", text)
