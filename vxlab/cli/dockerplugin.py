"""`vxlab docker-plugin`: serve Docker's remote network and IPAM driver protocols for one host (vxlab.agent.docker_plugin)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from vxlab.cli.main import fail, target


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
    host's namespace, with a certificate that may write: the admin's)."""
    from vxlab.agent.docker_plugin import PluginConfig, run

    if not docker.startswith("unix://"):
        fail(f"docker: {docker!r}: only unix:// addresses")
    to = target(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = PluginConfig(controller=to.controller.split(","), host=host, socket=socket, docker=docker, state=state,
                       tls=to.tls)
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        pass
