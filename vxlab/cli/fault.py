"""`vxlab fault add KIND … / ls / heal`: failure injection on a running lab.

Thin: options → `Lab.add_fault` / `Lab.heal` / `Lab.faults` → one line or a table.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from vxlab.cli.lab import JsonOpt
from vxlab.cli.main import LabOpt, fail, lab_name, output, print_json

app = typer.Typer(help="Inject faults into a running lab, list them, heal them.", no_args_is_help=True)

KINDS_HELP = ("partition --hosts A[,B] --from C[,D] [--oneway] | loss --host H --percent P [--direction D] | "
              "rate --host H --mbit N | delay --host H --ms N [--jitter-ms J] (needs netem) | link-down --host H | "
              "agent-kill --host H | host-crash --host H | etcd-stop | etcd-member-kill --member N | controller-kill")


@app.command("add")
def add(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=KINDS_HELP, metavar="KIND")],
    host: Annotated[str | None, typer.Option(metavar="H", help="The host (loss, rate, delay, link-down, "
                                                               "agent-kill, host-crash).")] = None,
    hosts: Annotated[str | None, typer.Option(metavar="A,B", help="partition: one side.")] = None,
    from_: Annotated[str | None, typer.Option("--from", metavar="C,D", help="partition: the other side.")] = None,
    oneway: Annotated[bool | None, typer.Option("--oneway", help="partition: drop only HOSTS -> FROM.")] = None,
    percent: Annotated[float | None, typer.Option(metavar="P", help="loss: percent of frames dropped.")] = None,
    direction: Annotated[str | None, typer.Option(metavar="D", help="egress|ingress|both (loss: egress, "
                                                                    "rate: both).")] = None,
    mbit: Annotated[float | None, typer.Option(metavar="N", help="rate: token-bucket rate in Mbit/s.")] = None,
    ms: Annotated[float | None, typer.Option(metavar="N", help="delay: milliseconds.")] = None,
    jitter_ms: Annotated[float | None, typer.Option(metavar="J", help="delay: jitter in ms.")] = None,
    member: Annotated[int | None, typer.Option(metavar="N", help="etcd-member-kill: which member (1..3).")] = None,
    for_: Annotated[str | None, typer.Option("--for", metavar="DURATION", help="Heal after e.g. 10s, 500ms, 2m.")] = None,
    lab: LabOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inject a fault; prints its id."""
    from vxlab.lab.faultspec import parse_duration
    from vxlab.lab.procs import LabError

    params = {"host": host, "hosts": hosts, "from": from_, "oneway": oneway, "percent": percent,
              "direction": direction, "mbit": mbit, "ms": ms, "jitter_ms": jitter_ms, "member": member}
    try:
        the_lab = _running(ctx)
        duration = parse_duration(for_) if for_ is not None else None
        f = the_lab.add_fault(kind, duration=duration, **{k: v for k, v in params.items() if v is not None})
    except LabError as e:
        fail(str(e))
    if as_json:
        print_json(f.to_json())
        return
    typer.echo(f.id)
    typer.echo(f"fault {f.id}: {f.describe()}" + (f", healed after {for_}" if for_ else ""), err=True)


@app.command("ls")
def ls(ctx: typer.Context, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """The lab's active faults."""
    from vxlab.lab.lab import Lab

    faults = Lab(lab_name(ctx)).faults()
    now = time.time()
    output(as_json=as_json, data=[f.to_json() for f in faults], columns=["ID", "FAULT", "SINCE", "HEALS IN"],
           rows=[[f.id, f.describe(), f"{now - f.started:.1f}s",
                  f"{max(0.0, f.until - now):.1f}s" if f.until else "-"] for f in faults])


@app.command("heal")
def heal(
    ctx: typer.Context,
    fault_id: Annotated[str | None, typer.Argument(metavar="ID", help="The fault to heal.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Heal every active fault.")] = False,
    lab: LabOpt = None,
) -> None:
    """Heal a fault (or all): restore exactly what was there."""
    from vxlab.lab.lab import Lab
    from vxlab.lab.procs import LabError

    if (fault_id is None) == (not all_):
        fail("id: give a fault id or --all (not both)")
    try:
        healed = Lab(lab_name(ctx)).heal(None if all_ else fault_id)
    except LabError as e:
        fail(str(e))
    for f in healed:
        typer.echo(f"healed {f.id}: {f.describe()}", err=True)


def _running(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from vxlab.lab.lab import Lab
    from vxlab.lab.procs import LabError

    the_lab = Lab(lab_name(ctx))
    if the_lab.applied is None:
        raise LabError(f"lab: no lab named {the_lab.name!r} is running")
    return the_lab
