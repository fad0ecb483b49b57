"""`vxlab controller serve`: parse the flags and hand them to the controller's server.

The server itself lives in vxlab.controller.server and is imported only when the
command runs, so the rest of the CLI loads without the controller's dependencies.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Annotated

import typer

from vxlab.cli import main as cli
from vxlab.errors import VxError
from vxlab.tls import Pki, TlsConfig

app: typer.Typer = typer.Typer(help="Run the vxlab controller.", no_args_is_help=True)


FileOpt = Annotated[Path | None, typer.Option(metavar="FILE")]


def _tls(ctx: typer.Context, *, pki: Path | None, insecure: bool, files: dict[str, Path | None],
         etcd_files: dict[str, Path | None], etcd_plain: bool,
         ) -> tuple[TlsConfig | None, TlsConfig | None, TlsConfig | None]:
    """(server, etcd client, embedded etcd server) TLS settings from the flags; a PKI's
    etcd certificates are used unless the etcd endpoints given are plain http."""
    state = ctx.obj if isinstance(ctx.obj, cli.CliState) else None
    pki = pki or (state.pki if state else None)
    server = TlsConfig.of(**files, field="tls")
    etcd = TlsConfig.of(**etcd_files, field="etcd")
    if insecure and (server or pki):
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
    listen: Annotated[str, typer.Option(metavar="ADDR", help="gRPC listen address.")] = "127.0.0.1:7070",
    etcd: Annotated[str | None, typer.Option(
        metavar="URL,URL…", help="etcd endpoints, comma-separated.")] = None,
    embedded_etcd: Annotated[str | None, typer.Option(
        "--embedded-etcd", metavar="DIR", help="Run a private etcd with its data in DIR.")] = None,
    metrics: Annotated[str | None, typer.Option(metavar="ADDR", help="Prometheus metrics address.")] = None,
    lease_ttl: Annotated[int, typer.Option(min=1, metavar="SECONDS", help="Host lease TTL.")] = 5,
    subnet_pool: Annotated[str, typer.Option(metavar="CIDR", help="Pool network subnets come from.")] = "10.0.0.0/8",
    subnet_prefix: Annotated[int, typer.Option(min=1, max=32, metavar="N", help="Prefix length of allocated subnets.")] = 24,
    pki: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Mutual TLS with DIR's controller certificate; etcd over TLS with DIR's etcd client "
                            "certificate (and an embedded etcd with its server certificate).")] = None,
    tls_ca: FileOpt = None, tls_cert: FileOpt = None, tls_key: FileOpt = None,
    etcd_ca: FileOpt = None, etcd_cert: FileOpt = None, etcd_key: FileOpt = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve plaintext (the default without TLS flags).")] = False,
) -> None:
    """Serve the controller's gRPC API, backed by etcd. With --pki or --tls-*, only
    clients with a certificate of the CA get in, and each may do what its identity allows."""
    endpoints = [u.strip() for u in etcd.split(",") if u.strip()] if etcd is not None else None
    if endpoints is not None and embedded_etcd is not None:
        cli.fail("etcd: --etcd and --embedded-etcd are mutually exclusive")
    if etcd is not None and not endpoints:
        cli.fail("etcd: no endpoint given")
    from vxlab.controller.server import (
        serve_forever,  # lazily, see the module docstring
    )

    try:
        tls, etcd_tls, embedded_tls = _tls(ctx, pki=pki, insecure=insecure,
                                           files={"ca": tls_ca, "cert": tls_cert, "key": tls_key},
                                           etcd_files={"ca": etcd_ca, "cert": etcd_cert, "key": etcd_key},
                                           etcd_plain=bool(endpoints) and not any(
                                               e.startswith("https://") for e in endpoints or []))
        result = serve_forever(
            listen=listen, etcd_endpoints=endpoints, embedded_etcd_dir=embedded_etcd,
            metrics=metrics, lease_ttl=lease_ttl, subnet_pool=subnet_pool, subnet_prefix=subnet_prefix,
            tls=tls, etcd_tls=etcd_tls, embedded_etcd_tls=embedded_tls,
        )
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except VxError as err:
        cli.fail(err.message)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
