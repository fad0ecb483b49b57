"""Watch: the desired state as a snapshot at revision R, then every change after R.

The controller follows the key prefix with one shared etcd watch (the hub, see
`Watcher`) and fans it out to every subscriber. Raw key events are translated into object changes, one batch per etcd
revision, in order, each carrying the state as of its own revision (never a later one):

- hosts/<h> put/delete       -> Host put (with its liveness) / Host delete;
- alive/<h> put/delete       -> Host put with alive=True / alive=False (lease expiry);
  a host touched twice in one revision (registration puts both keys) is one change;
- networks/…, endpoints/…, policies/…, services/… -> Network / Endpoint / Policy / Service
  put or delete;
- alloc/…                    -> nothing (bookkeeping).

A delete carries only the object's identity (name; network for endpoints, policies and services). Resuming
from revision R replays history after R; when R was compacted the subscriber gets a
fresh snapshot marked `compacted`. A lost etcd connection ends the stream with
StoreUnavailable; the agent reconnects with its last revision.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from vxlab.controller import metrics
from vxlab.controller.context import Context
from vxlab.controller.store import Compacted, Event, KeyValue, StoreUnavailable
from vxlab.model import Change, Endpoint, Host, Network, Policy, Service, WatchBatch, from_json
from vxlab.view import View


_END = object()  # hub -> subscriber: the shared stream ended (the subscriber reconnects)


@dataclasses.dataclass
class _Hosts:
    """Host records (without liveness) and the names whose alive key exists, as of one
    revision: what `_follow` needs to translate the next revision's events. A record is
    only ever put together with its alive key (registration), so from a snapshot, which
    has only hosts with records, the liveness of record-less names need not be known."""

    records: dict[str, Host]
    alive: set[str]

    @classmethod
    def of(cls, snap: WatchBatch) -> _Hosts:
        return cls({h.name: h for h in snap.hosts}, {h.name for h in snap.hosts if h.alive})

    def host(self, name: str) -> Host | None:
        record = self.records.get(name)
        return None if record is None else dataclasses.replace(record, alive=name in self.alive)


class Watcher:
    """Serves Watch streams from one shared etcd watch per controller process (the hub):
    each revision is read and translated once and fanned out to every subscriber, with
    the last HISTORY batches kept for resumes. A resume older than that history, or the
    hub not running, falls back to a watch of the subscriber's own.

    The hub keeps its first snapshot with every later batch applied (a `vxlab.view.View`):
    new subscribers get their snapshot from it instead of a range read of the whole
    prefix and a decode of every value (at 100 agents joining a lab of 600 objects that
    read-and-decode was most of the controller's CPU). The snapshot object is shared by
    every subscriber that joins before the next change (and converted to protobuf once)."""

    HISTORY = 20_000   # batches kept for resumes
    QUEUE = 50_000     # per subscriber; a subscriber that falls this far behind is dropped
    HEARTBEAT = 5.0    # a subscriber hears at least this often, changes or not (agents: WATCH_IDLE)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.keys = ctx.keys
        self._subscribers: set[asyncio.Queue[Any]] = set()
        self._history: collections.deque[WatchBatch] = collections.deque(maxlen=self.HISTORY)
        self._hub: asyncio.Task[None] | None = None
        self._hub_from = 0    # the hub streams every revision after this one
        self._hub_ready: asyncio.Future[None] | None = None
        self._view: View | None = None  # the hub's state, for new subscribers' snapshots

    async def _ensure_hub(self) -> bool:
        """Start the hub if needed; False when it cannot run (the store is down)."""
        if self._hub is None or self._hub.done():
            loop = asyncio.get_running_loop()
            self._hub_ready = loop.create_future()
            self._history.clear()
            self._hub = asyncio.create_task(self._run_hub(self._hub_ready))
        assert self._hub_ready is not None
        try:
            await asyncio.shield(self._hub_ready)
        except Exception:  # noqa: BLE001 - the hub failed to start: subscribers watch alone
            return False
        return True

    async def _run_hub(self, ready: asyncio.Future[None]) -> None:
        try:
            snap = await self.snapshot()
            self._hub_from = snap.revision
            view = View.of(snap)
            stream = self._follow(snap.revision + 1, hosts=_Hosts.of(snap))
            self._view = view
            ready.set_result(None)
            async for batch in stream:
                view.apply(batch)
                if batch.changes:
                    self._history.append(batch)
                for q in list(self._subscribers):
                    if q.qsize() >= self.QUEUE:
                        self._subscribers.discard(q)
                        q.put_nowait(_END)
                    else:
                        q.put_nowait(batch)
        except Exception as e:  # noqa: BLE001 - store down or compacted: subscribers reconnect
            if not ready.done():
                ready.set_exception(e)
        finally:
            self._view = None
            for q in list(self._subscribers):
                q.put_nowait(_END)
            self._subscribers.clear()

    async def _shared(self, after: int) -> AsyncIterator[WatchBatch] | None:
        """Batches after revision `after` from the hub, or None when it cannot serve them."""
        if not await self._ensure_hub():
            return None
        oldest = self._history[0].revision if self._history else self._hub_from + 1
        if after < min(oldest - 1, self._hub_from):
            return None  # older than the hub remembers
        q: asyncio.Queue[Any] = asyncio.Queue()
        for b in self._history:
            if b.revision > after:
                q.put_nowait(b)
        self._subscribers.add(q)

        async def gen() -> AsyncIterator[WatchBatch]:
            last = after  # the revision the subscriber has everything up to
            getter: asyncio.Future[Any] | None = None
            try:
                while True:
                    getter = getter or asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait({getter}, timeout=self.HEARTBEAT)
                    if not done:  # etcd sent no progress (its default is every 10 min)
                        yield WatchBatch(revision=last)
                        continue
                    item, getter = getter.result(), None
                    if item is _END:
                        raise StoreUnavailable("the controller's shared watch ended; reconnect")
                    # Heartbeats too when nothing changed since `after`: they tell the
                    # subscriber the stream is alive (agents fail over from a silent one).
                    if item.revision > after or (not item.changes and item.revision == after):
                        last = max(last, item.revision)
                        yield item
            finally:
                if getter is not None:
                    getter.cancel()
                self._subscribers.discard(q)
        return gen()

    async def snapshot(self, *, compacted: bool = False, revision: int = 0) -> WatchBatch:
        """The desired state now, or as of `revision` (a store read at that revision)."""
        kvs, rev = await self.store.range(self.keys.root, revision=revision)
        return self._snapshot_from(kvs, rev, compacted=compacted)

    def _snapshot_from(self, kvs: list[KeyValue], rev: int, *, compacted: bool) -> WatchBatch:
        hosts: list[Host] = []
        alive: set[str] = set()
        networks: list[Network] = []
        endpoints: list[Endpoint] = []
        policies: list[Policy] = []
        services: list[Service] = []
        for kv in kvs:
            kind, parts = self.keys.classify(kv.key)
            if kind == "hosts":
                hosts.append(from_json(Host, kv.value))
            elif kind == "alive":
                alive.add(parts[0])
            elif kind == "networks":
                networks.append(from_json(Network, kv.value))
            elif kind == "endpoints":
                endpoints.append(from_json(Endpoint, kv.value))
            elif kind == "policies":
                policies.append(from_json(Policy, kv.value))
            elif kind == "services":
                services.append(from_json(Service, kv.value))
        return WatchBatch(
            revision=rev, snapshot=True, compacted=compacted,
            hosts=tuple(dataclasses.replace(h, alive=h.name in alive) for h in hosts),
            networks=tuple(networks), endpoints=tuple(endpoints), policies=tuple(policies),
            services=tuple(services),
        )

    async def watch(self, *, start_revision: int = 0) -> AsyncIterator[WatchBatch]:
        """Snapshot (when start_revision is 0, or compacted), then batches of changes."""
        metrics.WATCHERS.inc()
        try:
            if start_revision > 0:
                shared = await self._shared(start_revision)
                try:
                    async for batch in shared or self._follow(start_revision + 1):
                        yield batch
                    return
                except Compacted:
                    snap = await self.snapshot(compacted=True)
            else:
                # Join the hub first, then take the snapshot: nothing between them is lost.
                # With the hub up, the snapshot is its view (no store read); any change
                # the hub applies before this subscriber joins is replayed from history.
                view = self._view if await self._ensure_hub() else None
                snap = view.snapshot() if view is not None else await self.snapshot()
            shared = await self._shared(snap.revision)
            if shared is not None:
                yield snap
                async for batch in shared:
                    yield batch
                return
            yield snap
            async for batch in self._follow(snap.revision + 1, hosts=_Hosts.of(snap)):
                yield batch
        finally:
            metrics.WATCHERS.dec()

    async def _follow(self, start: int, *, hosts: _Hosts | None = None) -> AsyncIterator[WatchBatch]:
        """Translate the etcd watch from `start`, each batch as of its own revision: `hosts`
        are the host records and liveness at start-1 (from the caller's snapshot); without
        them they are read at start-1 (`Compacted` when that is gone). No read at the
        current revision: an event never carries a later state than its revision."""
        if hosts is None:
            hosts = await self._hosts_at(start - 1)
        stream = self.store.watch(self.keys.root, start_revision=start)
        try:
            async for rev, events in stream:
                changes = self._translate(events, hosts)
                if changes or not events:  # empty events: a progress heartbeat
                    yield WatchBatch(revision=rev, changes=tuple(changes))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def _hosts_at(self, revision: int) -> _Hosts:
        records, _ = await self.store.range(self.keys.hosts, revision=revision)
        alive, _ = await self.store.range(self.keys.alive, revision=revision)
        return _Hosts({h.name: h for h in (from_json(Host, kv.value) for kv in records)},
                      {kv.key[len(self.keys.alive):] for kv in alive})

    def _translate(self, events: list[Event], hosts: _Hosts) -> list[Change]:
        """One revision's events as object changes. `hosts` (as of the revision before)
        is brought to this revision first; a host touched by several events (register
        puts its record and its alive key together) becomes one change, where it first
        appears."""
        changes: list[Change | str] = []  # a str: the host of that name, filled in below
        recorded: set[str] = set()  # hosts whose record this revision put or deleted
        placed: set[str] = set()
        for ev in events:
            kind, parts = self.keys.classify(ev.key)
            if kind in ("hosts", "alive") and len(parts) == 1:
                name = parts[0]
                if kind == "hosts":
                    recorded.add(name)
                    if ev.kind == "put":
                        hosts.records[name] = from_json(Host, ev.value)
                    else:
                        hosts.records.pop(name, None)
                elif ev.kind == "put":
                    hosts.alive.add(name)
                else:
                    hosts.alive.discard(name)
                if name not in placed:
                    placed.add(name)
                    changes.append(name)
            elif (change := self._change(kind, parts, ev)) is not None:
                changes.append(change)
        out: list[Change] = []
        for c in changes:
            if not isinstance(c, str):
                out.append(c)
            elif (host := hosts.host(c)) is not None:
                out.append(Change("put", host))
            elif c in recorded:  # deleted; an alive key alone, of no host, says nothing
                out.append(Change("delete", Host(name=c)))
        return out

    @staticmethod
    def _change(kind: str, parts: list[str], ev: Event) -> Change | None:
        if kind == "networks":
            if ev.kind == "delete":
                return Change("delete", Network(name=parts[0]))
            return Change("put", from_json(Network, ev.value))
        if kind == "endpoints" and len(parts) == 2:
            if ev.kind == "delete":
                return Change("delete", Endpoint(name=parts[1], network=parts[0], host=""))
            return Change("put", from_json(Endpoint, ev.value))
        if kind == "policies" and len(parts) == 2:
            if ev.kind == "delete":
                return Change("delete", Policy(name=parts[1], network=parts[0]))
            return Change("put", from_json(Policy, ev.value))
        if kind == "services" and len(parts) == 2:
            if ev.kind == "delete":
                return Change("delete", Service(name=parts[1], network=parts[0]))
            return Change("put", from_json(Service, ev.value))
        return None
