"""Shared by the unit (MemoryStore) and integration (etcd) tests that watch batches carry
the state as of their own revision: concurrent churn, and a checker that replays every
batch onto the subscriber's snapshot and compares it with the store read at that batch's
revision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vxlab.model import Endpoint, Host, Network, Policy, WatchBatch

State = dict[tuple[str, ...], Any]


def state_of(snap: WatchBatch) -> State:
    return {key(o): o for o in (*snap.hosts, *snap.networks, *snap.endpoints, *snap.policies)}


def key(obj: Any) -> tuple[str, ...]:
    if isinstance(obj, Endpoint | Policy):
        return type(obj).__name__, obj.network, obj.name
    assert isinstance(obj, Host | Network)
    return type(obj).__name__, obj.name


def replay(state: State, batch: WatchBatch) -> None:
    for change in batch.changes:
        if change.kind == "delete":
            state.pop(key(change.obj), None)
        else:
            state[key(change.obj)] = change.obj


@dataclass
class Api:
    """The calls the churn makes: the core's or the gRPC client's (same signatures), and
    how a lease ends without its holder (expiry in MemoryStore, a revoke on etcd)."""

    register: Callable[[Host], Awaitable[tuple[Host, int, int]]]
    keepalive: Callable[[str, int], Awaitable[tuple[int, int, bool]]]
    create_endpoint: Callable[[Endpoint], Awaitable[Endpoint]]
    delete_endpoint: Callable[[str, str], Awaitable[None]]
    end_lease: Callable[[int], Awaitable[None]]


async def churn(api: Api, *, rounds: int, network: str = "blue") -> None:
    """All at once: h1 re-registers with a new underlay IP each round, its lease ends and
    is renewed, and endpoints on h1 and h2 are created and deleted."""
    lease = (await api.register(Host(name="h1", underlay_ip="172.30.0.11")))[1]

    async def reregister() -> None:
        nonlocal lease
        for i in range(rounds):
            lease = (await api.register(Host(name="h1", underlay_ip=f"172.30.1.{i + 1}")))[1]

    async def flap() -> None:
        nonlocal lease
        for _ in range(rounds):
            await api.end_lease(lease)
            lease = (await api.keepalive("h1", lease))[0]

    async def endpoints(offset: int) -> None:
        for i in range(rounds):
            await api.create_endpoint(Endpoint(name=f"c{offset + i}", network=network, host=f"h{i % 2 + 1}"))
            if i % 3 == 2:
                await api.delete_endpoint(network, f"c{offset + i - 1}")

    await asyncio.gather(reregister(), flap(), endpoints(0), endpoints(100))


async def check_batches(it: AsyncIterator[WatchBatch], snap: WatchBatch, *, until: int,
                        store_at: Callable[[int], Awaitable[WatchBatch]], timeout: float = 20) -> int:
    """Replay the batches of `it` (after its snapshot `snap`) up to revision `until`,
    each compared with `store_at(its revision)`; returns how many carried changes."""
    state, changed = state_of(snap), 0
    async with asyncio.timeout(timeout):
        while True:
            batch = await anext(it)
            assert not batch.snapshot
            replay(state, batch)
            changed += bool(batch.changes)
            assert state == state_of(await store_at(batch.revision)), \
                f"the batch at revision {batch.revision} differs from the store then"
            if batch.revision >= until:
                return changed
