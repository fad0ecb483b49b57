"""`vxlab fault add KIND … / ls / inspect / heal`: failure injection, in a lab or on real hosts.

Thin: options → one call → one line or a table. In a lab, `Lab.add_fault` / `Lab.heal`
/ `Lab.faults` (the lab decides where each kind runs, vxlab.lab.faults); without one
(`--controller ADDR --pki DIR`), the controller's fault API (vxlab.faultapi): the kinds
agents carry out. The kinds, their options and this help come from vxlab.faultkinds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vxlab import faultapi, faultkinds
from vxlab.cli.lab import JsonOpt
from vxlab.cli.main import LabOpt, call, fail, in_lab_or_call, output, print_json, target
from vxlab.errors import VxError

if TYPE_CHECKING:
    from vxlab.client import Client
    from vxlab.lab.faults import Fault as LabFault
    from vxlab.lab.lab import Lab
    from vxlab.model import Fault

app = typer.Typer(help="Inject faults (in a lab, or on real hosts through the controller), list them, heal them.",
                  no_args_is_help=True)
COLUMNS = ["ID", "FAULT", "SINCE", "HEALS IN", "STATUS"]


def _opt(name: str, metavar: str) -> Any:
    return typer.Option(f"--{name.replace('_', '-')}", metavar=metavar, help=faultkinds.option_help(name))


@app.command("add")
def add(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=faultkinds.kinds_help(), metavar="KIND")],
    host: Annotated[str | None, _opt("host", "H")] = None,
    hosts: Annotated[str | None, _opt("hosts", "A,B")] = None,
    from_: Annotated[str | None, _opt("from", "C,D")] = None,
    oneway: Annotated[bool | None, typer.Option("--oneway", help=faultkinds.option_help("oneway"))] = None,
    percent: Annotated[str | None, _opt("percent", "P")] = None,
    direction: Annotated[str | None, _opt("direction", "D")] = None,
    mbit: Annotated[str | None, _opt("mbit", "N")] = None,
    ms: Annotated[str | None, _opt("ms", "N")] = None,
    jitter_ms: Annotated[str | None, _opt("jitter_ms", "J")] = None,
    member: Annotated[str | None, _opt("member", "N")] = None,
    for_: Annotated[str | None, typer.Option("--for", metavar="DURATION", help=(
        "Heal after e.g. 10s, 500ms, 2m (the fault's lease: it heals even if no vxlab process is left); "
        "needed by the faults that can cut an agent from the controller."))] = None,
    lab: LabOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inject a fault; prints its id once every host it targets applied it (or says which
    have not reported yet). A fault a host cannot carry out is removed again: error."""
    given = {"host": host, "hosts": hosts, "from": from_, "oneway": oneway, "percent": percent,
             "direction": direction, "mbit": mbit, "ms": ms, "jitter_ms": jitter_ms, "member": member}
    params = {k: v for k, v in given.items() if v is not None}
    try:
        duration = faultkinds.parse_duration(for_) if for_ is not None else None
        runs = faultkinds.kind_of(kind, field="").runs
    except VxError as e:
        fail(e.message)
    if runs == faultkinds.LAB and not target(ctx).lab:
        fail(f"kind: {kind} acts on a lab's own processes: no lab is selected (--lab NAME)")

    async def alone(c: Client) -> faultapi.Injected:
        return await faultapi.inject(c, kind, params, duration=duration or 0.0)

    def in_lab(the_lab: Lab) -> Any:
        return the_lab.add_fault(kind, duration=duration, **params)
    made = in_lab_or_call(ctx, in_lab=in_lab, alone=alone)
    f = _lab_fault(made.fault) if isinstance(made, faultapi.Injected) else made
    pending = made.pending
    if as_json:
        print_json(f.to_json())
        return
    typer.echo(f.id)
    typer.echo(f"fault {f.id}: {f.describe()}" + (f", healed after {for_}" if for_ else "")
               + (f"; pending (not reported yet): {', '.join(pending)}" if pending else ""), err=True)


@app.command("ls")
def ls(ctx: typer.Context, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """Active faults (the lab runner's and the agents'), with each host's status."""
    faults = _listing(ctx)
    now = time.time()
    output(as_json=as_json, data=[f.to_json() for f in faults], columns=COLUMNS,
           rows=[[f.id, f.describe(), f"{now - f.started:.1f}s",
                  f"{max(0.0, f.until - now):.1f}s" if f.until else "-",
                  faultapi.statuses(f.status) if f.agents else "lab runner"] for f in faults])


@app.command("inspect")
def inspect(ctx: typer.Context, fault_id: Annotated[str, typer.Argument(metavar="ID", help="The fault.")],
            lab: LabOpt = None) -> None:
    """One fault as JSON: kind, parameters, targets, each host's status."""
    found = [f for f in _listing(ctx) if f.id == fault_id]
    if not found:
        fail(f"fault: no active fault {fault_id!r}")
    print_json(found[0].to_json())


@app.command("heal")
def heal(
    ctx: typer.Context,
    fault_id: Annotated[str | None, typer.Argument(metavar="ID", help="The fault to heal.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Heal every active fault.")] = False,
    lab: LabOpt = None,
) -> None:
    """Heal a fault (or all): in a lab, returns once the hosts removed it."""
    if (fault_id is None) == (not all_):
        fail("id: give a fault id or --all (not both)")
    chosen = None if all_ else fault_id

    async def alone(c: Client) -> list[Any]:
        return [_lab_fault(f) for f in await faultapi.heal(c, chosen)]
    healed = in_lab_or_call(ctx, in_lab=lambda the_lab: the_lab.heal(chosen), alone=alone)
    for f in healed:
        typer.echo(f"healed {f.id}: {f.describe()}", err=True)


def _listing(ctx: typer.Context) -> list[LabFault]:
    if target(ctx).lab:
        return in_lab_or_call(ctx, in_lab=lambda the_lab: the_lab.faults(), alone=_none)
    return [_lab_fault(f) for f in call(ctx, lambda c: c.list_faults())]


async def _none(c: Client) -> list[Any]:
    return []


def _lab_fault(r: Fault) -> LabFault:
    """A controller's fault in the shape the lab lists (vxlab.lab.faults.Fault)."""
    from vxlab.lab.faults import of_record

    return of_record(r)
