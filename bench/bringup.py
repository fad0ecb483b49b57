"""Bring-up benchmark: `up` of N hosts x 5 containers from nothing to converged.

For each size it writes a topology (one network, 5 containers per host), times
`Lab.up` phase by phase (the progress messages mark the phases), then `down`; with
several `controls` (the topology's `control: local | underlay`: agents on the
controller's unix socket, or dialing its control address across the underlay) each size
runs once with each, one after the other, so they see the same machine. Writes
bringup.json and bringup.png. Target (issue 4): 100 x 5 <= 30 s, linear growth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vxlab.bench import machine, summary
from vxlab.lab import plots
from vxlab.lab.lab import Lab
from vxlab.lab.topology import DEFAULT_CONTROL, parse


def topology(name: str, hosts: int, per_host: int = 5, *, control: str = DEFAULT_CONTROL) -> str:
    lines = [f"name: {name}", f"control: {control}", f"underlay: {{subnet: 172.30.0.0/{23 if hosts > 200 else 24}}}",
             f"hosts: {hosts}", "networks:", "  - {name: blue, subnet: 10.60.0.0/16}", "containers:"]
    for h in range(1, hosts + 1):
        for c in range(per_host):
            lines.append(f"  - {{name: c{h}-{c}, host: h{h}, networks: [blue]}}")
    return "\n".join(lines) + "\n"


def measure(hosts: int, *, control: str = DEFAULT_CONTROL) -> dict[str, Any]:
    name = "vxbenchbu"  # a name of its own: namespaces are global on the machine
    lab = Lab(name)
    lab.down()
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()

    def progress(msg: str) -> None:
        marks.append((msg, time.perf_counter() - start))

    try:
        lab.up(parse(topology(name, hosts, control=control)), progress=progress)
        total = time.perf_counter() - start
    finally:
        t0 = time.perf_counter()
        lab.down()
        down = time.perf_counter() - t0
    phases: dict[str, float] = {}
    for (msg, t), (_, t_next) in zip(marks, [*marks[1:], ("end", total)], strict=True):
        phases[msg] = round(phases.get(msg, 0.0) + t_next - t, 3)
    return {"hosts": hosts, "containers": hosts * 5, "control": control, "seconds": round(total, 2),
            "down_seconds": round(down, 2), "phases": phases}


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size: the median seconds over the repetitions with `local` and with `underlay`
    control, each one's runs, and the ratio of the medians (pure)."""
    out = []
    for hosts in sorted({r["hosts"] for r in rows}):
        by = {c: [r["seconds"] for r in rows if r["hosts"] == hosts and r["control"] == c] for c in ("local", "underlay")}
        if by["local"] and by["underlay"]:
            local, under = summary.median(by["local"]), summary.median(by["underlay"])
            out.append({"hosts": hosts, "local_s": local, "underlay_s": under, "runs_s": by,
                        "underlay_over_local": summary.ratio(under, local)})
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        plt = plots.pyplot()
    except plots.PlotsMissing:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for control in sorted({r.get("control", DEFAULT_CONTROL) for r in rows}):
        mine = [r for r in rows if r.get("control", DEFAULT_CONTROL) == control]
        sizes = sorted({r["hosts"] for r in mine})
        ax.plot(sizes, [summary.median([r["seconds"] for r in mine if r["hosts"] == n]) for n in sizes], "o-",
                label=f"vxlab up (5 containers/host), control: {control}")
    ax.axhline(30, color="red", linestyle="--", label="target: 100 x 5 in 30 s")
    ax.set_xlabel("hosts")
    ax.set_ylabel("seconds to converged")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(out_dir: Path, *, sizes: list[int] | None = None, controls: tuple[str, ...] = (DEFAULT_CONTROL,),
        reps: int = 1) -> dict[str, Any]:
    """`reps` runs of every size with every control, the controls' order alternating
    between repetitions (the machine is shared: a burst of load hits both alike)."""
    sizes = sizes or [10, 25, 50, 100]
    rows = [measure(n, control=c) | {"rep": rep} for rep in range(reps) for n in sizes
            for c in (controls if rep % 2 == 0 else controls[::-1])]
    result = {"benchmark": "bring-up: vxlab up, N hosts x 5 containers, to converged",
              "target": "100 x 5 <= 30 s, linear growth", "machine": machine.describe(), "sizes": rows}
    if len(controls) > 1:
        result["control"] = compare(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(rows, out_dir / "bringup.png")
    result["plot"] = str(png) if png else plots.MISSING
    result["path"] = str(machine.write(out_dir, "bringup", result))
    return result
