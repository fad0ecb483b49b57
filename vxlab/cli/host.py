"""`vxlab host …`: the hosts (agents) registered with the controller and their liveness."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from vxlab.cli import main as cli
from vxlab.model import Endpoint, Host

if TYPE_CHECKING:
    from vxlab.client import Client

app: typer.Typer = typer.Typer(help="Inspect registered hosts.", no_args_is_help=True)
COLUMNS = ("NAME", "UNDERLAY IP", "MTU", "ALIVE", "ENDPOINTS", "REGISTERED")


def host_row(host: Host, *, endpoints: int) -> list[str | Text]:
    alive = Text("yes", style="green") if host.alive else Text("no", style="red")
    mtu = str(host.underlay_mtu) if host.underlay_mtu else "-"
    return [host.name, host.underlay_ip, mtu, alive, str(endpoints), host.registered_at]


@app.command("ls")
def ls(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    lab: cli.LabOpt = None,
) -> None:
    """List hosts, whether their lease is alive, and how many endpoints they carry."""

    async def go(c: Client) -> tuple[list[Host], list[Endpoint]]:
        hosts, eps = await asyncio.gather(c.list_hosts(), c.list_endpoints())
        return hosts, eps

    hosts, eps = cli.call(ctx, go)
    counts = Counter(e.host for e in eps)
    hosts = sorted(hosts, key=lambda h: h.name)
    cli.output(as_json=as_json, data=[dataclasses.asdict(h) for h in hosts], columns=COLUMNS,
               rows=[host_row(h, endpoints=counts[h.name]) for h in hosts])


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="HOST", help="A lab host.")],
    cmd: Annotated[list[str], typer.Argument(help="Command to run in the host's namespace.")],
    lab: cli.LabOpt = None,
) -> None:
    """Run CMD in a lab host's network namespace (with stdin), DOCKER_HOST set to the
    host's dockerd on a `docker: true` host; its exit code is passed through."""
    import subprocess
    import sys

    from vxlab.lab.lab import Lab
    from vxlab.lab.procs import LabError

    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        cli.fail("cmd: nothing to run (vxlab host exec HOST -- CMD…)")
    to = cli.target(ctx)
    if not to.lab:
        cli.fail("host exec: needs a lab (--lab NAME); on real hosts run the command there")
    try:
        argv, env = Lab(to.lab).host_command(name, cmd)
    except LabError as e:
        cli.fail(str(e))
    raise typer.Exit(subprocess.run(argv, env=env, stdin=sys.stdin).returncode)
