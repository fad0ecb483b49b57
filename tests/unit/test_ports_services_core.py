"""Published ports and services in the controller (in-memory store): parsing and
validation naming the field, host ports claimed once per host and protocol in the
endpoint's transaction (create, update, delete, a forced network delete), one network
per container; services with their VIP allocated or given, names unique among a
network's names and aliases, replicas that must exist, and every refusal writing
nothing; the Watch carries services; both go over the wire."""

from __future__ import annotations

from typing import Any

import pytest

from vxlab import ports, services, wire
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from vxlab.model import Endpoint, Host, Network, PortMapping, Service


@pytest.fixture
async def ctl():
    store = MemoryStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=5))
    for name, ip in (("h1", "172.30.0.11"), ("h2", "172.30.0.12")):
        await c.hosts.register(Host(name=name, underlay_ip=ip))
    await c.networks.create(Network(name="app", subnet="10.50.0.0/24"))
    await c.networks.create(Network(name="back", subnet="10.60.0.0/24"))
    await c.networks.create(Network(name="vault", subnet="10.70.0.0/24", internal=True))
    for name, host in (("api1", "h1"), ("api2", "h2"), ("api3", "h2")):
        await c.endpoints.create(Endpoint(name=name, network="app", host=host, labels={"tier": "api"}))
    yield c
    await store.close()


async def refused(ctl: Controller, coro: Any, exc: type[Exception]) -> str:
    before = await ctl.store.revision()
    with pytest.raises(exc) as info:
        await coro
    assert await ctl.store.revision() == before, "a refused request wrote something"
    assert "\n" not in str(info.value)
    return str(info.value)


def test_port_specs_parse_like_docker() -> None:
    assert ports.parse("8080:80") == PortMapping(8080, 80, "tcp", "")
    assert ports.parse("5353:53/udp") == PortMapping(5353, 53, "udp", "")
    assert ports.parse("127.0.0.1:9000:9000") == PortMapping(9000, 9000, "tcp", "127.0.0.1")
    assert ports.parse("0.0.0.0:80:80").host_ip == ""
    assert ports.describe(ports.parse("127.0.0.1:9000:9000")) == "127.0.0.1:9000:9000/tcp"
    assert ports.docker([ports.parse("8080:80"), ports.parse("127.0.0.1:8081:80")]) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "8081"}]}
    assert ports.loopback(ports.parse("127.0.0.1:9000:9000")) and not ports.loopback(ports.parse("1:2"))


@pytest.mark.parametrize("text, field, why", [
    ("70000:80", "ports.host_port", "70000 is out of range 1..65535"),
    ("80:0", "ports.container_port", "0 is out of range"),
    ("80:80/sctp", "ports.protocol", "not one of tcp, udp"),
    ("300.1.1.1:80:80", "ports.host_ip", "not an IPv4 address"),
    ("80", "ports", "random host port, is not supported"),
    ("80-90:80", "ports", "is not [HOST_IP:]HOST_PORT:CONTAINER_PORT"),
])
def test_bad_port_specs_name_the_field(text: str, field: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        ports.parse(text)
    assert info.value.field == field and why in info.value.reason


async def test_ports_are_stored_and_go_over_the_wire(ctl: Controller) -> None:
    ep = await ctl.endpoints.create(Endpoint(name="web", network="app", host="h1",
                                             ports=(PortMapping(8080, 80), PortMapping(5353, 53, "udp", "0.0.0.0"))))
    assert ep.ports == (PortMapping(8080, 80), PortMapping(5353, 53, "udp"))  # 0.0.0.0 is ""
    assert await ctl.endpoints.get("app", "web") == ep
    assert wire.endpoint_from_pb(wire.endpoint_to_pb(ep)) == ep


async def test_a_host_port_is_taken_once_per_host_and_protocol(ctl: Controller) -> None:
    await ctl.endpoints.create(Endpoint(name="web", network="app", host="h1", ports=(PortMapping(8080, 80),)))
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="web2", network="back", host="h1", ports=(
        PortMapping(9090, 90), PortMapping(8080, 80, "tcp", "127.0.0.1")))), AlreadyExists)
    assert msg == ("endpoint.ports[1].host_port: tcp 8080 on host 'h1' is already published by container 'web'"
                   " (network 'app')")
    # another protocol, another host: free
    await ctl.endpoints.create(Endpoint(name="dns", network="back", host="h1", ports=(PortMapping(8080, 53, "udp"),)))
    await ctl.endpoints.create(Endpoint(name="web3", network="app", host="h2", ports=(PortMapping(8080, 80),)))
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="w", network="app", host="h1", ports=(
        PortMapping(1, 80), PortMapping(1, 81)))), InvalidArgument)
    assert msg == "endpoint.ports[1].host_port: tcp 1 is published twice (also endpoint.ports[0])"
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="w", network="app", host="h1",
                                                           ports=(PortMapping(70000, 80),))), InvalidArgument)
    assert msg == "endpoint.ports[0].host_port: 70000 is out of range 1..65535"


