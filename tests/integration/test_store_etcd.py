"""`EtcdStore` against a real etcd (started by `EtcdProcess`): the shared store contract,
plus what only a real server shows: frozen and killed etcd, recovery of the same store
object after a restart, server-side cancellation of closed watches, endpoint parsing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract_store import Backend, StoreContract, established, next_events, until
from vxlab.controller.store import Put, StoreUnavailable
from vxlab.controller.store_etcd import EtcdStore, channel_target

from vxlab.etcdproc import EtcdProcess

pytestmark = pytest.mark.integration

TIMEOUT = 1.5  # the stores' call deadline in these tests
HANG = 10.0  # a call pending this long hangs (fails the test); how long calls take: bench/
DEADLINE = r"did not answer within|DEADLINE_EXCEEDED"  # what a call that hit its deadline says


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    proc = EtcdProcess(tmp_path_factory.mktemp("etcd"), progress_notify_interval=1.0)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def store(etcd: EtcdProcess) -> AsyncIterator[EtcdStore]:
    if not etcd.running:  # an earlier test failed half-way through an outage
        etcd.start()
    s = EtcdStore(etcd.endpoints, timeout=TIMEOUT)
    try:
        yield s
    finally:
        await s.close()


async def store_answers(store: EtcdStore) -> bool:
    try:
        await store.revision()
        return True
    except StoreUnavailable:
        return False


class TestEtcdStoreContract(StoreContract):
    @pytest.fixture
    def backend(self, etcd: EtcdProcess) -> Backend:
        async def outage() -> None:
            etcd.stop()

        async def recover() -> None:
            etcd.start()  # not via a thread: the child dies with the thread that started it

        return Backend(outage=outage, recover=recover, lease_ttl=1, expiry_timeout=5.0,
                       progress_timeout=5.0)  # fmt: skip


async def test_frozen_etcd_times_out_instead_of_hanging(store: EtcdStore, etcd: EtcdProcess) -> None:
    assert etcd.pid is not None
    await store.txn([], [Put("/frozen/a", b"1")])
    quick = EtcdStore(etcd.endpoints, timeout=0.5)
    await quick.revision()  # connected before the freeze
    os.kill(etcd.pid, signal.SIGSTOP)
    try:
        # Each call ends at its deadline (how long that takes: bench/controller.py).
        for call in (quick.revision, lambda: quick.txn([], [Put("/frozen/b", b"")])):
            with pytest.raises(StoreUnavailable, match=DEADLINE):
                async with asyncio.timeout(HANG):
                    await call()
        with pytest.raises(StoreUnavailable, match=DEADLINE):
            async with asyncio.timeout(HANG):
                await anext(quick.watch("/frozen/", start_revision=1))
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
        await quick.close()
    await until(lambda: store_answers(store), timeout=5)
    assert (kv := await store.get("/frozen/a")) is not None and kv.value == b"1"


async def test_killed_etcd_then_same_store_recovers(store: EtcdStore, etcd: EtcdProcess) -> None:
    lease = await store.grant_lease(60)
    rev = (await store.txn([], [Put("/crash/a", b"1", lease=lease)])).revision
    watch = store.watch("/crash/", start_revision=0)
    await established(store, watch, "/crash/~live")
    pending = asyncio.ensure_future(next_events(watch, timeout=30))
    etcd.kill()
    try:
        with pytest.raises(StoreUnavailable):  # the open watch breaks
            await asyncio.wait_for(pending, HANG)
        with pytest.raises(StoreUnavailable):
            await store.txn([], [Put("/crash/b", b"")])
    finally:
        etcd.start()
    await until(lambda: store_answers(store), timeout=10)
    assert (kv := await store.get("/crash/a")) is not None and kv.mod_revision == rev  # durable
    assert await store.refresh_lease(lease) > 0  # leases survive a restart
    watch = store.watch("/crash/", start_revision=0)
    try:
        await established(store, watch, "/crash/~live")
        new = (await store.txn([], [Put("/crash/b", b"2")])).revision
        assert (await next_events(watch))[0] == new
    finally:
        await watch.aclose()
        await store.revoke_lease(lease)


def etcd_watchers(etcd: EtcdProcess) -> int:
    metrics = urllib.request.urlopen(f"{etcd.endpoints[0]}/metrics", timeout=2).read().decode()
    match = re.search(r"^etcd_debugging_mvcc_watcher_total (\d+)", metrics, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


async def test_closing_a_watch_cancels_it_on_etcd(store: EtcdStore, etcd: EtcdProcess) -> None:
    before = etcd_watchers(etcd)
    watches = [store.watch(f"/w{i}/", start_revision=0) for i in range(3)]
    pending = [asyncio.ensure_future(anext(w)) for w in watches]

    async def count_is(n: int) -> bool:
        return etcd_watchers(etcd) == n

    await until(lambda: count_is(before + 3), timeout=5)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for w in watches:
        await w.aclose()
    await until(lambda: count_is(before), timeout=5)


async def test_silent_server_hits_the_deadline() -> None:
    with socket.socket() as sock:  # accepts TCP connections (backlog) but never speaks gRPC
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        store = EtcdStore([f"http://127.0.0.1:{sock.getsockname()[1]}"], timeout=0.5)
        with pytest.raises(StoreUnavailable):  # the deadline, or gRPC giving up on the handshake
            async with asyncio.timeout(HANG):
                await store.revision()
        await store.close()


async def test_nothing_listening_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = EtcdStore([f"http://127.0.0.1:{port}"], timeout=HANG * 10)
    with pytest.raises(StoreUnavailable) as info:  # refused at once: long before the deadline
        async with asyncio.timeout(HANG):
            await store.get("x")
    assert "UNAVAILABLE" in str(info.value) and not re.search(DEADLINE, str(info.value)), info.value
    await store.close()


def test_channel_target() -> None:
    assert channel_target(["http://127.0.0.1:2379"]) == "127.0.0.1:2379"
    assert channel_target(["localhost:1", "http://127.0.0.1:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target(["http://[::1]:5", "http://[::1]:6"]) == "ipv6:[::1]:5,[::1]:6"
    assert channel_target(["https://127.0.0.1:2379"]) == "127.0.0.1:2379"  # TLS: the scheme picks credentials
    with pytest.raises(ValueError):
        channel_target(["unix:///tmp/etcd.sock"])
    with pytest.raises(ValueError):
        EtcdStore([])
