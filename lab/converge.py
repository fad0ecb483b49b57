"""Why a lab's agents have not converged, from their status files.

Each agent writes a status file after every pass (vxlab.agentstatus.AgentStatus):
`converged`, `applied_revision`, `revision` (what its cache holds) and `last_pass` with
`full` and the pass's first `errors`. `waiting(...)` sorts the agents that are not done
yet into the ones whose full pass fails (with the first error: a full pass dumped the
kernel afresh, so the error is real and will not go away by itself) and the others
(not converged yet, not running). `wait` (what `Lab.wait_converged` runs) gives up as
soon as every agent fails, and names the failing and lagging hosts when it times out
while others converged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from vxlab.agentstatus import AgentStatus
from vxlab.lab.procs import LabError, wait_for
from vxlab.lab.supervisor import Proc

SHOWN = 5  # hosts named in one message; the rest are counted
SETTLED_S = 1.0
LOOK_EVERY_S = 0.25  # how often a waiting lab sorts its agents (a poll only asks "all converged?")


@dataclass(frozen=True)
class Waiting:
    failing: dict[str, str]  # host -> its full pass's first error
    behind: dict[str, str]   # host -> why it is not done yet (no error reported)

    @property
    def done(self) -> bool:
        return not self.failing and not self.behind

    def lines(self) -> list[str]:
        """One line per host that is not done, failing ones first."""
        return [f"{h}: {e}" for h, e in sorted(self.failing.items())] + \
               [f"{h}: {w}" for h, w in sorted(self.behind.items())]

    def summary(self) -> str:
        """Hosts with the same error named together: `h1, h2: <error>; h3: …`."""
        groups: dict[str, list[str]] = {}
        for host, why in [*sorted(self.failing.items()), *sorted(self.behind.items())]:
            groups.setdefault(why, []).append(host)
        parts = [", ".join(hosts[:SHOWN]) + (f" and {len(hosts) - SHOWN} more" if len(hosts) > SHOWN else "")
                 + f": {why}" for why, hosts in groups.items()]
        more = f"; and {len(parts) - SHOWN} more" if len(parts) > SHOWN else ""
        return "; ".join(parts[:SHOWN]) + more


class NotConverged(LabError):
    """Agents that did not converge; `waiting` says which and why."""

    def __init__(self, message: str, waiting: Waiting) -> None:
        super().__init__(message)
        self.waiting = waiting


def waiting(statuses: Mapping[str, AgentStatus], *, revision: int, pids: Mapping[str, int],
            alive: Mapping[str, bool], now: float | None = None) -> Waiting:
    """Sort the agents (host -> its status file, its current pid, whether it runs) that
    have not programmed `revision` yet. A failed full pass counts once the agent's cache
    is at `revision`, or once its status is SETTLED_S old: changes the agent depends on
    start a new pass at once, so a failure that stands that long stands for good (the
    agent's next try is its next resync)."""
    now = time.time() if now is None else now
    failing, behind = {}, {}
    for host, st in statuses.items():
        if st.programmed(revision):
            continue
        last = st.last_pass
        if not alive.get(host, True):
            behind[host] = "its agent is not running (see its log)"
        elif st.pid != pids.get(host):
            behind[host] = "no status from its agent yet"
        elif last and last.full and last.errors and (st.revision >= revision or now - (st.time or now) >= SETTLED_S):
            failing[host] = last.errors[0]
        else:
            behind[host] = f"applied revision {st.applied_revision} of {revision}" + (
                f" (its last pass: {last.errors[0]})" if last and last.errors else "")
    return Waiting(failing, behind)


def all_failing(w: Waiting, *, hosts: int, revision: int, logs: str) -> NotConverged | None:
    """The error to stop with when the full pass of every one of the `hosts` agents fails."""
    if not hosts or len(w.failing) < hosts:
        return None
    return NotConverged(f"agents cannot converge at revision {revision}: the full pass of every agent fails — "
                        f"{w.summary()} (agent logs in {logs})", w)


def wait(agents: Mapping[str, Proc], status: Callable[[str], AgentStatus], *, revision: int, timeout: float,
         logs: str, tell: Callable[[str], None] | None = None) -> None:
    """Wait until every one of `agents` (host -> process; `status(host)` reads its status
    file) has programmed `revision`. Gives up at once when every agent's full pass fails
    (NotConverged); on a timeout the LabError names the hosts not done. Either way `tell`
    hears one line per such host first."""
    def look() -> Waiting:
        return waiting({h: status(h) for h in agents}, revision=revision, pids={h: p.pid for h, p in agents.items()},
                       alive={h: p.alive() for h, p in agents.items()})

    next_look = time.monotonic() + LOOK_EVERY_S

    def done() -> bool:
        nonlocal next_look
        # The status of the agent we started: a restarted agent's predecessor left one
        # behind (unless ours is gone too: another process restarted it, trust the file).
        if all((st := status(h)).programmed(revision) and (st.pid == p.pid or not p.alive())
               for h, p in agents.items()):
            return True
        if time.monotonic() >= next_look:  # why not, less often: it reads every status and every pid
            next_look = time.monotonic() + LOOK_EVERY_S
            if stop := all_failing(look(), hosts=len(agents), revision=revision, logs=logs):
                raise stop
        return False
    try:
        wait_for(done, f"agents to converge at revision {revision}", timeout=timeout, interval=0.05,
                 explain=lambda: look().summary())
    except LabError as e:
        if tell is not None:
            for line in (e.waiting if isinstance(e, NotConverged) else look()).lines():
                tell(line)
        raise
