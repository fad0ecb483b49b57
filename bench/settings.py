"""Kernel settings of the data plane, each measured by interleaved A/B repetitions on
one 2-host lab (`vxlab bench dataplane --settings NAME,…`).

For every repetition the lab is measured without the setting (A) and with it (B), in
alternating order (AB, BA, AB, …) so the machine's drift hits both alike; each state
measures underlay and overlay back to back (iperf3, ping RTT at 5 ms, flood-ping cost).
The effect of a setting is the median over repetitions of the *paired* change of the
overlay/underlay ratio (B's ratio / A's ratio - 1), with the smallest and largest
pair: a setting helps when the median gain is >= 3 % and the pairs agree in sign, for
the ratio and for the overlay's own Gbit/s alike.

Settings are applied by hand on the running lab (both hosts) and reverted after; the
ones that only exist at creation time (`noudpcsum`) recreate vxlab's VXLAN device the
way the agent does (made in the host namespace, moved into the network namespace,
renamed, marked, enslaved), with its FDB and neighbour entries copied over; the agent
adopts it since it compares only VNI, local address, port, learning and proxy.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vxlab.bench import breakdown, dataplane, machine, netperf, summary

NAME = "vxbenchst"


@dataclass(frozen=True)
class Setting:
    """`apply`/`revert`: (role, shell line) run in every namespace of that role
    ("host", "net", "ctr"; `{port}` = each bridge-side veth), or a special (see
    `_special`)."""

    name: str
    what: str
    apply: tuple[tuple[str, str], ...]
    revert: tuple[tuple[str, str], ...]
    owner: str  # who would set it: "agent" (vxlab's objects) or "underlay" (the host's NIC, the lab's veths)


def _eth(role: str, dev: str, on: str, off: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    return ((role, f"ethtool -K {dev} {on}"),), ((role, f"ethtool -K {dev} {off}"),)


_BRNF = "sysctl -qw net.bridge.bridge-nf-call-iptables={v} net.bridge.bridge-nf-call-ip6tables={v} " \
        "net.bridge.bridge-nf-call-arptables={v}"
_NOTRACK = ("nft -f - <<'EOF'\ntable ip vxbench_raw {\n chain pre { type filter hook prerouting priority raw; "
            "udp dport 4789 notrack; }\n chain out { type filter hook output priority raw; udp dport 4789 notrack; }\n"
            "}\nEOF")

SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("bridge-nf-off", "net.bridge.bridge-nf-call-{iptables,ip6tables,arptables}=0 in the network "
            "namespaces: bridged frames skip the IP netfilter hooks (br_netfilter is built in here, default 1)",
            (("net", _BRNF.format(v=0)),), (("net", _BRNF.format(v=1)),), "agent"),
    Setting("notrack-vxlan", "nft raw-priority `udp dport 4789 notrack` in the host namespaces: no conntrack of "
            "the VXLAN packets (conntrack is on there because of vxlab's NAT table)",
            (("host", _NOTRACK),), (("host", "nft delete table ip vxbench_raw 2>/dev/null || true"),), "agent"),
    Setting("noudpcsum", "VXLAN device created with noudpcsum (no outer UDP checksum; the kernel's default for "
            "a device made over netlink without the attribute is udpcsum)",
            (("special", "udpcsum off"),), (("special", "udpcsum on"),), "agent"),
    Setting("gro-containers", "GRO on the containers' eth0 (veth: NAPI receive)",
            *_eth("ctr", "eth0", "gro on", "gro off"), "agent"),
    Setting("gro-bridge-ports", "GRO on the bridge-side veth ends (vxe-…)",
            *_eth("net", "{port}", "gro on", "gro off"), "agent"),
    Setting("txqlen-10000", "txqueuelen 10000 on the VXLAN device, bridge ports and containers' eth0 "
            "(all noqueue: expected no effect)",
            (("net", "ip link set vxv-blue txqueuelen 10000"), ("net", "ip link set {port} txqueuelen 10000"),
             ("ctr", "ip link set eth0 txqueuelen 10000")),
            (("net", "ip link set vxv-blue txqueuelen 1000"), ("net", "ip link set {port} txqueuelen 1000"),
             ("ctr", "ip link set eth0 txqueuelen 1000")), "agent"),
    Setting("gro-underlay", "GRO on the hosts' underlay eth0 (a veth here: NAPI + UDP-tunnel GRO)",
            *_eth("host", "eth0", "gro on", "gro off"), "underlay"),
    Setting("udp-gro-fwd", "rx-udp-gro-forwarding + GRO on the hosts' underlay eth0",
            *_eth("host", "eth0", "gro on rx-udp-gro-forwarding on", "rx-udp-gro-forwarding off gro off"),
            "underlay"),
]}


def _ns_run(ns: str, line: str) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", line], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{ns}: {line.splitlines()[0]}: {r.stderr.strip()}")
    return r.stdout


def recreate_vxlan(bed: dataplane.Bed, *, udpcsum: bool, dev: str = "vxv-blue") -> None:
    """vxlab's VXLAN device of network blue, recreated on both hosts with (or without)
    the outer UDP checksum, as the agent makes it; its FDB and neighbour entries copied."""
    for host_ns, net_ns in zip(bed.ns["host"], bed.ns["net"], strict=True):
        info = json.loads(_ns_run(net_ns, f"ip -d -j link show {dev}"))[0]
        data = info["linkinfo"]["info_data"]
        if bool(data.get("udp_csum")) == udpcsum:
            continue
        fdb = [e for e in json.loads(_ns_run(net_ns, f"bridge -j fdb show dev {dev}")) if e.get("dst")]
        neigh = [e for e in json.loads(_ns_run(net_ns, f"ip -j neigh show dev {dev}")) if e.get("lladdr")]
        tmp = "vxbdtmp0"
        _ns_run(net_ns, f"ip link del {dev}")
        _ns_run(host_ns, f"ip link add {tmp} address {info['address']} mtu {info['mtu']} type vxlan id {data['id']} "
                         f"local {data['local']} dstport {data['port']} nolearning proxy "
                         f"{'udpcsum' if udpcsum else 'noudpcsum'}")
        _ns_run(host_ns, f"ip link set {tmp} netns {net_ns}")
        _ns_run(net_ns, f"ip link set {tmp} name {dev} && ip link set {dev} alias '{info.get('ifalias', '')}' "
                        f"master {info['master']} up")
        for e in fdb:
            _ns_run(net_ns, f"bridge fdb replace {e['mac']} dev {dev} dst {e['dst']} self permanent")
        for e in neigh:
            _ns_run(net_ns, f"ip neigh replace {e['dst']} lladdr {e['lladdr']} dev {dev} nud permanent")
        now = json.loads(_ns_run(net_ns, f"ip -d -j link show {dev}"))[0]["linkinfo"]["info_data"]
        if bool(now.get("udp_csum")) != udpcsum:
            raise RuntimeError(f"{net_ns}: {dev}: udp_csum is {now.get('udp_csum')}, wanted {udpcsum}")


def _do(bed: dataplane.Bed, steps: tuple[tuple[str, str], ...]) -> None:
    for role, line in steps:
        if role == "special":
            recreate_vxlan(bed, udpcsum=line.endswith("on"))
        else:
            bed.sh(role, line)


def _state(ladder: breakdown.Ladder, *, seconds: float, pings: int, flood: int) -> dict[str, float | None]:
    """Underlay and overlay, back to back: Gbit/s, RTT median µs, flood µs; their ratios."""
    out: dict[str, float | None] = {}
    rungs = ladder.rungs()
    for i, label in enumerate(("underlay", "overlay")):
        r = rungs[label]
        out[f"{label}_gbit"] = round(netperf.tcp_gbit(netperf.in_ns(r.src_ns), r.dst_ip, seconds=seconds,
                                                      port=5321 + i), 3)
        rtts = netperf.rtts_us(netperf.in_ns(r.src_ns), r.dst_ip, count=pings)
        out[f"{label}_rtt_us"] = round(summary.median(rtts), 1) if rtts else None
        out[f"{label}_flood_us"] = breakdown.flood_us(r.src_ns, r.dst_ip, count=flood)
    out["tput_ratio"] = summary.ratio(out["overlay_gbit"], out["underlay_gbit"])
    out["rtt_ratio"] = summary.ratio(out["overlay_rtt_us"], out["underlay_rtt_us"])
    out["flood_ratio"] = summary.ratio(out["overlay_flood_us"], out["underlay_flood_us"])
    return out


def effect(pairs: list[tuple[dict[str, Any], dict[str, Any]]], key: str) -> dict[str, Any]:
    """Paired changes B/A - 1 of `key` over the repetitions: median, min, max (pure)."""
    d = [b[key] / a[key] - 1 for a, b in pairs if a.get(key) and b.get(key)]
    if not d:
        return {"n": 0}
    return {"n": len(d), "median_pct": round(100 * summary.median(d), 1), "min_pct": round(100 * min(d), 1),
            "max_pct": round(100 * max(d), 1), "positive": sum(1 for x in d if x > 0)}


def verdict(tput: dict[str, Any], overlay: dict[str, Any] | None = None, *, threshold_pct: float = 3.0) -> str:
    """"helps" when the median paired gain is >= threshold and all but at most one pair
    agree, for the throughput ratio AND (when given) the overlay's own Gbit/s: a ratio
    alone also moves with the underlay's noise; "hurts" the mirror image; else "no
    clear effect" (pure)."""
    if overlay is not None:
        a, b = verdict(tput, threshold_pct=threshold_pct), verdict(overlay, threshold_pct=threshold_pct)
        return a if a == b or a == "too few pairs" else "no clear effect"
    n = tput.get("n", 0)
    if n < 3:
        return "too few pairs"
    if tput["median_pct"] >= threshold_pct and tput["positive"] >= n - 1:
        return "helps"
    if tput["median_pct"] <= -threshold_pct and tput["positive"] <= 1:
        return "hurts"
    return "no clear effect"


