"""The ops hub: which agents hold an ops channel open to this controller, and the ops
running through them.

Every agent keeps one `AgentService.Connect` stream open to every controller it knows
(agent/opslink.py); the servicer `attach`es it here as an `AgentLink` and feeds it the
agent's events. `start` routes a validated `OpRequest` to the newest live link of its
host (an agent that reconnected may briefly have two), under an id unique to this
controller process, and `RunningOp.events()` relays that op's events until its Done. A
caller that stops listening before the Done (its stream cancelled, its process gone)
makes the hub send a Cancel down the link, so nothing keeps running for no one.

A link that closes ends its ops with Unavailable, except the ones its agent keeps
running without a stream (ping streams, `ops.held_cap`): their caller goes on waiting,
up to the op's deadline, for the agent's next stream to name them in its Hello
(`attach(host, resume=…)`); a Resumed and the events the agent kept then arrive on it,
routed by op id, and the samples the caller had already are dropped (by seq: a dying
connection may have delivered some of what the agent sends again). A resumed id nobody
waits for any more is cancelled on that stream at once; an op the agent came back
without (it restarted) ends with Unavailable then.

No gRPC here: the servicer converts messages with vxlab.wire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Sequence

from vxlab import ops
from vxlab.errors import Unavailable

log = logging.getLogger("vxlab.controller")
_AWAY = None  # queued to an op its agent keeps running while the link it came on is gone


class AgentLink:
    """One agent's open Connect stream: requests to send, events to hand out."""

    def __init__(self, host: str, serial: int) -> None:
        self.host = host
        self.serial = serial
        self.outbox: asyncio.Queue[ops.OpRequest] = asyncio.Queue()
        self.running: dict[str, RunningOp] = {}
        self.closed = False

    def deliver(self, event: ops.OpEvent) -> None:
        """An event from the agent; one for an op nobody waits for any more is dropped."""
        op = self.running.get(event.id)
        if op is not None:
            op.queue.put_nowait(event)

    def cancel(self, op_id: str) -> None:
        self.outbox.put_nowait(ops.OpRequest(host=self.host, op=ops.Cancel(op_id), id=op_id))


class RunningOp:
    """An op routed to an agent; iterate `events()` once, to its Done."""

    def __init__(self, hub: OpsHub, link: AgentLink, request: ops.OpRequest) -> None:
        self.hub, self.link, self.request, self.id = hub, link, request, request.id
        self.kept = ops.held_cap(request) > 0   # its agent keeps it running without a stream
        self.deadline = asyncio.get_running_loop().time() + ops.timeout_of(request)
        self.queue: asyncio.Queue[ops.OpEvent | str | None] = asyncio.Queue()  # a str: it is gone, why
        link.running[self.id] = self
        hub._ops[self.id] = self
        link.outbox.put_nowait(request)

    @property
    def away(self) -> bool:
        """Its agent's link closed and no newer one took it back (yet)."""
        return self.link.closed

    async def _next(self) -> ops.OpEvent | str | None:
        if not self.away:
            return await self.queue.get()
        try:
            async with asyncio.timeout_at(self.deadline):
                return await self.queue.get()
        except TimeoutError:
            return (f"host {self.link.host}: its agent's connection to this controller was lost during the op "
                    "and did not come back before the op's deadline")

    async def _relayed(self) -> AsyncIterator[ops.OpEvent | None]:
        """The agent's events, without the samples it sent again (seq not past the last
        one relayed); after a Resumed, its replay, and the Resumed counting what was new
        in it. None: the link went (its agent keeps the op; the replay starts over)."""
        last = -1
        while True:
            event = await self._next()
            if event is _AWAY:
                yield None
                continue
            if isinstance(event, str):
                raise Unavailable(event)
            if not isinstance(event.event, ops.Resumed):
                if not isinstance(event.event, ops.PingSample) or event.event.seq > last:
                    last = event.event.seq if isinstance(event.event, ops.PingSample) else last
                    yield event
                continue
            replay: list[ops.OpEvent] = []
            for _ in range(event.event.held):
                e = await self._next()
                if e is _AWAY or isinstance(e, str):
                    self.queue.put_nowait(e)
                    break
                if not isinstance(e.event, ops.PingSample) or e.event.seq > last:
                    replay.append(e)
                    last = e.event.seq if isinstance(e.event, ops.PingSample) else last
            else:
                new = sum(1 for e in replay if isinstance(e.event, ops.PingSample))
                yield dataclasses.replace(event, event=ops.Resumed(new, event.event.dropped))
                for e in replay:
                    yield e

    async def events(self) -> AsyncIterator[ops.OpEvent]:
        done = False
        relayed = self._relayed()
        try:
            async for event in relayed:
                if event is None:
                    continue  # its agent holds it: wait for the agent's next stream
                yield event
                if isinstance(event.event, ops.Done):
                    done = True
                    return
        except Unavailable:
            done = True  # nobody to cancel it with
            raise
        finally:
            await relayed.aclose()  # type: ignore[attr-defined]
            self.hub._ops.pop(self.id, None)
            self.link.running.pop(self.id, None)
            if not done and not self.link.closed:
                self.link.cancel(self.id)  # else: cancelled when its agent names it again


class OpsHub:
    def __init__(self) -> None:
        self._links: dict[str, list[AgentLink]] = {}
        self._ops: dict[str, RunningOp] = {}
        self._serial = itertools.count(1)
        self._ids = itertools.count(1)
        self._boot = secrets.token_hex(3)  # ids of an earlier process of this controller never match

    def attach(self, host: str, *, resume: Sequence[str] = ()) -> AgentLink:
        """A new stream of `host`'s agent; `resume`: the ids of ops it kept running."""
        link = AgentLink(host, next(self._serial))
        self._links.setdefault(host, []).append(link)
        for op_id in resume:
            op = self._ops.get(op_id)
            if op is None or op.request.host != host:
                link.cancel(op_id)  # its caller went away
                continue
            op.link.running.pop(op_id, None)
            op.link = link
            link.running[op_id] = op
        for op in [o for o in self._ops.values() if o.request.host == host and o.away]:
            op.queue.put_nowait(f"host {host}: its agent came back without the op (it restarted)")
        log.info("ops: agent %s connected (link %d%s)", host, link.serial,
                 f", resuming {len(resume)} ops" if resume else "")
        return link

    def detach(self, link: AgentLink) -> None:
        link.closed = True
        links = self._links.get(link.host, [])
        if link in links:
            links.remove(link)
        if not links:
            self._links.pop(link.host, None)
        newer = any(other.serial > link.serial for other in links)
        for op in link.running.values():
            op.queue.put_nowait(_AWAY if op.kept and not newer else
                                f"host {link.host}: its agent's connection to this controller closed during the op")
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
        return RunningOp(self, links[-1], dataclasses.replace(request, id=f"{self._boot}-{next(self._ids)}"))
