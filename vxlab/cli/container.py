"""`vxlab container …`: containers as seen by the controller, i.e. their endpoints.

A container is every endpoint that carries its name on one host; `inspect` renders it
like `docker container inspect`'s `NetworkSettings.Networks` and `.Ports`; `port` lists
its published ports like `docker port`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vxlab import containers
from vxlab import ports as portspec
from vxlab.cli import main as cli
from vxlab.cli.network import with_prefix
from vxlab.errors import InvalidArgument, NotFound
from vxlab.layout import Layout
from vxlab.model import Endpoint, Host, Network

if TYPE_CHECKING:
    from vxlab.client import Client

app: typer.Typer = typer.Typer(help="Inspect containers (their endpoints on overlay networks).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LS_COLUMNS = ("NAME", "HOST", "NETWORK", "IP", "MAC", "ID")
INSPECT_COLUMNS = ("NETWORK", "HOST", "IP", "GATEWAY", "MAC", "ENDPOINT ID")


def container_id(*, host: str, name: str) -> str:
    """A stable 64-hex id for a container (vxlab stores endpoints, not containers)."""
    return hashlib.sha256(f"{host}/{name}".encode()).hexdigest()


def _prefixlen(ip: str, subnet: str) -> int:
    _, _, plen = with_prefix(ip or "0.0.0.0", subnet).partition("/")
    return int(plen) if plen else 0


def sandbox_key(name: str, host: Host | None) -> str:
    """The path of the container's network namespace, as Docker's `SandboxKey` (where
    the host's agent said, when it registered, that it puts its namespaces)."""
    layout = Layout.of_host(host) if host else Layout("")
    return f"/run/netns/{layout.container_ns(name)}"


def docker_containers(name: str, *, endpoints: list[Endpoint], networks: dict[str, Network],
                      hosts: dict[str, Host] | None = None) -> list[dict[str, Any]]:
    """One `docker container inspect` element per host carrying endpoints named `name`."""
    out: list[dict[str, Any]] = []
    for host in sorted({e.host for e in endpoints if e.name == name}):
        attached: dict[str, dict[str, Any]] = {}
        for e in sorted((e for e in endpoints if e.name == name and e.host == host), key=lambda e: e.network):
            net = networks.get(e.network, Network(name=e.network))
            attached[e.network] = {
                "NetworkID": net.id, "EndpointID": e.id,
                "Gateway": "" if net.internal else net.gateway,
                "IPAddress": e.ip, "IPPrefixLen": _prefixlen(e.ip, net.subnet), "MacAddress": e.mac,
                "Aliases": list(e.aliases), "DNSNames": [name, *e.aliases, f"{name}.{e.network}"],
            }
        published = [p for e in endpoints if e.name == name and e.host == host for p in e.ports]
        out.append({"Name": name, "Id": container_id(host=host, name=name), "Host": host,
                    "NetworkSettings": {"SandboxKey": sandbox_key(name, (hosts or {}).get(host)),
                                        "Ports": portspec.docker(published), "Networks": attached}})
    return out


@app.command("ls")
def ls(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    network: Annotated[str, typer.Option(metavar="N", help="Only endpoints on this network.")] = "",
    host: Annotated[str, typer.Option(metavar="H", help="Only endpoints on this host.")] = "",
    lab: cli.LabOpt = None,
) -> None:
    """List endpoints: one row per container and network."""

    async def go(c: Client) -> list[Endpoint]:
        return await c.list_endpoints(network=network, host=host)

    eps = sorted(cli.call(ctx, go), key=lambda e: (e.name, e.host, e.network))
    rows = [[e.name, e.host, e.network, e.ip, e.mac, e.id[:12]] for e in eps]
    data = [dataclasses.asdict(e) for e in eps]
    in_lab = cli.target(ctx).lab
    if in_lab and not network:  # the lab's `network_mode: none|host` containers: no endpoint
        from vxlab.lab.lab import Lab

        for name, (mode, on) in sorted(Lab(in_lab).network_modes().items()):
            if not host or on == host:
                rows.append([name, on, f"({mode})", "", "", ""])
                data.append({"name": name, "host": on, "network_mode": mode})
    cli.output(as_json=as_json, data=data, columns=LS_COLUMNS, rows=rows)


@app.command("inspect")
def inspect(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Container name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON shaped like `docker container inspect`.")] = False,
    lab: cli.LabOpt = None,
) -> None:
    """Show a container's attachments (a table, or docker-shaped JSON with --json)."""

    async def go(c: Client) -> tuple[list[Endpoint], list[Network], list[Host]]:
        eps, nets, hosts = await asyncio.gather(c.list_endpoints(name=name), c.list_networks(), c.list_hosts())
        if not any(e.name == name for e in eps):
            raise NotFound(f"container: no container named {name!r}")
        return eps, nets, hosts

    eps, nets, hosts = cli.call(ctx, go)
    data = docker_containers(name, endpoints=eps, networks={n.name: n for n in nets},
                             hosts={h.name: h for h in hosts})
    rows = [[net, c["Host"], f"{a['IPAddress']}/{a['IPPrefixLen']}" if a["IPAddress"] else "",
             a["Gateway"], a["MacAddress"], a["EndpointID"][:12]]
            for c in data for net, a in c["NetworkSettings"]["Networks"].items()]
    cli.output(as_json=as_json, data=data, columns=INSPECT_COLUMNS, rows=rows)


@app.command("run")
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Container name.")],
    host: Annotated[str, typer.Option("--host", metavar="H", help="The host it runs on.")],
    network: Annotated[list[str], typer.Option("--network", metavar="N", help="A network (repeatable).")],
    ip: Annotated[str, typer.Option(metavar="IP", help="Address on the first network.")] = "",
    alias: Annotated[list[str] | None, typer.Option(
        "--alias", metavar="NAME", help="Another DNS name of the container on its networks (repeatable).")] = None,
    publish: Annotated[list[str] | None, typer.Option(
        "--publish", "-p", metavar="[IP:]HOST:CONTAINER[/PROTO]",
        help="Publish a port on the host (repeatable), e.g. 8080:80, 127.0.0.1:9000:9000, 5353:53/udp.")] = None,
    lab: cli.LabOpt = None,
) -> None:
    """Start a container on HOST attached to each --network. In a lab: waits until it is
    reachable. Without one (real hosts): its endpoints are created in the controller and
    the host's agent makes the container's namespace (`vx-c-NAME`), its peers the entries."""
    try:
        ports = portspec.check_all([portspec.parse(p, field=f"publish[{i}]") for i, p in enumerate(publish or ())],
                                   field="publish")
    except InvalidArgument as err:
        cli.fail(err.message)
    eps = cli.in_lab_or_call(ctx, in_lab=lambda lab: lab.container(name, host=host, networks=network, ip=ip,
                                                                   aliases=tuple(alias or ()), ports=ports),
                             alone=lambda c: containers.run(c, name, host=host, networks=network, ip=ip,
                                                            aliases=tuple(alias or ()), ports=ports))
    cli.output(as_json=False, data=None, columns=LS_COLUMNS,
               rows=[[e.name, e.host, e.network, e.ip, e.mac, e.id[:12]] for e in eps])


@app.command("port")
def port(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Container name.")],
         as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
         lab: cli.LabOpt = None) -> None:
    """List a container's published ports, like `docker port`: `80/tcp -> 0.0.0.0:8080`
    (0.0.0.0: every address of its host but loopback)."""

    async def go(c: Client) -> list[Endpoint]:
        eps = await c.list_endpoints(name=name)
        if not eps:
            raise NotFound(f"container: no container named {name!r}")
        return eps

    eps = cli.call(ctx, go)
    published = sorted((p for e in eps for p in e.ports), key=lambda p: (p.container_port, p.protocol, p.host_port))
    if as_json:
        cli.output(as_json=True, data=portspec.docker(published), columns=(), rows=())
        return
    for p in published:
        typer.echo(f"{p.container_port}/{p.protocol} -> {p.host_ip or '0.0.0.0'}:{p.host_port}")


@app.command("rm")
def rm(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Container name.")],
       lab: cli.LabOpt = None) -> None:
    """Remove a container (all its endpoints) from the lab, or without one from the controller."""
    n = cli.in_lab_or_call(ctx, in_lab=lambda lab: lab.remove_container(name),
                           alone=lambda c: containers.remove(c, name))
    typer.echo(f"removed {name} ({n} endpoints)", err=True)
