"""`vxlab network …`: create, list, inspect (docker-shaped JSON), update in place and
remove overlay networks."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vxlab.cli import main as cli
from vxlab.errors import NotFound
from vxlab.model import Endpoint, Host, Network

if TYPE_CHECKING:
    from vxlab.client import Client

app: typer.Typer = typer.Typer(help="Manage overlay networks.", no_args_is_help=True)
COLUMNS = ("NAME", "ID", "SUBNET", "GATEWAY", "VNI", "MTU", "INTERNAL", "ENDPOINTS")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def with_prefix(ip: str, subnet: str) -> str:
    """'10.0.0.2', '10.0.0.0/24' -> '10.0.0.2/24' (the bare ip when the subnet is unusable)."""
    try:
        return f"{ip}/{ipaddress.ip_network(subnet, strict=False).prefixlen}" if ip else ""
    except ValueError:
        return ip


def network_row(net: Network, *, endpoints: int) -> list[str]:
    return [net.name, net.id[:12], net.subnet, net.gateway, str(net.vni),
            str(net.mtu) if net.mtu else "auto", "yes" if net.internal else "no", str(endpoints)]


def docker_network(net: Network, *, endpoints: list[Endpoint], hosts: dict[str, Host]) -> dict[str, Any]:
    """One element of `docker network inspect`'s list, filled from vxlab's records."""
    bridge = net.driver == "bridge"
    options = {} if bridge else {"com.docker.network.driver.overlay.vxlanid_list": str(net.vni)}
    if net.mtu:
        options["com.docker.network.driver.mtu"] = str(net.mtu)
    mine = sorted((e for e in endpoints if e.network == net.name), key=lambda e: e.name)
    peers = sorted({e.host for e in mine})
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local" if bridge else "swarm",
        "Driver": net.driver or "overlay",
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None,
                 "Config": [{"Subnet": net.subnet, "Gateway": net.gateway}]},
        "Internal": net.internal,
        "Attachable": True,
        "Ingress": False,
        "Containers": {
            e.id: {"Name": e.name, "EndpointID": e.id, "MacAddress": e.mac,
                   "IPv4Address": with_prefix(e.ip, net.subnet), "IPv6Address": ""}
            for e in mine
        },
        "Options": options,
        "Labels": dict(net.labels),
        "Peers": [{"Name": h, "IP": hosts[h].underlay_ip if h in hosts else ""} for h in peers],
    }


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name: lowercase letters, digits and dashes, at most 11 characters.")],
    subnet: Annotated[str, typer.Option(metavar="CIDR", help="IPv4 subnet; allocated when omitted.")] = "",
    gateway: Annotated[str, typer.Option(metavar="IP", help="Gateway; the subnet's first address by default.")] = "",
    vni: Annotated[int, typer.Option(metavar="N", help="VXLAN id 1..16777215; allocated when 0.")] = 0,
    mtu: Annotated[int, typer.Option(metavar="N", help="MTU 576..9216; 0 = underlay MTU - 50.")] = 0,
    internal: Annotated[bool, typer.Option("--internal", help="No route outside the overlay.")] = False,
    label: Annotated[list[str] | None, typer.Option(metavar="k=v", help="Label (repeatable).")] = None,
    driver: Annotated[str, typer.Option(metavar="D", help="overlay (VXLAN across hosts) or bridge (one host).")] = "overlay",
    host: Annotated[str, typer.Option(metavar="H", help="With --driver bridge: the host it lives on.")] = "",
    as_json: JsonOpt = False,
    lab: cli.LabOpt = None,
) -> None:
    """Create a network: an overlay across hosts, or a single-host bridge network."""
    wanted = Network(name=name, subnet=subnet, gateway=gateway, vni=vni, mtu=mtu, internal=internal,
                     labels=cli.parse_labels(label), driver=driver, host=host)

    async def go(c: Client) -> Network:
        return await c.create_network(wanted)

    net = cli.call(ctx, go)
    cli.output(as_json=as_json, data=dataclasses.asdict(net), columns=COLUMNS,
               rows=[network_row(net, endpoints=0)])


@app.command("ls")
def ls(ctx: typer.Context, as_json: JsonOpt = False, lab: cli.LabOpt = None) -> None:
    """List networks."""

    async def go(c: Client) -> tuple[list[Network], list[Endpoint]]:
        nets, eps = await asyncio.gather(c.list_networks(), c.list_endpoints())
        return nets, eps

    nets, eps = cli.call(ctx, go)
    counts = Counter(e.network for e in eps)
    nets = sorted(nets, key=lambda n: n.name)
    cli.output(as_json=as_json, data=[dataclasses.asdict(n) for n in nets], columns=COLUMNS,
               rows=[network_row(n, endpoints=counts[n.name]) for n in nets])


@app.command("inspect")
def inspect(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Networks to inspect.")],
    lab: cli.LabOpt = None,
) -> None:
    """Show networks as JSON shaped like `docker network inspect`."""

    async def go(c: Client) -> list[dict[str, Any]]:
        nets, eps, hosts = await asyncio.gather(c.list_networks(), c.list_endpoints(), c.list_hosts())
        by_name = {n.name: n for n in nets}
        for name in names:
            if name not in by_name:
                raise NotFound(f"network: no network named {name!r}")
        host_map = {h.name: h for h in hosts}
        return [docker_network(by_name[n], endpoints=eps, hosts=host_map) for n in names]

    cli.print_json(cli.call(ctx, go))


@app.command("update")
def update(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The network to change.")],
    mtu: Annotated[int | None, typer.Option(metavar="N", help="MTU 576..9216; 0 = underlay MTU - 50.")] = None,
    gateway: Annotated[str | None, typer.Option(metavar="IP", help="Gateway in the subnet; '' = its first address.")] = None,
    internal: Annotated[bool | None, typer.Option("--internal/--external", help="Cut off from, or give back, the outside.",
                                                  show_default=False)] = None,
    label: Annotated[list[str] | None, typer.Option(metavar="k=v", help="Label (repeatable): replaces every label.")] = None,
    clear_labels: Annotated[bool, typer.Option("--clear-labels", help="Remove every label.")] = False,
    as_json: JsonOpt = False,
    lab: cli.LabOpt = None,
) -> None:
    """Change a network in place: MTU, gateway, internal, labels (agents apply it at once).
    Subnet, VNI, driver and host cannot change: delete the network and create it again."""
    given = {"mtu": mtu, "gateway": gateway, "internal": internal,
             "labels": {} if clear_labels else cli.parse_labels(label) if label else None}
    fields = [f for f, v in given.items() if v is not None]
    if not fields:
        cli.fail("update: nothing to change (give --mtu, --gateway, --internal/--external, --label or --clear-labels)")
    wanted = Network(name=name, **{f: v for f, v in given.items() if v is not None})  # type: ignore[arg-type]

    async def go(c: Client) -> tuple[Network, int]:
        net = await c.update_network(wanted, fields=fields)
        return net, len(await c.list_endpoints(network=name))

    net, n = cli.call(ctx, go)
    cli.output(as_json=as_json, data=dataclasses.asdict(net), columns=COLUMNS, rows=[network_row(net, endpoints=n)])


@app.command("rm")
def rm(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Networks to remove.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Also delete their endpoints.")] = False,
    lab: cli.LabOpt = None,
) -> None:
    """Remove networks (refused while endpoints remain, unless --force)."""

    async def go(c: Client) -> None:
        for name in names:
            await c.delete_network(name, force=force)
            typer.echo(name)

    cli.call(ctx, go)
