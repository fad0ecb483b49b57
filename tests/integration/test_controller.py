"""The controller over gRPC against a real etcd: two processes, allocation, watch, outages."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vxlab.client import Client
from vxlab.controller.core import Controller
from vxlab.controller.store_etcd import EtcdStore
from vxlab.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from vxlab.etcdproc import free_port
from vxlab.model import Endpoint, Host, Network
from watch_asof import Api, check_batches, churn

pytestmark = pytest.mark.integration


async def _hosts(c: Client, n: int = 2) -> None:
    for i in range(1, n + 1):
        await c.register_host(Host(name=f"h{i}", underlay_ip=f"172.30.0.{10 + i}"))


async def test_two_controllers_1000_endpoints_unique(etcd, controllers):
    a, b = controllers(etcd.endpoints), controllers(etcd.endpoints)
    async with Client(a.address) as ca, Client(b.address) as cb:
        await _hosts(ca)
        await ca.create_network(Network(name="blue", subnet="10.20.0.0/20"))
        sem = asyncio.Semaphore(64)

        async def create(i: int):
            async with sem:
                c = ca if i % 2 else cb
                return await c.create_endpoint(Endpoint(name=f"c{i}", network="blue", host=f"h{i % 2 + 1}"))

        eps = await asyncio.gather(*(create(i) for i in range(1000)))
        listed = await cb.list_endpoints(network="blue")
    assert len(eps) == 1000 and len(listed) == 1000
    assert len({e.ip for e in eps}) == 1000, "duplicate IP"
    assert len({e.mac for e in eps}) == 1000, "duplicate MAC"
    assert {(e.name, e.ip, e.mac) for e in eps} == {(e.name, e.ip, e.mac) for e in listed}
    net = ipaddress.IPv4Network("10.20.0.0/20")
    assert all(ipaddress.IPv4Address(e.ip) in net and e.ip not in ("10.20.0.0", "10.20.0.1") for e in eps)


async def test_two_controllers_concurrent_vnis(etcd, controllers):
    a, b = controllers(etcd.endpoints), controllers(etcd.endpoints)
    async with Client(a.address) as ca, Client(b.address) as cb:
        nets = await asyncio.gather(*((ca if i % 2 else cb).create_network(Network(name=f"n{i}")) for i in range(40)))
        assert sorted(n.vni for n in nets) == list(range(4096, 4136))
        subnets = [ipaddress.IPv4Network(n.subnet) for n in nets]
        assert not any(x.overlaps(y) for i, x in enumerate(subnets) for y in subnets[i + 1:])
        # Both controllers serve the same state.
        assert {n.name for n in await ca.list_networks()} == {n.name for n in await cb.list_networks()}


async def test_validation_over_grpc_writes_nothing(etcd, controllers):
    c = controllers(etcd.endpoints)
    store = EtcdStore(etcd.endpoints)
    async with Client(c.address) as cl:
        rev = await store.revision()
        with pytest.raises(InvalidArgument) as e:
            await cl.create_network(Network(name="blue", subnet="10.0.0.0/33"))
        assert e.value.field == "network.subnet"
        with pytest.raises(NotFound):
            await cl.create_endpoint(Endpoint(name="x", network="nope", host="h1"))
        with pytest.raises(InvalidArgument) as e:
            await cl.create_network(Network(name="blue", vni=99_999_999))
        assert "network.vni" in str(e.value)
        assert await store.revision() == rev
        await _hosts(cl, 1)
        await cl.create_network(Network(name="blue"))
        await cl.create_endpoint(Endpoint(name="web", network="blue", host="h1"))
        with pytest.raises(FailedPrecondition):
            await cl.delete_network("blue")
        assert await cl.delete_network("blue", force=True) == 1
    await store.close()


async def _next(it, timeout: float = 10.0):
    return await asyncio.wait_for(it.__anext__(), timeout)


async def test_watch_order_resume_and_compaction(etcd, controllers):
    c = controllers(etcd.endpoints)
    store = EtcdStore(etcd.endpoints)
    async with Client(c.address) as cl:
        await _hosts(cl, 1)
        it = cl.watch()
        snap = await _next(it)
        assert snap.snapshot and [h.name for h in snap.hosts] == ["h1"]
        await cl.create_network(Network(name="blue"))
        for i in range(5):
            await cl.create_endpoint(Endpoint(name=f"c{i}", network="blue", host="h1"))
        seen = []
        while len(seen) < 6:
            b = await _next(it)
            seen += [(b.revision, ch) for ch in b.changes]
        assert [r for r, _ in seen] == sorted(r for r, _ in seen)
        assert [ch.obj.name for _, ch in seen] == ["blue", "c0", "c1", "c2", "c3", "c4"]
        await it.aclose()
        # Resume after c1: exactly c2, c3, c4.
        it = cl.watch(start_revision=seen[2][0])
        names = []
        while len(names) < 3:
            b = await _next(it)
            assert not b.snapshot
            names += [ch.obj.name for ch in b.changes]
        assert names == ["c2", "c3", "c4"]
        await it.aclose()
        # Compact everything, then resume from an old revision at a controller that does
        # not remember it (a fresh one; a running one serves resumes from its memory):
        # a fresh snapshot, marked compacted.
        await store.compact(await store.revision())
        other = controllers(etcd.endpoints)
        async with Client(other.address) as cl2:
            it = cl2.watch(start_revision=seen[0][0])
            b = await _next(it)
            assert b.snapshot and b.compacted and len(b.endpoints) == 5
            await it.aclose()
        # The running controller resumes the same revision from its memory, in order.
        it = cl.watch(start_revision=seen[0][0])
        names = []
        while len(names) < 5:
            b = await _next(it)
            assert not b.snapshot
            names += [ch.obj.name for ch in b.changes]
        assert names == ["c0", "c1", "c2", "c3", "c4"]
        await it.aclose()
    await store.close()


async def test_watch_batches_are_the_state_at_their_revision(etcd, controllers):
    """Under concurrent changes through two controllers (h1 re-registering with a new
    underlay IP while its lease ends and is renewed, endpoints created and deleted), every
    batch, replayed in order onto the snapshot, equals etcd read at the batch's revision:
    from the shared watch, and from a resume older than a fresh controller remembers."""
    a, b = controllers(etcd.endpoints), controllers(etcd.endpoints)
    store = EtcdStore(etcd.endpoints)
    at = Controller(store).watcher  # reads the state as of a revision (no hub: not watched)
    try:
        async with Client(a.address) as ca, Client(b.address) as cb:
            await ca.register_host(Host(name="h2", underlay_ip="172.30.0.12"))
            await ca.create_network(Network(name="blue"))
            it = ca.watch()
            snap = await _next(it)
            api = Api(cb.register_host, ca.keepalive, cb.create_endpoint, ca.delete_endpoint, store.revoke_lease)
            await churn(api, rounds=10)
            head = await store.revision()
            assert await check_batches(it, snap, until=head, store_at=lambda r: at.snapshot(revision=r)) > 10
            await it.aclose()
            fresh = controllers(etcd.endpoints)
            async with Client(fresh.address) as cf:
                it = cf.watch(start_revision=snap.revision)
                assert await check_batches(it, snap, until=head, store_at=lambda r: at.snapshot(revision=r)) > 10
                await it.aclose()
    finally:
        await store.close()


async def test_etcd_outage_unavailable_then_recovers(etcd, controllers):
    c = controllers(etcd.endpoints)
    async with Client(c.address, timeout=15) as cl:
        await cl.create_network(Network(name="blue"))
        etcd.stop()
        with pytest.raises(Unavailable):
            await cl.create_network(Network(name="red"))
        with pytest.raises(Unavailable):
            await cl.list_networks()
        async with grpc.aio.insecure_channel(c.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for _ in range(50):
                if (await stub.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("health did not report NOT_SERVING while etcd was down")
            etcd.restart()
            for _ in range(100):
                try:
                    await cl.create_network(Network(name="red"))
                    break
                except Unavailable:
                    await asyncio.sleep(0.2)
            else:
                pytest.fail("controller did not recover after etcd came back")
            assert {n.name for n in await cl.list_networks()} == {"blue", "red"}
            for _ in range(50):
                if (await stub.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("health did not return to SERVING")


async def test_host_lease_expiry_and_return(etcd, controllers):
    c = controllers(etcd.endpoints, lease_ttl=1)
    async with Client(c.address) as cl:
        _, lease, ttl = await cl.register_host(Host(name="h1", underlay_ip="172.30.0.11"))
        assert ttl == 1 and (await cl.get_host("h1")).alive
        for _ in range(300):  # no keepalive: dead once etcd expires the lease (TTL + its check)
            if not (await cl.get_host("h1")).alive:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("h1 still alive 30 s after its last keepalive (lease TTL 1 s)")
        new, _, renewed = await cl.keepalive("h1", lease)
        assert not renewed and new != lease and (await cl.get_host("h1")).alive


def test_health_reflection_and_metrics(etcd, controllers):
    c = controllers(etcd.endpoints, metrics=True)
    with grpc.insecure_channel(c.address) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"vxlab.v1.NetworkService", "vxlab.v1.WatchService", "grpc.health.v1.Health"} <= services
        asyncio.run(_some_calls(c.address))
    text = urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=5).read().decode()
    assert 'vxlab_controller_requests_total{code="OK",method="CreateNetwork"} 1.0' in text
    assert 'vxlab_controller_requests_total{code="ALREADY_EXISTS",method="CreateNetwork"} 1.0' in text
    assert "vxlab_controller_request_seconds_bucket" in text
    assert "vxlab_controller_watch_subscribers" in text and "vxlab_controller_txn_retries_total" in text


async def _some_calls(address: str) -> None:
    async with Client(address) as cl:
        await cl.create_network(Network(name="blue"))
        with pytest.raises(Exception):
            await cl.create_network(Network(name="blue"))


def test_listen_netns_serves_inside_that_namespace_only(etcd, controllers, tmp_path):
    """`--listen-netns NS=ADDR`: the listener is made in NS (a lab's switch, `control:
    underlay`), the process and its --listen stay where they are."""
    ns, other = f"vxt{secrets.token_hex(3)}ln", f"vxt{secrets.token_hex(3)}lo"
    for name in (ns, other):
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        port = free_port()
        c = controllers(etcd.endpoints, extra=("--listen-netns", f"{ns}=127.0.0.1:{port}"))  # served on --listen
        ls = [sys.executable, "-m", "vxlab.cli", "--controller", f"127.0.0.1:{port}", "host", "ls", "--json"]
        inside = subprocess.run(["ip", "netns", "exec", ns, *ls], capture_output=True, text=True, timeout=60)
        assert inside.returncode == 0 and inside.stdout.strip() == "[]", inside.stderr
        for where in ("", other):  # nothing listens on that port here, nor in another namespace
            ss = subprocess.run(["ip", "netns", "exec", where, "ss", "-Hltn"] if where else ["ss", "-Hltn"],
                                capture_output=True, text=True, check=True).stdout
            assert f":{port} " not in ss, ss
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert f"127.0.0.1:{port} in network namespace {ns}" in c.log.read_text()
    finally:
        for name in (ns, other):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    missing = f"vxt{secrets.token_hex(3)}no"
    bad = subprocess.run([sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", "127.0.0.1:0",
                          "--etcd", ",".join(etcd.endpoints), "--listen-netns", f"{missing}=127.0.0.1:7070"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: listen-netns: cannot enter network namespace {missing}: No such file or directory")
