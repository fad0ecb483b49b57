"""Which vxlab network a Docker network of this host is: the options, the binding, the state file.

Docker gives a network driver no network name: libnetwork calls IpamDriver.RequestPool
and NetworkDriver.CreateNetwork before it stores the network, so the host's dockerd
cannot even be asked (`GET /networks/<id>` answers 404 until CreateNetwork returned). So:

- at CreateNetwork, what can be checked is checked and refused at once (the options,
  IPv6, the IPAM driver, a subnet overlapping another vxlab network's, a VNI/MTU/
  internal/gateway that disagrees with the vxlab network of the same subnet);
- right after (`Bindings.bind`, a task), the plugin asks the dockerd for the network's
  name until it appears, then creates the vxlab network of that name with the Docker
  network's subnet, gateway and options, or joins it if it exists with the same subnet
  (as on every other host running the same `docker network create`);
- a vxlab network of that name with another subnet (or a subnet that is another
  network's) cannot fail the `docker network create` any more: the binding records the
  refusal, and every use of the Docker network (`docker run --network`) is refused with
  it, naming the way out.

The bindings are kept in a JSON file (the plugin's `--state`), so a restarted plugin
still knows which vxlab network a Docker network is when Docker deletes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vxlab import validate
from vxlab.agent.docker_http import Refused
from vxlab.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from vxlab.model import Endpoint, Host, Network

log = logging.getLogger("vxlab.docker")

ADDRESS_SPACE = "vxlab"                     # the IPAM driver's address spaces (local and global)
OPT_GENERIC = "com.docker.network.generic"  # the `-o` options
OPT_INTERNAL = "com.docker.network.internal"
OPT_IPV6 = "com.docker.network.enable_ipv6"
OPTIONS = ("vxlab.vni", "vxlab.mtu", "com.docker.network.driver.mtu")
CREATED_LABEL = "vxlab/created-by"          # on a vxlab network a Docker plugin created: "docker"


class Api(Protocol):
    """What the plugin asks of the controller (vxlab.client.Client is one)."""

    async def get_host(self, name: str) -> Host: ...
    async def list_networks(self) -> list[Network]: ...
    async def get_network(self, name: str) -> Network: ...
    async def create_network(self, net: Network) -> Network: ...
    async def delete_network(self, name: str, *, force: bool = False) -> int: ...
    async def list_endpoints(self, *, network: str = "", host: str = "", name: str = "") -> list[Endpoint]: ...
    async def create_endpoint(self, ep: Endpoint) -> Endpoint: ...
    async def update_endpoint(self, ep: Endpoint, *, fields: Any = ()) -> Endpoint: ...
    async def delete_endpoint(self, network: str, name: str) -> None: ...


class Docker(Protocol):
    """The host's dockerd, asked for what Docker does not tell its drivers."""

    async def network_name(self, network_id: str) -> str | None:
        """The name of Docker network `network_id`; None while dockerd does not show it."""

    def sandbox_path(self, key: str) -> str:
        """Join's SandboxKey (a path in the calling dockerd's mount namespace) as this
        host's agent opens it."""


@dataclass
class Binding:
    """A Docker network of this host and the vxlab network it is (`name`, "" until known)."""

    subnet: str
    gateway: str
    vni: int = 0
    mtu: int = 0
    internal: bool = False
    name: str = ""
    error: str = ""  # why the Docker network cannot be used (a refusal found after its create)

    def network(self, name: str) -> Network:
        return Network(name=name, subnet=self.subnet, gateway=self.gateway, vni=self.vni, mtu=self.mtu,
                       internal=self.internal, labels={CREATED_LABEL: "docker"})


def parse_create(body: dict[str, Any]) -> Binding:
    """A CreateNetwork request's binding (name unknown), or Refused naming what is wrong."""
    options = body.get("Options") or {}
    if body.get("IPv6Data") or options.get(OPT_IPV6):
        raise Refused("vxlab: --ipv6: vxlab networks are IPv4 only")
    v4 = body.get("IPv4Data") or []
    if len(v4) != 1:
        raise Refused(f"vxlab: --subnet: exactly one IPv4 subnet, not {len(v4)}")
    if v4[0].get("AddressSpace") != ADDRESS_SPACE:
        raise Refused("vxlab: --ipam-driver: must be vxlab (the controller allocates the addresses on every host)")
    generic = options.get(OPT_GENERIC) or {}
    for key in generic:
        if key not in OPTIONS:
            raise Refused(f"vxlab: -o {key}: unknown option (vxlab knows {', '.join(OPTIONS)})")
    try:
        vni = validate.vni(_int(generic, "vxlab.vni"), field="-o vxlab.vni")
        mtu = validate.mtu(_int(generic, "vxlab.mtu") or _int(generic, "com.docker.network.driver.mtu"),
                           field="-o vxlab.mtu")
    except InvalidArgument as e:
        raise Refused(f"vxlab: {e}") from None
    return Binding(subnet=str(ipaddress.IPv4Network(v4[0]["Pool"])), gateway=str(v4[0]["Gateway"]).split("/")[0],
                   vni=vni, mtu=mtu, internal=bool(options.get(OPT_INTERNAL)))


def _int(options: dict[str, str], key: str) -> int:
    text = str(options.get(key, "0")).strip()
    if not text.isdigit():
        raise InvalidArgument(f"-o {key}", f"{text[:20]!r} is not a number")
    return int(text)


