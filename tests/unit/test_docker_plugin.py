"""The Docker plugin's calls (vxlab.agent.docker_driver) against the controller's core on the memory store.

Docker's side is the plugin protocol's JSON, as libnetwork sends it; the controller is
the real core behind our own adapter (`CoreApi`, what vxlab.client.Client is to the
plugin); the host's dockerd is a fake that shows a network's name once "stored"; the
agent's veth a fake that answers the handoff name. The transport is tested on a real
unix socket at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from vxlab.agent import docker_http
from vxlab.agent.docker_bind import Bindings
from vxlab.agent.docker_driver import ENDPOINT_LABEL, Driver
from vxlab.agent.docker_http import Refused
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.layout import Layout
from vxlab.errors import PermissionDenied
from vxlab.model import Endpoint, Host, Network

NID, NID2 = "n" * 64, "m" * 64


class CoreApi:
    """The plugin's controller adapter over the core (Client's signatures)."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    async def get_host(self, name: str) -> Host:
        return await self.ctl.hosts.get(name)

    async def list_networks(self) -> list[Network]:
        return (await self.ctl.networks.list())[0]

    async def get_network(self, name: str) -> Network:
        return await self.ctl.networks.get(name)

    async def create_network(self, net: Network) -> Network:
        return await self.ctl.networks.create(net)

    async def delete_network(self, name: str, *, force: bool = False) -> int:
        return await self.ctl.networks.delete(name, force=force)

    async def list_endpoints(self, *, network: str = "", host: str = "", name: str = "") -> list[Endpoint]:
        return (await self.ctl.endpoints.list(network=network, host=host, name=name))[0]

    async def create_endpoint(self, ep: Endpoint) -> Endpoint:
        return await self.ctl.endpoints.create(ep)

    async def update_endpoint(self, ep: Endpoint, *, fields: Any = ()) -> Endpoint:
        return await self.ctl.endpoints.update(ep, fields=fields)

    async def delete_endpoint(self, network: str, name: str) -> None:
        await self.ctl.endpoints.delete(network, name)


class FakeDocker:
    """A dockerd that shows a network only after being asked `hidden` times (as libnetwork
    stores it only once CreateNetwork returned)."""

    def __init__(self, names: dict[str, str], *, hidden: int = 2) -> None:
        self.names, self.hidden = names, hidden

    async def network_name(self, network_id: str) -> str | None:
        if self.hidden:
            self.hidden -= 1
            return None
        return self.names.get(network_id)

    def sandbox_path(self, key: str) -> str:
        return f"/proc/77/root{key}" if key.startswith("/lab/") else key


class FakeVeth:
    def __init__(self) -> None:
        self.waited: list[str] = []

    async def wait(self, ep: Endpoint) -> str:
        self.waited.append(ep.name)
        return Layout.handoff_link(ep)


@pytest.fixture
async def ctl():
    store = MemoryStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=30))
    for i in (1, 2):
        await c.hosts.register(Host(name=f"h{i}", underlay_ip=f"172.30.0.1{i}"))
    yield c
    await store.close()


def plugin(ctl: Controller, host: str, names: dict[str, str], state: Path | None = None) -> Driver:
    api = CoreApi(ctl)
    docker = FakeDocker(names)
    return Driver(api, docker, FakeVeth(), host=host, bindings=Bindings(api, docker, state=state, timeout=5))


def create_body(nid: str, *, subnet: str = "10.50.0.0/24", gateway: str = "10.50.0.1/24", generic: Any = None,
                internal: bool = False) -> dict[str, Any]:
    return {"NetworkID": nid, "Options": {"com.docker.network.generic": generic or {},
                                          "com.docker.network.enable_ipv6": False,
                                          **({"com.docker.network.internal": True} if internal else {})},
            "IPv4Data": [{"AddressSpace": "vxlab", "Pool": subnet, "Gateway": gateway, "AuxAddresses": {}}],
            "IPv6Data": []}


