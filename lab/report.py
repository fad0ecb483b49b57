"""An experiment's results: raw samples, a summary, a Markdown report, a PNG timeline.

`summarize(result)` per pair: probes sent and lost, loss %, RTT p50/p99, the outage
intervals (runs of lost probes), the unobserved spans (no samples: the probe's op was
down, its agent restarting, or cut from the controller and never back), the spans its
agent held while cut, and, for each fault that hit the pair, the time from its heal to
the first answered probe after the outage; per fault: when it started and ended and
how (the runner's delete, or its lease), and what the control plane showed
(vxlab.lab.expwatch): when a target's lease expired, when the peers purged it and had
it back, whether the cut side kept forwarding, when all converged.
`write(result, DIR)` writes samples.csv, throughput.csv, summary.json, report.md and
timeline.png (matplotlib, the `plots` extra; without it the report says so in one line
and there is no PNG).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vxlab.lab import plots
from vxlab.stats import percentile

if TYPE_CHECKING:
    from vxlab.lab.experiment import Pair, Result


def outages(samples: list[tuple[float, float | None]]) -> list[tuple[float, float]]:
    """[(first lost probe, first answered probe after it)]; an outage still open at the
    end closes at the last probe."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for t, rtt in samples:
        if rtt is None and start is None:
            start = t
        elif rtt is not None and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, samples[-1][0]))
    return spans


def unobserved(samples: list[tuple[float, float | None]], interval: float, *,
               duration: float) -> list[tuple[float, float]]:
    """Spans without a sample (sent times more than max(1.5 s, 5 intervals) apart, and
    the same at the start and the end of the run)."""
    gap = max(1.5, 5 * interval)
    times = [0.0, *(t for t, _ in samples), duration]
    return [(a, b) for a, b in zip(times, times[1:]) if b - a > gap]


def _pair_summary(p: Pair, faults: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    rtts = [r for _, r in p.samples if r is not None]
    lost = sum(1 for _, r in p.samples if r is None)
    spans = outages(p.samples)
    recovery = {}
    for f in faults:
        if f["end"] is None:
            continue
        hit = [s for s in spans if s[0] < f["end"] + 0.5 and s[1] > f["start"]]
        if hit:
            recovery[f["id"]] = round(max(0.0, hit[-1][1] - f["end"]), 3)
    out: dict[str, Any] = {
        "pair": p.name, "network": p.network, "ip": p.ip, "sent": len(p.samples), "lost": lost,
        "loss_pct": round(100.0 * lost / len(p.samples), 2) if p.samples else 0.0,
        "rtt_p50_ms": round(percentile(rtts, 50), 3) if rtts else None,
        "rtt_p99_ms": round(percentile(rtts, 99), 3) if rtts else None,
        "outages": [[round(a, 3), round(b, 3)] for a, b in spans],
        "longest_outage_s": round(max((b - a for a, b in spans), default=0.0), 3),
        "recovered_after_heal_s": recovery,
        "unobserved": [[round(a, 3), round(b, 3)] for a, b in unobserved(p.samples, p.interval, duration=duration)],
        "held": [[round(a, 3), round(b, 3), d] for a, b, d in p.held],  # (from, to, dropped)
        "probe_error": p.probe_error,
    }
    if p.rates or p.tcp_error:
        out["tcp_mbit_mean"] = round(sum(r for _, r in p.rates) / len(p.rates), 2) if p.rates else 0.0
        out["tcp_error"] = p.tcp_error
    return out


def summarize(result: Result) -> dict[str, Any]:
    faults = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(f).items()} for f in result.faults]
    return {
        "experiment": result.scenario.name, "where": result.where,
        "lab": result.scenario.topology.name if result.scenario.topology else None,
        "started": dt.datetime.fromtimestamp(result.started, dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": result.duration, "lease_ttl_s": result.lease_ttl,
        "faults": faults, "pairs": [_pair_summary(p, faults, result.duration) for p in result.pairs],
    }


def write(result: Result, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("samples.csv", "throughput.csv", "summary.json", "report.md",
                                           "timeline.png")}
    with paths["samples.csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair", "network", "t_s", "rtt_ms"])
        for p in result.pairs:
            w.writerows([p.name, p.network, f"{t:.4f}", "" if r is None else f"{r:.3f}"] for t, r in p.samples)
    with paths["throughput.csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair", "t_s", "mbit_s"])
        for p in result.pairs:
            w.writerows([p.name, f"{t:.3f}", f"{m:.2f}"] for t, m in p.rates)
    summary = summarize(result)
    paths["summary.json"].write_text(json.dumps(summary, indent=2) + "\n")
    try:
        plot(result, paths["timeline.png"])
        png: str | None = paths["timeline.png"].name
    except plots.PlotsMissing:
        paths.pop("timeline.png").unlink(missing_ok=True)  # not one of an earlier run
        png = None
    paths["report.md"].write_text(markdown(summary, png=png))
    return paths


