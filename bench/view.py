"""Desired-state view benchmark (vxlab/view.py): the controller's snapshot path and the
agent's cache, in-process, no etcd, no gRPC.

A state of ~600 objects (100 hosts, 4 networks, 500 endpoints, 4 policies) and 1000
change batches in the mix a lab sees (hosts re-registering with a new lease, liveness
flapping, endpoints created and deleted, a network updated). Figures, best of
`repeat` runs:
- hub apply: the watch hub applies the 1000 batches to its view (no joiner);
- hub apply+snapshot: after each batch a joiner takes the snapshot (rebuilt each time);
- 100 joiners: one change, then 100 joiners take the snapshot (built once, then shared);
- watcher 100 joiners: `Watcher.watch` on a MemoryStore holding the state, 100
  subscribers each reading their first batch (range read, decode, the hub's view);
- watcher fan-out: 100 subscribers, then 1000 endpoint puts in the store, until every
  subscriber has the last (translation, the hub's view, the queues);
- agent apply: StateCache.apply of each of the 1000 batches (µs per batch), and of
  the snapshot; agent copy: StateCache.copy (what each pass reads).
Writes view.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab.agent.cache import StateCache
from vxlab.bench import machine
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store import Put
from vxlab.controller.store_memory import MemoryStore
from vxlab.model import Change, Endpoint, Host, Network, Policy, Selector, WatchBatch, to_json
from vxlab.view import View

HOSTS, NETWORKS, PER_HOST, BATCHES = 100, 4, 5, 1000


def state() -> WatchBatch:
    hosts = tuple(Host(f"h{i}", f"172.30.{i // 250}.{i % 250 + 1}", 1500, alive=True, lease_ttl=5,
                       registered_at="2026-12-02T00:00:00Z", agent_version="0.1.0") for i in range(HOSTS))
    nets = tuple(Network(f"n{j}", id=f"{j:064x}", subnet=f"10.{j}.0.0/16", gateway=f"10.{j}.0.1", vni=4096 + j,
                         mtu=1450, created="2026-12-02T00:00:00Z") for j in range(NETWORKS))
    eps = tuple(Endpoint(f"c{i}-{k}", f"n{k % NETWORKS}", f"h{i}", f"10.{k % NETWORKS}.{i}.{k + 2}",
                         f"02:00:00:00:{i:02x}:{k:02x}", f"{i * 10 + k:064x}", "2026-12-02T00:00:00Z",
                         {"tier": "web"}) for i in range(HOSTS) for k in range(PER_HOST))
    rules = tuple(Policy(f"p{j}", f"n{j}", "deny", Selector(label="tier=web"), Selector(cidr="10.0.0.0/8"), "tcp",
                         ("5432",), 100) for j in range(NETWORKS))
    return WatchBatch(revision=1000, snapshot=True, hosts=hosts, networks=nets, endpoints=eps, policies=rules)


def batches(snap: WatchBatch) -> list[WatchBatch]:
    out: list[WatchBatch] = []
    for n in range(BATCHES):
        rev = snap.revision + 1 + n
        h = snap.hosts[n % HOSTS]
        which = n % 5
        if which == 0:  # re-registration: a new lease, the same address
            c = Change("put", dataclasses.replace(h, registered_at=f"2026-12-02T01:{n % 60:02d}:00Z"))
        elif which == 1:  # liveness flaps
            c = Change("put", dataclasses.replace(h, alive=n % 2 == 0))
        elif which == 2:
            c = Change("put", Endpoint(f"x{n}", "n0", h.name, f"10.0.200.{n % 250}", id=f"{n:064x}"))
        elif which == 3:
            c = Change("delete", Endpoint(f"x{n - 1}", "n0", ""))
        else:
            c = Change("put", dataclasses.replace(snap.networks[n % NETWORKS], mtu=1400 + n % 50))
        out.append(WatchBatch(revision=rev, changes=(c,)))
    return out


def best(fn: Callable[[], Any], repeat: int) -> float:
    """Best wall time of `repeat` calls, seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def hub_apply(snap: WatchBatch, todo: list[WatchBatch]) -> None:
    v = View.of(snap)
    for b in todo:
        v.apply(b)


