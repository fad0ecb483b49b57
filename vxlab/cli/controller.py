"""`vxlab controller serve`: parse the flags (and a --config file) and hand them to the
controller's server.

The server itself lives in vxlab.controller.server and is imported only when the
command runs, so the rest of the CLI loads without the controller's dependencies.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from vxlab import config
from vxlab.cli import main as cli
from vxlab.cli.flags import given
from vxlab.errors import VxError
from vxlab.tls import Pki, TlsConfig

app: typer.Typer = typer.Typer(help="Run the vxlab controller.", no_args_is_help=True)
FileOpt = Annotated[str | None, typer.Option(metavar="FILE")]


def _default(key: str) -> Any:
    return config.default("controller", key)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _tls(ctx: typer.Context, opts: dict[str, Any], *, etcd_plain: bool,
         ) -> tuple[TlsConfig | None, TlsConfig | None, TlsConfig | None]:
    """(server, etcd client, embedded etcd server) TLS settings; a PKI's etcd
    certificates are used unless the etcd endpoints given are plain http."""
    state = ctx.obj if isinstance(ctx.obj, cli.CliState) else None
    pki = _path(opts["pki"]) or (state.pki if state else None)
    server = TlsConfig.of(ca=_path(opts["tls_ca"]), cert=_path(opts["tls_cert"]), key=_path(opts["tls_key"]),
                          field="tls")
    etcd = TlsConfig.of(ca=_path(opts["etcd_ca"]), cert=_path(opts["etcd_cert"]), key=_path(opts["etcd_key"]),
                        field="etcd")
    if opts["insecure"] and (server or pki):
        cli.fail("insecure: contradicts --pki/--tls-*")
    if pki is None:
        return server, etcd, None
    layout = Pki(pki)
    if not layout.ca.is_file():
        cli.fail(f"pki: no CA in {pki} (run 'vxlab pki init {pki}')")
    has_etcd = layout.has_etcd() and not etcd_plain
    return (server or layout.controller(), etcd or (layout.etcd_client() if has_etcd else None),
            layout.etcd_server() if has_etcd else None)


@app.command("serve")
def serve(
    ctx: typer.Context,
    config_file: Annotated[str | None, typer.Option(
        "--config", metavar="FILE", help="TOML file with a [controller] table; flags override it.")] = None,
    listen: Annotated[str, typer.Option(metavar="ADDR", help="gRPC listen address.")] = _default("listen"),
    listen_netns: Annotated[list[str] | None, typer.Option(
        "--listen-netns", metavar="NETNS=ADDR",
        help="Also listen on host:port inside network namespace NETNS (repeatable).")] = None,
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
    pki: Annotated[str | None, typer.Option(
        metavar="DIR", help="Mutual TLS with DIR's controller certificate; etcd over TLS with DIR's etcd client "
                            "certificate (and an embedded etcd with its server certificate).")] = None,
    tls_ca: FileOpt = None, tls_cert: FileOpt = None, tls_key: FileOpt = None,
    etcd_ca: FileOpt = None, etcd_cert: FileOpt = None, etcd_key: FileOpt = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve plaintext (the default without TLS flags).")] = False,
) -> None:
    """Serve the controller's gRPC API, backed by etcd. With --pki or --tls-*, only
    clients with a certificate of the CA get in, and each may do what its identity allows."""
    try:
        flags = given(ctx, exclude=frozenset({"config_file", "listen_netns"}))
        if listen_netns:
            flags["listen_netns"] = cli.parse_labels(listen_netns, field="listen-netns")
        opts = config.resolve("controller", path=config_file, flags=flags)
    except VxError as err:
        cli.fail(err.message)
    if opts["etcd"] is not None and opts["embedded_etcd"] is not None:
        cli.fail("etcd: --etcd and --embedded-etcd are mutually exclusive")
    from vxlab.controller.server import (
        serve_forever,  # lazily, see the module docstring
    )

    endpoints = opts["etcd"]
    try:
        tls, etcd_tls, embedded_tls = _tls(ctx, opts, etcd_plain=bool(endpoints) and not any(
            e.startswith("https://") for e in endpoints or []))
        result = serve_forever(
            listen=opts["listen"], listen_netns=opts["listen_netns"], etcd_endpoints=endpoints,
            embedded_etcd_dir=opts["embedded_etcd"], metrics=opts["metrics"], lease_ttl=opts["lease_ttl"], subnet_pool=opts["subnet_pool"],
            subnet_prefix=opts["subnet_prefix"], tls=tls, etcd_tls=etcd_tls, embedded_etcd_tls=embedded_tls,
        )
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except VxError as err:
        cli.fail(err.message)
    except OSError as err:  # a listener that cannot be made: one line, not a traceback
        cli.fail(str(err))
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
