"""`vxlab bench …`: run a benchmark and print its table; results go to a JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vxlab.cli.main import output

app = typer.Typer(help="Benchmarks: measured figures written to files.", no_args_is_help=True)


def _report(result: dict[str, Any], rows_key: str, columns: dict[str, str]) -> None:
    """The result's rows as a table (column title -> field), then where it was written."""
    output(as_json=False, data=result, columns=list(columns),
           rows=[[str(r[field]) for field in columns.values()] for r in result[rows_key]])
    typer.echo(f"written: {result['path']}", err=True)


@app.command("controller")
def controller(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for controller.json.")] = Path("bench/results"),
    creates: Annotated[int, typer.Option(min=10, help="Endpoint creates per concurrency level.")] = 2000,
    levels: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16",
) -> None:
    """Endpoint creates/s and p50/p99 latency at several client counts (real etcd)."""
    from vxlab.bench import controller as bench

    result = bench.run(out, levels=[int(x) for x in levels.split(",")], creates=creates)
    _report(result, "levels", {"CLIENTS": "clients", "CREATES/S": "creates_per_s", "P50 MS": "p50_ms",
                               "P99 MS": "p99_ms"})


@app.command("agent")
def agent(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for agent.json.")] = Path("bench/results"),
    samples: Annotated[int, typer.Option(min=5, help="Single creates measured per level.")] = 100,
    levels: Annotated[str, typer.Option(help="Remote endpoint counts, comma-separated.")] = "100,1000",
) -> None:
    """Event -> kernel programmed latency with N remote endpoints; agent RSS and idle CPU."""
    from vxlab.bench import agent as bench

    result = bench.run(out, levels=[int(x) for x in levels.split(",")], samples=samples)
    _report(result, "levels", {"REMOTE EPS": "remote_endpoints", "P50 MS": "p50_ms", "P99 MS": "p99_ms",
                               "RSS MB": "agent_rss_mb", "IDLE CPU %": "agent_idle_cpu_pct"})


@app.command("bringup")
def bringup(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for bringup.json/png.")] = Path("bench/results"),
    sizes: Annotated[str, typer.Option(help="Host counts, comma-separated.")] = "10,25,50,100",
) -> None:
    """Time `up` of N hosts x 5 containers to converged, phase by phase; plot it."""
    from vxlab.bench import bringup as bench

    result = bench.run(out, sizes=[int(x) for x in sizes.split(",")])
    _report(result, "sizes", {"HOSTS": "hosts", "CONTAINERS": "containers", "SECONDS": "seconds",
                              "DOWN S": "down_seconds"})
