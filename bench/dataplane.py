"""Data-plane benchmark: overlay (container <-> container on two hosts) against the
underlay (host namespace <-> host namespace over the switch), in one run, for each
underlay MTU; plus a sweep of kernel settings, each measured for its effect.

For each MTU a 2-host lab `vxbenchdp` is brought up with containers `a` (h1) and `b`
(h2). Underlay and overlay runs alternate (u, o, u, o, …) so the machine's drift hits
both alike; figures are medians of `reps` iperf3 runs and of `pings` RTTs. A CPU
profile (/proc/stat: user, system, softirq) is taken during one underlay and one overlay
run: what the encapsulation costs. `tune=True` then applies each `Variant` (ethtool
offloads, vxlan flags, txqueuelen, GRO on the underlay) on both hosts, measures, and
reverts it. The lab is removed afterwards, also on failure.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vxlab.bench import machine, netperf, summary
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse

NAME = "vxbenchdp"
TOPOLOGY = """name: {name}
underlay: {{subnet: 172.30.0.0/24, mtu: {mtu}}}
hosts: 2
networks:
  - {{name: blue, subnet: 10.70.0.0/24}}
containers:
  - {{name: a, host: h1, networks: [blue]}}
  - {{name: b, host: h2, networks: [blue]}}
"""


@dataclass(frozen=True)
class Path2:
    """One measured path: run commands with `prefix` (the source side), reach `dst_ip`
    where `server_prefix` runs the iperf3 server."""

    label: str
    prefix: list[str]
    server_prefix: list[str]
    dst_ip: str


@dataclass(frozen=True)
class Variant:
    """A kernel setting applied on both hosts: `apply`/`revert` are shell lines run in
    the namespace of each role ("host", "net", "ctr"); `{port}` is the bridge port."""

    name: str
    what: str
    apply: tuple[tuple[str, str], ...]
    revert: tuple[tuple[str, str], ...]


def _eth(role: str, dev: str, on: str, off: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    return ((role, f"ethtool -K {dev} {on}"),), ((role, f"ethtool -K {dev} {off}"),)


VARIANTS: list[Variant] = [
    Variant("baseline", "vxlab's defaults", (), ()),
    Variant("gro-underlay", "GRO on the hosts' underlay eth0 (veth: NAPI + UDP-tunnel GRO)",
            *_eth("host", "eth0", "gro on", "gro off")),
    Variant("gro-containers", "GRO on the containers' eth0", *_eth("ctr", "eth0", "gro on", "gro off")),
    Variant("gro-bridge-ports", "GRO on the bridge-side veth ends (vxe-…)", *_eth("net", "{port}", "gro on", "gro off")),
    Variant("gro-all-veths", "GRO on underlay eth0, containers' eth0 and bridge ports",
            (("host", "ethtool -K eth0 gro on"), ("ctr", "ethtool -K eth0 gro on"), ("net", "ethtool -K {port} gro on")),
            (("host", "ethtool -K eth0 gro off"), ("ctr", "ethtool -K eth0 gro off"), ("net", "ethtool -K {port} gro off"))),
    Variant("udp-gro-fwd", "rx-udp-gro-forwarding on the underlay eth0", *_eth("host", "eth0", "rx-udp-gro-forwarding on gro on",
                                                                               "rx-udp-gro-forwarding off gro off")),
    # noudpcsum can only be chosen when the device is made ("Cannot change UDP_CSUM flag"):
    # measured by recreating the device, `vxlab bench dataplane --settings noudpcsum`.
    Variant("bridge-nf-on", "bridge-nf-call-iptables/ip6tables/arptables=1 in the network namespaces (vxlab's "
            "default before issue 6: bridged frames through the IP hooks and conntrack)",
            (("net", "sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 "
                     "net.bridge.bridge-nf-call-arptables=1"),),
            (("net", "sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 "
                     "net.bridge.bridge-nf-call-arptables=0"),)),
    Variant("df-set", "vxlan df set (outer DF bit)", (("net", "ip link set vxv-blue type vxlan df set"),),
            (("net", "ip link set vxv-blue type vxlan df unset"),)),
    Variant("ttl-64", "vxlan ttl 64 (instead of auto)", (("net", "ip link set vxv-blue type vxlan ttl 64"),),
            (("net", "ip link set vxv-blue type vxlan ttl auto"),)),
    Variant("txqlen-10000", "txqueuelen 10000 on vxlan, bridge ports and containers' eth0",
            (("net", "ip link set vxv-blue txqueuelen 10000"), ("net", "ip link set {port} txqueuelen 10000"),
             ("ctr", "ip link set eth0 txqueuelen 10000")),
            (("net", "ip link set vxv-blue txqueuelen 1000"), ("net", "ip link set {port} txqueuelen 1000"),
             ("ctr", "ip link set eth0 txqueuelen 1000"))),
    Variant("tso-off-ctr", "TSO/GSO off in the containers (negative control)",
            *_eth("ctr", "eth0", "tso off gso off", "tso on gso on")),
    Variant("txcsum-off-ctr", "tx-checksumming off in the containers (negative control)",
            *_eth("ctr", "eth0", "tx off", "tx on")),
]


class Bed:
    """The running 2-host lab and its namespaces, by role."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        eps = {e["container"]: e for e in lab.containers()}
        self.ips = {"a": eps["a"]["ip"], "b": eps["b"]["ip"]}
        hosts = {h.name: h.underlay_ip for h in lab.applied.hosts} if lab.applied else {}
        self.underlay_ips = hosts
        self.ns = {"host": [lab.host_ns("h1"), lab.host_ns("h2")],
                   "net": [lab.network_ns("h1", "blue"), lab.network_ns("h2", "blue")],
                   "ctr": [lab.container_ns("h1", "a"), lab.container_ns("h2", "b")]}

    def paths(self) -> tuple[Path2, Path2]:
        h1, h2 = self.ns["host"]
        a, b = self.ns["ctr"]
        return (Path2("underlay", netperf.in_ns(h1), netperf.in_ns(h2), self.underlay_ips["h2"]),
                Path2("overlay", netperf.in_ns(a), netperf.in_ns(b), self.ips["b"]))

    def sh(self, role: str, line: str) -> None:
        for ns in self.ns[role]:
            ports = [""]
            if "{port}" in line:
                out = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True).stdout
                ports = [ln.split(": ")[1].split("@")[0] for ln in out.splitlines() if ": vxe-" in ln]
            for port in ports:
                cmd = line.replace("{port}", port)  # not str.format: lines may hold braces (nft)
                r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"{ns}: {cmd}: {r.stderr.strip()}")