def measure_setting(bed: dataplane.Bed, ladder: breakdown.Ladder, s: Setting, *, reps: int, seconds: float,
                    pings: int, flood: int, progress: Callable[[str], None]) -> dict[str, Any]:
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    try:
        for rep in range(reps):
            progress(f"settings: {s.name} {rep + 1}/{reps}")
            got: dict[str, dict[str, Any]] = {}
            for state in ("AB" if rep % 2 == 0 else "BA"):
                _do(bed, s.apply if state == "B" else s.revert)
                ladder.refresh()
                got[state] = _state(ladder, seconds=seconds, pings=pings, flood=flood)
            pairs.append((got["A"], got["B"]))
    finally:
        _do(bed, s.revert)
    return {"name": s.name, "what": s.what, "owner": s.owner, "pairs": [{"A": a, "B": b} for a, b in pairs],
            "tput_ratio": effect(pairs, "tput_ratio"), "overlay_gbit": effect(pairs, "overlay_gbit"),
            "underlay_gbit": effect(pairs, "underlay_gbit"), "rtt_ratio": effect(pairs, "rtt_ratio"),
            "flood_ratio": effect(pairs, "flood_ratio"), "verdict": verdict(effect(pairs, "tput_ratio"), effect(pairs, "overlay_gbit"))}


