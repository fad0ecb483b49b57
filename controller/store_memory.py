"""An in-memory fake of the store contract with etcd's MVCC semantics, for unit tests.

`MemoryStore` keeps one global revision (1 when empty, +1 per transaction that changes
something), create/mod revisions per key, a per-revision history for watches and for
reads at a past revision (each key's value before the revision; cut by `compact`), and
leases whose TTL runs on a monotonic clock. Expired leases are revoked lazily: on every
call, and by open watches while they wait, so no background task is needed. Test
switches: `set_available(False)` simulates etcd being down (every call and every open
watch raises `StoreUnavailable`), `expire_lease(id)` forces a lease to expire.

Every operation runs without awaiting in between, so each one is atomic by construction.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from vxlab.controller.store import (
    Absent,
    Compacted,
    Compare,
    Delete,
    DeletePrefix,
    Event,
    KeyValue,
    ModRevisionIs,
    Op,
    PrefixUnchangedSince,
    Put,
    Store,
    StoreUnavailable,
    TxnResult,
)


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


class MemoryStore(Store):
    """The store contract held in a dict; see the module docstring."""

    def __init__(
        self, *, progress_interval: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._progress_interval = progress_interval
        self._clock = clock
        self._kvs: dict[str, KeyValue] = {}
        self._rev = 1
        self._compact_rev = 0
        self._history: dict[int, list[Event]] = {}
        self._undo: dict[int, list[tuple[str, KeyValue | None]]] = {}  # per revision: each key before it
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(1)
        self._available = True
        self._closed = False
        self._changed = asyncio.Event()  # replaced after every change; waiters hold the old one

    # --- test switches ----------------------------------------------------------------

    def set_available(self, available: bool) -> None:
        """Simulate the backend going down (False) or coming back (True)."""
        self._available = available
        self._notify()

    def expire_lease(self, lease_id: int) -> None:
        """Expire `lease_id` now, deleting its keys in one revision (no-op if gone)."""
        if lease_id in self._leases:
            self._revoke(lease_id)

    # --- the contract -------------------------------------------------------------------

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        self._check()
        return self._at(revision).get(key)

    async def range(self, prefix: str, *, revision: int = 0) -> tuple[list[KeyValue], int]:
        self._check()
        at = self._at(revision)
        kvs = [at[k] for k in sorted(at) if k.startswith(prefix)]
        return kvs, revision or self._rev

    async def txn(self, compares: list[Compare], ops: list[Op]) -> TxnResult:
        self._check()
        if not all(self._holds(c) for c in compares):
            return TxnResult(succeeded=False, revision=self._rev)
        return TxnResult(succeeded=True, revision=self._apply(ops))

    async def revision(self) -> int:
        self._check()
        return self._rev

    async def grant_lease(self, ttl: int) -> int:
        self._check()
        if ttl < 1:
            raise ValueError(f"lease TTL must be at least 1 s, got {ttl}")
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(ttl=ttl, deadline=self._clock() + ttl)
        return lease_id

    async def refresh_lease(self, lease_id: int) -> int:
        self._check()
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0
        lease.deadline = self._clock() + lease.ttl
        return lease.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        self._check()
        if lease_id in self._leases:
            self._revoke(lease_id)

    async def compact(self, revision: int) -> None:
        self._check()
        if revision > self._rev:
            raise ValueError(f"cannot compact to future revision {revision} (current {self._rev})")
        if revision <= self._compact_rev:
            return
        self._compact_rev = revision
        for rev in [r for r in self._history if r < revision]:
            del self._history[rev]
            self._undo.pop(rev, None)
        self._notify()

    async def close(self) -> None:
        self._closed = True
        self._notify()

    async def watch(
        self, prefix: str, *, start_revision: int
    ) -> AsyncIterator[tuple[int, list[Event]]]:
        self._check()
        next_rev = start_revision if start_revision > 0 else self._rev + 1
        last_yield = self._clock()
        while True:
            self._check()
            if next_rev < self._compact_rev:
                raise Compacted(self._compact_rev)
            if next_rev <= self._rev:
                rev, next_rev = next_rev, next_rev + 1
                events = [e for e in self._history.get(rev, ()) if e.key.startswith(prefix)]
                if events:
                    yield rev, events
                    last_yield = self._clock()
                continue
            now = self._clock()
            progress_at = last_yield + self._progress_interval
            if now >= progress_at:
                yield self._rev, []
                last_yield = self._clock()
                continue
            wake = min([progress_at, *(lease.deadline for lease in self._leases.values())])
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, wake - now))
            except TimeoutError:
                pass

    # --- internals ----------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StoreUnavailable("store closed")
        if not self._available:
            raise StoreUnavailable("store unavailable (simulated)")
        now = self._clock()
        due = sorted((lease.deadline, lid) for lid, lease in self._leases.items())
        for deadline, lease_id in due:
            if deadline > now:
                break
            self._revoke(lease_id)

    def _at(self, revision: int) -> dict[str, KeyValue]:
        """The keys as they were at `revision` (0: now): today's, with every later
        revision undone, newest first."""
        if revision in (0, self._rev):
            return self._kvs
        if revision < 0:
            raise ValueError(f"revision must not be negative, got {revision}")
        if revision > self._rev:
            raise ValueError(f"revision {revision} is in the future (current {self._rev})")
        if revision < self._compact_rev:
            raise Compacted(self._compact_rev)
        kvs = dict(self._kvs)
        for rev in range(self._rev, revision, -1):
            for key, before in reversed(self._undo.get(rev, [])):
                if before is None:
                    kvs.pop(key, None)
                else:
                    kvs[key] = before
        return kvs

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _holds(self, compare: Compare) -> bool:
        match compare:
            case Absent(key=key):
                return key not in self._kvs
            case ModRevisionIs(key=key, revision=rev):
                kv = self._kvs.get(key)
                return kv is not None and kv.mod_revision == rev
            case PrefixUnchangedSince(prefix=prefix, revision=rev):
                return all(
                    kv.mod_revision <= rev for k, kv in self._kvs.items() if k.startswith(prefix)
                )
        raise TypeError(f"not a store comparison: {compare!r}")

    def _validate(self, ops: list[Op]) -> None:
        """Reject what etcd rejects: unknown leases, a key put twice or put and deleted."""
        puts: set[str] = set()
        for op in ops:
            if isinstance(op, Put):
                if op.lease and op.lease not in self._leases:
                    raise ValueError(f"lease {op.lease} not found")
                if op.key in puts:
                    raise ValueError(f"duplicate key {op.key!r} in transaction")
                puts.add(op.key)
            elif not isinstance(op, Delete | DeletePrefix):
                raise TypeError(f"not a store operation: {op!r}")
        for op in ops:
            if isinstance(op, Delete) and op.key in puts:
                raise ValueError(f"key {op.key!r} both put and deleted in transaction")
            if isinstance(op, DeletePrefix) and any(k.startswith(op.prefix) for k in puts):
                raise ValueError(f"prefix {op.prefix!r} overlaps a put in transaction")

    def _apply(self, ops: list[Op]) -> int:
        """Apply validated `ops` as one revision (only if they change something)."""
        self._validate(ops)
        rev = self._rev + 1
        events: list[Event] = []
        undo: list[tuple[str, KeyValue | None]] = []
        for op in ops:
            if isinstance(op, Put):
                old = self._remove(op.key)
                undo.append((op.key, old))
                created = old.create_revision if old else rev
                self._kvs[op.key] = KeyValue(op.key, op.value, created, rev, op.lease)
                if op.lease:
                    self._leases[op.lease].keys.add(op.key)
                events.append(Event("put", op.key, op.value, rev))
            else:
                keys = [op.key] if isinstance(op, Delete) else sorted(
                    k for k in self._kvs if k.startswith(op.prefix)
                )
                for key in keys:
                    if (old := self._remove(key)) is not None:
                        undo.append((key, old))
                        events.append(Event("delete", key, b"", rev))
        if events:
            self._rev = rev
            self._history[rev] = events
            self._undo[rev] = undo
            self._notify()
        return self._rev

    def _remove(self, key: str) -> KeyValue | None:
        kv = self._kvs.pop(key, None)
        if kv is not None and kv.lease in self._leases:
            self._leases[kv.lease].keys.discard(key)
        return kv

    def _revoke(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        self._apply([Delete(key) for key in sorted(lease.keys)])
