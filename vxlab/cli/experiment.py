"""`vxlab experiment run FILE -o DIR`: a timed fault scenario with a report and a picture.

Thin: load the scenario → `vxlab.lab.experiment.run` (in its lab) or `run_on` (with
`--controller ADDR --pki DIR`: against a deployment, no lab here) → a per-pair table,
one line per fault with what the control plane showed, and the paths.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from vxlab.cli.main import LabOpt, client_factory, fail, given_lab, output, remote
from vxlab.errors import VxError

app = typer.Typer(help="Timed failure-injection experiments with reports.", no_args_is_help=True)


@app.command("run")
def run(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Scenario file (YAML).")],
    out: Annotated[Path, typer.Option("-o", "--out", metavar="DIR", help="Where to write the results.")],
    keep: Annotated[bool, typer.Option("--keep", help="Leave the lab up afterwards.")] = False,
    lab: LabOpt = None,
) -> None:
    """Run the scenario: probes from the agents, faults on the timeline (the agents' kinds
    through the fault API); write samples, summary.json, report.md and timeline.png to DIR.
    In the topology's lab (or --lab NAME), brought up if needed; with --controller ADDR
    (and --pki DIR) against that deployment, naming its containers and hosts."""
    from vxlab.lab import experiment, plots, report, scenario
    from vxlab.lab.procs import LabError
    from vxlab.lab.topology import TopologyError

    deployment = remote(ctx)
    say = lambda s: typer.echo(s, err=True)  # noqa: E731
    try:
        sc = scenario.load(file)
        if deployment is not None:
            client = client_factory(deployment.controller, tls=deployment.tls)
            result = experiment.run_on(sc, client, where=f"controller {deployment.controller}", out=out, progress=say)
        else:
            if (name := given_lab(ctx)) is not None and sc.topology is not None:  # as `up --lab NAME`
                sc = dataclasses.replace(sc, topology=dataclasses.replace(sc.topology, name=name))
            result = experiment.run(sc, out=out, keep=keep, progress=say)
    except scenario.ScenarioError as e:
        fail(str(scenario.locate(file, e)))
    except (TopologyError, LabError, OSError) as e:
        fail(str(e))
    except VxError as e:
        fail(e.message)
    s = report.summarize(result)
    output(as_json=False, data=None,
           columns=["PAIR", "SENT", "LOST", "LOSS", "LONGEST OUTAGE", "RECOVERED AFTER HEAL"],
           rows=[[p["pair"], str(p["sent"]), str(p["lost"]), f"{p['loss_pct']:.1f}%", f"{p['longest_outage_s']:.2f}s",
                  ", ".join(f"{k} {v:.2f}s" for k, v in p["recovered_after_heal_s"].items()) or "-"]
                 for p in s["pairs"]])
    for f in s["faults"]:
        say(f"{f['id']}: {f['description']}: {report.control_plane(f)}"
            + (f"  ERROR {f['error']}" if f["error"] else ""))
    png = out / "timeline.png"
    say(f"report: {out / 'report.md'}  timeline: {png if png.is_file() else plots.MISSING}")