def run(out_dir: Path, *, names: list[str], mtus: list[int] | None = None, reps: int = 5, seconds: float = 2.0,
        pings: int = 100, flood: int = 20000, progress: Callable[[str], None] = lambda s: None,
        write: bool = True, name: str = NAME) -> dict[str, Any]:
    rows = []
    for mtu in mtus or [1500, 9000]:
        load_before = machine.loadavg()
        lab = dataplane.up(mtu, name=name)
        ladder: breakdown.Ladder | None = None
        try:
            bed = dataplane.Bed(lab)
            ladder = breakdown.Ladder(bed)
            ladder.install()
            servers = [netperf.Server(netperf.in_ns(ns), port=5321 + i)
                       for i, ns in enumerate((bed.ns["host"][1], bed.ns["ctr"][1]))]
            for srv in servers:
                srv.__enter__()
            try:
                results = [measure_setting(bed, ladder, SETTINGS[n], reps=reps, seconds=seconds, pings=pings,
                                           flood=flood, progress=progress) for n in names]
            finally:
                for srv in servers:
                    srv.__exit__()
        finally:
            if ladder is not None:
                ladder.remove()
            lab.down()
        rows.append({"underlay_mtu": mtu, "settings": results, "load_before": load_before,
                     "load_after": machine.loadavg()})
    result = {"benchmark": "data-plane settings, interleaved A/B (AB, BA, …) on one lab: paired change of the "
                           "overlay/underlay throughput ratio, RTT ratio and flood-ping cost ratio",
              "reps": reps, "seconds": seconds, "pings": pings, "flood": flood, "machine": machine.describe(),
              "mtus": rows}
    if write:
        stem = "settings-" + "-".join(names) if len(names) <= 2 else "settings"
        result["path"] = str(machine.write(out_dir, stem, result))
        (out_dir / f"{stem}.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    """The A/B results as one Markdown table (pure)."""
    def pct(e: dict[str, Any]) -> str:
        return f"{e['median_pct']:+.1f} ({e['min_pct']:+.1f}..{e['max_pct']:+.1f})" if e.get("n") else "–"

    rows = []
    for row in result["mtus"]:
        for s in row["settings"]:
            a = [p["A"]["tput_ratio"] for p in s["pairs"]]
            b = [p["B"]["tput_ratio"] for p in s["pairs"]]
            rows.append([row["underlay_mtu"], s["name"], s["owner"], summary.median(a) if a else None,
                         summary.median(b) if b else None, pct(s["tput_ratio"]), pct(s["overlay_gbit"]),
                         pct(s["rtt_ratio"]), pct(s["flood_ratio"]), s["verdict"]])
    loads = ", ".join(f"MTU {r['underlay_mtu']}: {r['load_before']} -> {r['load_after']}" for r in result["mtus"])
    return (f"# Data-plane settings, A/B\n\n{result['benchmark']}; {result['reps']} pairs each. Effects are the "
            f"median paired change in % (min..max over pairs). Load: {loads}.\n\n"
            + summary.table(["MTU", "setting", "owner", "tput ratio A", "tput ratio B", "Δ tput ratio %",
                             "Δ overlay Gbit/s %", "Δ RTT ratio %", "Δ flood-cost ratio %", "verdict"], rows)
            + "\n\n" + "\n".join(f"- `{s.name}`: {s.what}" for s in SETTINGS.values()) + "\n")
