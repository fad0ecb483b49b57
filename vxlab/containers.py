"""Containers through the controller's API: a container is every endpoint that carries
its name on one host (vxlab stores endpoints, not containers).

`run` creates one endpoint per network (the address, if given, on the first; published
ports on the first non-internal one, the network of its default route), `remove`
deletes every endpoint of a name; both make their calls at once. The lab (which then
waits until every agent programmed the change) and `vxlab container run/rm` without a
lab (real hosts, where each host's agent makes the namespaces) both use these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vxlab.errors import InvalidArgument, NotFound
from vxlab.model import Endpoint, PortMapping

if TYPE_CHECKING:
    from vxlab.client import Client


async def run(c: Client, name: str, *, host: str, networks: Sequence[str], ip: str = "",
              aliases: Sequence[str] = (), ports: Sequence[PortMapping] = ()) -> list[Endpoint]:
    """Attach container `name` on `host` to each of `networks` (with `aliases` on each,
    `ports` on the first non-internal one); its endpoints, in that order."""
    publish = ""
    if ports:
        internal = {n.name: n.internal for n in await c.list_networks()}
        publish = next((n for n in networks if not internal.get(n, False)), "")
        if not publish:
            raise InvalidArgument("ports", f"container {name!r} has no non-internal network to publish on")
    return list(await asyncio.gather(*(c.create_endpoint(Endpoint(name=name, network=n, host=host,
                                                                    ip=ip if i == 0 else "",
                                                                    aliases=tuple(aliases),
                                                                    ports=tuple(ports) if n == publish else ()))
                                       for i, n in enumerate(networks))))


async def remove(c: Client, name: str) -> int:
    """Delete every endpoint of container `name`; how many there were (none: NotFound)."""
    eps = await c.list_endpoints(name=name)
    if not eps:
        raise NotFound(f"container: no container named {name!r}")
    await asyncio.gather(*(c.delete_endpoint(e.network, e.name) for e in eps))
    return len(eps)
