"""Faults through the controller, as `vxlab fault` and a lab use them: inject one and wait
until every target host said what it did, heal one (or all).

`inject` creates the fault (kinds and parameters: vxlab.faultkinds), then polls it until
each target reported applied or failed (at most `wait` seconds, CUT_WAIT for a fault that
cuts its targets from the control plane: a host whose agent is down or cut stays pending, and the fault is in force for it once it is back). When a target
failed (a delay where the kernel has no sch_netem, a side with nothing to cut), the
fault is deleted again and `FailedPrecondition` names the host and its reason: a fault
is carried out by all its targets or by none. Nothing here imports gRPC (the client does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vxlab import faultkinds
from vxlab.client import Client
from vxlab.errors import FailedPrecondition, NotFound
from vxlab.model import Fault, FaultStatus

WAIT = 10.0          # seconds `inject` waits for the targets' reports
CUT_WAIT = 1.0       # … for a fault that can cut them from the control plane (their reports come after it)
DONE = ("applied", "failed", "healed")


@dataclass(frozen=True)
class Injected:
    fault: Fault
    pending: tuple[str, ...]   # targets that had not reported when the wait ended
    seconds: float             # from the create until every target reported (or the wait ended)


async def inject(client: Client, kind: str, params: dict[str, Any], *, duration: float = 0.0,
                 wait: float = WAIT) -> Injected:
    """Create the fault and wait for its targets (see the module's docstring)."""
    typed = faultkinds.validate(kind, params)  # the field errors before any call; hosts: the controller's
    if faultkinds.kind_of(kind).cuts_control(typed):
        wait = min(wait, CUT_WAIT)  # a target it cuts from the control plane cannot report until it ends
    start = time.monotonic()
    f = await client.create_fault(kind, faultkinds.encode(kind, typed), duration=duration)
    pause = 0.002
    while True:
        pending = tuple(s.host for s in f.status if s.state not in DONE)
        failed = [s for s in f.status if s.state == "failed"]
        if failed or not pending or time.monotonic() - start >= wait:
            break
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.05)
        try:
            f = await client.get_fault(f.id)
        except NotFound:  # its lease ran out meanwhile
            return Injected(f, (), time.monotonic() - start)
    if failed:
        try:
            await client.delete_fault(f.id)
        except NotFound:
            pass
        first = failed[0]
        raise FailedPrecondition(f"{kind}: {first.host}: {first.reason} (fault {f.id} removed again)")
    return Injected(f, pending, time.monotonic() - start)


async def heal(client: Client, fault_id: str | None) -> list[Fault]:
    """Delete one fault (or every one: None); returns what was deleted."""
    found = await client.list_faults() if fault_id is None else [await client.get_fault(fault_id)]
    gone = []
    for f in found:
        try:
            await client.delete_fault(f.id)
            gone.append(f)
        except NotFound:
            if fault_id is not None:
                raise
    return gone


def statuses(status: Iterable[FaultStatus]) -> str:
    """`h1 applied, h2 failed (reason)` for a table cell."""
    return ", ".join(f"{s.host} {s.state}" + (f" ({s.reason})" if s.state == "failed" and s.reason else "")
                     for s in status) or "-"