def disagreement(b: Binding, net: Network) -> str:
    """Why `b` cannot be vxlab network `net` (same subnet), "" when it can."""
    what = f"vxlab network {net.name!r} ({net.subnet})"
    if b.subnet != net.subnet:
        return f"{what} exists with another subnet: create the Docker network with --subnet {net.subnet}"
    if b.vni and b.vni != net.vni:
        return f"-o vxlab.vni={b.vni}: {what} has VNI {net.vni}"
    if b.mtu and b.mtu != net.mtu:
        return f"-o vxlab.mtu={b.mtu}: {what} has MTU {net.mtu}"
    if b.internal != net.internal:
        return f"--internal: {what} is {'' if net.internal else 'not '}internal"
    if b.gateway != net.gateway:
        return f"--gateway {b.gateway}: {what} has gateway {net.gateway}"
    return ""


def overlapping(subnet: str, nets: list[Network]) -> tuple[Network | None, Network | None]:
    """(the network with exactly `subnet`, the first other one overlapping it)."""
    mine = ipaddress.IPv4Network(subnet)
    same = next((n for n in nets if n.subnet == subnet), None)
    other = next((n for n in nets if n.subnet and n.subnet != subnet
                  and ipaddress.IPv4Network(n.subnet).overlaps(mine)), None)
    return same, other


class Bindings:
    """This host's Docker networks by Docker network id, kept in `state` (None: memory only)."""

    def __init__(self, api: Api, docker: Docker, *, state: Path | None, timeout: float = 10.0) -> None:
        self.api, self.docker, self.state, self.timeout = api, docker, state, timeout
        self.by_id: dict[str, Binding] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        if state is not None and state.is_file():
            self.by_id = {k: Binding(**v) for k, v in json.loads(state.read_text()).items()}

    def resume(self) -> None:
        """Bind again what a stopped plugin left unbound."""
        for nid, b in self.by_id.items():
            if not b.name and not b.error:
                self.start(nid)

    def save(self) -> None:
        if self.state is not None:
            tmp = self.state.with_suffix(".tmp")
            tmp.write_text(json.dumps({k: dataclasses.asdict(v) for k, v in self.by_id.items()}, indent=1))
            tmp.replace(self.state)

    def add(self, nid: str, b: Binding) -> None:
        self.by_id[nid] = b
        self.save()
        self.start(nid)

    def start(self, nid: str) -> None:
        self.tasks[nid] = asyncio.get_running_loop().create_task(self.bind(nid), name=f"bind-{nid[:12]}")

    async def bind(self, nid: str) -> None:
        b = self.by_id[nid]
        try:
            name = await self._docker_name(nid)
            validate.name(name, field="network name", max_len=validate.NETWORK_NAME_MAX)
            if b.name and b.name != name:
                raise Refused(f"its subnet {b.subnet} is vxlab network {b.name!r}'s: name the Docker network "
                              f"{b.name!r} (the same name and subnet on every host)")
            await self.ensure(b, name)
            b.name = name
            log.info("docker network %s is vxlab network %s (%s)", nid[:12], name, b.subnet)
        except (Refused, InvalidArgument) as e:
            b.error = f"docker network {nid[:12]}: {e}"
            log.warning("%s", b.error)
        finally:
            self.save()

    async def _docker_name(self, nid: str) -> str:
        loop = asyncio.get_running_loop()
        deadline, wait = loop.time() + self.timeout, 0.01
        while (name := await self.docker.network_name(nid)) is None:
            if loop.time() > deadline:
                raise Refused(f"dockerd did not show the network within {self.timeout:g} s")
            await asyncio.sleep(wait)  # a bounded poll: dockerd stores the network once CreateNetwork returned
            wait = min(wait * 2, 0.2)
        return name

    async def ensure(self, b: Binding, name: str) -> Network:
        """The vxlab network `name` as `b` wants it: joined, or created (again)."""
        for _ in range(3):
            try:
                net = await self.api.get_network(name)
            except NotFound:
                try:
                    return await self.api.create_network(b.network(name))
                except AlreadyExists:
                    continue  # another host's plugin created it meanwhile: join it
                except InvalidArgument as e:
                    raise Refused(f"vxlab: {e}") from None
                except PermissionDenied:
                    raise Refused(f"vxlab network {name!r} does not exist, and this plugin may not create networks "
                                  f"(no admin certificate): create it first with `vxlab network create {name} "
                                  f"--subnet {b.subnet}`") from None
            if why := disagreement(b, net):
                raise Refused(why)
            return net
        raise Refused(f"vxlab network {name!r} keeps appearing and vanishing")

    async def network_of(self, nid: str) -> tuple[Binding, Network]:
        """The binding of Docker network `nid` once bound, and its vxlab network (made again
        when another host's `docker network rm` removed it); Refused when it cannot be."""
        b = self.by_id.get(nid)
        if b is None:
            raise Refused(f"vxlab: docker network {nid[:12]} was not created through this plugin")
        if (task := self.tasks.get(nid)) is not None:
            await asyncio.shield(task)
        if b.error:
            raise Refused(f"vxlab: {b.error}")
        return b, await self.ensure(b, b.name)

    def of_subnet(self, subnet: str) -> str | None:
        """The Docker network id bound (or binding) to `subnet`, if any."""
        return next((nid for nid, b in self.by_id.items() if b.subnet == subnet), None)
