"""Unit tests of `MemoryStore` beyond the shared contract: fake-clock lease expiry, the
test switches (`set_available`, `expire_lease`), watch edge cases, and a property test
that replaying the watch history rebuilds the store, and reading at each past revision
gives the state of then."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vxlab.controller.store import (
    Absent,
    Compacted,
    Delete,
    DeletePrefix,
    Event,
    Op,
    Put,
    StoreUnavailable,
)
from vxlab.controller.store_memory import MemoryStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_fresh_store_is_at_revision_one() -> None:
    store = MemoryStore()
    assert await store.revision() == 1
    assert await store.range("") == ([], 1)
    assert (await store.txn([], [Put("a", b"")])).revision == 2


async def test_lease_expiry_is_lazy_and_one_revision() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = await store.grant_lease(10)
    await store.txn([], [Put("a", b"1", lease=lease), Put("b", b"2", lease=lease)])
    clock.now += 9.9
    assert await store.refresh_lease(lease) == 10  # renewed until now + 10
    clock.now += 9.9
    assert await store.get("a") is not None
    rev = await store.revision()
    clock.now += 0.2
    assert await store.get("a") is None and await store.get("b") is None
    assert await store.revision() == rev + 1
    assert await store.refresh_lease(lease) == 0


async def test_leases_expire_in_deadline_order() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    late = await store.grant_lease(5)
    early = await store.grant_lease(3)
    await store.txn([], [Put("late", b"", lease=late), Put("early", b"", lease=early)])
    start = await store.revision()
    clock.now += 6
    watch = store.watch("", start_revision=start + 1)
    assert [(await anext(watch))[1][0].key for _ in range(2)] == ["early", "late"]
    await watch.aclose()


async def test_expire_lease_helper() -> None:
    store = MemoryStore()
    lease = await store.grant_lease(3600)
    empty = await store.grant_lease(3600)
    await store.txn([], [Put("a", b"", lease=lease)])
    rev = await store.revision()
    store.expire_lease(lease)
    store.expire_lease(lease)  # already gone
    store.expire_lease(empty)  # no keys: no revision
    assert await store.get("a") is None
    assert await store.revision() == rev + 1
    assert await store.refresh_lease(empty) == 0


async def test_watch_sees_lease_expiry_without_other_calls() -> None:
    store = MemoryStore()
    lease = await store.grant_lease(1)
    rev = (await store.txn([], [Put("a", b"", lease=lease)])).revision
    watch = store.watch("", start_revision=rev + 1)
    async with asyncio.timeout(3):
        assert await anext(watch) == (rev + 1, [Event("delete", "a", b"", rev + 1)])
    await watch.aclose()


async def test_set_available_breaks_open_watch_and_recovers() -> None:
    store = MemoryStore()
    watch = store.watch("", start_revision=0)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    store.set_available(False)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(pending, 1)
    with pytest.raises(StoreUnavailable):
        await store.grant_lease(5)
    store.set_available(True)
    assert (await store.txn([Absent("a")], [Put("a", b"")])).succeeded


async def test_closed_store_is_unavailable() -> None:
    store = MemoryStore()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.revision()


async def test_start_revision_zero_means_from_now() -> None:
    store = MemoryStore()
    await store.txn([], [Put("old", b"")])
    watch = store.watch("", start_revision=0)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    rev = (await store.txn([], [Put("new", b"")])).revision
    assert await pending == (rev, [Event("put", "new", b"", rev)])
    await watch.aclose()


async def test_lagging_watch_is_compacted() -> None:
    store = MemoryStore()
    for i in range(3):
        await store.txn([], [Put(f"k{i}", b"")])
    watch = store.watch("", start_revision=2)
    assert (await anext(watch))[0] == 2
    await store.compact(4)
    with pytest.raises(Compacted) as info:
        await anext(watch)
    assert info.value.compact_revision == 4


async def test_progress_notification_only_when_caught_up() -> None:
    store = MemoryStore(progress_interval=0.05)
    await store.txn([], [Put("a", b"")])
    await store.txn([], [Put("b", b"")])
    watch = store.watch("a", start_revision=1)
    assert await anext(watch) == (2, [Event("put", "a", b"", 2)])
    assert await anext(watch) == (3, [])  # "b" was skipped, progress is at the head
    await watch.aclose()


async def test_grant_lease_rejects_nonpositive_ttl() -> None:
    with pytest.raises(ValueError):
        await MemoryStore().grant_lease(0)


keys = st.sampled_from(["a", "a/1", "a/2", "b", "b/1"])
ops = st.one_of(
    st.builds(Put, keys, st.binary(max_size=3)),
    st.builds(Delete, keys),
    st.builds(DeletePrefix, st.sampled_from(["a", "a/", "b/", "c"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(ops, max_size=3), max_size=12))
def test_replaying_history_rebuilds_state(txns: list[list[Op]]) -> None:
    async def run() -> None:
        store = MemoryStore()
        expected_rev = 1
        seen = {1: (await store.range(""))[0]}  # the keys at each revision, as read then
        for txn_ops in txns:
            before = {kv.key: kv.value for kv in (await store.range(""))[0]}
            try:
                res = await store.txn([], txn_ops)
            except ValueError:
                assert await store.revision() == expected_rev
                continue
            after = {kv.key: kv.value for kv in (await store.range(""))[0]}
            expected_rev += 1 if (before != after or any(isinstance(o, Put) for o in txn_ops)) else 0
            assert res.revision == expected_rev
            seen[res.revision] = (await store.range(""))[0]
        for rev, kvs in seen.items():  # reads at a past revision see exactly that state
            assert await store.range("", revision=rev) == (kvs, rev)
        state: dict[str, bytes] = {}
        watch = store.watch("", start_revision=1)
        while (head := await store.revision()) > 1:
            rev, events = await anext(watch)
            for e in events:
                if e.kind == "put":
                    state[e.key] = e.value
                else:
                    state.pop(e.key)
            if rev == head:
                break
        await watch.aclose()
        assert state == {kv.key: kv.value for kv in (await store.range(""))[0]}

    asyncio.run(run())
