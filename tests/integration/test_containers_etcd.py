"""etcd in Docker containers through testcontainers (issue 8): the store contract against
etcd in a container, a controller process serving from it, and a 3-member cluster in
three containers on a Docker network of its own — one member killed keeps writes
working, two answer UNAVAILABLE in one line, members started again recover without
restarting the controller.

Needs a Docker engine (`.ci/run` starts one); without one, or without testcontainers,
every test here is skipped with the reason. The image is built offline (docker_etcd.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("testcontainers", reason="testcontainers is not installed: pip install -e '.[test]'")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract_store import Backend, StoreContract  # noqa: E402
from docker_etcd import EtcdCluster, EtcdMember, engine, etcd_cluster, etcd_image, etcd_member  # noqa: E402
from vxlab.client import Client  # noqa: E402
from vxlab.controller.store_etcd import EtcdStore  # noqa: E402
from vxlab.errors import Unavailable  # noqa: E402
from vxlab.model import Endpoint, Host, Network, WatchBatch  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.docker]
TIMEOUT = 1.5  # the stores' call deadline in the contract


@pytest.fixture(scope="module")
def image() -> str:
    return etcd_image(engine())


@pytest.fixture(scope="module")
def member(image: str) -> Iterator[EtcdMember]:
    with etcd_member(image) as m:
        yield m


def _back(member: EtcdMember) -> None:
    member.resume()
    member.wait_healthy()


@pytest.fixture
async def store(member: EtcdMember) -> AsyncIterator[EtcdStore]:
    if not member.healthy():  # an earlier test failed half-way through an outage
        _back(member)
    s = EtcdStore([member.endpoint], timeout=TIMEOUT)
    try:
        yield s
    finally:
        await s.close()


class TestContainerEtcdStoreContract(StoreContract):
    @pytest.fixture
    def backend(self, member: EtcdMember) -> Backend:
        async def outage() -> None:
            await asyncio.to_thread(member.kill)

        async def recover() -> None:
            await asyncio.to_thread(_back, member)

        return Backend(outage=outage, recover=recover, lease_ttl=1, expiry_timeout=5.0,
                       progress_timeout=5.0)


async def _next(it: AsyncIterator[WatchBatch]) -> WatchBatch:
    return await asyncio.wait_for(anext(it), 10)


async def test_controller_serves_from_etcd_in_a_container(member: EtcdMember, controllers: Callable[..., Any]) -> None:
    c = controllers([member.endpoint])
    async with Client(c.address) as cl:
        it = cl.watch()
        assert (await _next(it)).snapshot
        await cl.register_host(Host(name="h1", underlay_ip="172.30.0.11"))
        blue = await cl.create_network(Network(name="blue", subnet="10.20.0.0/24"))
        web = await cl.create_endpoint(Endpoint(name="web", network="blue", host="h1"))
        assert blue.vni > 0 and ipaddress.IPv4Address(web.ip) in ipaddress.IPv4Network("10.20.0.0/24")
        seen: list[tuple[str, str]] = []
        while ("Endpoint", "web") not in seen:
            seen += [(type(ch.obj).__name__, ch.obj.name) for ch in (await _next(it)).changes]
        await it.aclose()
        assert list(dict.fromkeys(seen)) == [("Host", "h1"), ("Network", "blue"), ("Endpoint", "web")]
        assert [e.name for e in await cl.list_endpoints(network="blue")] == ["web"]
    store = EtcdStore([member.endpoint])  # what the controller wrote lives in the container
    try:
        assert await store.get("/vxlab/v1/endpoints/blue/web") is not None
    finally:
        await store.close()


@pytest.fixture
def cluster(image: str) -> Iterator[EtcdCluster]:
    with etcd_cluster(image, 3) as c:
        yield c


async def _answers(cl: Client, cluster: EtcdCluster) -> None:
    """Wait until the running members see a leader and the controller answers through them."""
    await asyncio.to_thread(lambda: [m.wait_healthy() for m in cluster.members if m.running])
    deadline = time.monotonic() + 30
    while True:
        try:
            await cl.revision()
            return
        except Unavailable:
            assert time.monotonic() < deadline, "the controller did not answer through etcd"
            await asyncio.sleep(0.1)


def _cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", "--controller", address, *args],
                          capture_output=True, text=True, timeout=60)


async def test_cluster_in_containers_members_lost_and_back(cluster: EtcdCluster,
                                                          controllers: Callable[..., Any]) -> None:
    c = controllers(cluster.endpoints)
    async with Client(c.address, timeout=15) as cl:
        await cl.register_host(Host(name="h1", underlay_ip="172.30.0.11"))
        await cl.create_network(Network(name="blue", subnet="10.77.0.0/24"))
        leader = cluster.leader()
        assert leader is not None
        first, second = leader, (leader + 1) % 3  # the leader first: an election follows
        cluster.members[first].kill()
        await _answers(cl, cluster)
        await cl.create_endpoint(Endpoint(name="c1", network="blue", host="h1"))  # one down: all works
        before = await cl.revision()
        cluster.members[second].kill()  # two down: no quorum
        with pytest.raises(Unavailable):
            await cl.create_endpoint(Endpoint(name="c2", network="blue", host="h1"))
        out = await asyncio.to_thread(_cli, c.address, "network", "create", "red")
        assert out.returncode == 1 and out.stderr.startswith("error: ") and "unavailable" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        for i in (first, second):
            cluster.members[i].resume()
        await _answers(cl, cluster)
        await cl.create_endpoint(Endpoint(name="c3", network="blue", host="h1"))  # back: writes work
        it = cl.watch(start_revision=before)  # a watch resumes from before the outage
        names: list[str] = []
        while "c3" not in names:
            names += [ch.obj.name for ch in (await _next(it)).changes if isinstance(ch.obj, Endpoint)]
        await it.aclose()
        assert set(names) <= {"c2", "c3"}  # c2 was refused, yet a leader may still commit it
        assert {"c1", "c3"} <= {e.name for e in await cl.list_endpoints(network="blue")}
    assert c.proc.poll() is None  # the same controller process throughout