async def network_create(d: Driver, nid: str, **kw: Any) -> dict[str, Any]:
    """`docker network create -d vxlab --ipam-driver vxlab --subnet …`: the calls libnetwork makes."""
    pool = await d.handle("IpamDriver.RequestPool", {"AddressSpace": "vxlab", "Pool": kw.get("subnet", "10.50.0.0/24"),
                                                     "SubPool": "", "Options": {}, "V6": False})
    await d.handle("NetworkDriver.CreateNetwork", create_body(nid, gateway=pool["Data"]["com.docker.network.gateway"],
                                                              **kw))
    await d.nets.tasks[nid]
    return pool


async def docker_run(d: Driver, nid: str, eid: str, *, ip: str = "") -> tuple[str, dict[str, Any]]:
    """`docker run --network …`: RequestAddress, CreateEndpoint, Join; (address, Join's reply)."""
    addr = (await d.handle("IpamDriver.RequestAddress", {"PoolID": "vxlab/10.50.0.0/24", "Address": ip,
                                                         "Options": {}}))["Address"]
    created = await d.handle("NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid,
                                                              "Interface": {"Address": addr, "MacAddress": ""}})
    assert created["Interface"]["MacAddress"]
    return addr, await d.handle("NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                                       "SandboxKey": f"/var/run/docker/netns/{eid[:12]}"})


async def docker_rm(d: Driver, nid: str, eid: str, addr: str) -> None:
    await d.handle("NetworkDriver.Leave", {"NetworkID": nid, "EndpointID": eid})
    await d.handle("NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
    await d.handle("IpamDriver.ReleaseAddress", {"PoolID": "vxlab/10.50.0.0/24", "Address": addr.split("/")[0]})


async def test_activate_and_capabilities(ctl):
    d = plugin(ctl, "h1", {})
    assert await d.handle("Plugin.Activate", {}) == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert (await d.handle("NetworkDriver.GetCapabilities", {}))["Scope"] == "local"
    spaces = await d.handle("IpamDriver.GetDefaultAddressSpaces", {})
    assert spaces == {"LocalDefaultAddressSpace": "vxlab", "GlobalDefaultAddressSpace": "vxlab"}


async def test_two_hosts_one_network_and_nothing_left(ctl):
    h1, h2 = plugin(ctl, "h1", {NID: "blue"}), plugin(ctl, "h2", {NID2: "blue"})
    pool = await network_create(h1, NID, generic={"vxlab.vni": "5001"})
    assert pool == {"PoolID": "vxlab/10.50.0.0/24", "Pool": "10.50.0.0/24",
                    "Data": {"com.docker.network.gateway": "10.50.0.1/24"}}
    net = await ctl.networks.get("blue")
    assert (net.subnet, net.gateway, net.vni, net.labels) == ("10.50.0.0/24", "10.50.0.1", 5001,
                                                              {"vxlab/created-by": "docker"})
    await network_create(h2, NID2)  # the same command on h2 joins it
    assert [n.name for n in (await ctl.networks.list())[0]] == ["blue"]

    a1, join1 = await docker_run(h1, NID, "e" * 64)
    a2, _ = await docker_run(h2, NID2, "f" * 64, ip="10.50.0.77")
    assert a2 == "10.50.0.77/24" and a1 != a2
    eps = {e.host: e for e in (await ctl.endpoints.list(network="blue"))[0]}
    assert eps["h1"].runtime == "docker" and eps["h1"].labels[ENDPOINT_LABEL] == "e" * 64
    assert join1 == {"InterfaceName": {"SrcName": Layout.handoff_link(eps["h1"]), "DstPrefix": "eth"},
                     "Gateway": "10.50.0.1"}
    assert f"{eps['h1'].ip}/24" == a1
    assert eps["h1"].netns == "/var/run/docker/netns/eeeeeeeeeeee"  # Join recorded the sandbox

    await docker_rm(h1, NID, "e" * 64, a1)
    await h1.handle("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    assert [n.name for n in (await ctl.networks.list())[0]] == ["blue"]  # h2 still has an endpoint on it
    await docker_rm(h2, NID2, "f" * 64, a2)
    await h2.handle("NetworkDriver.DeleteNetwork", {"NetworkID": NID2})
    assert (await ctl.networks.list())[0] == [] and (await ctl.endpoints.list())[0] == []


async def test_a_network_removed_by_another_host_is_made_again(ctl):
    h1, h2 = plugin(ctl, "h1", {NID: "blue"}), plugin(ctl, "h2", {NID2: "blue"})
    await network_create(h1, NID)
    await network_create(h2, NID2)
    await h1.handle("NetworkDriver.DeleteNetwork", {"NetworkID": NID})  # nobody on it: removed
    assert (await ctl.networks.list())[0] == []
    await docker_run(h2, NID2, "f" * 64)
    assert (await ctl.networks.get("blue")).subnet == "10.50.0.0/24"


async def test_a_reservation_docker_rolled_back_is_released(ctl):
    """An address reserved but never made an endpoint (Docker rolled back) is released."""
    h1 = plugin(ctl, "h1", {NID: "blue"})
    await network_create(h1, NID)
    addr = (await h1.handle("IpamDriver.RequestAddress", {"PoolID": "vxlab/10.50.0.0/24", "Address": "",
                                                          "Options": {}}))["Address"]
    assert len((await ctl.endpoints.list())[0]) == 1
    await h1.handle("IpamDriver.ReleaseAddress", {"PoolID": "vxlab/10.50.0.0/24", "Address": addr.split("/")[0]})
    assert (await ctl.endpoints.list())[0] == []


@pytest.mark.parametrize("body,reason", [
    (create_body(NID, generic={"vxlab.color": "red"}), "-o vxlab.color: unknown option"),
    (create_body(NID, generic={"vxlab.vni": "x"}), "-o vxlab.vni: 'x' is not a number"),
    (create_body(NID, generic={"vxlab.vni": "99999999"}), "-o vxlab.vni:"),
    ({**create_body(NID), "IPv6Data": [{"Pool": "fd00::/64"}]}, "--ipv6"),
    ({**create_body(NID), "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.50.0.0/24",
                                        "Gateway": "10.50.0.1/24"}]}, "--ipam-driver: must be vxlab"),
])
async def test_create_network_refusals(ctl, body, reason):
    d = plugin(ctl, "h1", {NID: "blue"})
    before = await ctl.store.revision()
    with pytest.raises(Refused, match=reason):
        await d.handle("NetworkDriver.CreateNetwork", body)
    assert await ctl.store.revision() == before and d.nets.by_id == {}


@pytest.mark.parametrize("body,reason", [
    ({"Pool": ""}, "--subnet: required"),
    ({"Pool": "10.50.0.0/24", "SubPool": "10.50.0.0/25"}, "--ip-range: not supported"),
    ({"Pool": "10.50.0.0/24", "Options": {"x": "1"}}, "--ipam-opt x: unknown"),
    ({"Pool": "10.60.1.0/24"}, "overlaps vxlab network 'red' \\(10.60.0.0/16\\)"),
    ({"Pool": "bogus"}, "--subnet: 'bogus' is not an IPv4 subnet"),
    ({"Pool": "fd00::/64", "V6": True}, "--ipv6"),
])
async def test_request_pool_refusals(ctl, body, reason):
    await ctl.networks.create(Network(name="red", subnet="10.60.0.0/16"))
    with pytest.raises(Refused, match=reason):
        await plugin(ctl, "h1", {}).handle("IpamDriver.RequestPool", {"AddressSpace": "vxlab", **body})


async def test_joining_an_existing_network_checks_what_it_can_at_once(ctl):
    await ctl.networks.create(Network(name="blue", subnet="10.50.0.0/24", vni=7000))
    d = plugin(ctl, "h1", {NID: "blue"})
    with pytest.raises(Refused, match="-o vxlab.vni=7001: vxlab network 'blue' .* has VNI 7000"):
        await d.handle("NetworkDriver.CreateNetwork", create_body(NID, generic={"vxlab.vni": "7001"}))
    with pytest.raises(Refused, match="--internal: vxlab network 'blue' .* is not internal"):
        await d.handle("NetworkDriver.CreateNetwork", create_body(NID, internal=True))
    await network_create(d, NID, generic={"vxlab.vni": "7000"})
    assert d.nets.by_id[NID].name == "blue" and not d.nets.by_id[NID].error


async def test_refusals_found_after_the_create_refuse_every_use(ctl):
    """Docker names no network to its drivers: a name clash is known only once dockerd
    shows the network, and then refuses each use, saying what to do."""
    await ctl.networks.create(Network(name="blue", subnet="10.70.0.0/24"))
    await ctl.networks.create(Network(name="red", subnet="10.50.0.0/24"))
    d = plugin(ctl, "h1", {NID: "blue", NID2: "green"})
    await network_create(d, NID, subnet="10.80.0.0/24")
    assert "vxlab network 'blue' (10.70.0.0/24) exists with another subnet" in d.nets.by_id[NID].error
    await d.handle("NetworkDriver.CreateNetwork", create_body(NID2))
    await d.nets.tasks[NID2]
    assert "is vxlab network 'red''s: name the Docker network 'red'" in d.nets.by_id[NID2].error
    with pytest.raises(Refused, match="name the Docker network 'red'"):
        await d.handle("IpamDriver.RequestAddress", {"PoolID": "vxlab/10.50.0.0/24", "Address": "", "Options": {}})
    assert (await ctl.endpoints.list())[0] == []


class HostCertApi(CoreApi):
    """The controller as a host's certificate sees it (controller/authz.py): no network writes."""

    async def create_network(self, net: Network) -> Network:
        raise PermissionDenied("network", "host 'h1' may not create networks (admin only)")

    async def delete_network(self, name: str, *, force: bool = False) -> int:
        raise PermissionDenied("network", "host 'h1' may not delete networks (admin only)")


async def test_with_the_hosts_certificate_only_existing_networks_are_joined(ctl):
    api, docker = HostCertApi(ctl), FakeDocker({NID: "blue", NID2: "blue"})
    d = Driver(api, docker, FakeVeth(), host="h1", bindings=Bindings(api, docker, state=None, timeout=5),
               creates_networks=False)
    before = await ctl.store.revision()
    for call, body in [("IpamDriver.RequestPool", {"AddressSpace": "vxlab", "Pool": "10.50.0.0/24"}),
                       ("NetworkDriver.CreateNetwork", create_body(NID))]:
        with pytest.raises(Refused, match="no vxlab network has subnet 10.50.0.0/24, and this plugin may not create "
                                          "networks .* `vxlab network create NAME --subnet 10.50.0.0/24`"):
            await d.handle(call, body)
    assert await ctl.store.revision() == before and d.nets.by_id == {}
    await ctl.networks.create(Network(name="blue", subnet="10.50.0.0/24"))  # the admin's
    await network_create(d, NID)
    addr, _ = await docker_run(d, NID, "e" * 64)
    await docker_rm(d, NID, "e" * 64, addr)
    await d.handle("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    assert [n.name for n in (await ctl.networks.list())[0]] == ["blue"]  # it stays: not this plugin's to remove
    await d.handle("NetworkDriver.CreateNetwork", create_body(NID2))  # bound to blue, which is then removed
    await d.nets.tasks[NID2]
    await ctl.networks.delete("blue")
    with pytest.raises(Refused, match="vxlab network 'blue' does not exist, and this plugin may not create networks"):
        await d.handle("IpamDriver.RequestAddress", {"PoolID": "vxlab/10.50.0.0/24", "Address": "", "Options": {}})


async def test_an_address_taken_is_refused_by_the_controller(ctl):
    d = plugin(ctl, "h1", {NID: "blue"})
    await network_create(d, NID)
    await docker_run(d, NID, "e" * 64, ip="10.50.0.9")
    with pytest.raises(Refused, match="10.50.0.9"):
        await docker_run(d, NID, "f" * 64, ip="10.50.0.9")


async def test_a_restarted_plugin_keeps_its_networks_and_finds_its_endpoints(ctl, tmp_path):
    state = tmp_path / "plugin.json"
    first = plugin(ctl, "h1", {NID: "blue"}, state)
    await network_create(first, NID)
    addr, _ = await docker_run(first, NID, "e" * 64)
    again = plugin(ctl, "h1", {NID: "blue"}, state)
    assert again.nets.by_id[NID].name == "blue"
    await docker_rm(again, NID, "e" * 64, addr)
    await again.handle("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    assert (await ctl.networks.list())[0] == [] and json.loads(state.read_text()) == {}


async def test_join_records_the_sandbox_as_the_agent_opens_it_and_leave_clears_it(ctl):
    d = plugin(ctl, "h1", {NID: "blue"})
    await network_create(d, NID)
    eid = "e" * 64
    addr = (await d.handle("IpamDriver.RequestAddress", {"PoolID": "vxlab/10.50.0.0/24", "Options": {}}))["Address"]
    await d.handle("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": eid,
                                                    "Interface": {"Address": addr}})
    (ep,) = (await ctl.endpoints.list(network="blue"))[0]
    assert ep.netns == ""  # not joined yet
    await d.handle("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": eid, "SandboxKey": "/lab/exec/netns/1"})
    assert (await ctl.endpoints.get("blue", ep.name)).netns == "/proc/77/root/lab/exec/netns/1"
    await d.handle("NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": eid})
    assert (await ctl.endpoints.get("blue", ep.name)).netns == ""
    # a key the controller refuses leaves the namespace unknown; the container still joins
    await d.handle("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": eid, "SandboxKey": "rel/x"})
    assert (await ctl.endpoints.get("blue", ep.name)).netns == ""


