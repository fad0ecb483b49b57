"""The agent's end of the ops channel: one Connect stream to EVERY controller it was given.

Any controller can then reach any agent, whichever one a caller asks (an agent with a
single stream to "its" controller would be unreachable through the others). Each
stream sends a Hello for this host, then the events of the ops that came down it;
a stream that fails or ends is opened again with backoff (0.2 s doubling to 5 s, back
to 0.2 s once a controller took the Hello), and the ops it brought are cancelled
(their caller's stream went with it), except ping streams: the executor keeps them
running and holds their events (agent/ops.py), the next Hello to that controller
names them, and their held events follow once it took the Hello (controller/opshub.py). The runner starts `serve` as one of its tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from vxlab import ops
from vxlab.agent.ops import AgentSide, Executor
from vxlab.client import Client, parse_addresses
from vxlab.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from vxlab.agent.runner import Agent

log = logging.getLogger("vxlab.agent")
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0


async def serve(agent: Agent, *, version: str) -> None:
    """The ops channel of `agent` until cancelled (nothing when its config says 0 ops)."""
    limit = agent.config.ops_concurrency
    if limit <= 0:
        return
    side = AgentSide(agent.me, agent.underlay_dev, cache=lambda: agent.cache,
                     applied=lambda: agent.applied_revision, kernel=agent._kernel_factory)
    executor = Executor(side, limit=limit)
    client = Client(agent.config.controller, tls=agent.config.tls, keepalive=True)
    try:
        await asyncio.gather(*(link(client, address, executor, host=agent.me.name, version=version)
                               for address in parse_addresses(agent.config.controller)))
    finally:
        await executor.close()
        await client.close()


async def link(client: Client, address: str, executor: Executor, *, host: str, version: str) -> None:
    """One controller's stream, opened again whenever it goes (its kept ops named in the
    new Hello, their held events sent once the controller took it)."""
    backoff = BACKOFF_MIN
    while True:
        outbox: asyncio.Queue[ops.OpEvent] = asyncio.Queue()

        def opened() -> None:
            nonlocal backoff
            backoff = BACKOFF_MIN
            executor.attach(address, outbox.put_nowait)
            log.info("ops channel to %s open", address)
        try:
            async for request in client.connect_ops(address, host=host, version=version, events=_drain(outbox),
                                                    opened=opened, resume=executor.held(address)):
                executor.submit(address, request, outbox.put_nowait)
            log.info("ops channel to %s: closed by the controller", address)
        except (Unauthenticated, PermissionDenied) as e:  # does not fix itself: say so loudly
            log.warning("ops channel to %s: %s; again in %.1fs", address, e, backoff)
        except Exception as e:  # noqa: BLE001 - any failure: open it again
            log.info("ops channel to %s: %s; again in %.1fs", address, e, backoff)
        finally:
            executor.detach(address)
            if executor.held(address):
                log.info("ops channel to %s: keeping %d ping streams until it is back", address,
                         len(executor.held(address)))
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)


async def _drain(queue: asyncio.Queue[ops.OpEvent]) -> AsyncIterator[ops.OpEvent]:
    while True:
        yield await queue.get()