async def test_ports_need_a_non_internal_network_and_one_network_per_container(ctl: Controller) -> None:
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="kms", network="vault", host="h1",
                                                           ports=(PortMapping(8200, 8200),))), InvalidArgument)
    assert msg.startswith("endpoint.ports: network 'vault' is internal")
    await ctl.endpoints.create(Endpoint(name="web", network="app", host="h1", ports=(PortMapping(8080, 80),)))
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="web", network="back", host="h1",
                                                           ports=(PortMapping(8081, 80),))), FailedPrecondition)
    assert msg == "endpoint.ports: container 'web' publishes ports on network 'app' already (one network per container)"


async def test_update_and_delete_move_the_claims(ctl: Controller) -> None:
    await ctl.endpoints.create(Endpoint(name="web", network="app", host="h1", ports=(PortMapping(8080, 80),)))
    ep = await ctl.endpoints.update(Endpoint(name="web", network="app", host="", ports=(
        PortMapping(8080, 8000), PortMapping(9000, 90))), fields=["ports"])
    assert [p.container_port for p in ep.ports] == [8000, 90]
    rev = await ctl.store.revision()
    assert (await ctl.endpoints.update(ep, fields=["ports"])) == ep and await ctl.store.revision() == rev
    await ctl.endpoints.update(Endpoint(name="web", network="app", host="", ports=(PortMapping(9000, 90),)),
                               fields=["ports"])
    await ctl.endpoints.create(Endpoint(name="other", network="back", host="h1", ports=(PortMapping(8080, 80),)))
    msg = await refused(ctl, ctl.endpoints.update(Endpoint(name="api1", network="app", host="", ports=(
        PortMapping(9000, 90),)), fields=["ports"]), AlreadyExists)
    assert msg.startswith("endpoint.ports[0].host_port: tcp 9000 on host 'h1' is already published by container 'web'")
    await ctl.endpoints.delete("app", "web")
    await ctl.endpoints.create(Endpoint(name="web", network="back", host="h1", ports=(PortMapping(9000, 90),)))
    await ctl.networks.delete("back", force=True)  # frees what its endpoints held
    again = await ctl.endpoints.create(Endpoint(name="web", network="app", host="h1", ports=(
        PortMapping(9000, 90), PortMapping(8080, 80))))
    assert len(again.ports) == 2
    kvs, _ = await ctl.store.range(ctl.ctx.keys.alloc + "publish/")
    assert [kv.key.rsplit("/", 2)[1:] for kv in kvs] == [["h1", "web"]]


async def test_a_service_gets_the_highest_free_address_and_claims_its_name(ctl: Controller) -> None:
    s = await ctl.services.create(Service(name="api", network="app", replicas=("api1", "api2", "api3"),
                                          ports=("80",)))
    assert (s.vip, s.ports, s.affinity) == ("10.50.0.254", ("80/tcp",), "none") and len(s.id) == 64
    assert await ctl.services.get("app", "api") == s and wire.service_from_pb(wire.service_to_pb(s)) == s
    t = await ctl.services.create(Service(name="api-sel", network="app", selector={"tier": "api"},
                                          ports=("80/tcp", "53/udp"), affinity="client-ip"))
    assert t.vip == "10.50.0.253"
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="api", network="app", host="h1")), AlreadyExists)
    assert msg == "endpoint.name: 'api' is already the name of service 'api' on network 'app'"
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="x", network="app", host="h1", ip="10.50.0.254")),
                        AlreadyExists)
    assert msg == "endpoint.ip: 10.50.0.254 is in use by service 'api'"
    assert [x.name for x in (await ctl.services.list(network="app"))[0]] == ["api", "api-sel"]
    await ctl.services.delete("app", "api")
    await ctl.endpoints.create(Endpoint(name="api", network="app", host="h1", ip="10.50.0.254"))


