"""Ping streams outlive a lost stream between an agent and the controller: the hub keeps
the caller waiting and takes the op back from the agent's next stream (by id, from its
Hello), the executor keeps the op running and keeps its events meanwhile, the agent's
link names them in the Hello and flushes them once the controller took it. Our own
fakes only (a pinger that sends what the test releases, a client whose stream the test
breaks); synchronised on events, never on sleeps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from vxlab import icmp, ops, wire
from vxlab.agent import opslink
from vxlab.agent.ops import Executor, _Op
from vxlab.controller.opshub import OpsHub
from vxlab.errors import Unavailable

from test_ops_agent import Agent  # noqa: E402 - the executor over a FakeKernel

PING = ops.PingStream("web", "10.10.0.3", interval=0.01, count=3)
PROBE = ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3"),))


def go(coro: Any) -> Any:
    return asyncio.run(coro)


# --- the hub ---------------------------------------------------------------------------------
def test_a_ping_stream_waits_for_its_agent_and_resumes_on_its_next_stream() -> None:
    async def body() -> None:
        hub = OpsHub()
        old = hub.attach("h1")
        op = hub.start(ops.OpRequest("h1", PING))
        old.outbox.get_nowait()
        events = op.events()
        old.deliver(ops.OpEvent(op.id, ops.PingSample(0, 1.0, 0.2)))
        assert (await anext(events)).event == ops.PingSample(0, 1.0, 0.2)
        pending = asyncio.ensure_future(anext(events))
        hub.detach(old)  # the partition: the caller goes on waiting
        await asyncio.sleep(0)
        assert not pending.done() and hub.connected() == []
        new = hub.attach("h1", resume=[op.id])
        assert new.outbox.empty()  # nothing to cancel
        for e in (ops.Resumed(2, 0), ops.PingSample(0, 1.0, 0.2), ops.PingSample(1, 2.0, 0.3), ops.Done()):
            new.deliver(ops.OpEvent(op.id, e))  # sample 0 again: the caller had it already
        assert (await pending).event == ops.Resumed(1, 0)
        assert [e.event async for e in events] == [ops.PingSample(1, 2.0, 0.3), ops.Done()]
        assert new.outbox.empty() and not new.running
    go(body())


def test_an_op_whose_caller_went_away_meanwhile_is_cancelled_when_its_agent_names_it() -> None:
    async def body() -> None:
        hub = OpsHub()
        old = hub.attach("h1")
        op = hub.start(ops.OpRequest("h1", PING))
        events = op.events()
        pending = asyncio.ensure_future(anext(events))
        hub.detach(old)
        await asyncio.sleep(0)
        pending.cancel()  # the caller goes away while the agent is cut
        with pytest.raises(asyncio.CancelledError):
            await pending
        new = hub.attach("h1", resume=[op.id, "stale-7"])
        assert [r.op for r in (new.outbox.get_nowait(), new.outbox.get_nowait())] == [ops.Cancel(op.id),
                                                                                        ops.Cancel("stale-7")]
    go(body())


def test_an_agent_that_comes_back_without_the_op_ends_it_unavailable() -> None:
    async def body() -> None:
        hub = OpsHub()
        old = hub.attach("h1")
        op = hub.start(ops.OpRequest("h1", PING))
        hub.detach(old)
        waiting = asyncio.ensure_future(anext(op.events()))
        await asyncio.sleep(0)
        hub.attach("h1")  # restarted: it holds nothing
        with pytest.raises(Unavailable, match="came back without the op"):
            await waiting
    go(body())


def test_an_op_still_on_an_old_link_when_a_newer_one_did_not_take_it_ends_when_the_old_closes() -> None:
    async def body() -> None:
        hub = OpsHub()
        old = hub.attach("h1")
        op = hub.start(ops.OpRequest("h1", PING))
        hub.attach("h1")  # the controller had not seen the old stream go; the new Hello names nothing
        hub.detach(old)
        with pytest.raises(Unavailable, match="closed during the op"):
            await anext(op.events())
    go(body())


def test_a_waiting_op_ends_at_its_deadline_and_other_kinds_end_with_their_link() -> None:
    async def body() -> None:
        hub = OpsHub()
        link = hub.attach("h1")
        ping = hub.start(ops.OpRequest("h1", PING, timeout=0.1))
        probe = hub.start(ops.OpRequest("h1", PROBE))
        hub.detach(link)
        with pytest.raises(Unavailable, match="closed during the op"):
            await anext(probe.events())
        with pytest.raises(Unavailable, match="did not come back before the op's deadline"):
            await anext(ping.events())
        assert first_id_differs(hub)
    go(body())


def first_id_differs(hub: OpsHub) -> bool:
    """Ids carry the controller process's token: a restarted controller's never match."""
    return OpsHub()._boot != hub._boot


# --- the executor ----------------------------------------------------------------------------
class StepPinger:
    """Sends the echoes the test releases (each answered in 1 ms); finished after `count`."""

    made: list[StepPinger] = []
    ready = threading.Event()  # one was made (in the executor's probe pool)

    def __init__(self, namespace: str, ip: str, *, interval: float, timeout: float, count: int) -> None:
        self.count, self.released = count, 0
        self.stopped = False
        StepPinger.made.append(self)
        StepPinger.ready.set()

    def start(self) -> StepPinger:
        return self

    def release(self, n: int = 1) -> None:
        self.released = min(self.count, self.released + n)

    def decided(self, start: int) -> list[icmp.Sample]:
        return [icmp.Sample(100.0 + k, 1.0) for k in range(start, self.released)]

    @property
    def finished(self) -> bool:
        return self.released >= self.count

    def stop(self) -> list[icmp.Sample]:
        self.stopped = True
        return []


class Replies:
    """A reply function that can be awaited until it got `n` events."""

    def __init__(self) -> None:
        self.got: list[ops.OpEvent] = []
        self._changed = asyncio.Condition()

    def __call__(self, event: ops.OpEvent) -> None:
        self.got.append(event)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, n: int) -> list[ops.Event]:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.got) >= n)
        return [e.event for e in self.got]


def pinging_agent() -> tuple[Executor, list[StepPinger]]:
    StepPinger.made = []
    StepPinger.ready = threading.Event()
    a = Agent()
    a.executor._pinger = StepPinger  # type: ignore[assignment]
    return a.executor, StepPinger.made


def test_a_kept_ping_runs_on_without_its_stream_and_hands_over_what_it_held() -> None:
    async def body() -> None:
        ex, made = pinging_agent()
        live = Replies()
        ex.submit("A", ops.OpRequest("h1", PING, id="c-1"), live)
        await asyncio.to_thread(StepPinger.ready.wait)
        made[0].release()
        assert await live.until(1) == [ops.PingSample(0, pytest.approx(live.got[0].event.sent), 1.0)]  # type: ignore
        ex.detach("A")
        made[0].release(2)
        await asyncio.wait([ex._ops["A", "c-1"].task])  # it ran to its end without a stream
        assert len(live.got) == 1 and ex.held("A") == ["c-1"] and ex.held("B") == []
        again = Replies()
        ex.attach("A", again)
        got = await again.until(5)  # all it kept: sample 0 too (a dying connection may have swallowed it)
        assert got[0] == ops.Resumed(held=4, dropped=0) and got[4] == ops.Done()
        assert [e.seq for e in got[1:4]] == [0, 1, 2]  # type: ignore[union-attr]
        assert ex.held("A") == [] and not ex._ops
    go(body())


def test_other_kinds_are_cancelled_with_their_stream_and_a_cancel_forgets_a_held_op() -> None:
    async def body() -> None:
        ex, made = pinging_agent()
        ex.submit("A", ops.OpRequest("h1", ops.Exec("web", ("sleep", "30")), id="x"), Replies())
        ex.submit("A", ops.OpRequest("h1", PING, id="p"), Replies())
        ex.detach("A")
        await asyncio.wait([ex._ops["A", "x"].task])
        assert ex.held("A") == ["p"]
        await asyncio.to_thread(StepPinger.ready.wait)
        made[0].release(3)
        await asyncio.wait([ex._ops["A", "p"].task])
        ex.submit("A", ops.OpRequest("h1", ops.Cancel("p"), id="p"), Replies())  # the hub: its caller had gone
        assert ex.held("A") == [] and not ex._ops
        await ex.close()
    go(body())


def test_the_kept_events_are_bounded_the_oldest_dropped_and_counted_while_detached() -> None:
    op = _Op(task=None, reply=None, cap=3, expires=0.0)  # type: ignore[arg-type]
    for seq in range(5):
        op.keep(ops.OpEvent("p", ops.PingSample(seq, float(seq), 1.0)))
    assert [e.event.seq for e in op.kept] == [2, 3, 4] and op.dropped == 2  # type: ignore[union-attr]
    op.reply = lambda e: None  # live: an old one pushed out was sent, not dropped
    op.keep(ops.OpEvent("p", ops.PingSample(5, 5.0, 1.0)))
    assert op.dropped == 2 and len(op.kept) == 3
    capped = ops.held_cap(ops.check(ops.OpRequest("h1", ops.PingStream("web", "10.10.0.3", interval=0.01))))
    assert capped == ops.MAX_HELD and ops.held_cap(ops.check(ops.OpRequest("h1", PING))) == 4
    assert ops.held_cap(ops.check(ops.OpRequest("h1", PROBE))) == 0


# --- the agent's link ------------------------------------------------------------------------
class FlakyClient:
    """connect_ops over queues: the test sends requests down, reads events up, breaks a stream."""

    def __init__(self) -> None:
        self.hellos: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()
        self.up: asyncio.Queue[ops.OpEvent] = asyncio.Queue()
        self.down: asyncio.Queue[ops.OpRequest | Exception] = asyncio.Queue()

    async def connect_ops(self, address: str, *, host: str, version: str, events: AsyncIterator[ops.OpEvent],
                          opened: Callable[[], None], resume: tuple[str, ...] = ()) -> AsyncIterator[ops.OpRequest]:
        assert wire.hello_from_pb(wire.hello_to_pb(host, version, resume)) == (host, tuple(resume))
        await self.hellos.put(tuple(resume))
        opened()

        async def pump() -> None:
            async for e in events:
                await self.up.put(e)
        pumping = asyncio.ensure_future(pump())
        try:
            while True:
                item = await self.down.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            pumping.cancel()


def test_the_link_names_its_kept_ops_in_the_next_hello_and_flushes_them_after_it() -> None:
    async def body() -> None:
        ex, made = pinging_agent()
        client = FlakyClient()
        linking = asyncio.ensure_future(opslink.link(client, "ctl", ex, host="h1", version="t"))  # type: ignore
        assert await client.hellos.get() == ()
        await client.down.put(ops.OpRequest("h1", PING, id="c-1"))
        await asyncio.to_thread(StepPinger.ready.wait)
        made[0].release()
        assert isinstance((await client.up.get()).event, ops.PingSample)
        await client.down.put(ConnectionError("partition"))  # the stream is lost
        assert await client.hellos.get() == ("c-1",)  # the next stream names it
        made[0].release(2)
        got = [(await client.up.get()).event for _ in range(5)]
        assert got[0] == ops.Resumed(1, 0) and [type(e) for e in got[1:]] == [ops.PingSample] * 3 + [ops.Done]
        assert [e.seq for e in got[1:4]] == [0, 1, 2]  # type: ignore[union-attr]
        linking.cancel()
        await asyncio.gather(linking, return_exceptions=True)
        await ex.close()
    go(body())
