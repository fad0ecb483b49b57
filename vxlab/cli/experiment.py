"""`vxlab experiment run FILE -o DIR`: a timed fault scenario with a report and a picture.

Thin: load the scenario → `vxlab.lab.experiment.run` → a per-pair table and the paths.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from vxlab.cli.main import LabOpt, fail, given_lab, output

app = typer.Typer(help="Timed failure-injection experiments with reports.", no_args_is_help=True)


@app.command("run")
def run(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Scenario file (YAML).")],
    out: Annotated[Path, typer.Option("-o", "--out", metavar="DIR", help="Where to write the results.")],
    keep: Annotated[bool, typer.Option("--keep", help="Leave the lab up afterwards.")] = False,
    lab: LabOpt = None,
) -> None:
    """Run the scenario: lab up, probes, faults on the timeline; write samples, summary.json,
    report.md and timeline.png to DIR. The lab is the topology's (or --lab NAME)."""
    from vxlab.lab import experiment, plots, report, scenario
    from vxlab.lab.procs import LabError
    from vxlab.lab.topology import TopologyError

    try:
        sc = scenario.load(file)
        if (name := given_lab(ctx)) is not None:  # as `up --lab NAME`: the topology under another name
            sc = dataclasses.replace(sc, topology=dataclasses.replace(sc.topology, name=name))
        result = experiment.run(sc, out=out, keep=keep, progress=lambda s: typer.echo(s, err=True))
    except (TopologyError, LabError, OSError) as e:
        fail(str(e))
    s = report.summarize(result)
    output(as_json=False, data=None,
           columns=["PAIR", "SENT", "LOST", "LOSS", "LONGEST OUTAGE", "RECOVERED AFTER HEAL"],
           rows=[[p["pair"], str(p["sent"]), str(p["lost"]), f"{p['loss_pct']:.1f}%", f"{p['longest_outage_s']:.2f}s",
                  ", ".join(f"{k} {v:.2f}s" for k, v in p["recovered_after_heal_s"].items()) or "-"]
                 for p in s["pairs"]])
    for f in s["faults"]:
        extra = "".join(f", {label} {f[key]:.2f}s" for key, label in (("purged_after", "peers purged after"),
                                                                      ("restored_after", "restored after"))
                        if f[key] is not None)
        typer.echo(f"{f['id']}: {f['description']}{extra}{'  ERROR ' + f['error'] if f['error'] else ''}", err=True)
    png = out / "timeline.png"
    typer.echo(f"report: {out / 'report.md'}  timeline: {png if png.is_file() else plots.MISSING}", err=True)
