"""Services: create (with its VIP allocated), get, list, delete. Semantics: vxlab.services.

A service lives at `services/<network>/<name>`. Create is one transaction, like an
endpoint's: the network's record unchanged since it was read, the service's key absent,
its VIP's `alloc/ip/<network>/<vip>` key absent (the address space it shares with the
network's endpoints; value `service:<name>`), its name free on the network among the
endpoints' names and aliases (it takes `alloc/alias/<network>/<name>`, so no container
can be named so later, and no alias), and every replica named still an endpoint of the
network. A VIP not given is the highest free address of the subnet (containers take the
lowest). A service cannot be changed: delete it and create it again. Deleting a network
deletes its services (controller/networks.py); deleting a replica leaves the service,
which has one replica fewer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

from vxlab import services as semantics
from vxlab import validate
from vxlab.controller import alloc
from vxlab.controller.context import Context, now
from vxlab.controller.endpoints import holder
from vxlab.controller.store import Absent, Delete, ModRevisionIs, Put
from vxlab.controller.txn import CONFLICT, retry
from vxlab.errors import AlreadyExists, InvalidArgument, NotFound
from vxlab.model import Network, Service, from_json, to_json


class Services:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.keys = ctx.keys

    async def create(self, s: Service) -> Service:
        s = semantics.check(s)
        keys, net_name = self.keys, s.network

        async def attempt():  # type: ignore[no-untyped-def]
            net_kv, existing, as_name, as_alias, (used, _rev), *reps = await asyncio.gather(
                self.store.get(keys.network(net_name)), self.store.get(keys.service(net_name, s.name)),
                self.store.get(keys.endpoint(net_name, s.name)), self.store.get(keys.alias(net_name, s.name)),
                self.store.range(keys.network_ips(net_name)),
                *(self.store.get(keys.endpoint(net_name, r)) for r in s.replicas))
            if net_kv is None:
                raise NotFound(f"service.network: no network named {net_name!r}")
            if existing is not None:
                raise AlreadyExists(f"service: {s.name!r} already exists on network {net_name!r}")
            if as_name is not None:
                raise AlreadyExists(f"service.name: {s.name!r} is already the name of container {s.name!r}"
                                    f" on network {net_name!r}")
            if as_alias is not None:
                raise AlreadyExists(f"service.name: {s.name!r} is already an alias of {holder(as_alias.value)}"
                                    f" on network {net_name!r}")
            for i, (r, kv) in enumerate(zip(s.replicas, reps, strict=True)):
                if kv is None:
                    raise InvalidArgument(f"service.replicas[{i}]", f"no container {r!r} on network {net_name!r}")
            net = from_json(Network, net_kv.value)
            subnet, gateway = ipaddress.IPv4Network(net.subnet), ipaddress.IPv4Address(net.gateway)
            taken = {int(ipaddress.IPv4Address(kv.key.rsplit("/", 1)[1])): kv.value for kv in used}
            if s.vip:
                vip = ipaddress.IPv4Address(s.vip)
                validate.host_in(vip, subnet, field="service.vip")
                if vip == gateway:
                    raise InvalidArgument("service.vip", f"{vip} is the gateway of network {net_name!r}")
                if int(vip) in taken:
                    raise InvalidArgument("service.vip", f"{vip} is in use by {holder(taken[int(vip)])}")
            else:
                vip = alloc.highest_free_ip(subnet, gateway=gateway, used=taken)
            record = dataclasses.replace(s, vip=str(vip), id=alloc.new_id(), created=now())
            owner = f"service:{s.name}".encode()
            res = await self.store.txn(
                [ModRevisionIs(net_kv.key, net_kv.mod_revision), Absent(keys.service(net_name, s.name)),
                 Absent(keys.endpoint(net_name, s.name)), Absent(keys.alias(net_name, s.name)),
                 Absent(keys.ip(net_name, str(vip))),
                 *(ModRevisionIs(kv.key, kv.mod_revision) for kv in reps if kv is not None)],
                [Put(keys.service(net_name, s.name), to_json(record)), Put(keys.ip(net_name, str(vip)), owner),
                 Put(keys.alias(net_name, s.name), owner)])
            return record if res.succeeded else CONFLICT

        return await retry(attempt, kind="service_create")

    async def get(self, network: str, name: str) -> Service:
        validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        validate.name(name, field="name", max_len=validate.CONTAINER_NAME_MAX)
        kv = await self.store.get(self.keys.service(network, name))
        if kv is None:
            raise NotFound(f"service: no service {name!r} on network {network!r}")
        return from_json(Service, kv.value)

    async def list(self, *, network: str = "") -> tuple[list[Service], int]:
        """Every service (of `network`), by network and name."""
        if network:
            validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        kvs, rev = await self.store.range(self.keys.network_services(network) if network else self.keys.services)
        return sorted((from_json(Service, kv.value) for kv in kvs), key=lambda s: (s.network, s.name)), rev

    async def delete(self, network: str, name: str) -> None:
        validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        validate.name(name, field="name", max_len=validate.CONTAINER_NAME_MAX)

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.service(network, name))
            if kv is None:
                raise NotFound(f"service: no service {name!r} on network {network!r}")
            s = from_json(Service, kv.value)
            res = await self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                                       [Delete(kv.key), Delete(self.keys.ip(network, s.vip)),
                                        Delete(self.keys.alias(network, name))])
            return None if res.succeeded else CONFLICT

        await retry(attempt, kind="service_delete")
