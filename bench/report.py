"""RESULTS.md and the PNG plots of a `vxlab bench all` run, from its results dict.

`headline(results)` is pure (rows of metric, vxlab, Docker, target, verdict) and
unit-tested; `render(out_dir, results)` writes RESULTS.md, dataplane.png and
controlplane.png (bringup.png is the bring-up part's own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vxlab.bench.summary import cell, table, verdict
from vxlab.lab.plots import PlotsMissing, pyplot

NOISE = ("Figures are from one run on a shared, noisy 2-core VM (other engineers run test suites on it "
         "meanwhile): treat them as medians of repetitions and compare only ratios measured in the same run.")


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def _mtu(rows: Any, mtu: int) -> dict[str, Any]:
    for r in rows or []:
        if r.get("underlay_mtu") == mtu:
            return dict(r)
    return {}


def _size(rows: Any, hosts: int) -> dict[str, Any]:
    for r in rows or []:
        if r.get("hosts") == hosts:
            return dict(r)
    return {}


def headline(results: dict[str, Any]) -> list[list[Any]]:
    """metric | vxlab | Docker swarm | target | vxlab verdict."""
    p = results.get("parts", {})
    dp, dk = _get(p, "dataplane", "mtus"), _get(p, "docker", "dataplane")
    rows: list[list[Any]] = []
    for mtu in (1500, 9000):
        v, d = _mtu(dp, mtu), _mtu(dk, mtu)
        rows.append([f"throughput overlay/underlay, MTU {mtu}", v.get("throughput_ratio"), d.get("throughput_ratio"),
                     ">= 0.95", verdict(v.get("throughput_ratio"), 0.95, at_most=False)])
        rows.append([f"RTT overlay/underlay, MTU {mtu}", v.get("rtt_ratio"), d.get("rtt_ratio"), "<= 1.2",
                     verdict(v.get("rtt_ratio"), 1.2, at_most=True)])
    cp, dcp = _get(p, "controlplane", "sizes"), _get(p, "docker", "controlplane")
    for hosts in (10, 50):
        v = _size(cp, hosts)
        d = dcp if isinstance(dcp, dict) and dcp.get("hosts") == hosts else {}
        for q, target in (("p50", 50), ("p99", 200)):
            rows.append([f"run -> first reply, {hosts} hosts, {q} ms (per peer)", _get(v, "first_reply_ms", q),
                         _get(d, "first_reply_ms", q), f"<= {target}",
                         verdict(_get(v, "first_reply_ms", q), target, at_most=True)])
    dh, ddh = _get(p, "deadhost", "vxlab"), _get(p, "docker", "deadhost")
    ttl = _get(dh, "lease_ttl_s")
    rows.append(["host crash -> all peers purged, s (median)", _get(dh, "purged_s_median"),
                 _get(ddh, "purged_s_median"), f"~ lease TTL ({cell(ttl)} s)",
                 verdict(_get(dh, "purged_s_median"), (ttl or 0) + 1, at_most=True) if ttl else "n/a"])
    rows.append(["host back -> reachable again, s (median)", _get(dh, "reachable_s_median"),
                 _get(ddh, "reachable_s_median"), "–", "–"])
    bu = _size(_get(p, "bringup", "sizes"), 100)
    rows.append(["bring-up 100 hosts x 5 containers, s", bu.get("seconds"), None, "<= 30",
                 verdict(bu.get("seconds"), 30, at_most=True)])
    return rows


def _dataplane_rows(rows: Any, who: str) -> list[list[Any]]:
    out = []
    for r in rows or []:
        for path in ("underlay", "overlay"):
            m = r.get(path, {})
            cpu = m.get("cpu", {})
            out.append([who, r.get("underlay_mtu"), path, m.get("gbit_median"), m.get("rtt_us_median"),
                        m.get("rtt_us_p90"), cpu.get("user_pct"), cpu.get("system_pct"), cpu.get("softirq_pct"),
                        cpu.get("idle_pct")])
    return out


def _variant_rows(rows: Any) -> list[list[Any]]:
    out = []
    for r in rows or []:
        base_t, base_r = r.get("throughput_ratio"), r.get("rtt_ratio")
        out.append([r.get("underlay_mtu"), "baseline", "vxlab's defaults (this run's main measurement)",
                    _get(r, "underlay", "gbit_median"), _get(r, "overlay", "gbit_median"), base_t, base_r, "–"])
        for v in r.get("variants", []):
            if "error" in v:
                out.append([r.get("underlay_mtu"), v["name"], v["what"], None, None, None, None, v["error"]])
                continue
            t = v.get("throughput_ratio")
            delta = None if t is None or base_t is None else f"{t - base_t:+.3f}"
            out.append([r.get("underlay_mtu"), v["name"], v["what"], _get(v, "underlay", "gbit_median"),
                        _get(v, "overlay", "gbit_median"), t, v.get("rtt_ratio"), delta])
    return out


def markdown(results: dict[str, Any], *, plots: list[str]) -> str:
    p = results.get("parts", {})
    m = results.get("machine", {})
    lines = ["# vxlab benchmarks: kernel floor and Docker swarm, side by side", "",
             f"Produced by `vxlab bench all -o {results.get('out', 'bench/results')}` on {m.get('date')}: "
             f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, kernel {m.get('kernel')}, "
             f"Python {m.get('python')}; " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
             + (f"; {p['docker'].get('docker')}" if p.get("docker", {}).get("docker") else "") + ".", "",
             f"> {NOISE}", ""]
    if results.get("quick"):
        lines += ["> **Quick run** (smoke test sizes): the figures mean nothing.", ""]
    lines += ["## Headline", "", table(["metric", "vxlab", "Docker swarm", "target", "vxlab"], headline(results))]
    for name, part in p.items():
        if "error" in part:
            lines += [f"**{name} failed:** `{part['error']}`", ""]
    if p.get("docker", {}).get("skipped"):
        lines += [f"**Docker part skipped:** {p['docker']['skipped']}", ""]
    dp = _get(p, "dataplane", "mtus")
    if dp or _get(p, "docker", "dataplane"):
        lines += ["## Data plane", "",
                  "iperf3 TCP (receiver's rate, median of the repetitions) and ping RTT (5 ms interval, median and "
                  "p90 of every reply); underlay = host namespace to host namespace over the switch, overlay = "
                  "container to container on two hosts; runs interleaved. CPU = share of both cores during one "
                  "iperf3 run (/proc/stat).", "",
                  table(["stack", "MTU", "path", "Gbit/s", "RTT µs p50", "RTT µs p90", "user %", "sys %",
                         "softirq %", "idle %"],
                        _dataplane_rows(dp, "vxlab") + _dataplane_rows(_get(p, "docker", "dataplane"), "docker"))]
        var = _variant_rows(dp)
        if any(r[1] != "baseline" for r in var):
            lines += ["### Settings, one at a time (both hosts; measured, then reverted)", "",
                      table(["MTU", "setting", "what", "underlay Gbit/s", "overlay Gbit/s", "tput ratio",
                             "RTT ratio", "Δ ratio vs baseline / error"], var)]
    cp = _get(p, "controlplane", "sizes")
    if cp:
        rows = []
        for r in cp:
            b50 = r.get("breakdown_p50_ms") or {}
            rows.append(["vxlab", r["hosts"], r["samples"], _get(r, "first_reply_ms", "p50"),
                         _get(r, "first_reply_ms", "p99"), _get(r, "all_peers_ms", "p50"), _get(r, "rpc_ms", "p50"),
                         _get(r, "target_programmed_ms", "p50"), b50.get("pass_start_ms"), b50.get("pass_ms"),
                         b50.get("programmed_ms"), b50.get("reply_after_programmed_ms"), r.get("missing_replies")])
        d = _get(p, "docker", "controlplane")
        if isinstance(d, dict) and "hosts" in d:
            rows.append(["docker", d["hosts"], d["samples"], _get(d, "first_reply_ms", "p50"),
                         _get(d, "first_reply_ms", "p99"), _get(d, "all_peers_ms", "p50"),
                         f"{cell(_get(d, 'run_call_ms', 'p50'))} (docker run)", None, None, None, None, None,
                         d.get("missing_replies")])
        lines += ["## Control plane: container run -> first reply from every other host", "",
                  "Per sample: a container is created on the next host (round robin) with a chosen address while "
                  "one container on each other host pings that address every 5 ms (ARP retry 10 ms in the probing "
                  "containers, so the ARP timer is not what is measured). All times in ms from the create call; "
                  "breakdown medians over every (sample, peer) from the agents' logs (ms stamps): agent pass "
                  "start (watch delivery + queue), pass length, pass end, and first reply after it.", "",
                  table(["stack", "hosts", "samples", "per-peer p50", "per-peer p99", "all peers p50", "create RPC p50",
                         "target host programmed p50", "peer pass start", "peer pass ms", "peer programmed",
                         "reply after programmed", "missing"], rows)]
    dh = _get(p, "deadhost", "vxlab")
    if dh:
        ddh = _get(p, "docker", "deadhost") or {}
        lines += ["## Dead host", "",
                  "host-crash (agent / dockerd killed, link down) of one of 4 hosts; purged = no peer keeps an FDB "
                  "entry for its VTEP; reachable = from the heal call (vxlab: link up + agent restarted; docker: link "
                  "up + dockerd restarted + container started) to the first reply from a peer container.", "",
                  table(["stack", "reps", "lease TTL s", "purged s (median)", "purged / TTL", "reachable s (median)",
                         "not purged", "not reachable"],
                        [["vxlab", dh.get("reps"), dh.get("lease_ttl_s"), dh.get("purged_s_median"),
                          dh.get("purged_over_ttl"), dh.get("reachable_s_median"), dh.get("not_purged"),
                          dh.get("not_reachable")],
                         ["docker", ddh.get("reps"), "(gossip)", ddh.get("purged_s_median"), None,
                          ddh.get("reachable_s_median"), ddh.get("not_purged"), ddh.get("not_reachable")]])]
    bu = _get(p, "bringup", "sizes")
    if bu:
        lines += ["## Bring-up", "", table(["hosts", "containers", "seconds", "down s"],
                                           [[r["hosts"], r["containers"], r["seconds"], r["down_seconds"]] for r in bu])]
    fp = p.get("footprint", {})
    if fp.get("controller"):
        lines += ["## Footprint", "",
                  table(["controller clients", "creates/s", "p50 ms", "p99 ms"],
                        [[r["clients"], r["creates_per_s"], r["p50_ms"], r["p99_ms"]] for r in fp["controller"]]),
                  table(["agent: remote endpoints", "event p50 ms", "event p99 ms", "RSS MB", "idle CPU %"],
                        [[r["remote_endpoints"], r["p50_ms"], r["p99_ms"], r["agent_rss_mb"], r["agent_idle_cpu_pct"]]
                         for r in fp.get("agent", [])]),
                  table(["etcd: endpoints added", "keys before", "keys after", "keys / endpoint", "bytes / endpoint"],
                        [[_get(fp, "etcd", "endpoints"), _get(fp, "etcd", "keys_before"), _get(fp, "etcd", "keys_after"),
                          _get(fp, "etcd", "keys_per_endpoint"), _get(fp, "etcd", "bytes_per_endpoint")]])]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(x).stem}]({Path(x).name})" for x in plots] + [""]
    elif "plots" in results:  # why there are none
        lines += ["## Plots", "", results["plots"], ""]
    return "\n".join(lines) + "\n"


def _plots(out_dir: Path, results: dict[str, Any]) -> list[Path]:
    """dataplane.png and controlplane.png from the results; PlotsMissing without matplotlib."""
    plt = pyplot()
    made = []
    p = results.get("parts", {})
    bars = []
    for who, rows in (("vxlab", _get(p, "dataplane", "mtus")), ("docker", _get(p, "docker", "dataplane"))):
        for r in rows or []:
            bars.append((f"{who}\nMTU {r['underlay_mtu']}", _get(r, "underlay", "gbit_median") or 0,
                         _get(r, "overlay", "gbit_median") or 0))
    if bars:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = range(len(bars))
        ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], 0.4, label="underlay")
        ax.bar([x + 0.2 for x in xs], [b[2] for b in bars], 0.4, label="overlay")
        ax.set_xticks(list(xs), [b[0] for b in bars])
        ax.set_ylabel("iperf3 TCP Gbit/s (median)")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "dataplane.png", dpi=100)
        plt.close(fig)
        made.append(out_dir / "dataplane.png")
    series = []
    for r in _get(p, "controlplane", "sizes") or []:
        series.append((f"vxlab {r['hosts']} hosts", [v for s in r.get("raw", []) for v in s["first_reply_ms"].values()]))
    d = _get(p, "docker", "controlplane")
    if isinstance(d, dict) and d.get("raw"):
        series.append((f"docker swarm {d['hosts']} hosts", [v for s in d["raw"] for v in s["first_reply_ms"].values()]))
    if series:
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, vals in series:
            vals = sorted(vals)
            if vals:
                ax.step(vals, [(i + 1) / len(vals) for i in range(len(vals))], where="post", label=label)
        ax.axvline(50, color="green", linestyle="--", label="target p50 50 ms")
        ax.axvline(200, color="red", linestyle="--", label="target p99 200 ms")
        ax.set_xscale("log")
        ax.set_xlabel("container run -> first reply from a peer, ms")
        ax.set_ylabel("fraction of (sample, peer)")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "controlplane.png", dpi=100)
        plt.close(fig)
        made.append(out_dir / "controlplane.png")
    return made


def render(out_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Write the plots and RESULTS.md into `out_dir`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        made = _plots(out_dir, results)
    except PlotsMissing as e:
        made, results = [], results | {"plots": str(e)}
    if (out_dir / "bringup.png").is_file() and "bringup" in results.get("parts", {}):
        made.append(out_dir / "bringup.png")
    md = out_dir / "RESULTS.md"
    md.write_text(markdown(results, plots=[str(x) for x in made]))
    return [md, *made]
