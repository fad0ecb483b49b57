"""The store contract as a reusable test suite that every `Store` implementation must pass.

Subclass `StoreContract` as `Test…` and provide two fixtures: `store` (the store under
test) and `backend` (a `Backend` with the timing knobs and an outage switch). Tests never
assume absolute revisions or an empty store, and keep to their own key prefix, so a
backend may share one etcd between tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import pytest
from vxlab.controller.store import (
    Absent,
    Compacted,
    Delete,
    DeletePrefix,
    Event,
    ModRevisionIs,
    PrefixUnchangedSince,
    Put,
    Store,
    StoreUnavailable,
)

Watch = AsyncIterator[tuple[int, list[Event]]]


@dataclass
class Backend:
    outage: Callable[[], Awaitable[None]]  # make the store unreachable
    recover: Callable[[], Awaitable[None]]  # make it reachable again
    lease_ttl: int = 1  # shortest TTL the backend honours
    expiry_timeout: float = 3.0  # how long an unrefreshed lease may linger
    progress_timeout: float | None = 2.0  # None: the backend sends no progress in tests
    hang_guard: float = 10.0  # a call still pending this long while the backend is down hangs


async def next_events(watch: Watch, *, timeout: float = 5.0) -> tuple[int, list[Event]]:
    """The next item that carries events (progress notifications are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            rev, events = await anext(watch)
            if events:
                return rev, events


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def established(store: Store, watch: Watch, key: str) -> None:
    """Until `watch` (on a prefix holding `key`) is live on the server: put `key` until the
    watch delivers one, then drain the rest of those puts. A watch is created when it is
    first iterated, and one from revision 0 misses what was put before that."""
    seen = asyncio.ensure_future(next_events(watch, timeout=10))
    last = 0
    while not seen.done():
        last = (await store.txn([], [Put(key, b"")])).revision
        await asyncio.wait({seen}, timeout=0.2)
    rev, _ = seen.result()
    while rev < last:
        rev, _ = await next_events(watch)


def ev(kind: Literal["put", "delete"], key: str, value: bytes, rev: int) -> Event:
    return Event(kind, key, value, rev)


class StoreContract:
    @pytest.fixture
    def p(self) -> str:
        """A key prefix of this test's own."""
        return f"/contract/{uuid.uuid4().hex[:10]}/"

    # --- revisions and writes --------------------------------------------------------

    async def test_missing_key(self, store: Store, p: str) -> None:
        assert await store.get(p + "nope") is None

    async def test_put_bumps_revision_by_one(self, store: Store, p: str) -> None:
        rev0 = await store.revision()
        res = await store.txn([], [Put(p + "a", b"1")])
        assert (res.succeeded, res.revision) == (True, rev0 + 1)
        kv = await store.get(p + "a")
        assert kv is not None
        assert (kv.value, kv.create_revision, kv.mod_revision, kv.lease) == (b"1", rev0 + 1, rev0 + 1, 0)
        assert await store.revision() == rev0 + 1

    async def test_overwrite_keeps_create_revision(self, store: Store, p: str) -> None:
        first = await store.txn([], [Put(p + "a", b"1")])
        second = await store.txn([], [Put(p + "a", b"2")])
        assert second.revision == first.revision + 1
        kv = await store.get(p + "a")
        assert kv is not None
        assert (kv.value, kv.create_revision, kv.mod_revision) == (b"2", first.revision, second.revision)

    async def test_recreated_key_gets_new_create_revision(self, store: Store, p: str) -> None:
        await store.txn([], [Put(p + "a", b"1")])
        await store.txn([], [Delete(p + "a")])
        res = await store.txn([], [Put(p + "a", b"2")])
        kv = await store.get(p + "a")
        assert kv is not None and kv.create_revision == res.revision

    async def test_many_ops_share_one_revision(self, store: Store, p: str) -> None:
        rev0 = await store.revision()
        res = await store.txn([], [Put(p + "a", b"1"), Put(p + "b", b"2"), Delete(p + "zzz")])
        assert res.revision == rev0 + 1
        kvs, _ = await store.range(p)
        assert [kv.mod_revision for kv in kvs] == [rev0 + 1, rev0 + 1]

    async def test_noop_transactions_do_not_bump(self, store: Store, p: str) -> None:
        rev0 = await store.revision()
        assert (await store.txn([], [])).revision == rev0
        assert (await store.txn([Absent(p + "x")], [])).succeeded
        assert (await store.txn([], [Delete(p + "missing"), DeletePrefix(p)])).revision == rev0
        assert await store.revision() == rev0

    async def test_failed_txn_writes_nothing(self, store: Store, p: str) -> None:
        await store.txn([], [Put(p + "taken", b"1")])
        rev0 = await store.revision()
        res = await store.txn([Absent(p + "free"), Absent(p + "taken")], [Put(p + "free", b"x")])
        assert (res.succeeded, res.revision) == (False, rev0)
        assert await store.get(p + "free") is None
        assert await store.revision() == rev0

    async def test_delete_and_delete_prefix(self, store: Store, p: str) -> None:
        ops = [Put(p + k, b"v") for k in ("d/1", "d/2", "dx", "e")]
        await store.txn([], list(ops))
        await store.txn([], [Delete(p + "e")])
        await store.txn([], [DeletePrefix(p + "d/")])
        kvs, _ = await store.range(p)
        assert [kv.key for kv in kvs] == [p + "dx"]

    async def test_range_is_in_key_order_and_prefix_bound(self, store: Store, p: str) -> None:
        for key in ("b", "a/2", "c", "a/1", "a"):
            await store.txn([], [Put(p + key, key.encode())])
        await store.txn([], [Put(p[:-1] + "x", b"outside")])
        kvs, rev = await store.range(p)
        assert [kv.key for kv in kvs] == [p + k for k in ("a", "a/1", "a/2", "b", "c")]
        assert rev == await store.revision()
        assert [kv.key for kv in (await store.range(p + "a/"))[0]] == [p + "a/1", p + "a/2"]

    async def test_read_at_a_past_revision(self, store: Store, p: str) -> None:
        lease = await store.grant_lease(60)
        r1 = (await store.txn([], [Put(p + "a", b"1"), Put(p + "b", b"1")])).revision
        r2 = (await store.txn([], [Put(p + "a", b"2"), Put(p + "l", b"", lease=lease)])).revision
        r3 = (await store.txn([], [Delete(p + "b")])).revision
        await store.txn([], [Put(p[:-1] + "-outside", b"x")])
        await store.revoke_lease(lease)
        r5 = (await store.txn([], [Put(p + "b", b"3")])).revision

        async def state(rev: int) -> tuple[list[tuple[str, bytes, int, int, int]], int]:
            kvs, read_at = await store.range(p, revision=rev)
            return [(kv.key[len(p):], kv.value, kv.create_revision, kv.mod_revision, kv.lease) for kv in kvs], read_at

        assert await state(r1) == ([("a", b"1", r1, r1, 0), ("b", b"1", r1, r1, 0)], r1)
        assert await state(r2) == ([("a", b"2", r1, r2, 0), ("b", b"1", r1, r1, 0), ("l", b"", r2, r2, lease)], r2)
        assert await state(r3) == ([("a", b"2", r1, r2, 0), ("l", b"", r2, r2, lease)], r3)
        assert await state(r3 + 1) == ((await state(r3))[0], r3 + 1)  # a revision elsewhere
        assert await state(r5) == ([("a", b"2", r1, r2, 0), ("b", b"3", r5, r5, 0)], r5)
        assert (await state(r5))[0] == [
            (kv.key[len(p):], kv.value, kv.create_revision, kv.mod_revision, kv.lease)
            for kv in (await store.range(p))[0]]  # at the head: what a read of now says
        assert (kv := await store.get(p + "b", revision=r2)) is not None and (kv.value, kv.mod_revision) == (b"1", r1)
        assert await store.get(p + "b", revision=r3) is None
        assert await store.get(p + "b", revision=r1 - 1) is None  # not yet created
        with pytest.raises(ValueError):  # the future cannot be read
            await store.range(p, revision=await store.revision() + 10)

    async def test_read_at_a_compacted_revision(self, store: Store, p: str) -> None:
        old = (await store.txn([], [Put(p + "a", b"1")])).revision
        point = (await store.txn([], [Put(p + "a", b"2")])).revision
        await store.txn([], [Put(p + "a", b"3")])
        await store.compact(point)
        for read in (lambda: store.range(p, revision=old), lambda: store.get(p + "a", revision=old)):
            with pytest.raises(Compacted) as info:
                await read()
            assert info.value.compact_revision == point
        assert (kv := await store.get(p + "a", revision=point)) is not None and kv.value == b"2"
        assert [kv.value for kv in (await store.range(p, revision=point))[0]] == [b"2"]

    async def test_conflicting_ops_are_rejected(self, store: Store, p: str) -> None:
        with pytest.raises(ValueError):
            await store.txn([], [Put(p + "a", b"1"), Put(p + "a", b"2")])
        with pytest.raises(ValueError):
            await store.txn([], [Put(p + "a", b"1"), DeletePrefix(p)])
        assert await store.get(p + "a") is None

    # --- comparisons ----------------------------------------------------------------

    async def test_absent(self, store: Store, p: str) -> None:
        assert (await store.txn([Absent(p + "a")], [Put(p + "a", b"1")])).succeeded
        assert not (await store.txn([Absent(p + "a")], [Put(p + "a", b"2")])).succeeded
        assert (v := await store.get(p + "a")) is not None and v.value == b"1"

    async def test_mod_revision_is(self, store: Store, p: str) -> None:
        assert not (await store.txn([ModRevisionIs(p + "a", 1)], [])).succeeded  # absent key
        first = await store.txn([], [Put(p + "a", b"1")])
        assert (await store.txn([ModRevisionIs(p + "a", first.revision)], [Put(p + "a", b"2")])).succeeded
        assert not (await store.txn([ModRevisionIs(p + "a", first.revision)], [Put(p + "a", b"3")])).succeeded
        assert (v := await store.get(p + "a")) is not None and v.value == b"2"

    async def test_prefix_unchanged_since(self, store: Store, p: str) -> None:
        assert (await store.txn([PrefixUnchangedSince(p, 1)], [])).succeeded  # empty range
        since = (await store.txn([], [Put(p + "n/a", b"1")])).revision
        assert (await store.txn([PrefixUnchangedSince(p + "n/", since)], [])).succeeded
        assert not (await store.txn([PrefixUnchangedSince(p + "n/", since - 1)], [])).succeeded
        await store.txn([], [Put(p + "other", b"x")])  # outside the prefix
        assert (await store.txn([PrefixUnchangedSince(p + "n/", since)], [])).succeeded
        await store.txn([], [Delete(p + "n/a")])  # deletions are not seen
        assert (await store.txn([PrefixUnchangedSince(p + "n/", since)], [])).succeeded
        await store.txn([], [Put(p + "n/b", b"2")])
        assert not (await store.txn([PrefixUnchangedSince(p + "n/", since)], [])).succeeded

    async def test_all_compares_must_hold(self, store: Store, p: str) -> None:
        rev = (await store.txn([], [Put(p + "a", b"1")])).revision
        both = [ModRevisionIs(p + "a", rev), Absent(p + "a")]
        assert not (await store.txn(both, [Put(p + "b", b"1")])).succeeded
        assert (await store.txn([ModRevisionIs(p + "a", rev), Absent(p + "b")], [Put(p + "b", b"1")])).succeeded

    # --- leases -----------------------------------------------------------------------

    async def test_lease_revoke_deletes_keys_in_one_revision(self, store: Store, p: str) -> None:
        lease = await store.grant_lease(60)
        assert lease > 0
        await store.txn([], [Put(p + "a", b"1", lease=lease), Put(p + "b", b"2", lease=lease)])
        assert (kv := await store.get(p + "a")) is not None and kv.lease == lease
        assert await store.refresh_lease(lease) > 0
        rev0 = await store.revision()
        await store.revoke_lease(lease)
        assert (await store.range(p))[0] == []
        assert await store.revision() == rev0 + 1
        assert await store.refresh_lease(lease) == 0
        await store.revoke_lease(lease)  # gone already: no error

    async def test_put_without_lease_detaches(self, store: Store, p: str) -> None:
        lease = await store.grant_lease(60)
        await store.txn([], [Put(p + "a", b"1", lease=lease)])
        await store.txn([], [Put(p + "a", b"2")])
        await store.revoke_lease(lease)
        assert (kv := await store.get(p + "a")) is not None and kv.lease == 0

    async def test_unknown_lease_is_rejected(self, store: Store, p: str) -> None:
        lease = await store.grant_lease(60)
        await store.revoke_lease(lease)
        with pytest.raises(ValueError):
            await store.txn([], [Put(p + "a", b"1", lease=lease)])

    async def test_lease_expires(self, store: Store, p: str, backend: Backend) -> None:
        lease = await store.grant_lease(backend.lease_ttl)
        await store.txn([], [Put(p + "a", b"1", lease=lease)])

        async def gone() -> bool:
            return await store.get(p + "a") is None

        await until(gone, timeout=backend.expiry_timeout)
        assert await store.refresh_lease(lease) == 0

    async def test_refresh_keeps_lease_alive(self, store: Store, p: str, backend: Backend) -> None:
        lease = await store.grant_lease(backend.lease_ttl)
        await store.txn([], [Put(p + "a", b"1", lease=lease)])
        for _ in range(3):  # outlives the TTL (time passing is the behaviour under test)
            await asyncio.sleep(backend.lease_ttl / 2)
            assert await store.refresh_lease(lease) > 0
        assert await store.get(p + "a") is not None
        await store.revoke_lease(lease)

    # --- watches ----------------------------------------------------------------------

    async def test_watch_replays_per_revision(self, store: Store, p: str) -> None:
        r1 = (await store.txn([], [Put(p + "a", b"1"), Put(p + "b", b"2")])).revision
        await store.txn([], [Put(p[:-1] + "-outside", b"x")])
        r2 = (await store.txn([], [Delete(p + "a")])).revision
        r3 = (await store.txn([], [Put(p + "b", b"3")])).revision
        watch = store.watch(p, start_revision=r1)
        try:
            assert await next_events(watch) == (r1, [ev("put", p + "a", b"1", r1), ev("put", p + "b", b"2", r1)])
            assert await next_events(watch) == (r2, [ev("delete", p + "a", b"", r2)])
            assert await next_events(watch) == (r3, [ev("put", p + "b", b"3", r3)])
            # a start revision in the middle replays from there
            await watch.aclose()
            watch = store.watch(p, start_revision=r2)
            assert (await next_events(watch))[0] == r2
        finally:
            await watch.aclose()

    async def test_watch_follows_live_changes(self, store: Store, p: str) -> None:
        watch = store.watch(p, start_revision=0)
        try:
            await established(store, watch, p + "~live")
            r1 = (await store.txn([], [Put(p + "x", b"1")])).revision
            assert await next_events(watch) == (r1, [ev("put", p + "x", b"1", r1)])
            lease = await store.grant_lease(60)
            r2 = (await store.txn([], [Put(p + "l1", b"", lease=lease), Put(p + "l2", b"", lease=lease)])).revision
            await store.revoke_lease(lease)
            assert (await next_events(watch))[0] == r2
            rev, events = await next_events(watch)
            assert events == [ev("delete", p + "l1", b"", rev), ev("delete", p + "l2", b"", rev)]
            revs = [(await store.txn([], [Put(p + f"k{i}", b"")])).revision for i in range(5)]
            assert [(await next_events(watch))[0] for _ in revs] == revs
        finally:
            await watch.aclose()

    async def test_watch_compacted(self, store: Store, p: str) -> None:
        old = (await store.txn([], [Put(p + "a", b"1")])).revision
        point = (await store.txn([], [Put(p + "a", b"2")])).revision
        await store.compact(point)
        await store.compact(point)  # again: no error
        watch = store.watch(p, start_revision=old)
        with pytest.raises(Compacted) as info:
            await next_events(watch)
        assert info.value.compact_revision == point
        await watch.aclose()
        watch = store.watch(p, start_revision=point)
        try:
            assert (await next_events(watch))[0] == point
        finally:
            await watch.aclose()
        with pytest.raises(ValueError):
            await store.compact(await store.revision() + 10)

    async def test_watch_progress_notification(self, store: Store, p: str, backend: Backend) -> None:
        if backend.progress_timeout is None:
            pytest.skip("backend sends no progress notifications in tests")
        await store.txn([], [Put(p[:-1] + "-elsewhere", b"x")])
        current = await store.revision()
        watch = store.watch(p, start_revision=current + 1)
        try:
            async with asyncio.timeout(backend.progress_timeout):
                rev, events = await anext(watch)
            assert events == [] and rev >= current
        finally:
            await watch.aclose()

    async def test_closed_store_is_unavailable(self, store: Store, p: str) -> None:
        watch = store.watch(p, start_revision=0)
        await established(store, watch, p + "~live")
        pending = asyncio.ensure_future(next_events(watch))
        await store.close()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(pending, 10)
        with pytest.raises(StoreUnavailable):
            await store.revision()
        await store.close()  # twice is fine

    # --- outage -----------------------------------------------------------------------

    async def test_unavailable_and_back(self, store: Store, p: str, backend: Backend) -> None:
        await store.txn([], [Put(p + "a", b"1")])
        watch = store.watch(p, start_revision=0)
        await established(store, watch, p + "~live")
        pending = asyncio.ensure_future(next_events(watch, timeout=30))
        await backend.outage()
        try:
            calls = [
                lambda: store.get(p + "a"), lambda: store.range(p), store.revision,
                lambda: store.txn([], [Put(p + "b", b"")]), lambda: store.grant_lease(5),
                lambda: store.refresh_lease(1), lambda: store.revoke_lease(1),
                lambda: store.compact(1), lambda: store.range(p, revision=1),
            ]  # fmt: skip
            for call in calls:  # each fails (its deadline, not a hang; the figure: bench/controller.py)
                with pytest.raises(StoreUnavailable):
                    async with asyncio.timeout(backend.hang_guard):
                        await call()
            with pytest.raises(StoreUnavailable):  # an open watch breaks
                await asyncio.wait_for(pending, backend.hang_guard)
            await watch.aclose()
            with pytest.raises(StoreUnavailable):  # and none opens
                async with asyncio.timeout(backend.hang_guard):
                    await anext(store.watch(p, start_revision=1))
        finally:
            await backend.recover()

        async def answers() -> bool:
            try:
                return await store.get(p + "a") is not None
            except StoreUnavailable:
                return False

        await until(answers, timeout=10)
        watch = store.watch(p, start_revision=0)
        try:
            await established(store, watch, p + "~live")
            rev = (await store.txn([], [Put(p + "c", b"3")])).revision
            assert await next_events(watch) == (rev, [ev("put", p + "c", b"3", rev)])
        finally:
            await watch.aclose()
