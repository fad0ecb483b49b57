"""`vxlab docker-plugin`: serve Docker's remote network and IPAM driver protocols for one host (vxlab.agent.docker_plugin)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from vxlab.cli.main import CliState, fail, target


def docker_plugin(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", metavar="NAME", help="This host's name (as its agent's --host).")],
    socket: Annotated[str, typer.Option(metavar="PATH", help="The plugin's socket (dockerd looks there for "
                                        "`vxlab` by default).")] = "/run/docker/plugins/vxlab.sock",
    docker: Annotated[str, typer.Option(metavar="unix://PATH", envvar="DOCKER_HOST",
                                        help="The host's dockerd (asked for network names).")]
    = "unix:///run/docker.sock",
    state: Annotated[str, typer.Option(metavar="FILE", help="Where the Docker networks' bindings are kept "
                                       "(default: next to the socket, .json).")] = "",
    lab: Annotated[str | None, typer.Option("--lab", metavar="NAME", show_default=False,
                                            help="The lab whose controller to use, as the global --lab.")] = None,
) -> None:
    """Docker's NetworkDriver and IpamDriver for HOST: `docker network create -d vxlab
    --ipam-driver vxlab --subnet 10.50.0.0/24 blue` is the vxlab network blue, `docker run
    --network blue` a vxlab endpoint on this host (run it beside the host's agent, in the
    host's namespace). With --pki DIR: HOST's certificate of DIR for the endpoints, and
    the admin's, if DIR holds it, to create and remove vxlab networks (without it, Docker
    networks join only vxlab networks that exist)."""
    from vxlab.agent.docker_plugin import PluginConfig, run
    from vxlab.tls import Pki

    if not docker.startswith("unix://"):
        fail(f"docker: {docker!r}: only unix:// addresses")
    to = target(ctx)
    state_: CliState = ctx.obj
    tls, network_tls, creates = to.tls, None, True
    if state_.pki is not None:
        pki = Pki(state_.pki)
        if not pki.pair(f"host:{host}")[0].is_file():
            fail(f"pki: {state_.pki} has no certificate for host {host!r} (vxlab pki issue-host {state_.pki} {host})")
        tls = pki.host(host)
        admin = pki.pair("admin")[0].is_file()
        network_tls, creates = (pki.admin() if admin else None), admin
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = PluginConfig(controller=to.controller.split(","), host=host, socket=socket, docker=docker, state=state,
                       tls=tls, network_tls=network_tls, creates_networks=creates)
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        pass
