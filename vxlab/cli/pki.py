"""`vxlab pki …`: make the certificates mutual TLS runs on (see vxlab.pki)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vxlab.cli.main import fail
from vxlab.errors import VxError

app = typer.Typer(help="Certificates for mutual TLS: CAs, controller, admin, hosts, etcd.", no_args_is_help=True)

Force = Annotated[bool, typer.Option("--force", help="Overwrite what exists.")]


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write the PKI.")],
    host: Annotated[list[str] | None, typer.Option("--host", metavar="NAME", help="Issue a host certificate.")] = None,
    san: Annotated[list[str] | None, typer.Option(
        "--san", metavar="NAME|IP", help="Extra controller/etcd server name (localhost, 127.0.0.1, ::1 always).")] = None,
    force: Force = False,
) -> None:
    """Create the CAs and the controller, admin, etcd and host certificates in DIR."""
    from vxlab import pki

    try:
        made = pki.init(directory, hosts=host or [], san=san or [], force=force)
    except VxError as e:
        fail(e.message)
    typer.echo(f"pki: wrote {made.dir} (CA, controller, admin, etcd, {len(host or [])} hosts)", err=True)


@app.command("issue-host")
def issue_host(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A PKI made by `vxlab pki init`.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The host's name.")],
    force: Force = False,
) -> None:
    """Issue the client certificate of host NAME (CN=host:NAME, URI vxlab://host/NAME)."""
    from vxlab import pki

    try:
        path = pki.issue_host(directory, name, force=force)
    except VxError as e:
        fail(e.message)
    typer.echo(f"pki: wrote {path}", err=True)
