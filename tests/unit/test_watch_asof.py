"""Watch batches carry the state as of their own revision, never a later one (MemoryStore).

A host re-registers with new underlay IPs while its lease expires and is renewed, and
endpoints are created and deleted meanwhile (tests/watch_asof.py). Every batch a subscriber
gets, replayed in order onto its snapshot, must equal the store read at that batch's
revision: through the controller's shared watch (the hub), and through a resume older
than the hub's memory (a watch of its own, which reads the hosts at the resume point)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.model import Host, Network
from watch_asof import Api, check_batches, churn


def api_of(ctl: Controller, store: MemoryStore) -> Api:
    async def expire(lease: int) -> None:
        store.expire_lease(lease)
        await asyncio.sleep(0)  # let the others run between the expiry and the renewal

    return Api(ctl.hosts.register, ctl.hosts.keepalive, ctl.endpoints.create, ctl.endpoints.delete, expire)


@pytest.fixture
async def ctl() -> AsyncIterator[Controller]:
    store = MemoryStore(progress_interval=0.2)
    yield Controller(store, Config(lease_ttl=30))
    await store.close()


async def test_every_batch_equals_the_store_at_its_revision(ctl: Controller) -> None:
    store = ctl.store
    assert isinstance(store, MemoryStore)
    await ctl.hosts.register(Host(name="h2", underlay_ip="172.30.0.12"))
    await ctl.networks.create(Network(name="blue"))
    it = ctl.watcher.watch()
    snap = await anext(it)
    await churn(api_of(ctl, store), rounds=12)
    head = await store.revision()
    assert await check_batches(it, snap, until=head, store_at=lambda r: ctl.watcher.snapshot(revision=r)) > 12
    await it.aclose()

    # A fresh controller's hub starts now: a resume from the first snapshot is older
    # than it remembers, so the subscriber gets a watch of its own from there.
    fresh = Controller(store, ctl.ctx.config)
    it = fresh.watcher.watch(start_revision=snap.revision)
    assert await check_batches(it, snap, until=head, store_at=lambda r: ctl.watcher.snapshot(revision=r)) > 12
    await it.aclose()


async def test_registration_is_one_host_change(ctl: Controller) -> None:
    """A registration puts the record and the alive key in one revision: one change."""
    it = ctl.watcher.watch()
    await anext(it)
    await ctl.hosts.register(Host(name="h1", underlay_ip="172.30.0.11"))
    async with asyncio.timeout(5):
        batch = await anext(it)
        while not batch.changes:
            batch = await anext(it)
    assert [(c.kind, c.obj.name, c.obj.alive) for c in batch.changes] == [("put", "h1", True)]
    await it.aclose()


async def test_resume_from_a_compacted_revision_gives_a_snapshot(ctl: Controller) -> None:
    """The resume's read of the hosts at its start is refused as compacted: a snapshot."""
    await ctl.hosts.register(Host(name="h1", underlay_ip="172.30.0.11"))
    old = await ctl.store.revision()
    await ctl.networks.create(Network(name="blue"))
    await ctl.store.compact(await ctl.store.revision())
    it = ctl.watcher.watch(start_revision=old - 1)
    async with asyncio.timeout(5):
        batch = await anext(it)
    assert batch.snapshot and batch.compacted and [h.name for h in batch.hosts] == ["h1"]
    await it.aclose()
