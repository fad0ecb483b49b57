"""`vxlab doctor`: what this machine can and cannot do for vxlab, as one table.

Thin: the checks are `vxlab.lab.doctor.rows()` (the same ones `up`'s preflight
enforces), the machine's description is bench's (`vxlab.bench.machine.describe`).
Exit code 0 when a lab can run here; otherwise one `error: …` line per blocker on
stderr and exit code 1 (also with `--json`).
"""

from __future__ import annotations

import typer

from vxlab.cli.main import print_json
from vxlab.cli.views import JsonOpt


def doctor(as_json: JsonOpt = False) -> None:
    """What this machine can and cannot do: kernel features, tools, etcd, limits."""
    from vxlab.bench.machine import describe
    from vxlab.lab.doctor import rows

    found = rows()
    blockers = [r for r in found if r.blocker]
    facts = describe()
    if as_json:
        print_json({"machine": facts, "lab_can_run": not blockers, "rows": [r.to_dict() for r in found]})
    else:
        typer.echo(f"this machine: kernel {facts['kernel']}, {facts['cores']} cores, {facts['memory_gib']} GiB, "
                   f"{facts['cpu']}")
        table = [["STATE", "CHECK", "FOR", "FOUND (AND IF NOT OK)"]] + [
            [r.state, f"{r.group} {r.name}", r.enables + (" (required)" if r.required else ""),
             r.detail + (f" — {r.fix}" if r.fix else "")] for r in found]
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        for row in table:  # plain columns, nothing cut: the last one may run long
            typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3])
        typer.echo("a lab can run here" if not blockers else "a lab cannot run here")
    for r in blockers:
        typer.echo(f"error: {r.line()}", err=True)
    if blockers:
        raise typer.Exit(code=1)
