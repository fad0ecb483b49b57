"""Endpoints: a container's attachment to a network, with its address and MAC.

Create is one optimistic transaction over five comparisons (network and host
unchanged, endpoint, address and MAC absent) and three puts (the record and the two
alloc keys). Within one controller process, concurrent creates on a network reserve
their candidate address in memory first, so they pick different addresses instead
of colliding on the lowest free one; etcd still decides between processes.

A warm create is a single etcd round trip: what a full read saw of the network
(record, host records, used addresses) is kept as a hint for HINT_TTL seconds and
the transaction re-checks all of it. A failed transaction discards the hint, reads
everything again (which also produces the precise error: not found, already
exists, address in use) and retries.

Update changes an endpoint's labels, aliases and published ports in place (a compare-and-swap on the
record's mod revision), and a runtime endpoint's namespace path (`netns`, only when the
update names it: Docker's plugin at Join and Leave); its network, host, address, MAC and
runtime cannot change: the endpoint is deleted and created again (what `up` does for a
moved container or a new address). `netns` is an absolute path and only a runtime's
endpoint has one (`endpoint.netns`, INVALID_ARGUMENT otherwise).

Aliases (more DNS names of the container on the network) are unique on the network
among endpoint names and aliases: each holds an alloc key `alias/<network>/<alias>`,
and the transaction that adds one also compares that no endpoint has it as its name
(and a create, that its name is nobody's alias). A clash is ALREADY_EXISTS naming the
field, found again by the full read after a failed transaction. Services hold the same
key for their name (value `service:<name>`, controller/services.py).

Published ports are claimed per host in the same transactions (controller/portclaims.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from vxlab import ports as portspec
from vxlab import validate
from vxlab.controller import alloc, portclaims
from vxlab.controller.context import Context, now
from vxlab.controller.networks import same_immutable, update_fields
from vxlab.controller.keys import Keys
from vxlab.controller.store import Absent, Compare, Delete, KeyValue, ModRevisionIs, Op, Put, Store
from vxlab.controller.txn import CONFLICT, retry
from vxlab.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from vxlab.model import RUNTIMES, Endpoint, Network, from_json, to_json


Guard = Callable[[Endpoint], None]  # raises unless the caller may change this stored record

MUTABLE = ("labels", "aliases", "ports", "netns")
DEFAULT_UPDATE = ("labels", "aliases", "ports")  # an empty update_mask: `netns` changes only when named
IMMUTABLE = ("host", "ip", "mac", "runtime")
RECREATE = "delete the endpoint and create it again"


def check(ep: Endpoint) -> tuple[Endpoint, ipaddress.IPv4Address | None]:
    """A create request validated: normalised (its ports), and its address if given."""
    validate.name(ep.name, field="endpoint.name", max_len=validate.CONTAINER_NAME_MAX)
    validate.name(ep.network, field="endpoint.network", max_len=validate.NETWORK_NAME_MAX)
    validate.name(ep.host, field="endpoint.host", max_len=validate.HOST_NAME_MAX)
    validate.labels(ep.labels, field="endpoint.labels")
    validate.aliases(ep.aliases, owner=ep.name, field="endpoint.aliases")
    if ep.runtime and ep.runtime not in RUNTIMES:
        shown = ep.runtime[:30] if ep.runtime[:30].isprintable() else repr(ep.runtime[:30])
        raise InvalidArgument("endpoint.runtime", f"{shown!r} is not a runtime vxlab hands endpoints to"
                                                  f" (\"\" for vxlab's own, or one of {', '.join(RUNTIMES)})")
    ep = dataclasses.replace(ep, ports=portspec.check_all(ep.ports, field="endpoint.ports"))
    check_netns(ep, runtime=ep.runtime)
    return ep, validate.ipv4(ep.ip, field="endpoint.ip") if ep.ip else None


def check_netns(ep: Endpoint, *, runtime: str) -> None:
    """`ep.netns` ("" or a path) for an endpoint of `runtime`: only a runtime's has one."""
    if not ep.netns:
        return
    validate.netns_path(ep.netns, field="endpoint.netns")
    if runtime not in RUNTIMES:
        raise InvalidArgument("endpoint.netns", "only an endpoint of a runtime (docker, cni) names its namespace;"
                                                " vxlab's own live in the namespace its agent makes")


def holder(value: bytes) -> str:
    """Who holds an alias or address key: "container 'db'" or "service 'api'"."""
    text = value.decode()
    kind, _, name = text.rpartition(":")
    return f"service {name!r}" if kind == "service" else f"container {text!r}"