def hub_apply_snapshot(snap: WatchBatch, todo: list[WatchBatch]) -> None:
    v = View.of(snap)
    for b in todo:
        v.apply(b)
        v.snapshot()


def joiners(snap: WatchBatch, todo: list[WatchBatch]) -> None:
    v = View.of(snap)
    v.apply(todo[2])
    first = v.snapshot()
    assert all(v.snapshot() is first for _ in range(99))


def agent_apply(snap: WatchBatch, todo: list[WatchBatch]) -> None:
    c = StateCache()
    c.apply(snap)
    for b in todo:
        c.apply(b)


async def _filled(snap: WatchBatch) -> tuple[MemoryStore, Controller]:
    store = MemoryStore()
    ctl = Controller(store, Config(lease_ttl=30))
    keys = ctl.ctx.keys
    puts = [Put(keys.host(h.name), to_json(h, exclude=("alive",))) for h in snap.hosts]
    puts += [Put(keys.alive_key(h.name), b"") for h in snap.hosts]
    puts += [Put(keys.network(n.name), to_json(n)) for n in snap.networks]
    puts += [Put(keys.endpoint(e.network, e.name), to_json(e)) for e in snap.endpoints]
    puts += [Put(keys.policy(p.network, p.name), to_json(p)) for p in snap.policies]
    assert (await store.txn([], puts)).succeeded
    return store, ctl


async def watcher_joiners(snap: WatchBatch) -> float:
    store, ctl = await _filled(snap)
    t = time.perf_counter()
    streams = [ctl.watcher.watch() for _ in range(100)]
    firsts = [await anext(s) for s in streams]
    took = time.perf_counter() - t
    assert all(len(f.endpoints) == len(snap.endpoints) for f in firsts)
    for s in streams:
        await s.aclose()
    await store.close()
    return took


async def watcher_fanout(snap: WatchBatch) -> float:
    """100 subscribers, then 1000 endpoint puts: seconds until every subscriber saw the last."""
    store, ctl = await _filled(snap)
    streams = [ctl.watcher.watch() for _ in range(100)]
    for s in streams:
        await anext(s)
    keys = ctl.ctx.keys
    t = time.perf_counter()
    for i in range(BATCHES):
        e = Endpoint(f"y{i}", "n1", f"h{i % HOSTS}", f"10.1.250.{i % 250}", id=f"{i:064x}")
        res = await store.txn([], [Put(keys.endpoint(e.network, e.name), to_json(e))])
    last = res.revision

    async def drain(s: Any) -> None:
        while (await anext(s)).revision < last:
            pass
    await asyncio.gather(*(drain(s) for s in streams))
    took = time.perf_counter() - t
    for s in streams:
        await s.aclose()
    await store.close()
    return took


def run(out_dir: Path, *, repeat: int = 7) -> dict[str, Any]:
    snap = state()
    todo = batches(snap)
    objects = len(snap.hosts) + len(snap.networks) + len(snap.endpoints) + len(snap.policies)
    cache = StateCache()
    cache.apply(snap)
    result = {
        "objects": objects, "batches": BATCHES, "repeat": repeat,
        "hub_apply_ms": best(lambda: hub_apply(snap, todo), repeat) * 1e3,
        "hub_apply_snapshot_ms": best(lambda: hub_apply_snapshot(snap, todo), repeat) * 1e3,
        "hub_100_joiners_ms": best(lambda: joiners(snap, todo), repeat) * 1e3,
        "watcher_100_joiners_ms": min(asyncio.run(watcher_joiners(snap)) for _ in range(3)) * 1e3,
        "watcher_1000_changes_100_subscribers_ms": min(asyncio.run(watcher_fanout(snap)) for _ in range(3)) * 1e3,
        "agent_apply_us_per_batch": best(lambda: agent_apply(snap, todo), repeat) * 1e6 / (BATCHES + 1),
        "agent_apply_snapshot_us": best(lambda: StateCache().apply(snap), repeat) * 1e6,
        "agent_copy_us": best(cache.copy, repeat * 10) * 1e6,
    }
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    result["machine"] = machine.describe()
    machine.write(out_dir, "view", result)
    return result


if __name__ == "__main__":
    print(json.dumps(run(Path("bench/results")), indent=2))
