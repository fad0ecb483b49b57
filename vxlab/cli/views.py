"""Looking verbs: `vxlab graph` (a picture of the overlay) and `vxlab store ls` (the
etcd keys behind it).

Both are thin: they find the lab (or the controller), make one core call in
`vxlab.lab.graph` / `vxlab.lab.store_view`, and print. Bad input and unreachable
services are one `error: …` line and exit code 1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vxlab.cli.main import LabOpt, call, chosen_lab, fail, output, print_json, target

if TYPE_CHECKING:
    from vxlab.client import Client
    from vxlab.model import Endpoint, Host, Network

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
VALUE_WIDTH = 70

Snapshot = tuple[list["Host"], list["Network"], list["Endpoint"], int]


async def _snapshot(c: Client) -> Snapshot:
    hosts, networks, endpoints = await asyncio.gather(c.list_hosts(), c.list_networks(), c.list_endpoints())
    return hosts, networks, endpoints, await c.revision()


def graph(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--out", metavar="FILE",
                                      help="Where to write: FILE.svg, FILE.png or FILE.dot (Graphviz source).")],
    lab: LabOpt = None,
) -> None:
    """Draw hosts, containers and networks as a picture (Graphviz)."""
    from vxlab.lab.graph import FORMATS, GraphError, render, to_dot

    if out.suffix.lower() not in FORMATS:  # before asking the controller anything
        fail(f"out: {out.name!r} must end in one of {', '.join(FORMATS)}")
    to = target(ctx)
    hosts, networks, endpoints, rev = call(ctx, _snapshot)
    title = f"lab {to.lab} · revision {rev}" if to.lab else f"controller {to.controller} · revision {rev}"
    try:
        path = render(to_dot(hosts, networks, endpoints, title=title, vms=_vms(to.lab)), out)
    except GraphError as e:
        fail(str(e))
    containers = len({(e.host, e.name) for e in endpoints})
    typer.echo(f"graph: wrote {path} ({len(hosts)} hosts, {len(networks)} networks, "
               f"{containers} containers, revision {rev})", err=True)


def _vms(lab: str | None) -> dict[str, str]:
    """A lab's VM hosts and how each runs (kvm, tcg; "" before its first boot)."""
    if not lab:
        return {}
    from vxlab.lab.lab import Lab

    return Lab(lab).vm_hosts()


def store_ls(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Key prefix under /vxlab/v1/, e.g. networks/ or alive/.")] = "",
    as_json: JsonOpt = False,
    lab: LabOpt = None,
) -> None:
    """List the etcd keys of the lab under /vxlab/v1/ with their values and revisions."""
    from vxlab.controller.store import StoreUnavailable
    from vxlab.lab.lab import Lab
    from vxlab.lab.store_view import full_prefix, one_line
    from vxlab.lab.store_view import store_ls as read

    name = chosen_lab(ctx)
    if not name:
        fail("store: no lab selected (the store view reads the lab's etcd)")
    the_lab = Lab(name)
    if not the_lab.exists:
        fail(f"store: no lab named {name!r} on this machine")
    if not the_lab.etcd_endpoints:
        fail(f"store: lab {name!r} has no etcd (is it up?)")
    try:
        rows, revision = asyncio.run(read(the_lab.etcd_endpoints, prefix, tls=the_lab.etcd_tls()))
    except (StoreUnavailable, ValueError) as e:
        fail(f"store: {e}")
    if as_json:
        print_json(rows)
    else:
        output(as_json=False, data=rows, columns=["KEY", "VALUE", "MOD REV", "LEASE"],
               rows=[[r["key"], one_line(r["value"], width=VALUE_WIDTH), str(r["mod_revision"]),
                      str(r["lease"] or "-")] for r in rows])
    typer.echo(f"revision {revision}, {len(rows)} keys"
               + ("" if rows else f" under {full_prefix(prefix)}"), err=True)