@pytest.mark.parametrize("svc, exc, message", [
    (Service("api", "app", vip="10.99.0.5", replicas=("api1",), ports=("80",)), InvalidArgument,
     "service.vip: 10.99.0.5 is outside subnet 10.50.0.0/24"),
    (Service("api", "app", vip="10.50.0.2", replicas=("api1",), ports=("80",)), InvalidArgument,
     "service.vip: 10.50.0.2 is in use by container 'api1'"),
    (Service("api", "app", vip="10.50.0.1", replicas=("api1",), ports=("80",)), InvalidArgument,
     "service.vip: 10.50.0.1 is the gateway of network 'app'"),
    (Service("api", "app", replicas=("api1", "api9"), ports=("80",)), InvalidArgument,
     "service.replicas[1]: no container 'api9' on network 'app'"),
    (Service("api", "app", replicas=("api1",), ports=("70000/tcp",)), InvalidArgument,
     "service.ports[0]: 70000 is out of range 1..65535"),
    (Service("api", "app", ports=("80",)), InvalidArgument, "service.replicas: give replicas or a selector"),
    (Service("api", "app", replicas=("api1",)), InvalidArgument, "service.ports: required (e.g. 80/tcp)"),
    (Service("api", "app", replicas=("api1",), ports=("80",), affinity="sticky"), InvalidArgument,
     "service.affinity: 'sticky' is not one of none, client-ip"),
    (Service("api1", "app", replicas=("api2",), ports=("80",)), AlreadyExists,
     "service.name: 'api1' is already the name of container 'api1' on network 'app'"),
    (Service("api", "nope", replicas=("api1",), ports=("80",)), Exception, "service.network: no network named 'nope'"),
])
async def test_bad_services_name_the_field(ctl: Controller, svc: Service, exc: type[Exception], message: str) -> None:
    assert await refused(ctl, ctl.services.create(svc), exc) == message


async def test_services_are_in_the_watch_and_go_with_their_network(ctl: Controller) -> None:
    s = await ctl.services.create(Service(name="api", network="app", replicas=("api1",), ports=("80",)))
    stream = ctl.watcher.watch()
    snap = await anext(stream)
    assert snap.services == (s,)
    await ctl.networks.delete("app", force=True)
    batch = await anext(stream)
    assert [(c.kind, type(c.obj).__name__) for c in batch.changes if isinstance(c.obj, Service)] == [("delete", "Service")]
    await stream.aclose()
    assert (await ctl.services.list())[0] == []


def test_replicas_resolve_by_name_or_selector() -> None:
    eps = [Endpoint("b", "app", "h1", labels={"tier": "api"}), Endpoint("a", "app", "h1", labels={"tier": "api"}),
           Endpoint("c", "app", "h2"), Endpoint("a", "back", "h1", labels={"tier": "api"})]
    by_name = Service("s", "app", replicas=("c", "b"), ports=("80",))
    by_label = Service("s", "app", selector={"tier": "api"}, ports=("80",))
    assert [e.name for e in services.replicas(by_name, eps)] == ["c", "b"]
    assert [(e.name, e.network) for e in services.replicas(by_label, eps)] == [("a", "app"), ("b", "app")]


def test_authz_hosts_may_read_but_not_write_services() -> None:
    from vxlab.controller.authz import authorize
    from vxlab.errors import PermissionDenied
    from vxlab.tls import Identity
    from vxlab.v1 import vxlab_pb2 as pb

    host = Identity("host", "h1")
    authorize(host, "ListServices", pb.ListServicesRequest())
    authorize(host, "/vxlab.v1.ServiceService/GetService", pb.GetServiceRequest())
    for method in ("CreateService", "DeleteService"):
        with pytest.raises(PermissionDenied) as info:
            authorize(host, f"/vxlab.v1.ServiceService/{method}", pb.CreateServiceRequest())
        assert info.value.field == "service" and "admin only" in info.value.reason
    authorize(Identity("admin", ""), "CreateService", pb.CreateServiceRequest())
