"""`vxlab controller serve`: parse the flags and hand them to the controller's server.

The server itself lives in vxlab.controller.server and is imported only when the
command runs, so the rest of the CLI loads without the controller's dependencies.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Annotated

import typer

from vxlab.cli import main as cli
from vxlab.errors import VxError

app: typer.Typer = typer.Typer(help="Run the vxlab controller.", no_args_is_help=True)


@app.command("serve")
def serve(
    listen: Annotated[str, typer.Option(metavar="ADDR", help="gRPC listen address.")] = "127.0.0.1:7070",
    etcd: Annotated[str | None, typer.Option(
        metavar="URL,URL…", help="etcd endpoints, comma-separated.")] = None,
    embedded_etcd: Annotated[str | None, typer.Option(
        "--embedded-etcd", metavar="DIR", help="Run a private etcd with its data in DIR.")] = None,
    metrics: Annotated[str | None, typer.Option(metavar="ADDR", help="Prometheus metrics address.")] = None,
    lease_ttl: Annotated[int, typer.Option(min=1, metavar="SECONDS", help="Host lease TTL.")] = 5,
    subnet_pool: Annotated[str, typer.Option(metavar="CIDR", help="Pool network subnets come from.")] = "10.0.0.0/8",
    subnet_prefix: Annotated[int, typer.Option(min=1, max=32, metavar="N", help="Prefix length of allocated subnets.")] = 24,
) -> None:
    """Serve the controller's gRPC API, backed by etcd."""
    endpoints = [u.strip() for u in etcd.split(",") if u.strip()] if etcd is not None else None
    if endpoints is not None and embedded_etcd is not None:
        cli.fail("etcd: --etcd and --embedded-etcd are mutually exclusive")
    if etcd is not None and not endpoints:
        cli.fail("etcd: no endpoint given")
    from vxlab.controller.server import (
        serve_forever,  # lazily, see the module docstring
    )

    try:
        result = serve_forever(
            listen=listen, etcd_endpoints=endpoints, embedded_etcd_dir=embedded_etcd,
            metrics=metrics, lease_ttl=lease_ttl, subnet_pool=subnet_pool, subnet_prefix=subnet_prefix,
        )
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except VxError as err:
        cli.fail(err.message)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
