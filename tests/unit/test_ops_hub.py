"""The controller's side of the ops channel: the hub (routing, relaying, cancelling),
the authorization of Run and Connect, and the servicers end to end over a fake agent
stream (no network: the servicers' own code, a fake ServicerContext)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from vxlab import ops, wire
from vxlab.controller import servicer
from vxlab.controller.authz import authorize
from vxlab.controller.core import Controller
from vxlab.controller.opshub import OpsHub
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import InvalidArgument, PermissionDenied, Unavailable
from vxlab.tls import Identity
from vxlab.v1 import vxlab_pb2 as pb

PROBE = ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3"),))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_an_op_for_a_host_without_agent_is_unavailable_naming_it() -> None:
    async def go() -> None:
        with pytest.raises(Unavailable, match="host h3: its agent is not connected to this controller"):
            OpsHub().start(ops.OpRequest("h3", PROBE))
    run(go())


@pytest.mark.parametrize("op, field", [
    (ops.ProbeBatch(()), "probe.probes"),
    (ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.300"),)), "probe.probes[0].ip"),
    (ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3", "udp"),)), "probe.probes[0].protocol"),
    (ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3", "tcp"),)), "probe.probes[0].port"),
    (ops.Capture(filter=("udp", "'; reboot"),), "capture.filter[1]"),
    (ops.Capture(filter=("udp", "-w", "/etc/passwd"),), "capture.filter[1]"),  # never an option of tcpdump's
    (ops.Capture(device="-w"), "capture.device"),
    (ops.Exec("web", ()), "exec.argv"),
    (ops.PingStream("web", "10.10.0.3", interval=float("nan")), "ping.interval"),
    (ops.Cancel("1"), "op"),
    (None, "op"),
])
def test_bad_input_names_the_field_before_any_routing(op: Any, field: str) -> None:
    async def go() -> None:
        hub = OpsHub()
        link = hub.attach("h1")
        with pytest.raises(InvalidArgument) as e:
            hub.start(ops.OpRequest("h1", op))
        assert e.value.field == field and link.outbox.empty()
    run(go())


def test_events_are_relayed_until_done_from_the_newest_link() -> None:
    async def go() -> None:
        hub = OpsHub()
        old, new = hub.attach("h1"), hub.attach("h1")  # an agent that reconnected
        first, second = hub.start(ops.OpRequest("h1", PROBE)), hub.start(ops.OpRequest("h1", PROBE))
        assert old.outbox.empty() and new.outbox.qsize() == 2 and first.id != second.id
        sent = new.outbox.get_nowait()
        assert sent.id == first.id and sent.op == PROBE
        new.deliver(ops.OpEvent(first.id, ops.ProbeResults((ops.ProbeResult(0, True, 0.2),))))
        new.deliver(ops.OpEvent("999", ops.Done("nobody waits for this one")))
        new.deliver(ops.OpEvent(first.id, ops.Done()))
        got = [e.event async for e in first.events()]
        assert got == [ops.ProbeResults((ops.ProbeResult(0, True, 0.2),)), ops.Done()]
        assert new.outbox.qsize() == 1  # finished with a Done: no Cancel
    run(go())


def test_a_caller_that_goes_away_cancels_the_op_on_its_agent() -> None:
    async def go() -> None:
        hub = OpsHub()
        link = hub.attach("h1")
        op = hub.start(ops.OpRequest("h1", ops.Capture()))
        link.outbox.get_nowait()
        link.deliver(ops.OpEvent(op.id, ops.Ready("listening on eth0")))
        events = op.events()
        assert (await anext(events)).event == ops.Ready("listening on eth0")
        await events.aclose()  # type: ignore[attr-defined]
        cancel = link.outbox.get_nowait()
        assert cancel.op == ops.Cancel(op.id) and op.id not in link.running
    run(go())


def test_a_link_that_closes_ends_its_ops_with_unavailable() -> None:
    async def go() -> None:
        hub = OpsHub()
        link = hub.attach("h1")
        op = hub.start(ops.OpRequest("h1", PROBE))
        hub.detach(link)
        with pytest.raises(Unavailable, match="connection to this controller closed during the op"):
            async for _ in op.events():
                pass
        assert hub.connected() == []
    run(go())


def test_ops_are_admin_only_and_an_agent_connects_only_as_itself() -> None:
    admin, h1 = Identity("admin"), Identity("host", "h1")
    run_request = pb.OpRequest(host="h1")
    authorize(admin, "/vxlab.v1.OpsService/Run", run_request)
    with pytest.raises(PermissionDenied, match="host 'h1' may not run operations on hosts"):
        authorize(h1, "/vxlab.v1.OpsService/Run", run_request)
    authorize(h1, "/vxlab.v1.AgentService/Connect", wire.hello_to_pb("h1", "0"))
    with pytest.raises(PermissionDenied, match="certificate is for 'h1', not 'h2'"):
        authorize(h1, "/vxlab.v1.AgentService/Connect", wire.hello_to_pb("h2", "0"))
    event_first = wire.agent_message_to_pb(ops.OpEvent("1", ops.Done()))
    with pytest.raises(PermissionDenied):
        authorize(h1, "/vxlab.v1.AgentService/Connect", event_first)


class Aborted(Exception):
    pass


class Context:
    """The part of grpc.aio.ServicerContext the servicers use."""

    def __init__(self) -> None:
        self.headers: tuple[tuple[str, str], ...] = ()

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        raise Aborted(f"{code.name}: {details}")

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.headers = tuple(metadata)


class FakeAgentStream:
    """An agent's side of Connect: a Hello, then what `send` queues; `close` ends it."""

    def __init__(self, host: str) -> None:
        self.queue: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
        self.queue.put_nowait(wire.hello_to_pb(host, "test"))

    def send(self, event: ops.OpEvent) -> None:
        self.queue.put_nowait(wire.agent_message_to_pb(event))

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[pb.AgentMessage]:
        while (m := await self.queue.get()) is not None:
            yield m


