"""`vxlab policy …`: allow/deny rules between the containers of a network: add, list,
remove, and `test` (which rule decides a connection, and why). Semantics: vxlab.policy."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from vxlab import policy as semantics
from vxlab.cli import main as cli
from vxlab.errors import InvalidArgument
from vxlab.model import Endpoint, Policy

if TYPE_CHECKING:
    from vxlab.client import Client
    from vxlab.lab.lab import Lab

app: typer.Typer = typer.Typer(help="Network policy: allow/deny rules between containers of a network.",
                               no_args_is_help=True)
COLUMNS = ("NETWORK", "PRIORITY", "NAME", "ACTION", "PROTOCOL", "FROM", "TO", "PORTS")
NetworkOpt = Annotated[str, typer.Option("--network", "-n", metavar="NET", help="The network the rule belongs to.")]
SELECTOR_HELP = "a container name, a label key=value, a CIDR, or * (anything; the default)"


def policy_row(p: Policy) -> list[str]:
    return [p.network, str(p.priority), p.name, p.action, p.protocol, p.source.describe(),
            p.destination.describe(), ",".join(p.ports) or "*"]


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Rule name, unique in the network.")],
    network: NetworkOpt,
    action: Annotated[str, typer.Option(metavar="allow|deny", help="What a match does.")],
    source: Annotated[str, typer.Option("--from", metavar="SEL", help=f"Source: {SELECTOR_HELP}.")] = "*",
    destination: Annotated[str, typer.Option("--to", metavar="SEL", help=f"Destination: {SELECTOR_HELP}.")] = "*",
    protocol: Annotated[str, typer.Option("--proto", metavar="P", help="any, tcp, udp or icmp.")] = "any",
    port: Annotated[list[str] | None, typer.Option(metavar="N[-M]", help="TCP/UDP destination port or range (repeatable).")] = None,
    priority: Annotated[int, typer.Option(metavar="N", help="0..65535, lower first; 0 = 1000.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    lab: cli.LabOpt = None,
) -> None:
    """Add a rule. In a lab: returns once every agent enforces it. Rules act on new
    connections; replies of allowed ones pass."""
    try:
        wanted = Policy(name=name, network=network, action=action, protocol=protocol, ports=tuple(port or ()),
                        priority=priority, source=semantics.parse_selector(source, field="policy.source"),
                        destination=semantics.parse_selector(destination, field="policy.destination"))
    except InvalidArgument as err:
        cli.fail(err.message)

    async def go(c: Client) -> Policy:
        return await c.create_policy(wanted)

    p = cli.in_lab_or_call(ctx, in_lab=lambda lab: lab.add_policy(wanted), alone=go)
    cli.output(as_json=as_json, data=dataclasses.asdict(p), columns=COLUMNS, rows=[policy_row(p)])


@app.command("ls")
def ls(ctx: typer.Context, network: Annotated[str, typer.Option("--network", "-n", metavar="NET",
                                                                help="Only this network's rules.")] = "",
       as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
       lab: cli.LabOpt = None) -> None:
    """List rules, per network in evaluation order (first match decides; default allow)."""

    async def go(c: Client) -> list[Policy]:
        return await c.list_policies(network=network)

    found = cli.call(ctx, go)
    cli.output(as_json=as_json, data=[dataclasses.asdict(p) for p in found], columns=COLUMNS,
               rows=[policy_row(p) for p in found])


@app.command("rm")
def rm(ctx: typer.Context, names: Annotated[list[str], typer.Argument(help="Rules to remove.")],
       network: NetworkOpt, lab: cli.LabOpt = None) -> None:
    """Remove rules."""

    async def go(c: Client) -> None:
        for name in names:
            await c.delete_policy(network, name)
            typer.echo(name)

    def in_lab(lab: Lab) -> None:
        for name in names:
            lab.remove_policy(network, name)
            typer.echo(name)

    cli.in_lab_or_call(ctx, in_lab=in_lab, alone=go)


@app.command("test")
def test(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Source container.")],
    destination: Annotated[str, typer.Argument(help="Destination container.")],
    network: Annotated[str, typer.Option("--network", "-n", metavar="NET",
                                         help="The network (default: the one both are on).")] = "",
    protocol: Annotated[str, typer.Option("--proto", metavar="P", help="tcp, udp or icmp.")] = "icmp",
    port: Annotated[int, typer.Option(metavar="N", help="TCP/UDP destination port.")] = 0,
    lab: cli.LabOpt = None,
) -> None:
    """Which rule decides a new connection from SOURCE to DESTINATION, and its verdict.
    Exit code 0 when allowed, 1 when denied."""
    if protocol not in semantics.PROTOCOLS or protocol == "any":
        cli.fail(f"proto: {protocol[:20]!r} is not one of tcp, udp, icmp")

    async def go(c: Client) -> tuple[Endpoint, Endpoint, list[Policy]]:
        src, dst = semantics.pair(await c.list_endpoints(network=network), source, destination, network=network)
        return src, dst, await c.list_policies(network=src.network)

    src, dst, rules = cli.call(ctx, go)
    rule = semantics.decide(rules, src, dst, protocol=protocol, port=port)
    what = f"{protocol}{f' port {port}' if port else ''} {src.name} ({src.ip}) -> {dst.name} ({dst.ip}) on {dst.network}"
    if rule is None:
        typer.echo(f"allow: {what}: no rule matches (default allow)")
        return
    typer.echo(f"{rule.action}: {what}: rule {rule.name!r} ({semantics.describe(rule)})")
    if rule.action != "allow":
        raise typer.Exit(code=1)
