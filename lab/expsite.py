"""Where an experiment runs: what the runner (vxlab.lab.experiment) needs of a deployment.

`Site` is everything it touches, over one vxlab.client.Client: the controller's hosts
and endpoints, the fault API (vxlab.faultapi) for the kinds the agents carry out, and
the agents' ops channel (vxlab.hostops) for ping streams, iperf3, kernel views and
drift. A `Site` with a `lab` also hands the lab runner its kinds (process kills, the
switch port: vxlab.lab.faults), and creates the agents' faults through the lab, which
checks them against the lab runner's first; either way they reach the fault API. The
unit tests replace it with a fake of the same shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from vxlab import faultapi, faultkinds, hostops, ops
from vxlab.client import Client
from vxlab.errors import NotFound, VxError
from vxlab.lab.expplan import API, Pair, Step
from vxlab.model import Endpoint, Host

if TYPE_CHECKING:
    from vxlab.lab.lab import Lab

DELETED, LEASE = "delete", "lease"  # how a fault ended: the runner's delete, or its lease ran out first


class Site:
    def __init__(self, client: Client, *, where: str, lab: Lab | None = None) -> None:
        self.client, self.where, self.lab = client, where, lab

    async def hosts(self) -> list[Host]:
        return await self.client.list_hosts()

    async def endpoints(self) -> list[Endpoint]:
        return await self.client.list_endpoints()

    async def inject(self, step: Step) -> tuple[str, str]:
        """(id, description) of the fault made; VxError (or the lab's error) otherwise."""
        if self.lab is not None:
            lab = self.lab
            duration = step.lease if step.via == API else None
            f = await asyncio.to_thread(lambda: lab.add_fault(step.kind, duration=duration, **step.params))
            return f.id, f.describe()
        made = await faultapi.inject(self.client, step.kind, dict(step.params), duration=step.lease)
        return made.fault.id, faultkinds.describe(step.kind, dict(step.params))

    async def heal(self, fault_id: str) -> str:
        """DELETED, or LEASE when the fault had gone already (its lease ran out)."""
        if fault_id.startswith("l") and self.lab is not None:
            lab = self.lab
            await asyncio.to_thread(lambda: lab.heal(fault_id))
            return DELETED
        try:
            await faultapi.heal(self.client, fault_id)
        except NotFound:
            return LEASE
        return DELETED

    def ping(self, pair: Pair, *, count: int) -> AsyncIterator[ops.Event]:
        return hostops.stream(self.client, pair.src_host, ops.PingStream(pair.src, pair.ip, interval=pair.interval,
                                                                         count=count))

    async def iperf(self, pair: Pair, *, seconds: float, port: int) -> dict[str, Any]:
        return await hostops.iperf(self.client, src_host=pair.src_host, src=pair.src, dst_host=pair.dst_host,
                                   dst=pair.dst, ip=pair.ip, seconds=seconds, port=port)

    async def fdb_towards(self, peer: str, networks: list[str], vtep: str) -> int | None:
        """How many FDB entries `peer`'s kernel has towards the VTEP `vtep` (its agent's
        kernel view of each network); None when its agent did not answer within 1 s."""
        try:
            async with asyncio.timeout(1.0):
                views = await asyncio.gather(*(hostops.kernel_view(self.client, peer, network=n) for n in networks))
        except (TimeoutError, VxError):
            return None
        return sum(1 for v in views for ns in v.namespaces for (_dev, _mac, dst) in ns.fdb if dst == vtep)

    async def drifted(self, host: str) -> int | None:
        """How many entries `host`'s agent would change now (None: it did not answer)."""
        try:
            async with asyncio.timeout(2.0):
                return len((await hostops.drift(self.client, host)).entries)
        except (TimeoutError, VxError):
            return None
