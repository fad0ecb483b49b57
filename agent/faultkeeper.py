"""The agent's fault bookkeeping: which faults its host carries out, the status it reports
for each, what it remembers across a restart (the journal), and when the next one ends.

Before each pass `plan` gives the host faults the kernel should hold (agent/hostfaults.py)
from the watch cache's faults, or, before the first snapshot, from the journal, so a
restarted agent enforces and heals its faults without the controller (a host-crash left
its underlay down: it cannot reach the controller until the fault ends). After the pass
`settle` turns what happened into statuses (applied; failed, with the reason, for good:
a failed fault is left out from then on; healed, when its time ran out here), queues the
ones that changed for `ReportFaultStatus` (the runner sends them, retried, never in a
pass's way), and rewrites the journal when it changed.

The journal (a JSON file next to the status file) holds the faults in force here, the
other hosts' underlay addresses (what a partition is made of), the agent-kill/host-crash
faults carried out already (a restarted agent must not kill itself again), and, while
the agent holds the underlay down, the routes it had and the underlay itself (a
restarted agent then has no route to find it by). What fails while the agent plans from
the journal alone is not held against the fault: the controller's word comes later.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vxlab.agent import hostfaults
from vxlab.agent.kernel import HostFaults, Route, Underlay
from vxlab.agent.reconciler import PassResult
from vxlab.model import Fault, FaultStatus, from_json, to_json

log = logging.getLogger("vxlab.agent")
EXIT_KILLED = 75  # EX_TEMPFAIL: the agent ended itself for an agent-kill or host-crash fault
REASON_MAX = 300  # characters of a reported reason (the controller takes at most 500, one line)


def journal_path(status_file: str) -> Path | None:
    """The journal next to the status file (none without one)."""
    if not status_file:
        return None
    p = Path(status_file)
    return p.with_name(p.stem + ".faults.json")


class FaultKeeper:
    def __init__(self, host: str, *, journal: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.path = journal
        self.clock = clock
        self.failed: dict[str, str] = {}                 # fault id -> why it failed here (for good)
        self.outbox: dict[str, FaultStatus] = {}         # statuses not sent yet (the latest per fault)
        self._said: dict[str, tuple[str, str]] = {}      # fault id -> the last (state, reason) queued
        self.enforced: dict[str, Fault] = {}             # the journal's faults: in force here
        self.hosts: dict[str, str] = {}                  # host -> underlay IP, as last planned with
        self.killed: set[str] = set()                    # agent-kill/host-crash carried out
        self.taken_down: tuple[Route, ...] | None = None  # we hold the underlay down (its routes before)
        self.underlay: Underlay | None = None            # the underlay, while we hold it down
        self._last: tuple[Mapping[str, Fault], HostFaults, hostfaults.Outcome] | None = None
        self._journal_only = False  # the last plan had no snapshot: its failures are not for good
        self._planned_hosts: dict[str, str] = {}
        self._load()

    # --- the journal ---------------------------------------------------------------------
    def _load(self) -> None:
        if self.path is None:
            return
        try:
            raw = json.loads(self.path.read_text())
            self.enforced = {f.id: f for f in (from_json(Fault, json.dumps(x)) for x in raw.get("faults", []))}
            self.killed = set(raw.get("killed", []))
            self.hosts = dict(raw.get("hosts", {}))
            down = raw.get("taken_down")
            self.taken_down = None if down is None else tuple(Route(*r) for r in down)
            u = raw.get("underlay")
            self.underlay = Underlay(**u) if u else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning("fault journal %s unreadable (%s): starting without it", self.path, e)

    def _save(self) -> None:
        if self.path is None:
            return
        data: dict[str, Any] = {
            "host": self.host, "faults": [json.loads(to_json(f, exclude=("status",))) for f in self.enforced.values()],
            "hosts": self.hosts, "killed": sorted(self.killed), "underlay": None if self.underlay is None else dataclasses.asdict(self.underlay),
            "taken_down": None if self.taken_down is None else [list(r) for r in self.taken_down]}
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot write the fault journal %s: %s", self.path, e)

    @property
    def pending(self) -> bool:
        """The journal names something to enforce or to heal (a pass is due without a snapshot)."""
        return bool(self.enforced) or self.taken_down is not None

    # --- before and after a pass --------------------------------------------------------
    def plan(self, faults: Mapping[str, Fault] | None, *, underlay_dev: str, hosts: Mapping[str, str],
             control: tuple[str, ...] = (), control_note: str = "") -> tuple[HostFaults, hostfaults.Outcome]:
        """The host faults wanted now; `faults`: the cache's (None: no snapshot yet, the journal's)."""
        source = dict(self.enforced) if faults is None else dict(faults)
        self._journal_only = faults is None
        if faults is None:
            hosts = {**self.hosts, **hosts}
        else:  # the controller's word: forget what it no longer has
            for table in (self.failed, self._said, self.outbox):
                for fid in [k for k in table if k not in source]:
                    del table[fid]
            self.killed &= set(source)
        ctx = hostfaults.Context(self.host, underlay_dev, self.clock(), hosts=hosts, control=control,
                                 control_note=control_note, failed=self.failed, killed=frozenset(self.killed),
                                 taken_down=self.taken_down)
        want, out = hostfaults.desired(source.values(), ctx)
        self._last = (source, want, out)
        self._planned_hosts = dict(hosts)
        return want, out

    def say(self, fid: str, state: str, reason: str = "") -> None:
        """Queue `fid`'s status, unless it is what was said last (a reason is one line)."""
        reason = " ".join(reason.split())
        reason = reason if len(reason) <= REASON_MAX else reason[:REASON_MAX - 1] + "…"
        if self._said.get(fid) != (state, reason):
            self._said[fid] = (state, reason)
            self.outbox[fid] = FaultStatus(self.host, state, reason)
            log.warning("fault %s: %s%s", fid, state, f": {reason}" if reason else "")

    def settle(self, result: PassResult, *, underlay: Underlay | None = None) -> bool:
        """What the pass did to the faults planned last: statuses queued, the journal
        written; True when a fault failed in it (a pass without it is due)."""
        if self._last is None:
            return False
        source, want, out = self._last
        before = (dict(self.enforced), self.taken_down, dict(self.hosts))
        broken: dict[str, str] = {}
        for action in result.failed:
            obj = hostfaults.objects(action)
            reason = next((e for e in result.errors if e.startswith(action.describe())), "")
            if obj:
                broken[obj] = reason[len(action.describe()) + 2:] or "failed"
        fresh = dict(out.failed)
        for obj, reason in broken.items():
            for fid in want.sources.get(obj, ()):
                fresh.setdefault(fid, reason)
        if not self._journal_only:
            self.failed.update(fresh)
            self.hosts = self._planned_hosts
        for fid, why in fresh.items():
            self.say(fid, "failed", why)
        for fid in out.active:
            if fid not in fresh:
                self.say(fid, "applied")
        for fid in out.healed:
            self.say(fid, "healed", "its duration ran out")
        for action in result.actions:
            if action.kind == "fault-link" and action not in result.failed:
                kw = dict(action.kwargs)
                self.taken_down, self.underlay = (None, None) if kw["up"] else (kw["routes"], underlay)
        if want.down is False and "link" not in broken and self.taken_down is not None and not any(
                a.kind == "fault-link" for a in result.actions):
            self.taken_down, self.underlay = None, None  # up already (brought up by hand)
        enforced = {fid: source[fid] for fid in [*out.active, *out.kills] if fid not in fresh}
        enforced |= {fid: source[fid] for fid in self.killed if fid in source}
        self.enforced = enforced
        if (self.enforced, self.taken_down, self.hosts) != before:
            self._save()
        return bool(fresh)

    def kill(self, fid: str, *, underlay: Underlay | None) -> None:
        """Note that the agent carries out agent-kill/host-crash `fid` now (before it ends
        itself): a restarted agent will not do it again."""
        self.killed.add(fid)
        if self._last is not None and fid in self._last[0]:
            self.enforced[fid] = self._last[0][fid]
        self.underlay = self.underlay or underlay
        self._save()

    def kills(self) -> list[str]:
        """The agent-kill/host-crash faults the last plan found due."""
        return [] if self._last is None else list(self._last[2].kills)

    def deadline(self) -> float | None:
        """When the next fault in force here ends (wall clock), if one does."""
        return None if self._last is None else self._last[2].deadline

    def statuses(self) -> dict[str, str]:
        """fault id -> the state last said (for the status file)."""
        return {fid: state for fid, (state, _reason) in sorted(self._said.items())}