def markdown(s: dict[str, Any], *, png: str | None = "timeline.png") -> str:
    """The report; `png` None: no timeline (the line says why)."""
    lines = [f"# Experiment {s['experiment']}", "",
             f"{(s['where'] or 'lab ' + str(s['lab'])).capitalize()}, started {s['started']}, {s['duration_s']:g} s, "
             f"host lease TTL {s['lease_ttl_s']} s.", "", f"![timeline]({png})" if png else plots.MISSING, "",
             "## Faults", ""]
    if s["faults"]:
        lines += ["| id | fault | through | from | to | healed by | error |", "|---|---|---|---|---|---|---|"]
        for f in s["faults"]:
            via = f"fault API, lease {f['lease']:g} s" if f["via"] == "api" else "lab runner"
            lines.append(f"| {f['id']} | {f['description']} | {via} | {_s(f['start'])} | {_s(f['end'])} | "
                         f"{f['healed_by'] or '-'} | {f['error']} |")
        lines += ["", "## Control plane", "", *[f"- {f['id']} ({f['description']}): {control_plane(f)}"
                                                 for f in s["faults"]]]
    else:
        lines.append("No faults.")
    lines += ["", "## Probes", "", "| pair | network | sent | lost | loss | RTT p50 | RTT p99 | longest outage "
              "| recovered after heal | TCP |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in s["pairs"]:
        rec = ", ".join(f"{k}: {v:.2f} s" for k, v in p["recovered_after_heal_s"].items()) or "-"
        tcp = f"{p['tcp_mbit_mean']:.1f} Mbit/s" if "tcp_mbit_mean" in p else "-"
        if p.get("tcp_error"):
            tcp += f" (iperf3: {p['tcp_error']})"
        lines.append(f"| {p['pair']} | {p['network']} | {p['sent']} | {p['lost']} | {p['loss_pct']:.1f} % | "
                     f"{_ms(p['rtt_p50_ms'])} | {_ms(p['rtt_p99_ms'])} | {p['longest_outage_s']:.2f} s | {rec} | {tcp} |")
    lines += ["", "Outages are runs of lost probes (first lost probe → first answered one). "
              "'Recovered after heal' is the time from a fault's heal to the first answered probe after the "
              "outage it caused; pairs the fault did not hit are not listed. The agents send the probes: while a "
              "source's agent is down its pair has no samples (unobserved, not lost); an agent cut from the "
              "controller goes on probing and hands its samples over when it is back.", ""]
    gaps = [f"{p['pair']}: " + ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in p["unobserved"]) for p in s["pairs"]
            if p["unobserved"]]
    if gaps:
        lines += ["Unobserved: " + "; ".join(gaps) + ".", ""]
    return "\n".join(lines)


