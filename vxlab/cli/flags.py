"""Which options a command got on its command line (or from their environment
variables), as opposed to their defaults: those override a `--config` file."""

from __future__ import annotations

from typing import Any

import typer


def given(ctx: typer.Context, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Python name -> value of every option of `ctx`'s command that was given explicitly."""
    out = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if name not in exclude and source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            out[name] = value
    return out
