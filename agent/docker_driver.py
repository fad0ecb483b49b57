"""The Docker plugin's NetworkDriver and IpamDriver: each call of Docker's as calls of the controller's API.

`Driver.handle(method, body)` answers one plugin call (`NetworkDriver.Join`, …); the
transport is vxlab.agent.docker_http, the Docker network <-> vxlab network mapping
vxlab.agent.docker_bind. The controller is reached through `Api` (vxlab.client.Client;
the unit tests give the controller's core over the in-memory store), the host's agent
through `Programmed` (wait until it made the endpoint's veth: the handoff end in this
host's namespace, vxlab.agent.netlink_handoff).

One address, agreed by construction: Docker asks the IPAM driver for the address first
(RequestAddress) and configures the container with it, and a network driver may not
change it afterwards. So RequestAddress creates the vxlab endpoint itself (runtime
"docker", this host, a name `dk-<12 hex>`, the label `vxlab/docker-endpoint` empty):
the controller allocates the address in its etcd transaction, with `--ip` the one asked
(refused when taken), like for any endpoint. CreateEndpoint finds that endpoint by its
address, checks the MAC and records Docker's endpoint id in the label; Join, Leave and
DeleteEndpoint find it by that label, ReleaseAddress by its address again. Join records
the sandbox's namespace on the endpoint (`netns`: Docker's SandboxKey as this host's agent
opens it, `Docker.sandbox_path`), so the agent can enter it for ops; Leave clears it.
Nothing the plugin holds is needed for an endpoint: a restarted plugin carries on.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from vxlab.agent.docker_bind import ADDRESS_SPACE, CREATED_LABEL, Api, Bindings, Docker, disagreement, overlapping, parse_create
from vxlab.agent.docker_http import NotImplementedMethod, Refused
from vxlab.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, VxError
from vxlab.model import Endpoint, Network

log = logging.getLogger("vxlab.docker")

RUNTIME = "docker"
ENDPOINT_LABEL = "vxlab/docker-endpoint"  # "" while reserved by RequestAddress, then Docker's endpoint id
GATEWAY = "com.docker.network.gateway"    # RequestPool's Data key, RequestAddress's type of the gateway
REQUEST_TYPE = "RequestAddressType"


class Programmed(Protocol):
    async def wait(self, ep: Endpoint) -> str:
        """Wait until the host's agent made `ep`'s veth; its handoff end's name. Refused
        when the agent did not in time, or the end was taken already."""


def _pool_subnet(pool_id: str) -> str:
    space, _, subnet = pool_id.partition("/")
    if space != ADDRESS_SPACE or not subnet:
        raise Refused(f"vxlab: pool {pool_id!r} is not one of vxlab's")
    return subnet


class Driver:
    """Docker's calls for one host (`host`: the vxlab host this dockerd and agent are)."""

    def __init__(self, api: Api, docker: Docker, programmed: Programmed, *, host: str, bindings: Bindings,
                 creates_networks: bool = True) -> None:
        self.api, self.docker, self.programmed, self.host, self.nets = api, docker, programmed, host, bindings
        self.creates_networks = creates_networks  # False: no admin certificate, only existing networks are joined
        self.methods: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "Plugin.Activate": self.activate,
            "NetworkDriver.GetCapabilities": self.capabilities,
            "NetworkDriver.CreateNetwork": self.create_network, "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint, "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": self.oper_info, "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave, "NetworkDriver.DiscoverNew": self.nothing,
            "NetworkDriver.DiscoverDelete": self.nothing, "NetworkDriver.ProgramExternalConnectivity": self.nothing,
            "NetworkDriver.RevokeExternalConnectivity": self.nothing,
            "IpamDriver.GetCapabilities": self.ipam_capabilities,
            "IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "IpamDriver.RequestPool": self.request_pool, "IpamDriver.ReleasePool": self.nothing,
            "IpamDriver.RequestAddress": self.request_address, "IpamDriver.ReleaseAddress": self.release_address,
        }

    async def handle(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        fn = self.methods.get(method)
        if fn is None:
            raise NotImplementedMethod(method)
        try:
            return await fn(body)
        except VxError as e:  # the controller's refusal, or it is unreachable
            raise Refused(f"vxlab: {e}") from None

    # --- plugin, capabilities ----------------------------------------------------------
    async def activate(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    async def capabilities(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"Scope": "local", "ConnectivityScope": "local"}

    async def ipam_capabilities(self, body: dict[str, Any]) -> dict[str, Any]:
        # No MAC: with RequiresMACAddress Docker makes up a random one before RequestAddress;
        # without, it takes the one CreateEndpoint answers (the controller's).
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    async def address_spaces(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    async def nothing(self, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    # --- IPAM --------------------------------------------------------------------------
    async def request_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("V6"):
            raise Refused("vxlab: --ipv6: vxlab networks are IPv4 only")
        if not body.get("Pool"):
            raise Refused("vxlab: --subnet: required (the vxlab network's subnet: the same command on every host"
                          " names one network)")
        if body.get("SubPool"):
            raise Refused("vxlab: --ip-range: not supported (the controller allocates from the whole subnet)")
        for key in body.get("Options") or {}:
            raise Refused(f"vxlab: --ipam-opt {key}: unknown option (vxlab's IPAM takes none)")
        try:
            subnet = ipaddress.IPv4Network(body["Pool"])
        except ValueError:
            raise Refused(f"vxlab: --subnet: {str(body['Pool'])[:50]!r} is not an IPv4 subnet") from None
        same, other = overlapping(str(subnet), await self.api.list_networks())
        if other is not None:
            raise Refused(f"vxlab: --subnet: {subnet} overlaps vxlab network {other.name!r} ({other.subnet})")
        self._joinable(same, str(subnet))
        gateway = same.gateway if same is not None else str(subnet.network_address + 1)
        return {"PoolID": f"{ADDRESS_SPACE}/{subnet}", "Pool": str(subnet),
                "Data": {GATEWAY: f"{gateway}/{subnet.prefixlen}"}}

    async def request_address(self, body: dict[str, Any]) -> dict[str, Any]:
        subnet = ipaddress.IPv4Network(_pool_subnet(body.get("PoolID", "")))
        options = body.get("Options") or {}
        asked = str(body.get("Address") or "")
        if options.get(REQUEST_TYPE) == GATEWAY:  # --gateway: CreateNetwork checks it against the vxlab network
            return {"Address": f"{asked or subnet.network_address + 1}/{subnet.prefixlen}"}
        nid = self.nets.of_subnet(str(subnet))
        if nid is None:
            raise Refused(f"vxlab: no Docker network of this plugin has subnet {subnet}")
        _, net = await self.nets.network_of(nid)
        ep = await self.api.create_endpoint(Endpoint(
            name=f"dk-{secrets.token_hex(6)}", network=net.name, host=self.host, ip=asked,
            runtime=RUNTIME, labels={ENDPOINT_LABEL: ""}))
        log.info("reserved %s on %s for a Docker endpoint (%s)", ep.ip, net.name, ep.name)
        return {"Address": f"{ep.ip}/{subnet.prefixlen}", "Data": {}}

    async def release_address(self, body: dict[str, Any]) -> dict[str, Any]:
        subnet = _pool_subnet(body.get("PoolID", ""))
        ip = str(body.get("Address") or "").split("/")[0]
        nid = self.nets.of_subnet(subnet)
        name = self.nets.by_id[nid].name if nid is not None else ""
        for ep in await self._mine(network=name) if name else []:
            if ep.ip == ip:
                await self._delete(ep)
        return {}

    # --- networks ----------------------------------------------------------------------
    def _joinable(self, same: Network | None, subnet: str) -> None:
        """Refused when no vxlab network has `subnet` and this plugin may not create one."""
        if same is None and not self.creates_networks:
            raise Refused(f"vxlab: --subnet: no vxlab network has subnet {subnet}, and this plugin may not create "
                          "networks (it has the host's certificate, not the admin's): create it first with "
                          f"`vxlab network create NAME --subnet {subnet}`")

    async def create_network(self, body: dict[str, Any]) -> dict[str, Any]:
        b = parse_create(body)
        nets = await self.api.list_networks()
        same, other = overlapping(b.subnet, nets)
        if other is not None:
            raise Refused(f"vxlab: --subnet: {b.subnet} overlaps vxlab network {other.name!r} ({other.subnet})")
        self._joinable(same, b.subnet)
        if same is not None:
            if why := disagreement(b, same):
                raise Refused(f"vxlab: {why}")
            b.name = same.name  # joined; its bind checks that Docker's name is the same
        self.nets.add(str(body["NetworkID"]), b)
        return {}

    async def delete_network(self, body: dict[str, Any]) -> dict[str, Any]:
        """Forget the binding; remove the vxlab network too when a Docker plugin created it
        and no endpoint is left on it (other hosts' plugins make it again on their next use)."""
        nid = str(body.get("NetworkID", ""))
        if (task := self.nets.tasks.pop(nid, None)) is not None:
            task.cancel()
        b = self.nets.by_id.pop(nid, None)
        self.nets.save()
        if b is not None and b.name and not b.error:
            try:
                net = await self.api.get_network(b.name)
                if net.labels.get(CREATED_LABEL) == "docker":
                    await self.api.delete_network(b.name)
            except (NotFound, FailedPrecondition):
                pass  # gone already, or still used (by another host)
            except PermissionDenied:
                log.info("vxlab network %s stays: this plugin has no admin certificate to remove it", b.name)
        return {}

    # --- endpoints ---------------------------------------------------------------------
    async def _mine(self, *, network: str = "") -> list[Endpoint]:
        return [e for e in await self.api.list_endpoints(network=network, host=self.host)
                if e.runtime == RUNTIME and ENDPOINT_LABEL in e.labels]

    async def _of(self, endpoint_id: str) -> Endpoint | None:
        return next((e for e in await self._mine() if e.labels[ENDPOINT_LABEL] == endpoint_id), None)

    async def _delete(self, ep: Endpoint) -> None:
        try:
            await self.api.delete_endpoint(ep.network, ep.name)
            log.info("deleted %s (%s on %s)", ep.name, ep.ip, ep.network)
        except NotFound:
            pass

    async def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        iface = body.get("Interface") or {}
        if not iface.get("Address"):
            raise Refused("vxlab: the endpoint has no address: the network's --ipam-driver must be vxlab")
        if iface.get("AddressIPv6"):
            raise Refused("vxlab: IPv6 addresses are not supported")
        _, net = await self.nets.network_of(str(body.get("NetworkID", "")))
        ip = str(iface["Address"]).split("/")[0]
        ep = next((e for e in await self._mine(network=net.name) if e.ip == ip and not e.labels[ENDPOINT_LABEL]), None)
        if ep is None:
            raise Refused(f"vxlab: {ip} on {net.name} was not reserved by vxlab's IPAM on host {self.host}")
        mac = str(iface.get("MacAddress") or "").lower()
        if mac and mac != ep.mac.lower():
            raise Refused(f"vxlab: --mac-address {mac}: not supported: the controller allocates MACs (this "
                          f"endpoint's is {ep.mac})")
        await self.api.update_endpoint(dataclasses.replace(ep, labels={**ep.labels, ENDPOINT_LABEL: body["EndpointID"]}),
                                       fields=["labels"])
        return {"Interface": {} if mac else {"MacAddress": ep.mac}}

    async def delete_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        ep = await self._of(str(body.get("EndpointID", "")))
        if ep is not None:
            await self._delete(ep)
        return {}

    async def oper_info(self, body: dict[str, Any]) -> dict[str, Any]:
        ep = await self._of(str(body.get("EndpointID", "")))
        return {"Value": {"vxlab.endpoint": ep.name, "vxlab.network": ep.network} if ep else {}}

    async def join(self, body: dict[str, Any]) -> dict[str, Any]:
        ep = await self._of(str(body.get("EndpointID", "")))
        if ep is None:
            raise Refused(f"vxlab: no vxlab endpoint for Docker endpoint {str(body.get('EndpointID'))[:12]}")
        handoff = await self.programmed.wait(ep)
        net = await self.api.get_network(ep.network)
        key = str(body.get("SandboxKey") or "")
        await self._record_netns(ep, self.docker.sandbox_path(key) if key else "")
        reply: dict[str, Any] = {"InterfaceName": {"SrcName": handoff, "DstPrefix": "eth"}}
        if not net.internal and net.gateway:
            reply["Gateway"] = net.gateway
        return reply

    async def leave(self, body: dict[str, Any]) -> dict[str, Any]:
        ep = await self._of(str(body.get("EndpointID", "")))
        if ep is not None and ep.netns:
            try:
                await self._record_netns(ep, "")
            except NotFound:
                pass  # deleted meanwhile
        return {}

    async def _record_netns(self, ep: Endpoint, netns: str) -> None:
        """The endpoint's `netns` (where the agent enters the container for ops). A path the
        controller refuses leaves it unknown (ops from it say so): the container still runs."""
        if netns == ep.netns:
            return
        try:
            await self.api.update_endpoint(dataclasses.replace(ep, netns=netns), fields=["netns"])
        except InvalidArgument as e:
            log.warning("endpoint %s: its namespace stays unknown to the agents: %s", ep.name, e)
