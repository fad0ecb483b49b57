"""Networks: validation, subnet and VNI allocation, listing, update in place,
deletion (with the network's endpoints when forced, freeing their published ports, and
always with its policies and services).

Create is one optimistic transaction: the name must be absent, the VNI's alloc key
absent, and no network created since the read (so the subnet-overlap check still
holds). A conflict re-reads and tries again (controller/txn.py).

Update changes only the mutable fields (MUTABLE: mtu, gateway, internal, labels) in
one compare-and-swap on the record's mod revision; a new gateway must also be no
endpoint's address at commit (its alloc/ip key absent). Subnet, VNI, driver and host
cannot change: the network has to be deleted and created again (`up --recreate`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Collection

from vxlab import validate
from vxlab.controller import alloc, portclaims
from vxlab.controller.context import Context, now
from vxlab.controller.store import (Absent, Compare, Delete, DeletePrefix, ModRevisionIs, Op,
                                    PrefixUnchangedSince, Put)
from vxlab.controller.txn import CONFLICT, retry
from vxlab.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from vxlab.model import Endpoint, Network, from_json, to_json

DRIVERS = ("overlay", "bridge")
MUTABLE = ("mtu", "gateway", "internal", "labels")
IMMUTABLE = ("subnet", "vni", "driver", "host")


def check(net: Network) -> tuple[ipaddress.IPv4Network | None, ipaddress.IPv4Address | None]:
    """Validate a create request; returns the parsed subnet and gateway (None when absent)."""
    validate.name(net.name, field="network.name", max_len=validate.NETWORK_NAME_MAX)
    subnet = validate.subnet(net.subnet, field="network.subnet") if net.subnet else None
    gateway = None
    if net.gateway:
        gateway = validate.ipv4(net.gateway, field="network.gateway")
        if subnet is None:
            raise InvalidArgument("network.gateway", "needs an explicit subnet")
        validate.host_in(gateway, subnet, field="network.gateway")
    validate.vni(net.vni, field="network.vni")
    validate.mtu(net.mtu, field="network.mtu")
    if net.driver and net.driver not in DRIVERS:
        raise InvalidArgument("network.driver", f"{net.driver[:20]!r} is not one of {', '.join(DRIVERS)}")
    validate.labels(net.labels, field="network.labels")
    if net.driver == "bridge":
        if not net.host:
            raise InvalidArgument("network.host", "required for driver 'bridge' (the one host it lives on)")
        validate.name(net.host, field="network.host", max_len=validate.HOST_NAME_MAX)
        if net.vni:
            raise InvalidArgument("network.vni", "a bridge network has no VNI (no VXLAN)")
    elif net.host:
        raise InvalidArgument("network.host", "only for driver 'bridge'; an overlay spans every host")
    return subnet, gateway


def update_fields(kind: str, fields: Collection[str], *, mutable: tuple[str, ...],
                  immutable: tuple[str, ...], fix: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fields an update request asks to change (its `update_mask`; empty: `default`,
    or every mutable one); an immutable or unknown field is an InvalidArgument naming it."""
    for f in fields:
        if f in immutable:
            raise InvalidArgument(f"{kind}.{f}", f"cannot be changed on an existing {kind}; {fix}")
        if f not in mutable:
            shown = f[:30] if f[:30].isprintable() else repr(f[:30])
            raise InvalidArgument("update_mask", f"{shown!r} is not a field that can be updated"
                                                 f" (one of {', '.join(mutable)})")
    return tuple(dict.fromkeys(fields)) or default or mutable


def same_immutable(kind: str, want: object, have: object, *, immutable: tuple[str, ...], fix: str) -> None:
    """A field that cannot change, given (non-empty) with another value than the
    record's, is an InvalidArgument naming it (rather than silently ignored)."""
    for f in immutable:
        value = getattr(want, f)
        if value and value != getattr(have, f):
            raise InvalidArgument(f"{kind}.{f}", f"cannot be changed on an existing {kind}"
                                                 f" ({getattr(have, f)!s:.40} -> {value!s:.40}); {fix}")


RECREATE = "delete the network and create it again (vxlab up --recreate)"


