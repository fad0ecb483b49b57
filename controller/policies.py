"""Network policies: validation, create, get, list (in evaluation order), delete.

A policy lives at `policies/<network>/<name>`. Create is one transaction: the policy's
key absent and the network's record unchanged since it was read (so a policy never
outlives a network deleted at the same moment); deleting a network deletes its
policies in the same transaction (controller/networks.py). Semantics: vxlab.policy.
"""

from __future__ import annotations

import dataclasses

from vxlab import policy as semantics
from vxlab import validate
from vxlab.controller.context import Context, now
from vxlab.controller.store import Absent, Delete, ModRevisionIs, Put
from vxlab.controller.txn import CONFLICT, retry
from vxlab.errors import AlreadyExists, NotFound
from vxlab.model import Policy, from_json, to_json


class Policies:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.keys = ctx.keys

    async def create(self, p: Policy) -> Policy:
        p = semantics.check(p)
        keys = self.keys

        async def attempt():  # type: ignore[no-untyped-def]
            net_kv, existing = await self.store.get(keys.network(p.network)), await self.store.get(
                keys.policy(p.network, p.name))
            if net_kv is None:
                raise NotFound(f"policy.network: no network named {p.network!r}")
            if existing is not None:
                raise AlreadyExists(f"policy: {p.name!r} already exists on network {p.network!r}")
            record = dataclasses.replace(p, created=now())
            res = await self.store.txn(
                [ModRevisionIs(net_kv.key, net_kv.mod_revision), Absent(keys.policy(p.network, p.name))],
                [Put(keys.policy(p.network, p.name), to_json(record))])
            return record if res.succeeded else CONFLICT

        return await retry(attempt, kind="policy_create")

    async def get(self, network: str, name: str) -> Policy:
        validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        validate.name(name, field="name", max_len=semantics.NAME_MAX)
        kv = await self.store.get(self.keys.policy(network, name))
        if kv is None:
            raise NotFound(f"policy: no policy {name!r} on network {network!r}")
        return from_json(Policy, kv.value)

    async def list(self, *, network: str = "") -> tuple[list[Policy], int]:
        """Every policy (of `network`), per network in evaluation order."""
        if network:
            validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        prefix = self.keys.network_policies(network) if network else self.keys.policies
        kvs, rev = await self.store.range(prefix)
        found = [from_json(Policy, kv.value) for kv in kvs]
        nets = sorted({p.network for p in found})
        return [p for n in nets for p in semantics.ordered(q for q in found if q.network == n)], rev

    async def delete(self, network: str, name: str) -> None:
        validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        validate.name(name, field="name", max_len=semantics.NAME_MAX)

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.policy(network, name))
            if kv is None:
                raise NotFound(f"policy: no policy {name!r} on network {network!r}")
            res = await self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)], [Delete(kv.key)])
            return None if res.succeeded else CONFLICT

        await retry(attempt, kind="policy_delete")
