"""What callers do with the ops channel, over a vxlab.client.Client: one coroutine per
op that collects its answer (`probe`, `kernel_view`, `drift`, `exec_`, `iperf`), or an
async iterator of its events (`stream`: captures, ping streams). A Done with an error
is an OpFailed naming the host. Used by `check`, `trace` and `exec` (lab/ and the CLI)
the same way in a lab and against a deployment of real hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from vxlab import ops
from vxlab.client import Client
from vxlab.errors import VxError
from vxlab.ops import OpFailed

E = TypeVar("E")


async def stream(client: Client, host: str, op: ops.Op, *, timeout: float = 0.0) -> AsyncIterator[ops.Event]:
    """The op's events before its Done; OpFailed when the Done carries an error.
    Leaving the iteration early cancels the op on the agent."""
    events = client.run_op(ops.OpRequest(host=host, op=op, timeout=timeout))
    try:
        async for event in events:
            if isinstance(event.event, ops.Done):
                if event.event.error:
                    raise OpFailed(f"host {host}: {event.event.error}")
                return
            yield event.event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _only(client: Client, host: str, op: ops.Op, kind: type[E], *, timeout: float = 0.0) -> E:
    found = None
    async for event in stream(client, host, op, timeout=timeout):
        if isinstance(event, kind):
            found = event
    if found is None:
        raise OpFailed(f"host {host}: the agent ended the op without a {kind.__name__}")
    return found


async def probe(client: Client, host: str, probes: Sequence[ops.ProbeSpec]) -> list[ops.ProbeResult]:
    """One batch from containers of `host`; results in the probes' order (batches of
    MAX_PROBES at a time)."""
    out: list[ops.ProbeResult] = []
    for at in range(0, len(probes), ops.MAX_PROBES):
        chunk = tuple(probes[at:at + ops.MAX_PROBES])
        got = await _only(client, host, ops.ProbeBatch(chunk), ops.ProbeResults)
        by_index = {r.index: r for r in got.results}
        out += [by_index.get(i, ops.ProbeResult(i, False, error="no result")) for i in range(len(chunk))]
    return out


async def kernel_view(client: Client, host: str, *, network: str = "",
                      containers: Sequence[str] = ()) -> ops.KernelState:
    return await _only(client, host, ops.KernelView(network, tuple(containers)), ops.KernelState)


async def drift(client: Client, host: str) -> ops.DriftReport:
    return await _only(client, host, ops.Drift(), ops.DriftReport)


async def exec_(client: Client, host: str, container: str, argv: Sequence[str], *,
                timeout: float = 0.0) -> ops.ExecResult:
    return await _only(client, host, ops.Exec(container, tuple(argv)), ops.ExecResult, timeout=timeout)


async def host_of(client: Client, container: str) -> str:
    """The host of a container (from its endpoints); NotFound-like VxError when none."""
    eps = await client.list_endpoints(name=container)
    if not eps:
        raise VxError(f"container: no container named {container!r}")
    return eps[0].host


async def until_ready(events: AsyncIterator[ops.Event]) -> ops.Ready:
    """Consume `events` up to the op's Ready (a capture listening, a server up)."""
    async for event in events:
        if isinstance(event, ops.Ready):
            return event
    raise OpFailed("the op ended before it was ready")


async def iperf(client: Client, *, src_host: str, src: str, dst_host: str, dst: str, ip: str,
                seconds: float = 3.0, interval: float = 0.5, port: int = 5201) -> dict[str, Any]:
    """iperf3 from container `src` to `ip` (container `dst`'s): the server op on its
    host until it listens, then the client op; iperf3's JSON report."""
    server = stream(client, dst_host, ops.IperfServer(dst, port), timeout=seconds + 60.0)
    try:
        await until_ready(server)
        report = await _only(client, src_host, ops.IperfClient(src, ip, port, seconds, interval), ops.IperfReport)
        with contextlib.suppress(asyncio.TimeoutError, StopAsyncIteration):
            async with asyncio.timeout(5.0):
                async for _ in server:  # the server ends with its one test
                    pass
        return json.loads(report.json)  # type: ignore[no-any-return]
    finally:
        await server.aclose()  # type: ignore[attr-defined]
