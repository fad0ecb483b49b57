"""The agent's side of faults while it runs: the hooks its reconcile loop calls and the
task that reports statuses (bookkeeping: agent/faultkeeper.py; kernel state:
agent/hostfaults.py).

- `desired(cache)` before a pass: the host faults wanted, from the cache (or, before
  the first snapshot, the journal), with the underlay addresses of the other hosts and
  the controller addresses the agent dials (the side `control` of a partition).
- `after(result)` after a pass: statuses and journal (`FaultKeeper.settle`); when an
  agent-kill or host-crash is due it is reported (applied) and noted, a host-crash takes
  the underlay down, and the agent ends with EXIT_KILLED (`AgentExit`): systemd's
  `Restart=always` brings it back, and the journal keeps it from doing it again.
- `wake_at()`: when the loop must wake for a fault's own deadline (its `expires_at`),
  so a fault heals although the agent cannot reach the controller.
- `report()`: the task sending `ReportFaultStatus`, retried with backoff; a pass never
  waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vxlab.agent.cache import StateCache
from vxlab.agent.faultkeeper import EXIT_KILLED, FaultKeeper, journal_path
from vxlab.agent.kernel import HostFaults, KernelError, Underlay
from vxlab.agent.reconciler import PassResult, Reconciler
from vxlab.agent.underlay import controller_ips
from vxlab.client import Client
from vxlab.errors import InvalidArgument, NotFound, VxError

log = logging.getLogger("vxlab.agent")
KILL_REPORT_TIMEOUT = 3.0  # an agent-kill waits this long for its `applied` to reach the controller


class AgentExit(Exception):
    """The agent ends itself on purpose, with `code` (EXIT_KILLED for a fault)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class AgentFaults:
    def __init__(self, host: str, *, status_file: str, controllers: list[str], client: Client) -> None:
        self.keeper = FaultKeeper(host, journal=journal_path(status_file))
        self.client = client
        self.underlay: Underlay | None = None   # set by the agent once it knows it
        self._cache: StateCache | None = None  # the cache of the last plan
        self._sent = asyncio.Event()
        self._wake = asyncio.Event()
        try:
            self.control = tuple(controller_ips(controllers))
            self.control_note = ",".join(controllers)
        except KernelError as e:
            self.control, self.control_note = (), str(e)

    def saved_underlay(self) -> Underlay | None:
        """The underlay the journal kept while the agent holds it down (it has no route to
        be found by then)."""
        return self.keeper.underlay if self.keeper.taken_down is not None else None

    # --- the reconcile loop's hooks ----------------------------------------------------------
    def desired(self, cache: StateCache | None) -> HostFaults | None:
        """The host faults of the next pass (None: none planned: no underlay yet)."""
        if self.underlay is None:
            return None
        self._cache = cache
        faults = cache.faults if cache is not None and cache.synced else None
        hosts = {h.name: h.underlay_ip for h in cache.hosts.values()} if cache is not None else {}
        want, _out = self.keeper.plan(faults, underlay_dev=self.underlay.dev, hosts=hosts, control=self.control,
                                      control_note=self.control_note)
        return want

    def wake_at(self) -> float | None:
        """The monotonic time of the next fault deadline, if any."""
        end = self.keeper.deadline()
        return None if end is None else time.monotonic() + max(0.0, end - time.time())

    async def after(self, result: PassResult, *, again: Callable[[], None],
                    faults_pass: Callable[[HostFaults], Awaitable[PassResult]]) -> None:
        """After a pass: settle; `again()` asks for another pass; a due kill ends the agent."""
        if self.keeper.settle(result, underlay=self.underlay):
            again()
        if self.keeper.outbox:
            self._wake.set()
        kills = self.keeper.kills()
        if not kills:
            return
        for fid in kills:
            self.keeper.say(fid, "applied", f"the agent ends itself (exit code {EXIT_KILLED})")
        self._wake.set()
        await self._flushed(KILL_REPORT_TIMEOUT)
        for fid in kills:
            self.keeper.kill(fid, underlay=self.underlay)
        want = self.desired(self._cache)
        if want is not None and want.down:  # a host-crash: the underlay goes down with the agent
            self.keeper.settle(await faults_pass(want), underlay=self.underlay)  # journaled: it comes up again
        raise AgentExit(EXIT_KILLED, f"fault {', '.join(kills)}: the agent ends itself")

    async def _flushed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.keeper.outbox and time.monotonic() < deadline:
            self._sent.clear()
            try:
                await asyncio.wait_for(self._sent.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break

    # --- the reporting task ---------------------------------------------------------------------
    async def report(self) -> None:
        backoff = 0.2
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.keeper.outbox:
                fid, status = next(iter(self.keeper.outbox.items()))
                try:
                    await self.client.report_fault_status(fid, status)
                except (NotFound, InvalidArgument):
                    pass  # the fault is gone (deleted, or its lease expired), or not ours any more
                except VxError as e:
                    log.info("fault %s: report failed (%s); retry in %.1fs", fid, e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.2
                if self.keeper.outbox.get(fid) is status:
                    del self.keeper.outbox[fid]
                self._sent.set()

    def status(self) -> dict[str, Any]:
        return self.keeper.statuses()