def control_plane(f: dict[str, Any]) -> str:
    """What the controller and the agents showed of one fault, in a sentence or three."""
    if f["error"] and f["end"] == f["start"]:
        return "not injected."
    if not f["lease_expired"]:
        return "no target's lease expired; nothing for the peers to purge."
    parts = [", ".join(f"{h}'s lease expired {t:.2f} s" for h, t in f["lease_expired"].items())
             + " after the fault started"]
    if f["purged_after"] is not None:
        parts.append(f"its peers ({', '.join(f['purged_on'])}) had purged its FDB entries {f['purged_after']:.2f} s after")
    else:
        parts.append("no peer was seen purging it")
    fwd = f["kept_forwarding"]
    if fwd:
        said = []
        for pair, n in fwd.items():
            verdict = ("unobserved (no sample came back, not even after the heal)" if not n["sent"] else
                       "kept forwarding" if n["answered"] == n["sent"] else
                       "did not forward" if not n["answered"] else "forwarded partly")
            held = (f" ({n['held']} held by its agent while it was cut from the controller, handed over when it "
                    f"was back" + (f"; {n['dropped']} more did not fit its buffer" if n.get("dropped") else "") + ")"
                    if n.get("held") else "")
            said.append(f"{pair} {verdict}, {n['answered']} of {n['sent']} answered{held}")
        parts.append("inside the side it could still reach: " + "; ".join(said))
    after = []
    if f["lease_back"]:
        after.append(", ".join(f"{h} alive again after {t:.2f} s" for h, t in f["lease_back"].items()))
    if f["restored_after"] is not None:
        after.append(f"the peers had its entries back after {f['restored_after']:.2f} s")
    after.append(f"everything converged (every host alive, no agent's drift) after {f['converged_after']:.2f} s"
                 if f["converged_after"] is not None else "convergence was not seen before the watcher stopped")
    if f["end"] is not None:
        parts.append("after the heal: " + ", ".join(after))
    return "; ".join(parts) + "."


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def plot(result: Result, path: Path) -> None:
    """The timeline PNG; PlotsMissing without matplotlib."""
    plt = plots.pyplot()

    pairs = result.pairs
    tcp = [p for p in pairs if p.rates]
    rows = 2 + (1 if tcp else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.2 + 1.6 * rows + 0.3 * len(pairs)), sharex=True,
                             gridspec_kw={"height_ratios": [2, max(1, 0.35 * len(pairs))] + ([1.5] if tcp else [])})
    rtt_ax, reach_ax = axes[0], axes[1]
    for p in pairs:
        pts = [(t, r) for t, r in p.samples if r is not None]
        if pts:
            rtt_ax.plot(*zip(*pts), ".", markersize=2, label=p.name)
    rtt_ax.set_ylabel("RTT (ms)")
    rtt_ax.set_yscale("log")
    rtt_ax.legend(loc="upper right", fontsize=7, ncol=4)
    for row, p in enumerate(pairs):
        ok = [t for t, r in p.samples if r is not None]
        lost = [t for t, r in p.samples if r is None]
        reach_ax.plot(ok, [row] * len(ok), "|", color="tab:green", markersize=8)
        reach_ax.plot(lost, [row] * len(lost), "|", color="tab:red", markersize=8)
        for a, b in unobserved(p.samples, p.interval, duration=result.duration):  # no samples: grey
            reach_ax.plot([a, b], [row, row], color="tab:gray", linewidth=4, alpha=0.5)
    reach_ax.set_yticks(range(len(pairs)), [p.name for p in pairs], fontsize=8)
    reach_ax.set_ylim(-0.7, len(pairs) - 0.3)
    reach_ax.set_ylabel("reachable")
    if tcp:
        for p in tcp:
            axes[2].step(*zip(*p.rates), where="post", label=p.name)
        axes[2].set_ylabel("TCP (Mbit/s)")
        axes[2].legend(loc="upper right", fontsize=7)
    for f in result.faults:
        end = f.end if f.end is not None else result.duration
        for ax in axes:
            ax.axvspan(f.start, end, color="tab:orange", alpha=0.15)
        for t in f.lease_expired.values():  # when the controller saw a target's lease expire
            reach_ax.axvline(f.start + t, color="tab:brown", linestyle=":", linewidth=1)
        if f.purged_after is not None:  # when the last peer dropped the dead host's entries
            reach_ax.axvline(f.start + f.purged_after, color="tab:purple", linestyle="--", linewidth=1)
            reach_ax.text(f.start + f.purged_after, len(pairs) - 0.35, " peers purged", fontsize=7,
                          color="tab:purple", va="bottom")
        rtt_ax.text(f.start, 1.02, f" {f.id}: {f.description}", transform=rtt_ax.get_xaxis_transform(),
                    fontsize=7, va="bottom", clip_on=False)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, result.duration)
    fig.suptitle(f"experiment {result.scenario.name} — {result.where}", y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
