"""Failure injection in a lab: one list of faults, carried out where each kind runs
(vxlab.faultkinds), healed exactly.

- Host-side network faults (partition, loss, rate, delay, link-down) are desired state:
  created through the controller (`f<N>`, vxlab.faultapi), carried out by the agents on
  their hosts' own underlay devices, reported per host; `--for` is the fault's lease,
  so it heals even if nothing of the lab's CLI is left running. A fault one of its
  hosts cannot carry out (a delay where the kernel has no sch_netem) is refused.
- The lab's own processes (etcd-stop, etcd-member-kill, controller-kill, and in a lab
  agent-kill and host-crash, which also takes the host's switch port down) are the lab
  runner's (vxlab.lab.faultops): ids `l<N>`, kept in `faults.json` next to the lab's
  state, under a lock (a `--for` timer process heals from another process); heal starts
  a killed process again from the very command line it had.

Two faults that would fight over one object (two qdiscs on one side of a link,
link-down under host-crash) are refused, whichever of the two carries them out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vxlab import faultapi, faultkinds
from vxlab.errors import NotFound, VxError
from vxlab.lab import faultops, faultspec
from vxlab.lab.faultops import Lab
from vxlab.lab.faultspec import FaultError
from vxlab.lab.state import LabState
from vxlab.lab.supervisor import Command, Proc
from vxlab.model import Fault as Record
from vxlab.model import FaultStatus

__all__ = ["Fault", "FaultError", "add", "heal", "heal_all", "listing", "stop_timers"]
HEAL_WAIT = 10.0  # seconds a heal waits for the targets' agents to have removed the fault


@dataclass
class Fault:
    id: str
    kind: str
    params: dict[str, Any]
    started: float                          # time.time()
    until: float | None = None              # healed automatically then (`--for`)
    undo: dict[str, Any] = field(default_factory=dict)
    timer: Proc | None = None
    status: tuple[FaultStatus, ...] = ()    # the agents' faults: per target host
    pending: tuple[str, ...] = ()           # add: targets that had not reported yet

    @property
    def agents(self) -> bool:
        """Carried out by the agents (through the controller), not by the lab runner."""
        return not self.id.startswith("l")

    def describe(self) -> str:
        return faultspec.describe(self.kind, self.params)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("undo")
        d["timer"] = None if self.timer is None else self.timer.pid
        d["description"] = self.describe()
        d["runs"] = "agents" if self.agents else "lab"
        return d


def _posix(text: str) -> float | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def of_record(r: Record, pending: tuple[str, ...] = ()) -> Fault:
    """A controller's fault as the lab lists it."""
    params = faultkinds.decode(r.kind, r.params)
    return Fault(r.id, r.kind, params, _posix(r.created) or 0.0, _posix(r.expires_at), status=r.status,
                 pending=pending)


# --- the lab runner's record on disk ---------------------------------------------------------
def _path(lab: Lab) -> Path:
    return lab.state.dir / "faults.json"


