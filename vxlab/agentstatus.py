"""What an agent says about itself after every pass: its status file (JSON).

The agent (vxlab.agent.runner) writes an `AgentStatus` after every pass, replacing the
file atomically; labs (`Lab.agent_status`, the convergence wait of vxlab.lab.converge),
the benchmarks and the tests read it with `AgentStatus.read`. A missing or unreadable
file reads as `AgentStatus()` (pid 0, nothing registered, nothing applied), so a reader
waiting for an agent that has not written yet simply keeps waiting.

    host, pid                    who wrote it (a restarted agent has another pid)
    underlay_ip/_dev/_mtu        the underlay it chose
    registered                   its host is registered with the controller
    revision                     what its watch cache holds
    applied_revision, converged  what its kernel is programmed for; converged: that is
                                 the cache's revision, the last pass had no error and no
                                 change waits
    last_pass                    full (a fresh kernel dump) or not, actions, writes, the
                                 first errors, milliseconds
    faults                       fault id -> the state it last reported for that fault
                                 (applied, failed, healed; agent/faultkeeper.py)
    time                         when it was written (time.time())
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LastPass:
    full: bool = False
    actions: int = 0
    writes: int = 0
    errors: tuple[str, ...] = ()  # the first few
    ms: float = 0.0


@dataclass(frozen=True)
class AgentStatus:
    host: str = ""
    pid: int = 0
    underlay_ip: str = ""
    underlay_dev: str = ""
    underlay_mtu: int = 0
    registered: bool = False
    revision: int = 0
    applied_revision: int = 0
    converged: bool = False
    last_pass: LastPass | None = None
    faults: dict[str, str] = field(default_factory=dict)  # fault id -> the state last reported for it here
    time: float = field(default=0.0)

    def programmed(self, revision: int) -> bool:
        """This agent has programmed `revision` (or later) and has nothing left to do."""
        return self.converged and self.applied_revision >= revision

    def to_json(self) -> dict[str, Any]:
        raw = asdict(replace(self, last_pass=None))
        raw["last_pass"] = None if self.last_pass is None else {**asdict(self.last_pass),
                                                                 "errors": list(self.last_pass.errors)}
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AgentStatus:
        """The fields it knows (a newer agent's extra fields are ignored)."""
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__ and k != "last_pass"}
        last = raw.get("last_pass")
        return cls(**known, last_pass=None if not isinstance(last, dict) else LastPass(
            **{**{k: v for k, v in last.items() if k in LastPass.__dataclass_fields__},
               "errors": tuple(str(e) for e in last.get("errors") or ())}))

    def write(self, path: str | Path) -> None:
        """Replace the file at `path` atomically (raises OSError)."""
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)

    @classmethod
    def read(cls, path: str | Path) -> AgentStatus:
        """The status in the file at `path`; `AgentStatus()` when it is missing or unreadable."""
        try:
            raw = json.loads(Path(path).read_text())
            return cls.from_json(raw) if isinstance(raw, dict) else cls()
        except (OSError, ValueError, TypeError):
            return cls()
