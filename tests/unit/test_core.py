"""The controller core against the in-memory store: allocation, validation, liveness, watch.

Every rejected request is checked to have written nothing (the store revision is
unchanged).
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from vxlab.model import Endpoint, Host, Network


@pytest.fixture
async def ctl():
    store = MemoryStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=1))
    await c.hosts.register(Host(name="h1", underlay_ip="172.30.0.11"))
    await c.hosts.register(Host(name="h2", underlay_ip="172.30.0.12"))
    yield c
    await store.close()


async def unchanged(ctl: Controller, coro, exc: type[Exception]) -> Exception:
    before = await ctl.store.revision()
    with pytest.raises(exc) as info:
        await coro
    assert await ctl.store.revision() == before, "a rejected request wrote something"
    return info.value


async def test_network_defaults(ctl):
    n = await ctl.networks.create(Network(name="blue"))
    assert n.subnet == "10.0.0.0/24" and n.gateway == "10.0.0.1" and n.vni == 4096
    assert len(n.id) == 64 and n.driver == "overlay" and n.created.endswith("Z")
    n2 = await ctl.networks.create(Network(name="red"))
    assert n2.subnet == "10.0.1.0/24" and n2.vni == 4097
    assert [x.name for x in (await ctl.networks.list())[0]] == ["blue", "red"]


async def test_network_explicit_and_pool_skips(ctl):
    n = await ctl.networks.create(Network(name="a", subnet="10.0.0.0/16", gateway="10.0.0.254", vni=42, mtu=1400))
    assert (n.subnet, n.gateway, n.vni, n.mtu) == ("10.0.0.0/16", "10.0.0.254", 42, 1400)
    auto = await ctl.networks.create(Network(name="b"))
    assert auto.subnet == "10.1.0.0/24" and auto.vni == 4096


@pytest.mark.parametrize("net,field,reason", [
    (Network(name=""), "network.name", "required"),
    (Network(name="Blue"), "network.name", "not a valid name"),
    (Network(name="a" * 12), "network.name", "longer than 11"),
    (Network(name="x;rm -rf"), "network.name", "not a valid name"),
    (Network(name="n", subnet="10.0.0.0"), "network.subnet", "not a CIDR"),
    (Network(name="n", subnet="banana/24"), "network.subnet", "not a valid IPv4 CIDR"),
    (Network(name="n", subnet="fd00::/64"), "network.subnet", "IPv6 is not supported yet"),
    (Network(name="n", subnet="10.0.0.1/24"), "network.subnet", "host bits set"),
    (Network(name="n", subnet="10.0.0.0/31"), "network.subnet", "too small"),
    (Network(name="n", subnet="10.0.0.0/24", gateway="10.0.1.1"), "network.gateway", "outside subnet"),
    (Network(name="n", subnet="10.0.0.0/24", gateway="10.0.0.255"), "network.gateway", "broadcast"),
    (Network(name="n", gateway="10.0.0.1"), "network.gateway", "needs an explicit subnet"),
    (Network(name="n", vni=16_777_216), "network.vni", "out of range"),
    (Network(name="n", mtu=100), "network.mtu", "out of range"),
    (Network(name="n", driver="macvlan"), "network.driver", "not one of"),
    (Network(name="n", labels={"bad key!": "x"}), "network.labels", "label keys"),
])
async def test_network_validation(ctl, net, field, reason):
    err = await unchanged(ctl, ctl.networks.create(net), InvalidArgument)
    assert err.field.startswith(field) and reason in err.reason, str(err)


async def test_network_conflicts(ctl):
    await ctl.networks.create(Network(name="blue", subnet="10.10.0.0/16", vni=5000))
    await unchanged(ctl, ctl.networks.create(Network(name="blue")), AlreadyExists)
    err = await unchanged(ctl, ctl.networks.create(Network(name="red", subnet="10.10.3.0/24")), FailedPrecondition)
    assert "overlaps network 'blue'" in str(err)
    err = await unchanged(ctl, ctl.networks.create(Network(name="red", vni=5000)), AlreadyExists)
    assert "network.vni" in str(err)


async def test_endpoint_ips_lowest_free_and_macs(ctl):
    await ctl.networks.create(Network(name="blue", subnet="10.10.0.0/24"))
    eps = [await ctl.endpoints.create(Endpoint(name=f"c{i}", network="blue", host="h1")) for i in range(3)]
    assert [e.ip for e in eps] == ["10.10.0.2", "10.10.0.3", "10.10.0.4"]
    macs = {e.mac for e in eps}
    assert len(macs) == 3
    for m in macs:
        first = int(m.split(":")[0], 16)
        assert first & 0b10 and not first & 0b1, "locally administered unicast"
    await ctl.endpoints.delete("blue", "c0")
    again = await ctl.endpoints.create(Endpoint(name="c9", network="blue", host="h2"))
    assert again.ip == "10.10.0.2" and again.mac not in macs, "IP reuse must not reuse the MAC"


async def test_endpoint_explicit_ip_and_errors(ctl):
    await ctl.networks.create(Network(name="blue", subnet="10.10.0.0/24"))
    e = await ctl.endpoints.create(Endpoint(name="web", network="blue", host="h1", ip="10.10.0.50"))
    assert e.ip == "10.10.0.50"
    await unchanged(ctl, ctl.endpoints.create(Endpoint(name="x", network="blue", host="h1", ip="10.10.0.50")), AlreadyExists)
    await unchanged(ctl, ctl.endpoints.create(Endpoint(name="web", network="blue", host="h2")), AlreadyExists)
    for ip, reason in [("10.10.1.5", "outside subnet"), ("10.10.0.0", "network address"),
                       ("10.10.0.255", "broadcast"), ("10.10.0.1", "gateway"), ("nope", "not a valid IPv4")]:
        err = await unchanged(ctl, ctl.endpoints.create(Endpoint(name="x", network="blue", host="h1", ip=ip)), InvalidArgument)
        assert err.field == "endpoint.ip" and reason in err.reason
    err = await unchanged(ctl, ctl.endpoints.create(Endpoint(name="x", network="nope", host="h1")), NotFound)
    assert "endpoint.network" in str(err)
    err = await unchanged(ctl, ctl.endpoints.create(Endpoint(name="x", network="blue", host="h9")), NotFound)
    assert "endpoint.host: no host named 'h9'" in str(err)


async def test_subnet_full(ctl):
    await ctl.networks.create(Network(name="tiny", subnet="10.9.0.0/30"))
    await ctl.endpoints.create(Endpoint(name="a", network="tiny", host="h1"))  # .2 (gateway .1)
    await unchanged(ctl, ctl.endpoints.create(Endpoint(name="b", network="tiny", host="h1")), ResourceExhausted)


async def test_concurrent_endpoint_creates_unique(ctl):
    await ctl.networks.create(Network(name="blue", subnet="10.10.0.0/22"))
    eps = await asyncio.gather(*(ctl.endpoints.create(Endpoint(name=f"c{i}", network="blue", host="h1")) for i in range(200)))
    assert len({e.ip for e in eps}) == 200 and len({e.mac for e in eps}) == 200
    ips = sorted(ipaddress.IPv4Address(e.ip) for e in eps)
    assert str(ips[0]) == "10.10.0.2" and str(ips[-1]) == "10.10.0.201"


async def test_concurrent_vni(ctl):
    nets = await asyncio.gather(*(ctl.networks.create(Network(name=f"n{i}")) for i in range(20)))
    assert sorted(n.vni for n in nets) == list(range(4096, 4116))
    assert len({n.subnet for n in nets}) == 20


async def test_network_delete_precondition_and_force(ctl):
    await ctl.networks.create(Network(name="blue"))
    await ctl.endpoints.create(Endpoint(name="web", network="blue", host="h1"))
    err = await unchanged(ctl, ctl.networks.delete("blue"), FailedPrecondition)
    assert "web" in str(err)
    assert await ctl.networks.delete("blue", force=True) == 1
    await unchanged(ctl, ctl.networks.get("blue"), NotFound)
    kvs, _ = await ctl.store.range(ctl.ctx.keys.root)
    assert [kv.key for kv in kvs if "/alloc/" in kv.key] == [], "allocations released"
    again = await ctl.networks.create(Network(name="blue"))
    assert again.vni == 4096


async def test_host_liveness_and_deregister(ctl):
    hosts, _ = await ctl.hosts.list()
    assert [(h.name, h.alive) for h in hosts] == [("h1", True), ("h2", True)]
    _, lease, _ = await ctl.hosts.register(Host(name="h3", underlay_ip="172.30.0.13"))
    ctl.store.expire_lease(lease)
    assert (await ctl.hosts.get("h3")).alive is False
    new_lease, ttl, renewed = await ctl.hosts.keepalive("h3", lease)
    assert not renewed and new_lease != lease and ttl == 1
    assert (await ctl.hosts.get("h3")).alive is True, "a returning host is alive again at once"
    await ctl.networks.create(Network(name="blue"))
    await ctl.endpoints.create(Endpoint(name="web", network="blue", host="h3"))
    await unchanged(ctl, ctl.hosts.deregister("h3"), FailedPrecondition)
    await ctl.hosts.deregister("h3", force=True)
    assert (await ctl.endpoints.list(network="blue"))[0] == []
    await unchanged(ctl, ctl.hosts.keepalive("h3", 0), NotFound)
    await unchanged(ctl, ctl.hosts.register(Host(name="h4", underlay_ip="")), InvalidArgument)
    await unchanged(ctl, ctl.hosts.register(Host(name="h4", underlay_ip="fe80::1")), InvalidArgument)


async def _collect(it, n):
    out = []
    async for b in it:
        out.append(b)
        if len(out) == n:
            break
    return out


async def test_watch_snapshot_then_changes_and_resume(ctl):
    it = ctl.watcher.watch()
    snap = await it.__anext__()
    assert snap.snapshot and {h.name for h in snap.hosts} == {"h1", "h2"} and all(h.alive for h in snap.hosts)
    await ctl.networks.create(Network(name="blue"))
    await ctl.endpoints.create(Endpoint(name="web", network="blue", host="h1"))
    await ctl.endpoints.delete("blue", "web")
    batches = []
    while len([b for b in batches if b.changes]) < 3:
        batches.append(await asyncio.wait_for(it.__anext__(), 5))
    real = [b for b in batches if b.changes]
    assert [(c.kind, type(c.obj).__name__) for b in real for c in b.changes] == [
        ("put", "Network"), ("put", "Endpoint"), ("delete", "Endpoint")]
    assert [b.revision for b in real] == sorted(b.revision for b in real)
    await it.aclose()
    # Resume after the network's revision: only the two endpoint changes.
    it2 = ctl.watcher.watch(start_revision=real[0].revision)
    got = [b for b in await _collect(it2, 2)]
    assert not got[0].snapshot and got[0].revision == real[1].revision
    assert got[1].changes[0].kind == "delete" and got[1].changes[0].obj.network == "blue"
    await it2.aclose()


async def test_snapshots_from_the_hub_view_equal_the_store(ctl):
    """A joiner's snapshot comes from the shared watch's materialized view: it must say
    exactly what a range read of the store says, after puts, deletes and liveness."""
    first = ctl.watcher.watch()
    await first.__anext__()  # the hub runs from here on
    await ctl.networks.create(Network(name="blue"))
    made = [await ctl.endpoints.create(Endpoint(name=f"c{i}", network="blue", host=f"h{i % 2 + 1}")) for i in range(4)]
    await ctl.endpoints.delete("blue", "c1")
    _, lease, _ = await ctl.hosts.register(Host(name="h3", underlay_ip="172.30.0.13"))
    ctl.store.expire_lease(lease)
    want = await ctl.watcher.snapshot()
    for _ in range(50):  # until the hub has applied everything
        joiner = ctl.watcher.watch()
        snap = await joiner.__anext__()
        await joiner.aclose()
        if snap.revision >= want.revision:
            break
        await asyncio.sleep(0.02)
    assert (snap.hosts, snap.networks, snap.endpoints) == (want.hosts, want.networks, want.endpoints)
    assert [e.name for e in snap.endpoints] == ["c0", "c2", "c3"] and len(made) == 4
    assert [h.alive for h in snap.hosts] == [True, True, False]
    again = ctl.watcher.watch()
    assert await again.__anext__() is snap  # shared until the next change
    await again.aclose()
    await first.aclose()


async def test_watch_compacted_resume_gives_snapshot(ctl):
    await ctl.networks.create(Network(name="blue"))
    rev = await ctl.store.revision()
    await ctl.networks.create(Network(name="red"))
    await ctl.store.compact(await ctl.store.revision())
    # A fresh controller (its shared watch starts now) does not remember rev - 1.
    ctl = Controller(ctl.store, ctl.ctx.config)
    it = ctl.watcher.watch(start_revision=rev - 1)
    b = await asyncio.wait_for(it.__anext__(), 5)
    assert b.snapshot and b.compacted and {n.name for n in b.networks} == {"blue", "red"}
    await it.aclose()


async def test_watch_reports_dead_host(ctl):
    it = ctl.watcher.watch()
    await it.__anext__()
    _, lease, _ = await ctl.hosts.register(Host(name="h3", underlay_ip="172.30.0.13"))
    ctl.store.expire_lease(lease)
    seen = []
    while not any(not h.alive for h in seen):
        b = await asyncio.wait_for(it.__anext__(), 5)
        seen += [c.obj for c in b.changes if isinstance(c.obj, Host) and c.obj.name == "h3"]
    assert seen[0].alive and not seen[-1].alive
    await it.aclose()


async def test_concurrent_creates_on_many_hosts(ctl):
    """Concurrent first creates for different hosts share one network hint (a regression:
    a newer read returned without the other create's host)."""
    for i in range(3, 30):
        await ctl.hosts.register(Host(name=f"h{i}", underlay_ip=f"172.30.0.{i + 10}"))
    await ctl.networks.create(Network(name="blue", subnet="10.10.0.0/22"))
    eps = await asyncio.gather(*(ctl.endpoints.create(Endpoint(name=f"c{i}", network="blue", host=f"h{i % 28 + 2}"))
                                 for i in range(300)))
    assert len({e.ip for e in eps}) == 300


async def test_keepalive_rebinds_alive_key_to_the_callers_lease(ctl):
    """Two registrations raced: the alive key must end up on the lease that is renewed."""
    _, lease_a, _ = await ctl.hosts.register(Host(name="h3", underlay_ip="172.30.0.13"))
    _, lease_b, _ = await ctl.hosts.register(Host(name="h3", underlay_ip="172.30.0.13"))  # revokes a
    new_a, _, renewed = await ctl.hosts.keepalive("h3", lease_a)  # a's holder comes back: new lease
    assert not renewed
    lb, _, renewed_b = await ctl.hosts.keepalive("h3", lease_b)    # b renews and takes the key back
    assert renewed_b and lb == lease_b
    ctl.store.expire_lease(new_a)                                  # a's holder stops renewing
    assert (await ctl.hosts.get("h3")).alive, "the key is bound to b's lease, which lives"


async def test_keepalive_racing_a_registration_that_revokes_its_lease(ctl, monkeypatch: pytest.MonkeyPatch):
    """The lease is renewed, then a registration binds the alive key to a new lease and
    revokes the caller's before the keepalive rebinds it: a new lease, not INTERNAL."""
    host = Host(name="h3", underlay_ip="172.30.0.13")
    _, lease_a, _ = await ctl.hosts.register(host)
    real = ctl.store.refresh_lease

    async def refresh_then_register(lease_id: int) -> int:
        ttl = await real(lease_id)
        await ctl.hosts.register(host)  # revokes lease_a
        return ttl
    monkeypatch.setattr(ctl.store, "refresh_lease", refresh_then_register)
    lease, ttl, renewed = await ctl.hosts.keepalive("h3", lease_a)
    assert not renewed and lease != lease_a and ttl > 0
    assert (await ctl.hosts.get("h3")).alive


async def test_watch_heartbeats_without_store_progress(monkeypatch: pytest.MonkeyPatch):
    """etcd's progress notifications default to every 10 minutes: the controller's own
    heartbeat (at the revision the subscriber has everything up to) keeps the stream
    from looking hung to the agents."""
    from vxlab.controller.watch import Watcher

    monkeypatch.setattr(Watcher, "HEARTBEAT", 0.05)
    store = MemoryStore(progress_interval=3600)
    c = Controller(store, Config(lease_ttl=1))
    try:
        await c.networks.create(Network(name="blue"))
        it = c.watcher.watch()
        snap = await it.__anext__()
        beats = [await asyncio.wait_for(it.__anext__(), 5) for _ in range(2)]
        assert [(b.revision, b.changes, b.snapshot) for b in beats] == [(snap.revision, (), False)] * 2
        await c.networks.create(Network(name="red"))
        change = await asyncio.wait_for(it.__anext__(), 5)
        while not change.changes:
            change = await asyncio.wait_for(it.__anext__(), 5)
        beat = await asyncio.wait_for(it.__anext__(), 5)
        assert change.revision > snap.revision and (beat.revision, beat.changes) == (change.revision, ())
        await it.aclose()
    finally:
        await store.close()