class Networks:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.keys = ctx.keys

    async def create(self, net: Network) -> Network:
        subnet, gateway = check(net)
        config = self.ctx.config

        async def attempt():  # type: ignore[no-untyped-def]
            kvs, rev = await self.store.range(self.keys.networks)
            existing = [from_json(Network, kv.value) for kv in kvs]
            if any(n.name == net.name for n in existing):
                raise AlreadyExists(f"network: {net.name!r} already exists")
            used = [(n.name, ipaddress.IPv4Network(n.subnet)) for n in existing]
            if subnet is not None:
                hit = alloc.overlapping(subnet, used)
                if hit:
                    raise FailedPrecondition(
                        f"network.subnet: {subnet} overlaps network {hit[0]!r} ({hit[1]})"
                    )
                chosen = subnet
            else:
                chosen = alloc.subnet_from_pool(config.pool(), config.subnet_prefix, (u for _, u in used))
            if net.driver == "bridge" and await self.store.get(self.keys.host(net.host)) is None:
                raise NotFound(f"network.host: no host named {net.host!r}")
            vnis = {n.vni: n.name for n in existing if n.vni}
            if net.vni and net.vni in vnis:
                raise AlreadyExists(f"network.vni: {net.vni} is in use by network {vnis[net.vni]!r}")
            vni = 0 if net.driver == "bridge" else net.vni or alloc.lowest_free_vni(vnis)
            record = dataclasses.replace(
                net, id=alloc.new_id(), subnet=str(chosen),
                gateway=str(gateway or alloc.default_gateway(chosen)), vni=vni,
                created=now(), driver=net.driver or "overlay",
            )
            compares = [Absent(self.keys.network(net.name)), PrefixUnchangedSince(self.keys.networks, rev)]
            ops = [Put(self.keys.network(net.name), to_json(record))]
            if vni:
                compares.append(Absent(self.keys.vni(vni)))
                ops.append(Put(self.keys.vni(vni), net.name.encode()))
            res = await self.store.txn(compares, ops)
            return record if res.succeeded else CONFLICT

        return await retry(attempt, kind="network_create")

    async def get(self, name: str) -> Network:
        validate.name(name, field="name", max_len=validate.NETWORK_NAME_MAX)
        kv = await self.store.get(self.keys.network(name))
        if kv is None:
            raise NotFound(f"network: no network named {name!r}")
        return from_json(Network, kv.value)

    async def list(self) -> tuple[list[Network], int]:
        kvs, rev = await self.store.range(self.keys.networks)
        return [from_json(Network, kv.value) for kv in kvs], rev

    async def update(self, net: Network, *, fields: Collection[str] = ()) -> Network:
        """Change `fields` (default: every mutable one) of the network named `net.name`
        to `net`'s values; returns the record. Nothing changed: nothing is written."""
        validate.name(net.name, field="network.name", max_len=validate.NETWORK_NAME_MAX)
        todo = update_fields("network", fields, mutable=MUTABLE, immutable=IMMUTABLE, fix=RECREATE)
        if "mtu" in todo:
            validate.mtu(net.mtu, field="network.mtu")
        if "labels" in todo:
            validate.labels(net.labels, field="network.labels")
        wanted_gw = validate.ipv4(net.gateway, field="network.gateway") if "gateway" in todo and net.gateway else None

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.network(net.name))
            if kv is None:
                raise NotFound(f"network: no network named {net.name!r}")
            cur = from_json(Network, kv.value)
            same_immutable("network", net, cur, immutable=IMMUTABLE, fix=RECREATE)
            change: dict[str, object] = {f: getattr(net, f) for f in todo if f != "gateway"}
            compares: list[Compare] = [ModRevisionIs(kv.key, kv.mod_revision)]
            if "gateway" in todo:
                subnet = ipaddress.IPv4Network(cur.subnet)
                gateway = wanted_gw or alloc.default_gateway(subnet)
                validate.host_in(gateway, subnet, field="network.gateway")
                if str(gateway) != cur.gateway:
                    holder = await self.store.get(self.keys.ip(net.name, str(gateway)))
                    if holder is not None:
                        raise InvalidArgument("network.gateway", f"{gateway} is the address of endpoint"
                                                                 f" {holder.value.decode()[:40]!r}")
                    compares.append(Absent(self.keys.ip(net.name, str(gateway))))
                change["gateway"] = str(gateway)
            record = dataclasses.replace(cur, **change)  # type: ignore[arg-type]
            if record == cur:
                return cur
            res = await self.store.txn(compares, [Put(kv.key, to_json(record))])
            return record if res.succeeded else CONFLICT

        return await retry(attempt, kind="network_update")

    async def delete(self, name: str, *, force: bool = False) -> int:
        """Delete the network; refused while it has endpoints unless `force`. Returns
        how many endpoints went with it."""
        validate.name(name, field="name", max_len=validate.NETWORK_NAME_MAX)

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.network(name))
            if kv is None:
                raise NotFound(f"network: no network named {name!r}")
            net = from_json(Network, kv.value)
            eps, rev = await self.store.range(self.keys.network_endpoints(name))
            if eps and not force:
                names = ", ".join(from_json(Endpoint, e.value).name for e in eps[:5])
                raise FailedPrecondition(
                    f"network: {name!r} has {len(eps)} endpoints ({names}{', …' if len(eps) > 5 else ''});"
                    " remove them or use force"
                )
            ops: list[Op] = [
                Delete(kv.key), *([Delete(self.keys.vni(net.vni))] if net.vni else []),
                DeletePrefix(self.keys.network_endpoints(name)), DeletePrefix(self.keys.network_ips(name)),
                DeletePrefix(self.keys.network_macs(name)), DeletePrefix(self.keys.network_policies(name)),
                DeletePrefix(self.keys.network_aliases(name)), DeletePrefix(self.keys.network_services(name)),
                *(op for e in eps for op in portclaims.freed(self.keys, from_json(Endpoint, e.value))),
            ]
            res = await self.store.txn(
                [ModRevisionIs(kv.key, kv.mod_revision),
                 PrefixUnchangedSince(self.keys.network_endpoints(name), rev)],
                ops,
            )
            return len(eps) if res.succeeded else CONFLICT

        return await retry(attempt, kind="network_delete")
