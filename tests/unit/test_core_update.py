"""Networks and endpoints changed in place (UpdateNetwork, UpdateEndpoint) against the
in-memory store: what may change and what may not (a field error naming it), one
compare-and-swap retried on conflict, a rejected or empty update writing nothing,
the Watch and the agent's cache seeing the change, and admin-only authorization."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vxlab.agent.cache import StateCache
from vxlab.controller import metrics, servicer
from vxlab.controller.authz import authorize
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import InvalidArgument, NotFound, PermissionDenied
from vxlab.testing.fuzz import Aborted, _Context
from vxlab.model import Endpoint, Host, Network, WatchBatch
from vxlab.tls import Identity
from vxlab.v1 import vxlab_pb2 as pb


class YieldingStore(MemoryStore):
    """Every read lets other tasks run before its caller goes on, so concurrent updates
    really interleave (and conflict)."""

    async def get(self, key: str) -> Any:
        kv = await super().get(key)
        await asyncio.sleep(0)
        return kv


@pytest.fixture
async def ctl():
    store = YieldingStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=5))
    await c.hosts.register(Host(name="h1", underlay_ip="172.30.0.11"))
    await c.networks.create(Network(name="blue", subnet="10.10.0.0/24", mtu=1400))
    await c.endpoints.create(Endpoint(name="web", network="blue", host="h1"))  # 10.10.0.2
    yield c
    await store.close()


async def unchanged(ctl: Controller, coro: Any, exc: type[Exception]) -> Any:
    before = await ctl.store.revision()
    with pytest.raises(exc) as info:
        await coro
    assert await ctl.store.revision() == before, "a rejected request wrote something"
    return info.value


async def test_update_network_mtu_in_one_write(ctl: Controller) -> None:
    before, rev = await ctl.networks.get("blue"), await ctl.store.revision()
    net = await ctl.networks.update(Network(name="blue", mtu=1300), fields=["mtu"])
    assert net.mtu == 1300 and await ctl.networks.get("blue") == net
    assert (net.id, net.subnet, net.vni, net.gateway, net.created) == (before.id, before.subnet, before.vni,
                                                                       before.gateway, before.created)
    assert await ctl.store.revision() == rev + 1


async def test_update_network_every_mutable_field(ctl: Controller) -> None:
    net = await ctl.networks.update(Network(name="blue", mtu=0, gateway="10.10.0.254", internal=True,
                                            labels={"env": "test"}))  # no mask: all four
    assert (net.mtu, net.gateway, net.internal, net.labels) == (0, "10.10.0.254", True, {"env": "test"})
    back = await ctl.networks.update(Network(name="blue", gateway=""), fields=["gateway"])
    assert back.gateway == "10.10.0.1" and back.labels == {"env": "test"}  # "": the first address


async def test_an_update_that_changes_nothing_writes_nothing(ctl: Controller) -> None:
    rev = await ctl.store.revision()
    same = await ctl.networks.update(Network(name="blue", mtu=1400, subnet="10.10.0.0/24"), fields=["mtu"])
    assert same == await ctl.networks.get("blue")
    await ctl.endpoints.update(Endpoint(name="web", network="blue", host="h1"), fields=["labels"])
    assert await ctl.store.revision() == rev


@pytest.mark.parametrize(("net", "fields", "field", "reason"), [
    (Network(name="blue", mtu=100), ["mtu"], "network.mtu", "out of range 576..9216"),
    (Network(name="blue", mtu=70000), ["mtu"], "network.mtu", "out of range"),
    (Network(name="blue", gateway="10.11.0.1"), ["gateway"], "network.gateway", "outside subnet 10.10.0.0/24"),
    (Network(name="blue", gateway="10.10.0.255"), ["gateway"], "network.gateway", "broadcast"),
    (Network(name="blue", gateway="banana"), ["gateway"], "network.gateway", "not a valid IPv4 address"),
    (Network(name="blue", gateway="10.10.0.2"), ["gateway"], "network.gateway", "the address of endpoint 'web'"),
    (Network(name="blue", labels={"bad key!": "x"}), ["labels"], "network.labels", "label keys"),
    (Network(name="blue", subnet="10.20.0.0/24"), ["subnet"], "network.subnet", "cannot be changed"),
    (Network(name="blue", vni=7), ["vni"], "network.vni", "cannot be changed"),
    (Network(name="blue", driver="bridge"), ["driver"], "network.driver", "cannot be changed"),
    (Network(name="blue", host="h1"), ["host"], "network.host", "cannot be changed"),
    (Network(name="blue", subnet="10.20.0.0/24", mtu=1300), ["mtu"], "network.subnet",
     "cannot be changed on an existing network (10.10.0.0/24 -> 10.20.0.0/24); delete the network and create it"
     " again (vxlab up --recreate)"),
    (Network(name="blue", vni=7, mtu=1300), [], "network.vni", "cannot be changed"),
    (Network(name="blue", mtu=1300), ["mtu", "colour"], "update_mask", "'colour' is not a field that can be updated"),
    (Network(name="Blue", mtu=1300), ["mtu"], "network.name", "not a valid name"),
])
async def test_update_network_refusals_name_the_field_and_write_nothing(
        ctl: Controller, net: Network, fields: list[str], field: str, reason: str) -> None:
    err = await unchanged(ctl, ctl.networks.update(net, fields=fields), InvalidArgument)
    assert (err.field == field or err.field.startswith(f"{field}.")) and reason in err.reason, str(err)


async def test_update_of_a_missing_network_or_endpoint(ctl: Controller) -> None:
    await unchanged(ctl, ctl.networks.update(Network(name="red", mtu=1300), fields=["mtu"]), NotFound)
    await unchanged(ctl, ctl.endpoints.update(Endpoint(name="db", network="blue", host="h1")), NotFound)


async def test_concurrent_updates_of_different_fields_all_land(ctl: Controller) -> None:
    rev, retries = await ctl.store.revision(), metrics.TXN_RETRIES.labels("network_update")._value.get()
    await asyncio.gather(ctl.networks.update(Network(name="blue", mtu=1300), fields=["mtu"]),
                         ctl.networks.update(Network(name="blue", labels={"a": "b"}), fields=["labels"]),
                         ctl.networks.update(Network(name="blue", internal=True), fields=["internal"]))
    net = await ctl.networks.get("blue")
    assert (net.mtu, net.labels, net.internal) == (1300, {"a": "b"}, True)
    assert await ctl.store.revision() == rev + 3  # one write each
    assert metrics.TXN_RETRIES.labels("network_update")._value.get() > retries  # they did conflict, and retried


async def test_a_gateway_never_lands_on_an_endpoint_created_meanwhile(ctl: Controller) -> None:
    results = await asyncio.gather(
        ctl.networks.update(Network(name="blue", gateway="10.10.0.9"), fields=["gateway"]),
        ctl.endpoints.create(Endpoint(name="db", network="blue", host="h1", ip="10.10.0.9")), return_exceptions=True)
    net = await ctl.networks.get("blue")
    eps, _ = await ctl.endpoints.list(network="blue")
    assert net.gateway not in {e.ip for e in eps}
    assert sum(isinstance(r, Exception) for r in results) == 1


async def test_endpoints_after_a_gateway_move(ctl: Controller) -> None:
    await ctl.networks.update(Network(name="blue", gateway="10.10.0.3"), fields=["gateway"])
    db = await ctl.endpoints.create(Endpoint(name="db", network="blue", host="h1"))
    assert db.ip == "10.10.0.1"  # the old gateway is an address like any other now; .3 is taken
    err = await unchanged(ctl, ctl.endpoints.create(Endpoint(name="x", network="blue", host="h1", ip="10.10.0.3")),
                          InvalidArgument)
    assert err.field == "endpoint.ip" and "gateway" in err.reason


async def test_update_endpoint_labels(ctl: Controller) -> None:
    web = await ctl.endpoints.get("blue", "web")
    rev = await ctl.store.revision()
    new = await ctl.endpoints.update(Endpoint(name="web", network="blue", host="h1", ip=web.ip,
                                              labels={"tier": "front"}), fields=["labels"])
    assert new.labels == {"tier": "front"} and (new.id, new.mac, new.ip) == (web.id, web.mac, web.ip)
    assert await ctl.store.revision() == rev + 1


@pytest.mark.parametrize(("ep", "fields", "field", "reason"), [
    (Endpoint(name="web", network="blue", host="h2"), [], "endpoint.host", "cannot be changed"),
    (Endpoint(name="web", network="blue", host="", ip="10.10.0.9"), ["labels"], "endpoint.ip",
     "cannot be changed on an existing endpoint (10.10.0.2 -> 10.10.0.9); delete the endpoint and create it again"),
    (Endpoint(name="web", network="blue", host="", mac="02:00:00:00:00:01"), [], "endpoint.mac", "cannot be changed"),
    (Endpoint(name="web", network="blue", host=""), ["ip"], "endpoint.ip", "cannot be changed"),
    (Endpoint(name="web", network="blue", host="", labels={"": "x"}), [], "endpoint.labels", "label keys"),
    (Endpoint(name="web", network="blue", host=""), ["mtu"], "update_mask", "one of labels"),
])
async def test_update_endpoint_refusals(ctl: Controller, ep: Endpoint, fields: list[str], field: str,
                                        reason: str) -> None:
    err = await unchanged(ctl, ctl.endpoints.update(ep, fields=fields), InvalidArgument)
    assert (err.field == field or err.field.startswith(f"{field}.")) and reason in err.reason, str(err)


async def test_the_watch_and_the_agent_cache_see_an_update(ctl: Controller) -> None:
    it = ctl.watcher.watch()
    cache = StateCache()
    cache.apply(await it.__anext__())
    await ctl.networks.update(Network(name="blue", mtu=1300), fields=["mtu"])
    await ctl.endpoints.update(Endpoint(name="web", network="blue", host="h1", labels={"a": "b"}))
    changed: list[tuple[bool, WatchBatch]] = []
    while len(changed) < 2:
        batch = await asyncio.wait_for(it.__anext__(), 5)
        if batch.changes:
            changed.append((cache.apply(batch), batch))
    await it.aclose()
    assert [dirty for dirty, _ in changed] == [True, True]
    assert cache.networks["blue"].mtu == 1300 and cache.endpoints["blue", "web"].labels == {"a": "b"}


async def test_the_servicer_passes_the_mask_and_maps_errors(ctl: Controller) -> None:
    svc = servicer.NetworkServicer(ctl)
    got = await svc.UpdateNetwork(pb.UpdateNetworkRequest(network=pb.Network(name="blue", mtu=1280, labels={"x": "y"}),
                                                          update_mask=["mtu"]), _Context())
    assert got.mtu == 1280 and dict(got.labels) == {}
    with pytest.raises(Aborted) as info:
        await svc.UpdateNetwork(pb.UpdateNetworkRequest(network=pb.Network(name="blue", subnet="10.9.0.0/24"),
                                                        update_mask=["subnet"]), _Context())
    assert info.value.code == "INVALID_ARGUMENT" and info.value.details.startswith("network.subnet: cannot be changed")
    eps = servicer.EndpointServicer(ctl)
    ep = await eps.UpdateEndpoint(pb.UpdateEndpointRequest(endpoint=pb.Endpoint(name="web", network="blue",
                                                                                labels={"k": "v"})), _Context())
    assert dict(ep.labels) == {"k": "v"}


def test_network_updates_are_for_the_admin_only() -> None:
    authorize(Identity("admin"), "/vxlab.v1.X/UpdateNetwork", pb.UpdateNetworkRequest())
    with pytest.raises(PermissionDenied, match=r"^network: host 'h1' may not update networks \(admin only\)$"):
        authorize(Identity("host", "h1"), "/vxlab.v1.X/UpdateNetwork", pb.UpdateNetworkRequest())


async def test_a_host_updates_and_deletes_its_runtime_endpoints_only(ctl: Controller) -> None:
    """The guard authz sets (a host's certificate) reaches the core through the servicer and
    sees the stored record: a vxlab endpoint (web, the admin's) is refused, nothing written."""
    cni = await ctl.endpoints.create(Endpoint(name="pod", network="blue", host="h1", runtime="cni"))
    eps = servicer.EndpointServicer(ctl)
    for method, request in [("UpdateEndpoint", pb.UpdateEndpointRequest(endpoint=pb.Endpoint(
            name="web", network="blue", labels={"k": "v"}))), ("DeleteEndpoint",
                                                               pb.DeleteEndpointRequest(network="blue", name="web"))]:
        authorize(Identity("host", "h1"), method, request)
        before = await ctl.store.revision()
        with pytest.raises(Aborted) as info:
            await getattr(eps, method)(request, _Context())
        assert info.value.code == "PERMISSION_DENIED" and "not a vxlab endpoint (admin only)" in info.value.details
        assert await ctl.store.revision() == before
    authorize(Identity("host", "h1"), "UpdateEndpoint", pb.UpdateEndpointRequest())
    got = await eps.UpdateEndpoint(pb.UpdateEndpointRequest(endpoint=pb.Endpoint(name="pod", network="blue",
                                                                                 labels={"k": "v"})), _Context())
    assert dict(got.labels) == {"k": "v"} and got.ip == cni.ip
    authorize(Identity("host", "h1"), "DeleteEndpoint", pb.DeleteEndpointRequest())
    await eps.DeleteEndpoint(pb.DeleteEndpointRequest(network="blue", name="pod"), _Context())
    assert [e.name for e in (await ctl.endpoints.list(network="blue"))[0]] == ["web"]
