"""The ops hub: which agents hold an ops channel open to this controller, and the ops
running through them.

Every agent keeps one `AgentService.Connect` stream open to every controller it knows
(agent/opslink.py); the servicer `attach`es it here as an `AgentLink` and feeds it the
agent's events. `start` routes a validated `OpRequest` to the newest live link of its
host (an agent that reconnected may briefly have two), under an id unique in this
controller, and `RunningOp.events()` relays that op's events until its Done. A caller
that stops listening before the Done (its stream cancelled, its process gone) makes
the hub send a Cancel down the link, so nothing keeps running for no one. A link that
closes ends its ops with Unavailable.

No gRPC here: the servicer converts messages with vxlab.wire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator

from vxlab import ops
from vxlab.errors import Unavailable

log = logging.getLogger("vxlab.controller")
_GONE = None  # queued to an op's subscriber when its link closed


class AgentLink:
    """One agent's open Connect stream: requests to send, events to hand out."""

    def __init__(self, host: str, serial: int) -> None:
        self.host = host
        self.serial = serial
        self.outbox: asyncio.Queue[ops.OpRequest] = asyncio.Queue()
        self.running: dict[str, asyncio.Queue[ops.OpEvent | None]] = {}
        self.closed = False

    def deliver(self, event: ops.OpEvent) -> None:
        """An event from the agent; one for an op nobody waits for any more is dropped."""
        queue = self.running.get(event.id)
        if queue is not None:
            queue.put_nowait(event)

    def close(self) -> None:
        self.closed = True
        for queue in self.running.values():
            queue.put_nowait(_GONE)


class RunningOp:
    """An op routed to an agent; iterate `events()` once, to its Done."""

    def __init__(self, link: AgentLink, request: ops.OpRequest) -> None:
        self.link = link
        self.request = request
        self.id = request.id
        self._queue: asyncio.Queue[ops.OpEvent | None] = asyncio.Queue()
        link.running[self.id] = self._queue
        link.outbox.put_nowait(request)

    async def events(self) -> AsyncIterator[ops.OpEvent]:
        done = False
        try:
            while True:
                event = await self._queue.get()
                if event is _GONE:
                    done = True  # nobody to cancel it with
                    raise Unavailable(f"host {self.link.host}: its agent's connection to this controller "
                                      "closed during the op")
                yield event
                if isinstance(event.event, ops.Done):
                    done = True
                    return
        finally:
            self.link.running.pop(self.id, None)
            if not done and not self.link.closed:
                self.link.outbox.put_nowait(ops.OpRequest(host=self.link.host, op=ops.Cancel(self.id), id=self.id))


class OpsHub:
    def __init__(self) -> None:
        self._links: dict[str, list[AgentLink]] = {}
        self._serial = itertools.count(1)
        self._ids = itertools.count(1)

    def attach(self, host: str) -> AgentLink:
        link = AgentLink(host, next(self._serial))
        self._links.setdefault(host, []).append(link)
        log.info("ops: agent %s connected (link %d)", host, link.serial)
        return link

    def detach(self, link: AgentLink) -> None:
        link.close()
        links = self._links.get(link.host, [])
        if link in links:
            links.remove(link)
        if not links:
            self._links.pop(link.host, None)
        log.info("ops: agent %s disconnected (link %d)", link.host, link.serial)

    def connected(self) -> list[str]:
        """Hosts with an agent connected here."""
        return sorted(self._links)

    def start(self, request: ops.OpRequest) -> RunningOp:
        """Validate `request` and send it to its host's agent (InvalidArgument, or
        Unavailable when that agent is not connected to this controller)."""
        request = ops.check(request)
        links = self._links.get(request.host)
        if not links:
            raise Unavailable(f"host {request.host}: its agent is not connected to this controller")
        return RunningOp(links[-1], dataclasses.replace(request, id=str(next(self._ids))))