async def _alias_clash(store: Store, keys: Keys, ep: Endpoint, aliases: Collection[str], *,
                       name_too: bool) -> None:
    """ALREADY_EXISTS naming the field when one of `aliases` (of `ep`) is taken on its
    network, as an endpoint's name or an alias, or (`name_too`) when `ep`'s own name is
    an alias there."""
    net = ep.network
    todo = [a for a in ep.aliases if a in aliases]
    found = await asyncio.gather(*(store.get(k) for a in todo for k in (keys.endpoint(net, a), keys.alias(net, a))),
                                 store.get(keys.alias(net, ep.name)) if name_too else _none())
    for i, a in enumerate(todo):
        as_name, as_alias = found[2 * i], found[2 * i + 1]
        if as_name is not None or as_alias is not None:
            whose = f"the name of container {a!r}" if as_name is not None else \
                f"the name of {holder(as_alias.value)}" if as_alias.value.startswith(b"service:") else \
                f"an alias of {holder(as_alias.value)}"  # type: ignore[union-attr]
            raise AlreadyExists(f"endpoint.aliases[{ep.aliases.index(a)}]: {a!r} is already {whose}"
                                f" on network {net!r}")
    if found[-1] is not None:
        what = "the name of" if found[-1].value.startswith(b"service:") else "an alias of"
        raise AlreadyExists(f"endpoint.name: {ep.name!r} is already {what} {holder(found[-1].value)}"
                            f" on network {net!r}")


async def _none() -> None:
    return None


def _alias_ops(keys: Keys, ep: Endpoint, added: Collection[str], removed: Collection[str]) -> tuple[list[Compare], list[Op]]:
    """The comparisons and writes that add `added` and remove `removed` aliases of `ep`."""
    net = ep.network
    cmps: list[Compare] = [c for a in added for c in (Absent(keys.endpoint(net, a)), Absent(keys.alias(net, a)))]
    ops: list[Op] = [Put(keys.alias(net, a), ep.name.encode()) for a in added]
    return cmps, ops + [Delete(keys.alias(net, a)) for a in removed]


@dataclass
class _Hint:
    """What the last full read saw of a network: its record, its host records, the
    addresses in use. Only a hint: the transaction re-checks all of it, and any
    conflict discards the hint and reads again."""

    net_kv: KeyValue
    used: dict[int, str]  # address (as an integer) -> endpoint name
    revision: int         # the store revision the read saw
    hosts: dict[str, KeyValue] = field(default_factory=dict)
    read_at: float = field(default_factory=time.monotonic)
    floor: int = 0        # every address below it is in use or in flight (a scan start)


class _Both:
    """Membership in either of two containers, without building their union."""

    def __init__(self, a: dict[int, str], b: set[int]) -> None:
        self.a, self.b = a, b

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b


