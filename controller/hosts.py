"""Hosts: registration, liveness through an etcd lease, listing, deregistration.

A host is alive while its `alive/<name>` key exists; that key is put with a lease of
`lease_ttl` seconds, which the agent renews with KeepAlive. When the lease expires
etcd deletes the key, Watch reports the host dead, and peers drop its entries while
its endpoints stay in the desired state. A keepalive for an expired lease grants a
new one at once, so a returning host is alive again immediately.
"""

from __future__ import annotations

import dataclasses
import json

from vxlab import validate
from vxlab.controller.context import Context, now
from vxlab.controller.endpoints import Endpoints
from vxlab.controller.store import Delete, ModRevisionIs, Put
from vxlab.controller.txn import CONFLICT, retry
from vxlab.errors import FailedPrecondition, InvalidArgument, NotFound
from vxlab.model import Endpoint, Host, from_json, to_json


MAX_TTL = 300  # a registration may ask for a longer first lease (a lab pre-registering hosts)


class Hosts:
    def __init__(self, ctx: Context, endpoints: Endpoints) -> None:
        self.ctx = ctx
        self.endpoint_ops = endpoints
        self.store = ctx.store
        self.keys = ctx.keys

    @staticmethod
    def validate(host: Host) -> Host:
        validate.name(host.name, field="host.name", max_len=validate.HOST_NAME_MAX)
        if not host.underlay_ip:
            raise InvalidArgument("host.underlay_ip", "required")
        validate.ipv4(host.underlay_ip, field="host.underlay_ip")
        if host.underlay_mtu and not validate.MTU_MIN <= host.underlay_mtu <= 65535:
            raise InvalidArgument("host.underlay_mtu", f"{host.underlay_mtu} is out of range")
        validate.labels(host.labels, field="host.labels")
        if host.lease_ttl and not 1 <= host.lease_ttl <= MAX_TTL:
            raise InvalidArgument("host.lease_ttl", f"{host.lease_ttl} is out of range 1..{MAX_TTL} (0 = default)")
        return host

    async def register(self, host: Host) -> tuple[Host, int, int]:
        """Create or update the host's record and make it alive with a fresh lease."""
        self.validate(host)
        ttl = host.lease_ttl or self.ctx.config.lease_ttl
        old = await self.store.get(self.keys.host(host.name))
        registered = from_json(Host, old.value).registered_at if old else now()
        record = dataclasses.replace(host, alive=False, lease_ttl=ttl, registered_at=registered)
        lease = await self.store.grant_lease(ttl)
        prev_alive = await self.store.get(self.keys.alive_key(host.name))
        await self.store.txn([], [
            Put(self.keys.host(host.name), to_json(record, exclude=("alive",))),
            Put(self.keys.alive_key(host.name), json.dumps({"lease": lease}).encode(), lease=lease),
        ])
        if prev_alive and prev_alive.lease and prev_alive.lease != lease:
            await self.store.revoke_lease(prev_alive.lease)
        return dataclasses.replace(record, alive=True), lease, ttl

    async def keepalive(self, name: str, lease_id: int) -> tuple[int, int, bool]:
        """Renew the lease; if it expired, grant a new one and mark the host alive again.

        The host's alive key must be bound to the caller's lease: when another lease holds
        it (a registration raced this one), it is bound to the caller's again, so the key
        never dies with a lease nobody renews."""
        validate.name(name, field="name", max_len=validate.HOST_NAME_MAX)
        if lease_id > 0:
            ttl = await self.store.refresh_lease(lease_id)
            if ttl > 0:
                alive = await self.store.get(self.keys.alive_key(name))
                if alive is None or alive.lease != lease_id:
                    if await self.store.get(self.keys.host(name)) is None:
                        raise NotFound(f"host: no host named {name!r}; register it first")
                    try:
                        await self.store.txn([], [Put(self.keys.alive_key(name),
                                                      json.dumps({"lease": lease_id}).encode(), lease=lease_id)])
                    except ValueError:  # a registration revoked the lease meanwhile: a new one below
                        ttl = 0
                if ttl > 0:
                    return lease_id, ttl, True
        if await self.store.get(self.keys.host(name)) is None:
            raise NotFound(f"host: no host named {name!r}; register it first")
        ttl = self.ctx.config.lease_ttl
        lease = await self.store.grant_lease(ttl)
        await self.store.txn([], [Put(self.keys.alive_key(name), json.dumps({"lease": lease}).encode(), lease=lease)])
        return lease, ttl, False

    async def get(self, name: str) -> Host:
        validate.name(name, field="name", max_len=validate.HOST_NAME_MAX)
        kv = await self.store.get(self.keys.host(name))
        if kv is None:
            raise NotFound(f"host: no host named {name!r}")
        alive = await self.store.get(self.keys.alive_key(name))
        return dataclasses.replace(from_json(Host, kv.value), alive=alive is not None)

    async def list(self) -> tuple[list[Host], int]:
        records, rev = await self.store.range(self.keys.hosts)
        alive_kvs, _ = await self.store.range(self.keys.alive)
        alive = {kv.key[len(self.keys.alive):] for kv in alive_kvs}
        hosts = [from_json(Host, kv.value) for kv in records]
        return [dataclasses.replace(h, alive=h.name in alive) for h in hosts], rev

    async def deregister(self, name: str, *, force: bool = False) -> None:
        """Remove the host; refused while it has endpoints unless `force`.

        With `force` the host's endpoints are deleted first, one transaction each
        (an etcd transaction holds at most 128 operations), then the host itself.
        """
        validate.name(name, field="name", max_len=validate.HOST_NAME_MAX)
        if await self.store.get(self.keys.host(name)) is None:
            raise NotFound(f"host: no host named {name!r}")
        mine = await self.endpoints_of(name)
        if mine and not force:
            names = ", ".join(sorted(f"{ep.name}@{ep.network}" for ep in mine)[:5])
            raise FailedPrecondition(
                f"host: {name!r} has {len(mine)} endpoints ({names}); remove them or use force"
            )
        for ep in mine:
            try:
                await self.endpoint_ops.delete(ep.network, ep.name)
            except NotFound:
                pass  # deleted meanwhile

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.host(name))
            if kv is None:
                raise NotFound(f"host: no host named {name!r}")
            if await self.endpoints_of(name):
                return CONFLICT  # an endpoint was added meanwhile: never orphan it
            alive = await self.store.get(self.keys.alive_key(name))
            res = await self.store.txn(
                [ModRevisionIs(kv.key, kv.mod_revision)],
                [Delete(self.keys.host(name)), Delete(self.keys.alive_key(name))])
            if not res.succeeded:
                return CONFLICT
            if alive and alive.lease:
                await self.store.revoke_lease(alive.lease)
            return None

        await retry(attempt, kind="host_deregister")

    async def endpoints_of(self, name: str) -> list[Endpoint]:
        kvs, _ = await self.store.range(self.keys.endpoints)
        return [ep for ep in (from_json(Endpoint, kv.value) for kv in kvs) if ep.host == name]
