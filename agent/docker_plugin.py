"""`vxlab docker-plugin`: Docker's remote NetworkDriver and IpamDriver for one host, as a process.

It runs beside the host's agent, in the host's network namespace (Docker renames and
moves the veth end the agent leaves there), and serves the legacy plugin protocol on a
unix socket: `/run/docker/plugins/vxlab.sock` by default, where every dockerd of the
machine finds it by name (`-d vxlab --ipam-driver vxlab`). A lab host's dockerd finds
its own host's plugin through a spec file instead (vxlab.lab.dockerhost). The pieces:
the transport vxlab.agent.docker_http, the calls vxlab.agent.docker_driver, the
networks vxlab.agent.docker_bind; here the real adapters: the controller (a
vxlab.client.Client), the host's dockerd (its API socket, for the names Docker does not
give drivers), the agent's veth (vxlab.agent.netlink_handoff.wait_programmed).

Two certificates (controller/authz.py): the host's own for everything per container (a
host may create, update and delete endpoints of a runtime on itself) and, optionally, the
admin's for creating and removing vxlab networks (`network_tls`). Without the admin's,
a Docker network binds only to a vxlab network that exists (made with `vxlab network
create`); one that does not is refused naming that command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from vxlab.agent import docker_http
from vxlab.agent.docker_bind import Bindings
from vxlab.agent.docker_driver import Driver
from vxlab.agent.docker_http import Refused
from vxlab.client import Client
from vxlab.layout import Layout
from vxlab.model import Endpoint, Network
from vxlab.tls import TlsConfig

log = logging.getLogger("vxlab.docker")
DEFAULT_SOCKET = "/run/docker/plugins/vxlab.sock"
DEFAULT_DOCKER = "unix:///run/docker.sock"
PROGRAMMED_TIMEOUT = 20.0  # Join waits this long for the agent's veth


@dataclass(frozen=True)
class PluginConfig:
    controller: list[str]
    host: str
    socket: str = DEFAULT_SOCKET
    docker: str = DEFAULT_DOCKER   # the host's dockerd: unix://PATH
    state: str = ""                # the bindings' file ("": next to the socket)
    tls: TlsConfig | None = None          # the host's certificate (endpoints, reads)
    network_tls: TlsConfig | None = None  # the admin's, to create/remove vxlab networks (None: as `tls`)
    creates_networks: bool = True         # False: `tls` may not (a host's certificate and no admin's)
    programmed_timeout: float = PROGRAMMED_TIMEOUT


class SplitApi:
    """The controller as the plugin's calls need it: network writes through `networks`
    (the admin's client) when there is one, everything else through `api` (the host's)."""

    def __init__(self, api: Client, networks: Client | None) -> None:
        self.api, self.networks = api, networks

    def __getattr__(self, name: str) -> object:
        return getattr(self.api, name)

    async def create_network(self, net: Network) -> Network:
        return await (self.networks or self.api).create_network(net)

    async def delete_network(self, name: str, *, force: bool = False) -> int:
        return await (self.networks or self.api).delete_network(name, force=force)


class DockerApi:
    """The host's dockerd over its unix socket."""

    def __init__(self, address: str) -> None:
        if not address.startswith("unix://"):
            raise ValueError(f"docker: {address!r}: only unix:// addresses")
        self.path = address[len("unix://"):]

    async def network_name(self, network_id: str) -> str | None:
        status, body = await docker_http.get(self.path, f"/networks/{urllib.parse.quote(network_id)}")
        return str(body["Name"]) if status == 200 and isinstance(body, dict) else None

    def sandbox_path(self, key: str) -> str:
        return sandbox_path(key, docker_http.caller_pid())


def sandbox_path(key: str, pid: int) -> str:
    """Docker's SandboxKey as the agent beside this plugin opens it: the key itself when
    the dockerd that called (`pid`) shares this process's mount namespace (a real host's),
    else through /proc/<pid>/root (a lab's dockerd mounts its sandboxes in a mount
    namespace of its own, where alone they are namespaces)."""
    try:
        theirs, ours = os.stat(f"/proc/{pid}/ns/mnt"), os.stat("/proc/self/ns/mnt")
    except OSError:
        return key  # not known (pid 0), or gone
    same = (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)
    return key if same or not key.startswith("/") else f"/proc/{pid}/root{key}"


class AgentVeth:
    """Waits for the host's agent to make an endpoint's veth (its handoff end here)."""

    def __init__(self, api: Client, host: str, *, timeout: float) -> None:
        self.api, self.host, self.timeout = api, host, timeout
        self.layout: Layout | None = None

    async def wait(self, ep: Endpoint) -> str:
        """The handoff end's name once it waits in this namespace. "taken" (no end here,
        the bridge end made) is also what the agent's make-then-move looks like for a
        moment, so it is polled on too, and refused only at the deadline."""
        from vxlab.agent import netlink_handoff

        if self.layout is None:  # the prefix the agent registered with
            self.layout = Layout.of_host(await self.api.get_host(self.host))
        layout = self.layout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        got = ""
        while loop.time() < deadline:
            got = await asyncio.to_thread(netlink_handoff.state, layout, ep)
            if got == "handoff":
                return layout.handoff_link(ep)
            await asyncio.sleep(0.05)  # a bounded poll: the agent's pass is another process
        if got == "taken":
            raise Refused(f"vxlab: endpoint {ep.name}: its veth was taken already (by another sandbox)")
        raise Refused(f"vxlab: endpoint {ep.name!r} on network {ep.network!r}: the agent of host {ep.host!r} has "
                      f"not made its veth ({layout.handoff_link(ep)}) within {self.timeout:g} s; is that agent "
                      "running and connected to the controller?")


def _certificates(cfg: PluginConfig) -> str:
    """Which certificates the plugin calls the controller with, for its first line."""
    mine = f"certificate {cfg.tls.cert}" if cfg.tls else "no certificate (plaintext)"
    if not cfg.creates_networks:
        return f"{mine}; may not create networks"
    return f"{mine}; networks: {cfg.network_tls.cert}" if cfg.network_tls else mine


async def run(cfg: PluginConfig, *, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled."""
    async with contextlib.AsyncExitStack() as stack:
        host = await stack.enter_async_context(Client(cfg.controller, tls=cfg.tls, timeout=15.0))
        admin = None if cfg.network_tls is None else await stack.enter_async_context(
            Client(cfg.controller, tls=cfg.network_tls, timeout=15.0))
        api = SplitApi(host, admin)
        state = Path(cfg.state) if cfg.state else Path(cfg.socket).with_suffix(".json")
        bindings = Bindings(api, DockerApi(cfg.docker), state=state)
        bindings.resume()
        driver = Driver(api, bindings.docker, AgentVeth(api, cfg.host, timeout=cfg.programmed_timeout),
                        host=cfg.host, bindings=bindings, creates_networks=cfg.creates_networks)

        def listening() -> None:
            print(f"vxlab docker-plugin: host {cfg.host}, listening on {cfg.socket}; {_certificates(cfg)}", flush=True)
            if ready is not None:
                ready.set()
        await docker_http.serve(cfg.socket, driver.handle, ready=listening)
