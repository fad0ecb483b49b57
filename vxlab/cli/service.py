"""`vxlab service …`: virtual IPs load-balanced across a network's containers (create,
list, inspect, remove). Semantics: vxlab.services; the edge is thin."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from vxlab import services as semantics
from vxlab.cli import main as cli
from vxlab.errors import InvalidArgument
from vxlab.model import Service

if TYPE_CHECKING:
    from vxlab.client import Client
    from vxlab.lab.lab import Lab

app: typer.Typer = typer.Typer(help="Services: a VIP on a network, balanced across replicas (kube-proxy's nftables"
                                    " mode).", no_args_is_help=True)
COLUMNS = ("NETWORK", "NAME", "VIP", "PORTS", "REPLICAS", "AFFINITY")
NetworkOpt = Annotated[str, typer.Option("--network", "-n", metavar="NET", help="The service's network.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def row(s: Service) -> list[str]:
    who = ",".join(s.replicas) if s.replicas else ",".join(f"{k}={v}" for k, v in sorted(s.selector.items()))
    return [s.network, s.name, s.vip, ",".join(s.ports), who, s.affinity]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Service name: resolves to its VIP on the network.")],
    network: NetworkOpt,
    port: Annotated[list[str], typer.Option("--port", metavar="N[/tcp|udp]", help="A port (repeatable).")],
    replica: Annotated[list[str] | None, typer.Option("--replica", metavar="CONTAINER",
                                                      help="A replica (repeatable).")] = None,
    selector: Annotated[list[str] | None, typer.Option("--selector", metavar="KEY=VALUE",
                                                       help="Replicas by endpoint label (repeatable: all of them).")] = None,
    vip: Annotated[str, typer.Option(metavar="IP", help="The VIP (default: the subnet's highest free address).")] = "",
    affinity: Annotated[str, typer.Option(metavar="none|client-ip", help="client-ip: one replica per client.")] = "none",
    as_json: JsonOpt = False,
    lab: cli.LabOpt = None,
) -> None:
    """Create a service. In a lab: returns once every agent balances it."""
    labels: dict[str, str] = {}
    for i, item in enumerate(selector or ()):
        key, eq, value = item.partition("=")
        if not eq:
            cli.fail(f"selector[{i}]: {item[:40]!r} is not KEY=VALUE")
        labels[key] = value
    try:
        wanted = semantics.check(Service(name=name, network=network, vip=vip, replicas=tuple(replica or ()),
                                         selector=labels, ports=tuple(port), affinity=affinity))
    except InvalidArgument as err:
        cli.fail(err.message)

    async def go(c: Client) -> Service:
        return await c.create_service(wanted)

    s = cli.in_lab_or_call(ctx, in_lab=lambda lab: lab.add_service(wanted), alone=go)
    cli.output(as_json=as_json, data=dataclasses.asdict(s), columns=COLUMNS, rows=[row(s)])


@app.command("ls")
def ls(ctx: typer.Context, network: Annotated[str, typer.Option("--network", "-n", metavar="NET",
                                                                help="Only this network's services.")] = "",
       as_json: JsonOpt = False, lab: cli.LabOpt = None) -> None:
    """List services."""

    async def go(c: Client) -> list[Service]:
        return await c.list_services(network=network)

    found = cli.call(ctx, go)
    cli.output(as_json=as_json, data=[dataclasses.asdict(s) for s in found], columns=COLUMNS,
               rows=[row(s) for s in found])


@app.command("inspect")
def inspect(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Service name.")], network: NetworkOpt,
            lab: cli.LabOpt = None) -> None:
    """A service and its replicas now (JSON): the endpoints it selects, with their hosts."""

    async def go(c: Client) -> tuple[Service, list[dict[str, str]]]:
        s = await c.get_service(network, name)
        eps = semantics.replicas(s, await c.list_endpoints(network=network))
        return s, [{"name": e.name, "host": e.host, "ip": e.ip} for e in eps]

    s, replicas = cli.call(ctx, go)
    cli.print_json({**dataclasses.asdict(s), "endpoints": replicas})


@app.command("rm")
def rm(ctx: typer.Context, names: Annotated[list[str], typer.Argument(help="Services to remove.")],
       network: NetworkOpt, lab: cli.LabOpt = None) -> None:
    """Remove services."""

    async def go(c: Client) -> None:
        for name in names:
            await c.delete_service(network, name)
            typer.echo(name)

    def in_lab(lab: Lab) -> None:
        for name in names:
            lab.remove_service(network, name)
            typer.echo(name)

    cli.in_lab_or_call(ctx, in_lab=in_lab, alone=go)