def test_run_reaches_a_connected_agent_through_the_servicers_and_cancels_when_left() -> None:
    async def go() -> None:
        core = Controller(MemoryStore())
        agent = FakeAgentStream("h1")
        down = servicer.AgentServicer(core).Connect(agent.__aiter__(), Context())
        runner = servicer.OpsServicer(core)
        ctx = Context()
        request = wire.op_request_to_pb(ops.OpRequest("h1", ops.Capture(count=2)))
        events = runner.Run(request, ctx)
        pending = asyncio.ensure_future(anext(events))
        sent = wire.op_request_from_pb(await anext(down))  # the request, down the agent's stream
        assert isinstance(sent.op, ops.Capture) and dict(ctx.headers) == {"vxlab-op": sent.id}
        agent.send(ops.OpEvent(sent.id, ops.Ready("listening on eth0")))
        assert wire.op_event_from_pb(await pending).event == ops.Ready("listening on eth0")
        await events.aclose()  # the caller went away
        cancel = wire.op_request_from_pb(await anext(down))
        assert cancel.op == ops.Cancel(sent.id)
        agent.close()
        with pytest.raises(StopAsyncIteration):
            await anext(down)
        assert core.ops.connected() == []
        with pytest.raises(Aborted, match="UNAVAILABLE: host h1: its agent is not connected"):
            await anext(runner.Run(request, Context()))
    run(go())


def test_connect_refuses_a_stream_that_does_not_start_with_a_hello() -> None:
    async def go() -> None:
        core = Controller(MemoryStore())

        async def stream() -> AsyncIterator[pb.AgentMessage]:
            yield wire.agent_message_to_pb(ops.OpEvent("1", ops.Done()))
        with pytest.raises(Aborted, match="INVALID_ARGUMENT: hello.host: required"):
            await anext(servicer.AgentServicer(core).Connect(stream(), Context()))
        assert core.ops.connected() == []
    run(go())