class Endpoints:
    HINT_TTL = 2.0  # seconds; bounds how long a free made by another controller goes unseen

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.keys = ctx.keys
        self._pending: dict[str, set[int]] = defaultdict(set)  # network -> addresses in flight
        self._hints: dict[str, _Hint] = {}
        self._refreshing: dict[str, asyncio.Future[_Hint]] = {}
        # Our own recent commits per network, (revision, ip, name or "" for a free):
        # merged into a fresh read that may have started before they landed.
        self._recent: dict[str, list[tuple[int, int, str]]] = defaultdict(list)

    async def _read(self, ep: Endpoint) -> _Hint:
        """Read the network, the host, the endpoint and the used addresses at once;
        raise the user-facing error when one of them is wrong."""
        keys = self.keys
        net_kv, host_kv, existing, (used_kvs, rev), _, _ = await asyncio.gather(
            self.store.get(keys.network(ep.network)), self.store.get(keys.host(ep.host)),
            self.store.get(keys.endpoint(ep.network, ep.name)), self.store.range(keys.network_ips(ep.network)),
            _alias_clash(self.store, keys, ep, ep.aliases, name_too=True), portclaims.clash(self.store, keys, ep))
        if net_kv is None:
            self._hints.pop(ep.network, None)
            raise NotFound(f"endpoint.network: no network named {ep.network!r}")
        if host_kv is None:
            raise NotFound(f"endpoint.host: no host named {ep.host!r}")
        if existing is not None:
            raise AlreadyExists(f"endpoint: {ep.name!r} is already attached to network {ep.network!r}")
        used = {int(ipaddress.IPv4Address(kv.key.rsplit("/", 1)[1])): kv.value.decode() for kv in used_kvs}
        hint = _Hint(net_kv, used, rev, {ep.host: host_kv})
        current = self._hints.get(ep.network)
        if current is not None and current.revision > rev:
            current.hosts.setdefault(ep.host, host_kv)  # a newer read finished first; keep it
            return current
        if current is not None and current.net_kv.mod_revision == net_kv.mod_revision:
            hint.hosts = {**current.hosts, **hint.hosts}
        recent = [r for r in self._recent[ep.network] if r[0] > rev]
        for _, ip, name in recent:
            if name:
                used[ip] = name
            else:
                used.pop(ip, None)
        self._recent[ep.network] = recent
        self._hints[ep.network] = hint
        return hint

    async def _refresh(self, ep: Endpoint) -> _Hint | None:
        """An expired hint is read again once, however many creates are waiting for it
        (no thundering herd of identical range reads). A failure specific to the
        reading create (its endpoint exists, its host is gone) is not shared: the
        others get None and read for themselves."""
        fut = self._refreshing.get(ep.network)
        if fut is None:
            fut = asyncio.ensure_future(self._read(ep))
            self._refreshing[ep.network] = fut
            fut.add_done_callback(lambda _f, n=ep.network: self._refreshing.pop(n, None))
            return await fut
        try:
            return await asyncio.shield(fut)
        except Exception:  # noqa: BLE001 - the reader's own error
            return None

    def _committed(self, network: str, revision: int, ip: int, name: str) -> None:
        """Record our own commit (name "" = a free) in the hint and for later reads."""
        self._recent[network].append((revision, ip, name))
        hint = self._hints.get(network)
        if hint is None:
            return
        if name:
            hint.used[ip] = name
        else:
            hint.used.pop(ip, None)
            hint.floor = min(hint.floor, ip)

    async def create(self, ep: Endpoint) -> Endpoint:
        ep, want_ip = check(ep)
        keys = self.keys
        pending = self._pending[ep.network]
        fresh = False

        async def attempt():  # type: ignore[no-untyped-def]
            nonlocal fresh
            hint = self._hints.get(ep.network)
            if hint is not None and not fresh and time.monotonic() - hint.read_at > self.HINT_TTL:
                hint = await self._refresh(ep)
            if fresh or hint is None or ep.host not in hint.hosts:
                hint = await self._read(ep)
            net = from_json(Network, hint.net_kv.value)
            if net.driver == "bridge" and ep.host != net.host:
                raise FailedPrecondition(f"endpoint.host: network {ep.network!r} is a bridge network on host"
                                         f" {net.host!r}; {ep.host!r} cannot join it")
            portclaims.check_network(ep, net)
            subnet = ipaddress.IPv4Network(net.subnet)
            gateway = ipaddress.IPv4Address(net.gateway)
            if want_ip is not None:
                validate.host_in(want_ip, subnet, field="endpoint.ip")
                if want_ip == gateway:
                    raise InvalidArgument("endpoint.ip", f"{want_ip} is the gateway of network {ep.network!r}")
                if int(want_ip) in hint.used and fresh:
                    raise AlreadyExists(f"endpoint.ip: {want_ip} is in use by"
                                        f" {holder(hint.used[int(want_ip)].encode())}")
                addr = want_ip
            else:
                addr = alloc.lowest_free_ip(subnet, gateway=gateway, used=_Both(hint.used, pending),
                                            start=hint.floor)
                hint.floor = int(addr)
            ip, ip_int = str(addr), int(addr)
            mac = alloc.random_mac()
            record = dataclasses.replace(ep, ip=ip, mac=mac, id=alloc.new_id(), created=now())
            host_kv = hint.hosts[ep.host]
            alias_cmps, alias_ops = _alias_ops(keys, ep, ep.aliases, ())
            port_cmps, port_ops = portclaims.ops(keys, ep)
            pending.add(ip_int)
            try:
                res = await self.store.txn(
                    [ModRevisionIs(hint.net_kv.key, hint.net_kv.mod_revision),
                     ModRevisionIs(host_kv.key, host_kv.mod_revision),
                     Absent(keys.endpoint(ep.network, ep.name)), Absent(keys.alias(ep.network, ep.name)),
                     Absent(keys.ip(ep.network, ip)), Absent(keys.mac(ep.network, mac)), *alias_cmps, *port_cmps],
                    [Put(keys.endpoint(ep.network, ep.name), to_json(record)),
                     Put(keys.ip(ep.network, ip), ep.name.encode()),
                     Put(keys.mac(ep.network, mac), ep.name.encode()), *alias_ops, *port_ops],
                )
            finally:
                pending.discard(ip_int)
            if not res.succeeded:
                hint.floor = min(hint.floor, ip_int)  # the address is free again
                fresh = True  # find out what changed: read everything again
                return CONFLICT
            self._committed(ep.network, res.revision, ip_int, ep.name)
            return record

        return await retry(attempt, kind="endpoint_create")

    async def get(self, network: str, name: str) -> Endpoint:
        validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        validate.name(name, field="name", max_len=validate.CONTAINER_NAME_MAX)
        kv = await self.store.get(self.keys.endpoint(network, name))
        if kv is None:
            raise NotFound(f"endpoint: no endpoint {name!r} on network {network!r}")
        return from_json(Endpoint, kv.value)

    async def list(self, *, network: str = "", host: str = "", name: str = "") -> tuple[list[Endpoint], int]:
        if network:
            validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        prefix = self.keys.network_endpoints(network) if network else self.keys.endpoints
        kvs, rev = await self.store.range(prefix)
        eps = [from_json(Endpoint, kv.value) for kv in kvs]
        return [e for e in eps if (not host or e.host == host) and (not name or e.name == name)], rev

    async def update(self, ep: Endpoint, *, fields: Collection[str] = (), guard: Guard | None = None) -> Endpoint:
        """Change `fields` (default: labels, aliases, ports; `netns` only when named) of the endpoint
        `ep.name` on `ep.network`; returns the record. Nothing changed: nothing written.
        `guard` (the caller's authorization, controller/authz.py) sees the stored record
        the transaction compares, and may refuse it."""
        validate.name(ep.network, field="endpoint.network", max_len=validate.NETWORK_NAME_MAX)
        validate.name(ep.name, field="endpoint.name", max_len=validate.CONTAINER_NAME_MAX)
        todo = update_fields("endpoint", fields, mutable=MUTABLE, immutable=IMMUTABLE, fix=RECREATE,
                             default=DEFAULT_UPDATE)
        validate.labels(ep.labels, field="endpoint.labels")
        validate.aliases(ep.aliases, owner=ep.name, field="endpoint.aliases")
        ep = dataclasses.replace(ep, ports=portspec.check_all(ep.ports, field="endpoint.ports"))

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.endpoint(ep.network, ep.name))
            if kv is None:
                raise NotFound(f"endpoint: no endpoint {ep.name!r} on network {ep.network!r}")
            cur = from_json(Endpoint, kv.value)
            if guard is not None:
                guard(cur)
            same_immutable("endpoint", ep, cur, immutable=IMMUTABLE, fix=RECREATE)
            if "netns" in todo:
                check_netns(ep, runtime=cur.runtime)
            record = dataclasses.replace(cur, **{f: getattr(ep, f) for f in todo})
            if record == cur:
                return cur
            added = [a for a in record.aliases if a not in cur.aliases]
            net_kv = await self.store.get(self.keys.network(ep.network)) if record.ports else None
            if net_kv is not None:
                portclaims.check_network(record, from_json(Network, net_kv.value))
            await asyncio.gather(_alias_clash(self.store, self.keys, record, added, name_too=False),
                                 portclaims.clash(self.store, self.keys, record, before=cur.ports))
            cmps, ops = _alias_ops(self.keys, record, added, [a for a in cur.aliases if a not in record.aliases])
            port_cmps, port_ops = portclaims.ops(self.keys, record, before=cur.ports)
            res = await self.store.txn([ModRevisionIs(kv.key, kv.mod_revision), *cmps, *port_cmps],
                                       [Put(kv.key, to_json(record)), *ops, *port_ops])
            return record if res.succeeded else CONFLICT

        return await retry(attempt, kind="endpoint_update")

    async def delete(self, network: str, name: str, *, guard: Guard | None = None) -> None:
        """Delete the endpoint and free its address, MAC, aliases and ports; `guard` as update's."""
        validate.name(network, field="network", max_len=validate.NETWORK_NAME_MAX)
        validate.name(name, field="name", max_len=validate.CONTAINER_NAME_MAX)

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.endpoint(network, name))
            if kv is None:
                raise NotFound(f"endpoint: no endpoint {name!r} on network {network!r}")
            ep = from_json(Endpoint, kv.value)
            if guard is not None:
                guard(ep)
            res = await self.store.txn(
                [ModRevisionIs(kv.key, kv.mod_revision)],
                [Delete(kv.key), Delete(self.keys.ip(network, ep.ip)), Delete(self.keys.mac(network, ep.mac)),
                 *_alias_ops(self.keys, ep, (), ep.aliases)[1], *portclaims.freed(self.keys, ep)],
            )
            if not res.succeeded:
                return CONFLICT
            self._committed(network, res.revision, int(ipaddress.IPv4Address(ep.ip)), "")
            return None

        await retry(attempt, kind="endpoint_delete")
