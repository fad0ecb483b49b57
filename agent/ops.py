"""The agent's executor of ops (the ops channel, agent/opslink.py, hands them in).

Each request becomes one asyncio task that sends its events through `reply` and ends
with a Done (the error, if any, as text). Limits: at most `limit` ops run at once
(the others wait for a slot, their deadline ticking), each has a deadline
(vxlab.ops.timeout_of), outputs are capped (agent/opsproc.py), and a Cancel (or the
stream it came on being lost) cancels it. Ping streams are kept instead (ops.held_cap):
while their controller's stream is lost (`detach`) they run on to their deadline and
keep their newest events; the next stream names them in its Hello (`held`) and gets a
Resumed and the kept events once the controller took it (`attach`).

Nothing here runs in the reconcile thread: probes run in a pool of their own (one thread per batch, vxlab.icmp), kernel views and
drift in one thread with a kernel of its own (netlink sockets are per thread),
programs as asyncio subprocesses.

Containers are named, never namespaces: a container must have an endpoint on this
host in the agent's desired state, and its namespace is the one the agent's naming
gives it (`Naming.container_ns`); anything else is refused. A runtime's container
(Docker, CNI) is entered by the path its endpoint records, opened once per op and only
when it holds the endpoint (agent/runtime_ns.py: `pin`); nothing is changed there.

Drift is the reconciler's dry run against a fresh dump: a Reconciler of its own over
the ops kernel plans (never applies) the desired state the agent holds now, and every
action is an entry: an add is missing, a delete stale, a replace or update differing.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vxlab import icmp, ops
from vxlab.agent import netlink_handoff, opsproc, runtime_ns
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.agent.kernel import Kernel, KernelError, Namespace
from vxlab.agent.reconciler import Reconciler
from vxlab.errors import InvalidArgument, VxError
from vxlab.model import Endpoint

log = logging.getLogger("vxlab.agent")
Reply = Callable[[ops.OpEvent], None]
Prober = Callable[..., list[icmp.Reached]]
Pin = Callable[[Sequence[Endpoint]], runtime_ns.Pinned]
PIN = functools.partial(runtime_ns.pin, read=netlink_handoff.view)


@dataclass
class AgentSide:
    """What the executor needs of its agent."""

    me: HostInfo
    underlay_dev: str
    cache: Callable[[], StateCache]   # the live cache (read in the event loop's thread)
    applied: Callable[[], int]        # the revision the agent has applied
    kernel: Callable[[], Kernel]      # a factory: the executor makes its own kernel


@dataclass
class _Op:
    """A running op and where its events go: `reply` while its stream is up, None while
    it is lost. A kept op (cap > 0) also keeps its newest `cap` events, sent or not:
    the ones a dying connection swallowed are sent again on the next stream (the
    controller drops the samples it had already); `dropped` counts the ones pushed out
    unsent."""

    task: asyncio.Task[None]
    reply: Reply | None
    cap: int                      # 0: not kept (cancelled with its stream)
    expires: float                # loop time of its deadline: an ended kept op is forgotten then
    kept: collections.deque[ops.OpEvent] = dataclasses.field(default_factory=collections.deque)
    dropped: int = 0

    def keep(self, event: ops.OpEvent) -> None:
        if len(self.kept) >= self.cap:
            self.kept.popleft()
            self.dropped += self.reply is None
        self.kept.append(event)


class Executor:
    def __init__(self, agent: AgentSide, *, limit: int = 8, prober: Prober = icmp.reach,
                 pinger: type[icmp.Pinger] = icmp.Pinger, enter: opsproc.Enter = opsproc.netns_exec,
                 pin: Pin = PIN) -> None:
        self.agent = agent
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._prober, self._pinger, self._enter, self._pin = prober, pinger, enter, pin
        self._ops: dict[tuple[object, str], _Op] = {}
        self._probe_pool = concurrent.futures.ThreadPoolExecutor(max_workers=limit, thread_name_prefix="ops-probe")
        self._kernel_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-kernel")
        self._kernel: Kernel | None = None  # made and used in the ops-kernel thread only

    # --- requests in -------------------------------------------------------------------------
    def submit(self, link: object, request: ops.OpRequest, reply: Reply) -> None:
        """Start `request` (from the controller `link` names), or cancel the op a Cancel names."""
        if isinstance(request.op, ops.Cancel):
            self.cancel(link, request.op.id)
            return
        key = (link, request.id)
        try:
            cap, deadline = ops.held_cap(ops.check(request)), ops.timeout_of(ops.check(request))
        except VxError:
            cap, deadline = 0, 0.0  # _run says why, in its Done
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(self._run(request, lambda e: self._emit(key, e)), name=f"op-{request.id}")
        op = self._ops[key] = _Op(task, reply, cap, loop.time() + deadline)
        task.add_done_callback(lambda _t: self._ended(key, op))

    def cancel(self, link: object, op_id: str) -> None:
        op = self._ops.get((link, op_id))
        if op is not None:
            op.task.cancel()
            if op.task.done():  # ended while its stream was lost: forget what it held
                self._ops.pop((link, op_id), None)

    def detach(self, link: object) -> None:
        """The stream to `link`'s controller was lost: its ops have no caller any more,
        except the kept ones (ops.held_cap), which run on, keeping their events."""
        for (owner, op_id), op in list(self._ops.items()):
            if owner != link:
                continue
            if not op.cap:
                self.cancel(owner, op_id)
            else:
                op.reply = None

    def held(self, link: object) -> list[str]:
        """The ids of `link`'s ops kept while its stream is lost (its next Hello names them)."""
        return [op_id for (owner, op_id), op in self._ops.items() if owner == link and op.reply is None]

    def attach(self, link: object, reply: Reply) -> None:
        """A new stream to `link`'s controller took the Hello: each kept op sends a
        Resumed, the events it kept (the controller drops what it had), and then its
        events live again on it."""
        for key, op in list(self._ops.items()):
            if key[0] != link or op.reply is not None:
                continue
            reply(ops.OpEvent(key[1], ops.Resumed(len(op.kept), op.dropped)))
            for event in op.kept:
                reply(event)
            op.reply, op.dropped = reply, 0
            if op.task.done():
                self._ops.pop(key, None)

    def _emit(self, key: tuple[object, str], event: ops.OpEvent) -> None:
        op = self._ops.get(key)
        if op is None:
            return
        if op.cap:
            op.keep(event)
        if op.reply is not None:
            op.reply(event)

    def _ended(self, key: tuple[object, str], op: _Op) -> None:
        if self._ops.get(key) is not op:
            return
        if op.reply is not None or op.task.cancelled():
            del self._ops[key]
            return
        loop = asyncio.get_running_loop()  # held until a stream takes it, or until its deadline
        loop.call_at(max(loop.time(), op.expires), lambda: self._ops.pop(key, None) if self._ops.get(key) is op
                     else None)

    @property
    def running(self) -> int:
        return sum(1 for op in self._ops.values() if not op.task.done())

    async def close(self) -> None:
        tasks = [op.task for op in self._ops.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._kernel is not None:
            await asyncio.get_running_loop().run_in_executor(self._kernel_pool, self._kernel.close)
        self._kernel_pool.shutdown(wait=False)
        self._probe_pool.shutdown(wait=False)

    async def _run(self, request: ops.OpRequest, reply: Reply) -> None:
        error = ""
        try:
            request = ops.check(request)
            deadline = ops.timeout_of(request)
            try:
                async with asyncio.timeout(deadline):
                    async with self._slots:
                        async for event in self._dispatch(request):
                            reply(ops.OpEvent(request.id, event))
            except TimeoutError:
                error = f"deadline of {deadline:g}s passed"
        except asyncio.CancelledError:
            return  # nobody waits for a Done any more
        except (VxError, KernelError) as e:
            error = str(e)
        except OSError as e:
            error = f"{e.strerror or e}"
        except Exception as e:  # noqa: BLE001 - a bug must not take the agent down
            log.exception("op %s failed", request.id)
            error = f"internal error: {type(e).__name__}: {e}"
        reply(ops.OpEvent(request.id, ops.Done(error)))

    def _dispatch(self, request: ops.OpRequest) -> AsyncIterator[ops.Event]:
        op = request.op
        if isinstance(op, ops.ProbeBatch):
            return self._probe(op)
        if isinstance(op, ops.PingStream):
            return self._ping(op)
        if isinstance(op, ops.Capture):
            return opsproc.capture(op, op.device or self.agent.underlay_dev)
        if isinstance(op, ops.KernelView):
            return self._one(self._kernel_view(op))
        if isinstance(op, ops.Drift):
            return self._one(self._drift())
        if isinstance(op, ops.Exec):
            return self._program(op.container, "exec.container",
                                 lambda ns: self._one(opsproc.run([*self._enter(ns), *op.argv])))
        if isinstance(op, ops.IperfServer):
            return self._program(op.container, "iperf_server.container",
                                 lambda ns: opsproc.iperf_server(op, ns, self._enter))
        if isinstance(op, ops.IperfClient):
            return self._program(op.container, "iperf_client.container",
                                 lambda ns: self._one(opsproc.iperf_client(op, ns, self._enter)))
        raise InvalidArgument("op", f"{type(op).__name__} is not an op this agent runs")

    @staticmethod
    async def _one(result: Any) -> AsyncIterator[ops.Event]:
        yield await result

    async def _program(self, name: str, field: str,
                       run: Callable[[str], AsyncIterator[ops.Event]]) -> AsyncIterator[ops.Event]:
        async with self._spaces([name], field) as spaces:
            async for event in run(spaces.paths[0]):
                yield event

    # --- what the ops may touch ------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _spaces(self, names: Sequence[str], field: str, *, each: bool = False) -> AsyncIterator[_Spaces]:
        """The namespaces of `names`, each a container of this host, for the op's length;
        InvalidArgument naming the first that is not (`field`, with `[i]` where it holds
        `{}`). A runtime's container is pinned (runtime_ns.pin: opened, checked to hold
        its endpoints) in the probe pool and released when the op ends; one that cannot
        be fails the op, or with `each` only its own part (`failed`: container -> why)."""
        me = self.agent.me
        mine: dict[str, list[Endpoint]] = {}
        for e in self.agent.cache().endpoints.values():
            if e.host == me.name:
                mine.setdefault(e.name, []).append(e)
        for i, name in enumerate(names):
            if name not in mine:
                raise InvalidArgument(field.format(i), f"{name!r} is not a container of host {me.name}")
        spaces = _Spaces()
        loop = asyncio.get_running_loop()
        try:
            for name in dict.fromkeys(names):
                eps = sorted(mine[name], key=lambda e: e.network)
                if not any(e.runtime for e in eps):
                    continue
                try:
                    spaces.pinned[name] = await loop.run_in_executor(self._probe_pool, self._pin, eps)
                except ops.OpFailed as e:
                    if not each:
                        raise
                    spaces.failed[name] = e.message
            spaces.paths = [spaces.pinned[n].path if n in spaces.pinned else "" if n in spaces.failed
                            else me.naming.container_ns(n) for n in names]
            yield spaces
        finally:
            for p in spaces.pinned.values():
                p.close()

    # --- probes ------------------------------------------------------------------------------
    async def _probe(self, op: ops.ProbeBatch) -> AsyncIterator[ops.Event]:
        """The batch in one prober call; a probe from a runtime's container that could not
        be pinned fails alone, with the reason."""
        async with self._spaces([p.container for p in op.probes], "probe.probes[{}].container",
                                each=True) as spaces:
            sent = [i for i, p in enumerate(op.probes) if p.container not in spaces.failed]
            targets = [icmp.Target(spaces.paths[i], p.ip, p.protocol, p.port, p.timeout)
                       for i, p in ((i, op.probes[i]) for i in sent)]
            stop = False
            loop = asyncio.get_running_loop()
            try:
                found = await loop.run_in_executor(self._probe_pool,
                                                   lambda: self._prober(targets, cancelled=lambda: stop))
            finally:
                stop = True  # a cancelled op: the thread gives up within 50 ms
        got = {i: ops.ProbeResult(i, r.reached, round(r.rtt_ms, 3), r.error) for i, r in zip(sent, found)}
        yield ops.ProbeResults(tuple(got.get(i) or ops.ProbeResult(i, False, error=spaces.failed.get(p.container, "no result"))
                                     for i, p in enumerate(op.probes)))

    async def _ping(self, op: ops.PingStream) -> AsyncIterator[ops.Event]:
        async with self._spaces([op.container], "ping.container") as spaces:
            async for event in self._pings(op, spaces.paths[0]):
                yield event

    async def _pings(self, op: ops.PingStream, ns: str) -> AsyncIterator[ops.Event]:
        loop = asyncio.get_running_loop()
        pinger = await loop.run_in_executor(self._probe_pool, lambda: self._pinger(
            ns, op.ip, interval=op.interval, timeout=op.timeout, count=op.count))
        offset = time.time() - time.monotonic()
        emitted = 0
        pinger.start()
        try:
            while not (op.count and emitted >= op.count):
                for sample in pinger.decided(emitted):
                    yield ops.PingSample(emitted, round(sample.t + offset, 6),
                                         None if sample.rtt_ms is None else round(sample.rtt_ms, 3))
                    emitted += 1
                if pinger.finished and not pinger.decided(emitted):
                    return
                await asyncio.sleep(min(op.interval, 0.05))
        finally:
            loop.run_in_executor(self._probe_pool, pinger.stop)  # joins its thread: not in the loop

    # --- the kernel ---------------------------------------------------------------------------
    def _in_kernel(self, fn: Callable[[Kernel], Any]) -> asyncio.Future[Any]:
        def call() -> Any:
            if self._kernel is None:
                self._kernel = self.agent.kernel()
            return fn(self._kernel)
        return asyncio.get_running_loop().run_in_executor(self._kernel_pool, call)

    async def _kernel_view(self, op: ops.KernelView) -> ops.KernelState:
        """The network's namespace and the containers' as dumps read them (a runtime's
        container: what its namespace held when pinned, named by its path)."""
        async with self._spaces(op.containers, "kernel_view.containers[{}]") as spaces:
            names = [self.agent.me.naming.network_ns(op.network)] if op.network else []
            names += [ns for ns, n in zip(spaces.paths, op.containers, strict=True) if n not in spaces.pinned]
            ours = await self._in_kernel(lambda kernel: {
                name: ns for name in names for n, ns in kernel.dump(name).items() if n == name})
            found = [ours[n] for n in names[:1] if op.network and n in ours]
            found += [spaces.pinned[c].view if c in spaces.pinned else ours[ns]
                      for ns, c in zip(spaces.paths, op.containers, strict=True)
                      if c in spaces.pinned or ns in ours]
        me = self.agent.me
        return ops.KernelState(tuple(view(ns) for ns in found), underlay_ip=me.underlay_ip,
                               underlay_dev=self.agent.underlay_dev, underlay_mtu=me.underlay_mtu)

    async def _drift(self) -> ops.DriftReport:
        state = self.agent.cache()
        if not state.synced:
            raise VxError(f"host {self.agent.me.name}: the agent has no snapshot of the desired state yet")
        state, applied = state.copy(), self.agent.applied()
        actions = await self._in_kernel(lambda k: Reconciler(k, self.agent.me).plan(state, full=True)[0])
        return ops.DriftReport(tuple(ops.DriftEntry(a.ns, ops.DRIFT_STATE[a.op], a.kind, a.target, a.reason)
                                     for a in actions), revision=state.revision, applied_revision=applied)


@dataclass
class _Spaces:
    """The namespaces of an op's containers (in the order asked) and the runtime ones pinned, by container."""

    paths: list[str] = dataclasses.field(default_factory=list)          # "" where it failed
    pinned: dict[str, runtime_ns.Pinned] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)


def view(ns: Namespace) -> ops.NamespaceView:
    """A kernel dump's namespace as the ops channel carries it."""
    return ops.NamespaceView(
        ns.name, ns.marker, tuple(ops.LinkView(**dataclasses.asdict(k)) for k in ns.links.values()),
        addrs=tuple(sorted(ns.addrs)), routes=tuple(sorted(tuple(r) for r in ns.routes)),
        fdb=tuple(sorted(tuple(f) for f in ns.fdb)), neigh=tuple(sorted(tuple(n) for n in ns.neigh)))
