"""`vxlab controller serve`: parse the flags and hand them to the controller's server.

The server itself lives in vxlab.controller.server and is imported only when the
command runs, so the rest of the CLI loads without the controller's dependencies.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Annotated, Any

import typer

from vxlab import config
from vxlab.cli import main as cli
from vxlab.cli.flags import given
from vxlab.errors import VxError


def _default(key: str) -> Any:
    return config.default("controller", key)


app: typer.Typer = typer.Typer(help="Run the vxlab controller.", no_args_is_help=True)


@app.command("serve")
def serve(
    ctx: typer.Context,
    config_file: Annotated[str | None, typer.Option(
        "--config", metavar="FILE", help="TOML file with a [controller] table; flags override it.")] = None,
    listen: Annotated[str, typer.Option(metavar="ADDR", help="gRPC listen address.")] = _default("listen"),
    etcd: Annotated[str | None, typer.Option(
        metavar="URL,URL…", help="etcd endpoints, comma-separated.")] = None,
    embedded_etcd: Annotated[str | None, typer.Option(
        "--embedded-etcd", metavar="DIR", help="Run a private etcd with its data in DIR.")] = None,
    metrics: Annotated[str | None, typer.Option(metavar="ADDR", help="Prometheus metrics address.")] = None,
    lease_ttl: Annotated[int, typer.Option(min=1, metavar="SECONDS", help="Host lease TTL.")] = _default("lease-ttl"),
    subnet_pool: Annotated[str, typer.Option(
        metavar="CIDR", help="Pool network subnets come from.")] = _default("subnet-pool"),
    subnet_prefix: Annotated[int, typer.Option(
        min=1, max=32, metavar="N", help="Prefix length of allocated subnets.")] = _default("subnet-prefix"),
) -> None:
    """Serve the controller's gRPC API, backed by etcd."""
    try:
        opts = config.resolve("controller", path=config_file, flags=given(ctx, exclude=frozenset({"config_file"})))
    except VxError as err:
        cli.fail(err.message)
    if opts["etcd"] is not None and opts["embedded_etcd"] is not None:
        cli.fail("etcd: --etcd and --embedded-etcd are mutually exclusive")
    from vxlab.controller.server import (
        serve_forever,  # lazily, see the module docstring
    )

    try:
        result = serve_forever(
            listen=opts["listen"], etcd_endpoints=opts["etcd"], embedded_etcd_dir=opts["embedded_etcd"],
            metrics=opts["metrics"], lease_ttl=opts["lease_ttl"], subnet_pool=opts["subnet_pool"],
            subnet_prefix=opts["subnet_prefix"],
        )
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except VxError as err:
        cli.fail(err.message)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
