"""Watch: the desired state as a snapshot at revision R, then every change after R.

Each subscriber gets its own etcd watch on the key prefix (etcd multiplexes them on
one stream). Raw key events are translated into object changes, one batch per etcd
revision, in order:

- hosts/<h> put/delete       -> Host put (with its liveness) / Host delete;
- alive/<h> put/delete       -> Host put with alive=True / alive=False (lease expiry);
- networks/…, endpoints/…    -> Network / Endpoint put or delete;
- alloc/…                    -> nothing (bookkeeping).

A delete carries only the object's identity (name; network for endpoints). Resuming
from revision R replays history after R; when R was compacted the subscriber gets a
fresh snapshot marked `compacted`. A lost etcd connection ends the stream with
StoreUnavailable; the agent reconnects with its last revision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from vxlab.controller import metrics
from vxlab.controller.context import Context
from vxlab.controller.store import Compacted, Event, KeyValue
from vxlab.model import Change, Endpoint, Host, Network, WatchBatch, from_json


class Watcher:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.keys = ctx.keys

    async def snapshot(self, *, compacted: bool = False) -> WatchBatch:
        kvs, rev = await self.store.range(self.keys.root)
        return self._snapshot_from(kvs, rev, compacted=compacted)

    def _snapshot_from(self, kvs: list[KeyValue], rev: int, *, compacted: bool) -> WatchBatch:
        hosts: list[Host] = []
        alive: set[str] = set()
        networks: list[Network] = []
        endpoints: list[Endpoint] = []
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
        return WatchBatch(
            revision=rev, snapshot=True, compacted=compacted,
            hosts=tuple(dataclasses.replace(h, alive=h.name in alive) for h in hosts),
            networks=tuple(networks), endpoints=tuple(endpoints),
        )

    async def watch(self, *, start_revision: int = 0) -> AsyncIterator[WatchBatch]:
        """Snapshot (when start_revision is 0, or compacted), then batches of changes."""
        metrics.WATCHERS.inc()
        try:
            if start_revision > 0:
                try:
                    async for batch in self._follow(start_revision + 1):
                        yield batch
                    return
                except Compacted:
                    snap = await self.snapshot(compacted=True)
            else:
                snap = await self.snapshot()
            yield snap
            alive = {h.name: h.alive for h in snap.hosts}
            async for batch in self._follow(snap.revision + 1, alive=alive):
                yield batch
        finally:
            metrics.WATCHERS.dec()

    async def _follow(self, start: int, *, alive: dict[str, bool] | None = None) -> AsyncIterator[WatchBatch]:
        """Translate the etcd watch from `start`. `alive` is the liveness each host had
        at start-1 (from the snapshot); hosts missing from it are looked up once."""
        alive = {} if alive is None else alive
        stream = self.store.watch(self.keys.root, start_revision=start)
        try:
            async for rev, events in stream:
                for ev in events:  # liveness as of this revision, before translating hosts
                    kind, parts = self.keys.classify(ev.key)
                    if kind == "alive":
                        alive[parts[0]] = ev.kind == "put"
                changes = [c for ev in events for c in await self._translate(ev, alive)]
                if changes or not events:  # empty events: a progress heartbeat
                    yield WatchBatch(revision=rev, changes=tuple(changes))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def _translate(self, ev: Event, alive: dict[str, bool]) -> list[Change]:
        kind, parts = self.keys.classify(ev.key)
        if kind == "hosts":
            if ev.kind == "delete":
                alive.pop(parts[0], None)
                return [Change("delete", Host(name=parts[0]))]
            if parts[0] not in alive:
                alive[parts[0]] = await self.store.get(self.keys.alive_key(parts[0])) is not None
            return [Change("put", dataclasses.replace(from_json(Host, ev.value), alive=alive[parts[0]]))]
        if kind == "alive":
            record = await self.store.get(self.keys.host(parts[0]))
            if record is None:  # the host itself went away; its own delete says so
                return []
            host = from_json(Host, record.value)
            return [Change("put", dataclasses.replace(host, alive=ev.kind == "put"))]
        if kind == "networks":
            if ev.kind == "delete":
                return [Change("delete", Network(name=parts[0]))]
            return [Change("put", from_json(Network, ev.value))]
        if kind == "endpoints" and len(parts) == 2:
            if ev.kind == "delete":
                return [Change("delete", Endpoint(name=parts[1], network=parts[0], host=""))]
            return [Change("put", from_json(Endpoint, ev.value))]
        return []
