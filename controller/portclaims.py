"""Published ports' claims in etcd: the comparisons and writes an endpoint transaction
adds for its ports, and the precise error when one is taken.

A host port is held by `alloc/port/<host>/<proto>/<port>` (value `<container>@<network>`):
one per host and protocol, whatever the host address (`127.0.0.1:8080` and `8080` on one
host clash; Docker would allow both). A container publishes on one network only, held
by `alloc/publish/<host>/<container>` (value: the network): its replies leave through
the uplink its default route takes, which is that network's (agent/desired.py).
Every key is created in the transaction that creates or updates the endpoint, and
deleted with it (also by a forced network delete, controller/networks.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from vxlab.controller.keys import Keys
from vxlab.controller.store import Absent, Compare, Delete, Op, Put, Store
from vxlab.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from vxlab.model import Endpoint, Network, PortMapping


def _key(keys: Keys, ep: Endpoint, p: PortMapping) -> str:
    return keys.port(ep.host, p.protocol, p.host_port)


def _claimed(ports: Collection[PortMapping]) -> set[tuple[str, int]]:
    return {(p.protocol, p.host_port) for p in ports}


def check_network(ep: Endpoint, net: Network) -> None:
    """Ports only on an endpoint of a non-internal network (its uplink carries them)."""
    if ep.ports and net.internal:
        raise InvalidArgument("endpoint.ports", f"network {net.name!r} is internal (no way in from the host);"
                                                " publish on a non-internal network of the container")


async def clash(store: Store, keys: Keys, ep: Endpoint, *, before: Collection[PortMapping] = ()) -> None:
    """ALREADY_EXISTS naming the field when a port of `ep` that `before` (its current
    ports) does not hold is published by another container on its host, and
    FAILED_PRECONDITION when the container publishes on another network already."""
    held = _claimed(before)
    todo = [(i, p) for i, p in enumerate(ep.ports) if (p.protocol, p.host_port) not in held]
    if not todo:
        return
    found = await asyncio.gather(*(store.get(_key(keys, ep, p)) for _, p in todo),
                                 store.get(keys.publish(ep.host, ep.name)) if not before else _none())
    for (i, p), kv in zip(todo, found, strict=False):
        if kv is not None:
            who, _, net = kv.value.decode().partition("@")
            raise AlreadyExists(f"endpoint.ports[{i}].host_port: {p.protocol} {p.host_port} on host {ep.host!r} is"
                                f" already published by container {who!r} (network {net!r})")
    other = found[-1]
    if other is not None and other.value.decode() != ep.network:
        raise FailedPrecondition(f"endpoint.ports: container {ep.name!r} publishes ports on network"
                                 f" {other.value.decode()!r} already (one network per container)")


async def _none() -> None:
    return None


def ops(keys: Keys, ep: Endpoint, *, before: Collection[PortMapping] = ()) -> tuple[list[Compare], list[Op]]:
    """What takes `ep`'s ports when it had `before`: new host ports claimed, gone ones
    freed, the container's publish key made or dropped."""
    want, had = _claimed(ep.ports), _claimed(before)
    cmps: list[Compare] = [Absent(keys.port(ep.host, proto, port)) for proto, port in sorted(want - had)]
    out: list[Op] = [Put(keys.port(ep.host, proto, port), f"{ep.name}@{ep.network}".encode())
                     for proto, port in sorted(want - had)]
    out += [Delete(keys.port(ep.host, proto, port)) for proto, port in sorted(had - want)]
    if want and not had:
        cmps.append(Absent(keys.publish(ep.host, ep.name)))
        out.append(Put(keys.publish(ep.host, ep.name), ep.network.encode()))
    elif had and not want:
        out.append(Delete(keys.publish(ep.host, ep.name)))
    return cmps, out


def freed(keys: Keys, ep: Endpoint) -> list[Op]:
    """The deletes that free every claim of `ep` (it is being deleted)."""
    return ops(keys, Endpoint(ep.name, ep.network, ep.host), before=ep.ports)[1]