def test_the_sandbox_key_through_the_mount_namespace_of_the_dockerd_that_called():
    from vxlab.agent.docker_plugin import sandbox_path
    assert sandbox_path("/run/docker/netns/ab", os.getpid()) == "/run/docker/netns/ab"  # ours: as it is
    assert sandbox_path("/run/docker/netns/ab", 0) == "/run/docker/netns/ab"  # caller not known
    other = next((int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _other_mounts(int(p.name))),
                 None)
    if other is not None:  # a process of another mount namespace (a lab's dockerd is one)
        assert sandbox_path("/x/netns/ab", other) == f"/proc/{other}/root/x/netns/ab"


def _other_mounts(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return False


async def test_the_transport_on_a_unix_socket(tmp_path):
    async def handler(method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "Plugin.Activate":
            return {"Implements": ["NetworkDriver"]}
        if method == "NetworkDriver.Leave":  # the caller's pid, from the connection
            return {"pid": docker_http.caller_pid()}
        if method in ("NetworkDriver.Join", "IpamDriver.RequestPool"):
            raise Refused(f"no\nendpoint {body['EndpointID']}")
        raise docker_http.NotImplementedMethod(method)
    sock = tmp_path / "p.sock"
    ready = asyncio.Event()
    server = asyncio.create_task(docker_http.serve(sock, handler, ready=ready.set))
    await ready.wait()
    reader, writer = await asyncio.open_unix_connection(str(sock))

    async def post(path: str, body: bytes) -> tuple[str, Any]:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        msg = await docker_http._read_message(reader)
        assert msg is not None
        return msg[0].split(" ", 1)[1], json.loads(msg[2])
    try:  # one kept-alive connection, as Docker's client keeps it
        assert await post("/Plugin.Activate", b"") == ("200 OK", {"Implements": ["NetworkDriver"]})
        assert await post("/NetworkDriver.Join", b'{"EndpointID": "e1"}') == ("200 OK", {"Err": "no endpoint e1"})
        assert await post("/IpamDriver.RequestPool", b'{"EndpointID": "e2"}') == ("200 OK", {"Error": "no endpoint e2"})
        assert await post("/NetworkDriver.Leave", b"{}") == ("200 OK", {"pid": os.getpid()})
        assert (await post("/NetworkDriver.Nope", b"{}"))[0] == "404 Not Found"
        assert (await post("/NetworkDriver.Join", b"{nope"))[0] == "400 Bad Request"
    finally:
        writer.close()
        server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    assert not sock.exists()
