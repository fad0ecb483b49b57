"""`vxlab fuzz`: the soak run of the fuzz properties (see vxlab/testing/fuzz.py).

The one runtime module that imports test support (vxlab.testing), and only when the
verb runs, so the CLI loads without the test extra (hypothesis).
"""

from __future__ import annotations

from typing import Annotated

import typer

from vxlab.cli.main import fail


def fuzz(
    examples: Annotated[int, typer.Option(min=1, metavar="N", help="Cases per target.")] = 10_000,
    target: Annotated[list[str] | None, typer.Option(metavar="T", help="rpc, topology or scenario (repeatable).")] = None,
) -> None:
    """Fuzz every RPC and the topology and scenario parsers; print a summary; exit 1 on a failed property."""
    try:
        from vxlab.testing import fuzz as fz
    except ImportError as e:
        fail(f"fuzz: needs the test extra (pip install 'vxlab[test]'): {e}")
    unknown = sorted(set(target or []) - set(fz.TARGETS))
    if unknown:
        fail(f"target: unknown {', '.join(unknown)} (one of {', '.join(sorted(fz.TARGETS))})")
    raise typer.Exit(fz.soak(examples, targets=target or sorted(fz.TARGETS), out=typer.echo))