def observed(bed: Bed) -> dict[str, Any]:
    """The data-plane settings the lab was measured with, as found on h1 (vxlab's
    defaults at link creation): bridge-nf-call-iptables in the network namespace
    ("absent" without br_netfilter), the VXLAN device's outer UDP checksum, GRO on the
    container's eth0."""
    net, ctr = bed.ns["net"][0], bed.ns["ctr"][0]

    def run(ns: str, *argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True).stdout

    nf = run(net, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables").strip() or "absent"
    info = run(net, "ip", "-d", "-j", "link", "show", "vxv-blue")
    try:
        csum = json.loads(info)[0]["linkinfo"]["info_data"].get("udp_csum")
    except (ValueError, LookupError):
        csum = None
    gro = next((ln.split(":")[1].strip() for ln in run(ctr, "ethtool", "-k", "eth0").splitlines()
                if ln.startswith("generic-receive-offload:")), None)
    return {"bridge_nf_call_iptables": nf, "vxlan_udp_csum": csum, "container_gro": gro}


def measure_paths(paths: tuple[Path2, ...], *, reps: int, seconds: float, pings: int,
                  profile: bool = False) -> dict[str, Any]:
    """Interleaved iperf3 runs and ping series over each path; medians and raw values."""
    out: dict[str, Any] = {p.label: {"gbit": [], "rtt_us": []} for p in paths}
    for i, p in enumerate(paths):
        out[p.label]["port"] = 5301 + i
    servers = [netperf.Server(p.server_prefix, port=5301 + i) for i, p in enumerate(paths)]
    for s in servers:
        s.__enter__()
    try:
        for rep in range(reps):
            for p in paths:
                port = out[p.label]["port"]
                if profile and rep == 0:
                    with netperf.CpuSampler() as cpu:
                        out[p.label]["gbit"].append(netperf.tcp_gbit(p.prefix, p.dst_ip, seconds=seconds, port=port))
                    out[p.label]["cpu"] = cpu.share.to_json()
                else:
                    out[p.label]["gbit"].append(netperf.tcp_gbit(p.prefix, p.dst_ip, seconds=seconds, port=port))
        for p in paths:
            for _ in range(2):  # two series each, interleaved
                out[p.label]["rtt_us"] += netperf.rtts_us(p.prefix, p.dst_ip, count=max(1, pings // 2))
    finally:
        for s in servers:
            s.__exit__()
    for p in paths:
        d = out[p.label]
        d.pop("port")
        d["gbit"] = [round(x, 3) for x in d["gbit"]]
        d["gbit_median"] = round(summary.median(d["gbit"]), 3)
        d["rtt_us_median"] = round(summary.median(d["rtt_us"]), 1) if d["rtt_us"] else None
        d["rtt_us_p90"] = round(machine.percentile(d["rtt_us"], 90), 1) if d["rtt_us"] else None
        d["rtt_samples"] = len(d["rtt_us"])
        d.pop("rtt_us")
    return out


def with_ratios(m: dict[str, Any], *, base: str, other: str) -> dict[str, Any]:
    """The measurement plus other/base ratios of throughput and RTT medians."""
    return {**m, "throughput_ratio": summary.ratio(m[other]["gbit_median"], m[base]["gbit_median"]),
            "rtt_ratio": summary.ratio(m[other]["rtt_us_median"], m[base]["rtt_us_median"])}


def up(mtu: int, *, name: str = NAME) -> Lab:
    lab = Lab(name)
    lab.down()
    lab.up(parse(TOPOLOGY.format(name=name, mtu=mtu)))
    return lab


def run_mtu(mtu: int, *, reps: int, seconds: float, pings: int, tune: bool,
            progress: Callable[[str], None], name: str = NAME) -> dict[str, Any]:
    lab = up(mtu, name=name)
    try:
        bed = Bed(lab)
        paths = bed.paths()
        progress(f"dataplane mtu {mtu}: defaults")
        row = {"underlay_mtu": mtu, "settings": observed(bed), **with_ratios(measure_paths(paths, reps=reps, seconds=seconds, pings=pings,
                                                                 profile=True), base="underlay", other="overlay")}
        variants = []
        if tune:
            for v in VARIANTS[1:]:
                progress(f"dataplane mtu {mtu}: {v.name}")
                try:
                    for role, line in v.apply:
                        bed.sh(role, line)
                    m = measure_paths(paths, reps=max(2, reps // 2), seconds=seconds, pings=pings)
                    variants.append({"name": v.name, "what": v.what, **with_ratios(m, base="underlay", other="overlay")})
                except RuntimeError as e:
                    variants.append({"name": v.name, "what": v.what, "error": str(e)})
                finally:
                    for role, line in v.revert:
                        try:
                            bed.sh(role, line)
                        except RuntimeError:
                            pass
        row["variants"] = variants
        return row
    finally:
        lab.down()


def run(out_dir: Path, *, mtus: list[int] | None = None, reps: int = 7, seconds: float = 3.0, pings: int = 400,
        tune: bool = True, progress: Callable[[str], None] = lambda s: None, write: bool = True,
        name: str = NAME) -> dict[str, Any]:
    """`name`: the lab's name (tests pass a `vxt…` one)."""
    mtus = mtus or [1500, 9000]
    rows = [run_mtu(m, reps=reps, seconds=seconds, pings=pings, tune=tune, progress=progress, name=name)
            for m in mtus]
    result = {"benchmark": "data plane: overlay (container<->container, 2 hosts) vs underlay (host<->host), "
                           "iperf3 TCP and ping RTT, medians, interleaved",
              "target": ">= 0.95x throughput, <= 1.2x RTT", "reps": reps, "seconds": seconds, "pings": pings,
              "machine": machine.describe(), "mtus": rows}
    if write:
        result["path"] = str(machine.write(out_dir, "dataplane", result))
    return result
