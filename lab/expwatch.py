"""An experiment's view of the control plane, through the controller alone.

While an experiment runs, `Watcher.run` polls (every POLL seconds) what the controller
and the agents can tell about each fault's target hosts:

- when the controller saw a target's lease expire (`Host.alive` false), and come back;
- once a target's lease is gone, the peers' kernels: every other host's agent dumps its
  network namespaces (the ops channel's kernel view), and the FDB entries towards the
  target's VTEP are counted. `purged_after`: every peer that had some at the start and
  answers now has none (the peers it lists; a peer cut from the controller too cannot
  answer, and does not count). `restored_after` (since the heal): they all have them again;
- after the heal, `converged_after`: every host alive and no agent's drift check (its
  dry-run plan against a fresh dump) would change anything.

The baseline (entries per peer towards each host) is taken once, before the first fault.
Nothing here enters a namespace of this machine: the agents answer (vxlab.lab.expsite).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vxlab.lab.expplan import Pair
    from vxlab.lab.expsite import Site

POLL = 0.2
SETTLE = 15.0  # seconds the watcher goes on after the run for a fault's convergence


@dataclass
class FaultRun:
    id: str
    kind: str
    description: str
    hosts: tuple[str, ...]             # its targets
    start: float                       # seconds since t = 0
    via: str = ""                      # api (the controller's fault API) or lab (the lab runner)
    lease: float = 0.0                 # api: the fault's duration (its etcd lease)
    end: float | None = None           # when healed
    healed_by: str = ""                # delete, lease (ran out first), or "" (not healed)
    lease_expired: dict[str, float] = field(default_factory=dict)   # host -> since start
    lease_back: dict[str, float] = field(default_factory=dict)      # host -> since the heal
    purged_after: float | None = None  # since start: the answering peers had no entry towards the host
    purged_on: list[str] = field(default_factory=list)
    restored_after: float | None = None    # since the heal: every such peer had them again
    converged_after: float | None = None   # since the heal: all alive, no drift anywhere
    kept_forwarding: dict[str, dict[str, int]] = field(default_factory=dict)  # pair -> sent, answered
    error: str = ""


class Watcher:
    def __init__(self, site: Site, *, t0: float) -> None:
        self.site, self.t0 = site, t0
        self.runs: list[FaultRun] = []
        self.vtep: dict[str, str] = {}                 # host -> underlay address
        self.networks: dict[str, list[str]] = {}       # host -> networks it has endpoints on
        self.baseline: dict[str, dict[str, int]] = {}  # host -> peer -> entries towards it
        self._stop = asyncio.Event()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def prepare(self) -> None:
        hosts = await self.site.hosts()
        self.vtep = {h.name: h.underlay_ip for h in hosts}
        for e in await self.site.endpoints():
            self.networks.setdefault(e.host, [])
            if e.network not in self.networks[e.host]:
                self.networks[e.host].append(e.network)
        for h in self.vtep:
            self.baseline[h] = await self._counts(h, list(self.vtep))

    async def _counts(self, host: str, peers: Sequence[str]) -> dict[str, int]:
        """peer -> entries towards `host`, for the peers that answered."""
        others = [p for p in peers if p != host]
        nets = self.networks.get(host, [])
        got = await asyncio.gather(*(self.site.fdb_towards(p, [n for n in nets if n in self.networks.get(p, [])],
                                                           self.vtep[host]) for p in others))
        return {p: n for p, n in zip(others, got) if n is not None}

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Until stop(), then up to SETTLE seconds more while a healed fault has not converged."""
        settle_by: float | None = None
        while True:
            if self._stop.is_set():
                settle_by = settle_by or time.monotonic() + SETTLE
                if time.monotonic() > settle_by or all(r.converged_after is not None for r in self.runs
                                                       if r.end is not None and not r.error):
                    return
            try:
                await self._poll()
            except Exception:  # noqa: BLE001 - the controller may be down (a controller-kill): next poll
                pass
            await asyncio.sleep(POLL)

    async def _poll(self) -> None:
        alive = {h.name: h.alive for h in await self.site.hosts()}
        now = self.now()
        for r in self.runs:
            if r.error:
                continue
            for h in r.hosts:
                if not alive.get(h, True) and h not in r.lease_expired and r.end is None:
                    r.lease_expired[h] = round(now - r.start, 3)
                if alive.get(h) and h in r.lease_expired and r.end is not None and h not in r.lease_back:
                    r.lease_back[h] = round(now - r.end, 3)
            await self._peers(r, now)
            if r.end is not None and r.converged_after is None and all(alive.values()):
                drift = await asyncio.gather(*(self.site.drifted(h) for h in alive))
                if all(d == 0 for d in drift):
                    r.converged_after = round(self.now() - r.end, 3)

    async def _peers(self, r: FaultRun, now: float) -> None:
        for h in r.lease_expired:
            had = [p for p, n in self.baseline.get(h, {}).items() if n > 0 and p not in r.lease_expired]
            if not had or (r.purged_after is not None and r.end is None):
                continue
            if r.purged_after is None and r.end is None:
                counts = await self._counts(h, had)
                if counts and not any(counts.values()):
                    r.purged_after, r.purged_on = round(now - r.start, 3), sorted(counts)
            elif r.end is not None and r.purged_after is not None and r.restored_after is None:
                counts = await self._counts(h, had)
                if len(counts) == len(had) and all(counts.values()):
                    r.restored_after = round(self.now() - r.end, 3)


def side_of(host: str, kind: str, params: dict[str, object]) -> set[str]:
    """The hosts `host` can still reach under the fault: its side of a partition, else itself."""
    if kind == "partition":
        for name in ("hosts", "from"):
            side = set(params.get(name) or ())  # type: ignore[call-overload]
            if host in side:
                return side - {"control"}
    return {host}


def forwarding(run: FaultRun, params: dict[str, object], pairs: Sequence[Pair]) -> dict[str, dict[str, int]]:
    """For a fault whose targets lost their lease: the probes between containers on the
    side a cut host can still reach, while it lasted (sent, answered; held: how many of
    them its agent held while cut from the controller and handed over later, dropped:
    how many more did not fit its buffer). A pair with no samples then was unobserved:
    nothing came back, not even after the heal."""
    out: dict[str, dict[str, int]] = {}
    end = run.end if run.end is not None else float("inf")
    for host in run.lease_expired:
        side = side_of(host, run.kind, params)
        for p in pairs:
            if p.src_host in side and p.dst_host in side:
                during = [(t, r) for t, r in p.samples if run.start <= t < end]
                spans = [(a, b, d) for a, b, d in p.held if a < end and b >= run.start]
                out[p.name] = {"sent": len(during), "answered": sum(1 for _, r in during if r is not None),
                               "held": sum(1 for t, _ in during if any(a <= t <= b for a, b, _ in spans)),
                               "dropped": sum(d for _, _, d in spans)}
    return out