@contextmanager
def _locked(lab: Lab) -> Iterator[dict[str, Any]]:
    """faults.json as a dict, exclusively; saved on a clean exit. The lab's state is
    reloaded too: a heal in another process may have restarted one of its processes."""
    lab.state.dir.mkdir(parents=True, exist_ok=True)
    with open(lab.state.dir / "faults.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lab.state = LabState.load(lab.name) or lab.state
        try:
            book = json.loads(_path(lab).read_text())
        except (OSError, ValueError):
            book = {"next": 1, "faults": []}
        yield book
        tmp = _path(lab).with_suffix(".tmp")
        tmp.write_text(json.dumps(book, indent=2))
        tmp.replace(_path(lab))


def _load(raw: dict[str, Any]) -> Fault:
    timer = Proc(**raw["timer"]) if raw.get("timer") else None
    return Fault(**{**raw, "timer": timer, "status": (), "pending": ()})


def _local(lab: Lab) -> list[Fault]:
    try:
        return [_load(f) for f in json.loads(_path(lab).read_text())["faults"]]
    except (OSError, ValueError, KeyError):
        return []


def _agents(lab: Lab) -> list[Fault]:
    """The controller's faults (none when it does not answer: a controller-kill)."""
    try:
        return [of_record(r) for r in lab.call(lambda c: c.list_faults())]
    except VxError:
        return []


def listing(lab: Lab) -> list[Fault]:
    """Every active fault, oldest first."""
    return sorted(_local(lab) + _agents(lab), key=lambda f: f.started)


# --- add / heal -------------------------------------------------------------------------
def add(lab: Lab, kind: str, *, duration: float | None = None, **params: Any) -> Fault:
    """Inject one fault; with `duration` it heals after that many seconds (the agents'
    faults: their lease; the lab runner's: a timer process)."""
    hosts = {h.name for h in (lab.state.topology.hosts if lab.state.topology else ())}
    params = faultspec.validate(kind, params, hosts=hosts, members=max(1, len(lab.state.etcd)),
                                control=bool(lab.state.topology and lab.state.topology.control == "underlay"))
    if duration is not None and duration <= 0:
        raise FaultError("for: must be a positive duration")
    with _locked(lab) as book:
        active = [_load(f) for f in book["faults"]] + _agents(lab)
        try:
            faultkinds.conflict(kind, params, [(f.id, f.kind, f.params) for f in active])
            if faultkinds.KINDS[kind].runs == faultkinds.AGENT:
                faultkinds.check_duration(kind, params, duration or 0.0, field="")
                made = lab.call(lambda c: faultapi.inject(c, kind, params, duration=duration or 0.0))
                return of_record(made.fault, made.pending)
        except VxError as e:
            raise FaultError(e.message) from None
        fault = Fault(id=f"l{book['next']}", kind=kind, params=params, started=time.time())
        fault.undo = faultops.apply(lab, fault.id, kind, params)
        if duration is not None:
            fault.until = fault.started + duration
            fault.timer = _start_timer(lab, fault.id, fault.until)
        book["next"] += 1
        book["faults"].append(_dump(fault))
    return fault


def heal(lab: Lab, fault_id: str, *, from_timer: bool = False) -> Fault:
    if not fault_id.startswith("l"):
        return _heal_agents(lab, fault_id)
    with _locked(lab) as book:
        found = [f for f in book["faults"] if f["id"] == fault_id]
        if not found:
            raise FaultError(f"fault: no active fault {fault_id!r} in lab {lab.name!r}")
        fault = _load(found[0])
        faultops.heal(lab, fault.id, fault.kind, fault.params, fault.undo)
        if fault.timer is not None and not from_timer:
            fault.timer.stop(sig=signal.SIGKILL)
        book["faults"] = [f for f in book["faults"] if f["id"] != fault_id]
    return fault


def _heal_agents(lab: Lab, fault_id: str) -> Fault:
    """Delete the fault, then wait until its targets' agents (those running) programmed
    that revision: the fault is gone from their kernels."""
    async def go(c: Any) -> tuple[Record, int]:
        [gone] = await faultapi.heal(c, fault_id)
        return gone, await c.revision()
    try:
        gone, revision = lab.call(go)
    except NotFound:
        raise FaultError(f"fault: no active fault {fault_id!r} in lab {lab.name!r}") from None
    except VxError as e:
        raise FaultError(e.message) from None
    deadline = time.monotonic() + HEAL_WAIT
    if gone.expires_at and faultkinds.kind_of(gone.kind).cuts_control(faultkinds.decode(gone.kind, gone.params)):
        # targets it cut from the control plane hear nothing until they lift it at its deadline
        deadline += max(0.0, (_posix(gone.expires_at) or 0.0) - time.time())
    for host in gone.targets:
        proc = lab.state.agents.get(host)
        while proc is not None and proc.alive() and not lab.agent_status(host).programmed(revision):
            if time.monotonic() > deadline:
                raise FaultError(f"fault {fault_id}: deleted, but the agent of {host} has not removed it "
                                 f"{HEAL_WAIT:g}s later (see its log)")
            time.sleep(0.01)
    return dataclasses.replace(of_record(gone), status=())


def heal_all(lab: Lab) -> list[Fault]:
    """Heal every active fault: the lab runner's first, newest first (so stacked faults
    unwind in order, and a killed controller is back), then the agents'."""
    healed = [heal(lab, f.id) for f in reversed(_local(lab))]
    return healed + [heal(lab, f.id) for f in _agents(lab)]


def stop_timers(lab: Lab) -> None:
    """For `down`: the lab's namespaces and processes go anyway; only timers remain."""
    for f in _local(lab):
        if f.timer is not None:
            f.timer.stop(sig=signal.SIGKILL)


def _dump(f: Fault) -> dict[str, Any]:
    d = asdict(f)
    d.pop("status")
    d.pop("pending")
    return d


def _start_timer(lab: Lab, fault_id: str, until: float) -> Proc:
    """A process that heals the fault at `until` (vxlab.lab.faulttimer)."""
    return lab.supervisor.start(Command((sys.executable, "-m", "vxlab.lab.faulttimer", lab.name, fault_id,
                                         repr(until)), log=str(lab.supervisor.log("faults"))))
