"""Containers through the controller's API: a container is every endpoint that carries
its name on one host (vxlab stores endpoints, not containers).

`run` creates one endpoint per network (the address, if given, on the first), `remove`
deletes every endpoint of a name; both make their calls at once. The lab (which then
waits until every agent programmed the change) and `vxlab container run/rm` without a
lab (real hosts, where each host's agent makes the namespaces) both use these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vxlab.errors import NotFound
from vxlab.model import Endpoint

if TYPE_CHECKING:
    from vxlab.client import Client


async def run(c: Client, name: str, *, host: str, networks: Sequence[str], ip: str = "",
              aliases: Sequence[str] = ()) -> list[Endpoint]:
    """Attach container `name` on `host` to each of `networks` (with `aliases` on each);
    its endpoints, in that order."""
    return list(await asyncio.gather(*(c.create_endpoint(Endpoint(name=name, network=n, host=host,
                                                                    ip=ip if i == 0 else "",
                                                                    aliases=tuple(aliases)))
                                       for i, n in enumerate(networks))))


async def remove(c: Client, name: str) -> int:
    """Delete every endpoint of container `name`; how many there were (none: NotFound)."""
    eps = await c.list_endpoints(name=name)
    if not eps:
        raise NotFound(f"container: no container named {name!r}")
    await asyncio.gather(*(c.delete_endpoint(e.network, e.name) for e in eps))
    return len(eps)
