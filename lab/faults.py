"""Failure injection: the faults a lab can suffer, recorded with the lab, healed exactly.

Every fault acts on objects the lab owns, never on the machine: network faults live in
the underlay switch's namespace (an nftables table `bridge vxf_<id>` per fault, so heal
deletes exactly that table) or on the two ends of a host's underlay link (a tc root
qdisc, removed on heal); process faults kill a lab process and heal starts it again
from the very command line it had. Faults are kept in `faults.json` next to the lab's
state, under a lock (a `--for` timer process heals from another process); two faults
that would fight over one object (two qdiscs on one link, two link-downs) are refused.

Kinds: partition, loss, rate, delay (needs the kernel's sch_netem: refused clearly
where it is missing, never faked), link-down, agent-kill, host-crash, etcd-stop,
controller-kill.
"""

from __future__ import annotations

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

from vxlab.lab import faultops, faultspec
from vxlab.lab.faultops import Lab
from vxlab.lab.faultspec import FaultError
from vxlab.lab.state import LabState
from vxlab.lab.supervisor import Command, Proc

__all__ = ["Fault", "FaultError", "add", "heal", "heal_all", "listing", "stop_timers"]


@dataclass
class Fault:
    id: str
    kind: str
    params: dict[str, Any]
    started: float                          # time.time()
    until: float | None = None              # healed automatically then (`--for`)
    undo: dict[str, Any] = field(default_factory=dict)
    timer: Proc | None = None

    def describe(self) -> str:
        return faultspec.describe(self.kind, self.params)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("undo")
        d["timer"] = None if self.timer is None else self.timer.pid
        d["description"] = self.describe()
        return d


# --- the record on disk ---------------------------------------------------------------
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
    return Fault(**{**raw, "timer": timer})


def listing(lab: Lab) -> list[Fault]:
    try:
        return [_load(f) for f in json.loads(_path(lab).read_text())["faults"]]
    except (OSError, ValueError, KeyError):
        return []


# --- add / heal -------------------------------------------------------------------------
def add(lab: Lab, kind: str, *, duration: float | None = None, **params: Any) -> Fault:
    """Inject one fault; with `duration`, a timer process heals it after that many seconds."""
    hosts = {h.name for h in (lab.state.topology.hosts if lab.state.topology else ())}
    params = faultspec.validate(kind, params, hosts=hosts, members=max(1, len(lab.state.etcd)),
                                control=bool(lab.state.topology and lab.state.topology.control == "underlay"))
    if duration is not None and duration <= 0:
        raise FaultError("for: must be a positive duration")
    with _locked(lab) as book:
        active = [_load(f) for f in book["faults"]]
        claims = faultspec.claims(kind, params)
        for other in active:
            clash = claims & faultspec.claims(other.kind, other.params)
            if clash:
                raise FaultError(f"{kind}: conflicts with active fault {other.id} ({other.describe()}) "
                                 f"on {sorted(clash)[0]}; heal it first")
        fault = Fault(id=f"f{book['next']}", kind=kind, params=params, started=time.time())
        fault.undo = faultops.apply(lab, fault.id, kind, params)
        if duration is not None:
            fault.until = fault.started + duration
            fault.timer = _start_timer(lab, fault.id, fault.until)
        book["next"] += 1
        book["faults"].append(_dump(fault))
    return fault


def heal(lab: Lab, fault_id: str, *, from_timer: bool = False) -> Fault:
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


def heal_all(lab: Lab) -> list[Fault]:
    """Heal every active fault, newest first (so stacked faults unwind in order)."""
    return [heal(lab, f.id) for f in reversed(listing(lab))]


def stop_timers(lab: Lab) -> None:
    """For `down`: the lab's namespaces and processes go anyway; only timers remain."""
    for f in listing(lab):
        if f.timer is not None:
            f.timer.stop(sig=signal.SIGKILL)


def _dump(f: Fault) -> dict[str, Any]:
    return asdict(f)


def _start_timer(lab: Lab, fault_id: str, until: float) -> Proc:
    """A process that heals the fault at `until` (vxlab.lab.faulttimer)."""
    return lab.supervisor.start(Command((sys.executable, "-m", "vxlab.lab.faulttimer", lab.name, fault_id,
                                         repr(until)), log=str(lab.supervisor.log("faults"))))
