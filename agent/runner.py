"""The agent process: register, keep the lease alive, follow Watch, reconcile.

Five asyncio tasks share one StateCache:

- liveness: RegisterHost, then KeepAlive every TTL/3; re-registers when the controller
  forgot the host; retries with backoff while the control plane is down;
- watch: snapshot then changes; on any error it reconnects with backoff from the last
  revision (the controller answers with a fresh snapshot when that was compacted), on
  the next controller when several are given and this one is gone or hung; a stream
  silent for WATCH_IDLE seconds (no change, no progress heartbeat) counts as hung;
- reconcile: runs a pass when the cache changed, and a full pass (kernel dump, drift
  repair) every `resync` seconds. Passes run in one worker thread (pyroute2 is
  blocking) on a copy of the cache. Nothing is reconciled before the first snapshot,
  and losing the control plane never tears anything down; host faults
  (agent/faultrun.py) are part of every pass, and before the first snapshot a pass of
  their own enforces and heals what the agent's fault journal holds;
- faults: reports each fault's status (ReportFaultStatus), retried, never in a pass's way;
- ops: the ops channel to every controller (agent/opslink.py): probes, captures,
  kernel views, drift and commands run for the controllers' callers, never in the
  reconcile thread.

Grace after a control-plane outage: while the agent cannot reach the controller, and
for one lease TTL (+1 s) after it is back, hosts that were alive when the outage began
stay programmed even if the state now says they are dead. A controller that was down
longer than the lease TTL lets every lease expire at once; without the grace period
every agent would purge every peer and drop traffic that never stopped flowing (the
same reasoning as Kubernetes' node controller refusing mass evictions).

After every pass the agent writes a status file (JSON) that labs and tests read, once
its embedded DNS listens in the pass's container namespaces (agent/dnsserver.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from vxlab.agent import fault_nft, metrics, nat, opslink, vtep
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo, local_containers, runtime_dns
from vxlab.agent.dnsserver import Resolver
from vxlab.agent.faultrun import AgentFaults
from vxlab.agent.kernel import AgentNs, Kernel
from vxlab.agent.reconciler import PassResult, Reconciler, observe
from vxlab.agent.underlay import controller_ips
from vxlab.agentconfig import AgentConfig
from vxlab.agentstatus import AgentStatus, LastPass
from vxlab.client import Client, parse_addresses
from vxlab.errors import NotFound, PermissionDenied, Unauthenticated, Unavailable, VxError
from vxlab.model import Host

log = logging.getLogger("vxlab.agent")
T = TypeVar("T")
VERSION = "0.1.0"
FAILOVER_TIMEOUT = 2.0  # a controller that does not answer a call in this long is hung: try the next
WATCH_IDLE = 15.0       # no batch for this long: reconnect (controllers send one every 5 s, Watcher.HEARTBEAT)


class Agent:
    """One agent. `kernel` is a factory: the kernel is created, and only ever used, in
    the agent's single reconcile thread (netlink sockets are not shared across threads)."""

    def __init__(self, config: AgentConfig, kernel: Callable[[], Kernel]) -> None:
        self.config = config
        self.cache = StateCache()
        self.client = Client(config.controller, tls=config.tls, failover_timeout=FAILOVER_TIMEOUT)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        self.kernel = self._pool.submit(kernel).result()
        self._dump_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dump")
        self._kernel_factory = kernel
        self._dump_kernel: Kernel | None = None  # created in the dump thread on first use
        self._dirty = asyncio.Event()
        self._pending_since: float | None = None
        self.applied_revision = 0
        self.last: PassResult | None = None
        self.registered = False
        self.lease = 0
        self.ttl = 5
        self._outage_since: float | None = None
        self._grace_hosts: frozenset[str] = frozenset()
        self._grace_until = 0.0
        self.faults = AgentFaults(config.host, status_file=config.status_file, client=self.client,
                                  controllers=parse_addresses(config.controller))
        towards = [] if config.underlay_ip or config.underlay_dev else controller_ips(parse_addresses(config.controller))
        underlay = self.faults.saved_underlay() if not (config.underlay_ip or config.underlay_dev) else None
        underlay = underlay or self.in_thread(lambda: self.kernel.underlay(
            ip=config.underlay_ip, dev=config.underlay_dev, towards=towards))
        self.me = HostInfo(config.host, underlay.ip, underlay.mtu, config.netns_prefix)
        self.underlay_dev = underlay.dev
        self.faults.underlay = underlay
        self.reconciler = Reconciler(self.kernel, self.me, underlay_dev=underlay.dev)
        self.dns = Resolver(self.cache, config.host, forward=config.dns_forward)

    def in_thread(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the reconcile thread and wait for it (for synchronous callers)."""
        return self._pool.submit(fn).result()

    def _background_dump(self) -> tuple[dict[str, Any], AgentNs]:
        """Runs in the dump thread, with a kernel of its own."""
        if self._dump_kernel is None:
            self._dump_kernel = self._kernel_factory()
        return observe(self._dump_kernel, self.me.netns_prefix, underlay=self.underlay_dev)

    def close_kernel(self) -> None:
        self.in_thread(self.kernel.close)
        self._pool.shutdown(wait=True)
        if self._dump_kernel is not None:
            self._dump_pool.submit(self._dump_kernel.close).result()
        self._dump_pool.shutdown(wait=True)

    async def run(self) -> None:
        log.warning("agent %s: underlay %s on %s (mtu %d), controller %s", self.me.name, self.me.underlay_ip,
                    self.underlay_dev, self.me.underlay_mtu, ",".join(self.config.controller))
        tasks = [asyncio.create_task(c) for c in (self._liveness(), self._watch(), self._reconcile_loop(),
                                                  self.faults.report(), opslink.serve(self, version=VERSION))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.dns.close()
            await self.client.close()
            self.close_kernel()

    async def _liveness(self) -> None:
        backoff = 0.2
        while True:
            try:
                if not self.registered:
                    host = Host(name=self.me.name, underlay_ip=self.me.underlay_ip, underlay_mtu=self.me.underlay_mtu,
                                agent_version=VERSION,
                                labels={**self.me.naming.labels(), **self.config.labels})
                    _, self.lease, ttl = await self.client.register_host(host)
                    self.ttl = ttl
                    self.registered = True
                    log.warning("registered as %s (lease ttl %ds)", self.me.name, ttl)
                else:
                    # within a third of the lease: a later answer saves nothing, and an agent cut
                    # off (a partition) must know it before its peers' deaths can reach it
                    deadline = max(0.5, self.ttl / 3)
                    try:
                        self.lease, ttl, renewed = await asyncio.wait_for(
                            self.client.keepalive(self.me.name, self.lease), timeout=deadline)
                    except TimeoutError:
                        raise Unavailable(f"controller: keepalive unanswered within {deadline:g}s") from None
                    if not renewed:
                        log.warning("lease had expired; alive again with a new one")
                backoff = 0.2
                await asyncio.sleep(max(0.2, ttl / 3))
            except NotFound:
                self.registered = False
            except VxError as e:
                metrics.ERRORS.labels("liveness").inc()
                if isinstance(e, Unavailable):  # a watch across a cut can hang silently: this is the first sign
                    self._control_lost(f"liveness: {e}")
                # a certificate the controller refuses does not fix itself: say so loudly
                level = logging.WARNING if isinstance(e, (Unauthenticated, PermissionDenied)) else logging.INFO
                log.log(level, "liveness: %s; retry in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _watch(self) -> None:
        backoff = 0.2
        while True:
            try:
                start = self.cache.revision if self.cache.synced else 0
                async for batch in _idle_timeout(self.client.watch(start_revision=start), WATCH_IDLE):
                    backoff = 0.2
                    if self._outage_since is not None:
                        self._outage_since = None
                        self._grace_until = time.monotonic() + self.ttl + 1.0
                        log.warning("control plane back; keeping peers programmed for %.0fs", self.ttl + 1.0)
                    if self.cache.apply(batch):
                        if batch.compacted:
                            log.warning("resumed after compaction: fresh snapshot at %d", batch.revision)
                        if self._pending_since is None:
                            self._pending_since = time.monotonic()
                        self._dirty.set()
                    elif self._pending_since is None and self.last and self.last.ok:
                        # a heartbeat, or a change the kernel does not depend on: still converged
                        if self.applied_revision != self.cache.revision:
                            self.applied_revision = self.cache.revision
                            metrics.LAST_REVISION.set(self.applied_revision)
                            self.write_status()
            except (VxError, Exception) as e:  # noqa: BLE001 - any stream failure: reconnect
                metrics.ERRORS.labels("watch").inc()
                self._control_lost(f"watch: {e}; reconnecting (to the next controller, if several)")
                log.info("watch: %s; reconnect in %.1fs", e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _control_lost(self, why: str) -> None:
        """The control plane stopped answering (the watch failed, or a keepalive did: a
        watch across a partition hangs without an error until WATCH_IDLE): the hosts
        alive now stay programmed while it lasts and one TTL after (the grace above)."""
        if self._outage_since is None:
            log.warning("%s", why)
            self._outage_since = time.monotonic()
            if time.monotonic() >= self._grace_until:
                self._grace_hosts = frozenset(h.name for h in self.cache.hosts.values() if h.alive)

    async def _reconcile_loop(self) -> None:
        """Event passes diff against what was applied; every `resync` seconds a full pass
        diffs against a fresh kernel dump. The dump runs in a thread of its own with its
        own netlink sockets, so events keep being programmed while it reads (a dump of
        thousands of entries takes tens of ms). A dump that raced an event pass is stale:
        it is discarded and the full pass dumps in the reconcile thread instead. The first
        pass (adoption after a start) always dumps in the reconcile thread."""
        loop = asyncio.get_running_loop()
        next_full = 0.0
        dump: asyncio.Future[Any] | None = None
        passes = dumped_at = 0
        while True:
            if not self.cache.synced:  # nothing is reconciled before the first snapshot but the journal's faults
                await self._journal_pass()
                continue
            now = time.monotonic()
            if dump is None and now >= next_full and self.last is not None:
                dump = loop.run_in_executor(self._dump_pool, self._background_dump)
                dumped_at = passes
            wake = next_full if self._grace_until <= now else min(next_full, self._grace_until)
            fault_wake = self.faults.wake_at()  # a fault's own deadline
            wake = wake if fault_wake is None else min(wake, fault_wake)
            dirty = asyncio.ensure_future(self._dirty.wait())
            waiting: set[asyncio.Future[Any]] = {dirty} if dump is None else {dirty, dump}
            await asyncio.wait(waiting, timeout=None if dump is not None else max(0.0, wake - now),
                               return_when=asyncio.FIRST_COMPLETED)
            dirty.cancel()
            if fault_wake is not None and time.monotonic() >= fault_wake:
                self._dirty.set()
            actual = None
            full = self.last is None or not self.last.ok  # the first pass adopts: a dump in-thread
            if dump is not None and dump.done():
                full = True
                try:
                    # A pass ran while the dump read: it is stale, dump again in-thread.
                    actual = dump.result() if dumped_at == passes else None
                except Exception as e:  # noqa: BLE001 - fall back to a dump in the reconcile thread
                    log.warning("background dump failed: %s", e)
                dump = None
            if full:  # +-10 %: agents started together do not dump together for ever after
                next_full = time.monotonic() + self.config.resync * random.uniform(0.9, 1.1)
            elif not self._dirty.is_set() and time.monotonic() < self._grace_until:
                continue  # woken early: nothing to do yet
            self._dirty.clear()
            passes += 1
            pending, self._pending_since = self._pending_since, None
            copy = self.cache.copy()
            grace = self._grace_hosts if self._outage_since is not None or time.monotonic() < self._grace_until \
                else frozenset()
            faults = self.faults.desired(copy)
            try:
                result = await loop.run_in_executor(self._pool, lambda: self.reconciler.reconcile(
                    copy, full=full, assume_alive=grace, actual=actual, faults=faults))
            except Exception as e:  # noqa: BLE001 - a bug or a kernel surprise must not kill the agent
                log.exception("reconcile pass failed")
                metrics.ERRORS.labels("reconcile").inc()
                result = PassResult([], errors=[f"pass failed: {e}"], full=full)
                self._dirty.set()
                await asyncio.sleep(1.0)
            if self.last is None:
                # Objects alive after the first pass (modules, the cache) stay for good:
                # keep them out of the collector, whose full sweeps over them otherwise
                # stall an event pass by tens of ms.
                gc.collect()
                gc.freeze()
                gc.set_threshold(20_000, 20, 50)  # fewer, rarer sweeps: the agent makes few cycles
            self.last = result
            if result.ok:
                # Not dirty: whatever arrived during the pass changed nothing the kernel
                # depends on, so the kernel is right for the cache's revision too.
                self.applied_revision = copy.revision if self._dirty.is_set() else self.cache.revision
                metrics.LAST_REVISION.set(self.applied_revision)
                if pending is not None:
                    metrics.PROGRAMMING_LATENCY.observe(time.monotonic() - pending)
            if result.actions:
                log.warning("pass (%s) at revision %d: %d actions, %d writes, %d errors in %.1f ms",
                            "full" if full else "event", copy.revision, len(result.actions),
                            sum(result.writes.values()), len(result.errors), result.seconds * 1000)
            await self.dns.sync(local_containers(copy, self.me), runtime=runtime_dns(copy, self.me))
            await self.faults.after(result, again=self._dirty.set, faults_pass=self._faults_pass)
            self.write_status()

    async def _faults_pass(self, want: Any) -> PassResult:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: self.reconciler.reconcile_faults(
            want))

    async def _journal_pass(self) -> None:
        """Before the first snapshot: a pass over the journal's host faults (at start and
        at each of their deadlines), then wait for the snapshot or the next deadline."""
        if self.faults.keeper.pending:
            want = self.faults.desired(None)
            if want is not None:
                result = await self._faults_pass(want)
                await self.faults.after(result, again=lambda: None, faults_pass=self._faults_pass)
                self.write_status()
        wake = self.faults.wake_at()
        try:
            await asyncio.wait_for(self._dirty.wait(), None if wake is None else max(0.05, wake - time.monotonic()))
        except TimeoutError:
            pass

    def status(self) -> AgentStatus:
        last = self.last
        return AgentStatus(
            host=self.me.name, pid=os.getpid(), underlay_ip=self.me.underlay_ip,
            underlay_dev=self.underlay_dev, underlay_mtu=self.me.underlay_mtu,
            registered=self.registered, revision=self.cache.revision, applied_revision=self.applied_revision,
            converged=bool(last and last.ok and not self._dirty.is_set() and self.applied_revision == self.cache.revision),
            last_pass=None if last is None else LastPass(
                full=last.full, actions=len(last.actions), writes=sum(last.writes.values()),
                errors=tuple(last.errors[:5]), ms=round(last.seconds * 1000, 2)),
            faults=self.faults.status(), time=time.time())

    def write_status(self) -> None:
        if not self.config.status_file:
            return
        try:
            self.status().write(self.config.status_file)
        except OSError as e:
            log.warning("cannot write status file %s: %s", self.config.status_file, e)


async def _idle_timeout(stream: AsyncIterator[T], seconds: float) -> AsyncIterator[T]:
    """`stream`'s items; Unavailable when none comes for `seconds` (the stream is closed)."""
    try:
        while True:
            try:
                async with asyncio.timeout(seconds):
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise Unavailable(f"controller: watch silent for {seconds:g}s") from None
            yield item
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def plan_once(config: AgentConfig, kernel: Callable[[], Kernel]) -> list[str]:
    """`--dry-run`: one snapshot, one kernel dump, the plan as text; nothing written."""
    agent = Agent(config, kernel)
    try:
        async for batch in agent.client.watch():
            agent.cache.apply(batch)
            break
        faults = agent.faults.desired(agent.cache)
        actions, _ = agent.in_thread(lambda: agent.reconciler.plan(agent.cache, full=True, faults=faults))
        return [a.describe() for a in actions]
    finally:
        await agent.client.close()
        agent.close_kernel()


def teardown(kernel: Kernel, *, host: str, netns_prefix: str) -> list[str]:
    """Delete every namespace this host's agent owns (its marker) and the agent's
    rogue-VTEP allow-list and NAT tables, nothing else (the uplinks' host ends go with
    their network namespaces)."""
    me = HostInfo(host, "", 0, netns_prefix)
    gone = []
    for name, ns in kernel.dump(netns_prefix).items():
        if me.naming.owns_ns(name, ns.marker):
            kernel.delete_netns(name)
            gone.append(name)
    before = kernel.writes["delete_vtep_filter"]
    kernel.delete_vtep_filter()
    if kernel.writes["delete_vtep_filter"] > before:
        gone.append(f"nftables table {vtep.FAMILY} {vtep.TABLE}")
    before = kernel.writes["delete_nat"]
    kernel.delete_nat("")
    if kernel.writes["delete_nat"] > before:
        gone.append(f"nftables table {nat.FAMILY} {nat.TABLE}")
    before = kernel.writes["delete_fault_table"]
    kernel.delete_fault_table()
    if kernel.writes["delete_fault_table"] > before:
        gone.append(f"nftables table {fault_nft.FAMILY} {fault_nft.TABLE}")
    return gone
