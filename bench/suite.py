"""`vxlab bench all`: every part in one run on this machine, then results.json,
RESULTS.md and the plots (bench/report.py).

Parts run one after the other (never in parallel: they would measure each other); a
part that fails is recorded with its error and the run goes on; Docker's part says
`skipped` when Docker cannot run here.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab.bench import machine

PARTS = ("dataplane", "controlplane", "deadhost", "footprint", "bringup", "docker")


def run_part(part: str, out_dir: Path, *, sizes: list[int], quick: bool,
             progress: Callable[[str], None], lab: str = "") -> dict[str, Any]:
    if part == "dataplane":
        from vxlab.bench import dataplane

        if quick:
            return dataplane.run(out_dir, mtus=[1500], reps=1, seconds=1, pings=20, tune=False, progress=progress,
                                 name=lab or dataplane.NAME)
        return dataplane.run(out_dir, reps=7, seconds=2, pings=400, progress=progress)
    if part == "controlplane":
        from vxlab.bench import controlplane

        return controlplane.run(out_dir, sizes=[3] if quick else [10, 50], samples=3 if quick else 20,
                                progress=progress)
    if part == "deadhost":
        from vxlab.bench import deadhost

        return deadhost.run(out_dir, reps=1 if quick else 5, progress=progress)
    if part == "footprint":
        from vxlab.bench import footprint

        if quick:
            return footprint.run(out_dir, creates=50, endpoints=20, agent_levels=[10], agent_samples=5,
                                 progress=progress)
        return footprint.run(out_dir, progress=progress)
    if part == "bringup":
        from vxlab.bench import bringup

        return bringup.run(out_dir, sizes=[2] if quick else sizes)
    if part == "docker":
        from vxlab.bench import peer

        if quick:
            return peer.run(out_dir, mtus=[1500], reps=1, seconds=1, pings=20, hosts=3, samples=2, dead_reps=1,
                            progress=progress)
        return peer.run(out_dir, progress=progress)
    raise ValueError(f"part: unknown benchmark part {part!r} (one of {', '.join(PARTS)})")


def run(out_dir: Path, *, parts: list[str] | None = None, sizes: list[int] | None = None, quick: bool = False,
        progress: Callable[[str], None] = lambda s: None, lab: str = "") -> dict[str, Any]:
    """Run `parts` (default: all), write results.json, RESULTS.md and the plots.
    `lab`: the data-plane lab's name for a quick run (tests use `vxt…` names)."""
    parts = parts or list(PARTS)
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"parts: unknown benchmark part {p!r} (one of {', '.join(PARTS)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine.describe(), "quick": quick, "parts": {}}
    for p in parts:
        t0 = time.monotonic()
        progress(f"== {p}")
        try:
            results["parts"][p] = run_part(p, out_dir, sizes=sizes or [10, 25, 50, 100], quick=quick,
                                           progress=progress, lab=lab)
        except Exception as e:  # noqa: BLE001 - one part failing must not lose the others
            results["parts"][p] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
            progress(f"{p}: failed: {e}")
        results["parts"][p]["wall_s"] = round(time.monotonic() - t0, 1)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from vxlab.bench import report

    results["report"] = [str(x) for x in report.render(out_dir, results)]
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
