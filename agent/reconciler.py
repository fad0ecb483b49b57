"""Reconciler: desired (from the watch cache) vs actual (kernel) -> plan -> apply.

Between full passes the reconciler diffs against what it believes the kernel holds
(the last dump, updated by what it applied), so an event costs no dump; a full pass
(`full=True`: at start and on every periodic resync) dumps the kernel and repairs any
drift. A failed action forces the next pass to be a full one.

Besides the namespaces, the state holds what the agent keeps in its own namespace
(`AgentNs`: the rogue-VTEP allow-list, vtep.py; the NAT table, nat.py; the uplinks'
host ends; the host faults, hostfaults.py, given by the caller since they come from
the agent's fault bookkeeping): read with every dump, planned with reasons
(plan.plan_agent_ns, hostfaults.plan). `reconcile_faults` is a pass over the host faults
alone, for an agent that has no snapshot yet (it enforces and heals from its journal).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vxlab.agent import hostfaults, metrics
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo, desired_agent_ns, desired_state
from vxlab.agent.kernel import AgentNs, HostFaults, Kernel, KernelError, Namespace
from vxlab.agent.plan import Action, make_plan, plan_agent_ns

log = logging.getLogger("vxlab.agent")


@dataclass
class PassResult:
    actions: list[Action]
    writes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    full: bool = False
    failed: list[Action] = field(default_factory=list)  # the actions that failed

    @property
    def ok(self) -> bool:
        return not self.errors


_ENTRY_METHODS = {"add_fdb": True, "add_neigh": True, "del_fdb": False, "del_neigh": False}


def _batched(actions: list[Action]) -> list[Action | tuple[str, list[Any], list[Any]]]:
    """Consecutive FDB/neighbour actions in one namespace become one bulk step (the
    kernel sends them in a few system calls); everything else runs one by one, in order."""
    out: list[Action | tuple[str, list[Any], list[Any]]] = []
    for a in actions:
        if a.method not in _ENTRY_METHODS:
            out.append(a)
            continue
        last = out[-1] if out else None
        if not isinstance(last, tuple) or last[0] != a.ns:
            last = (a.ns, [], [])
            out.append(last)
        (last[1] if _ENTRY_METHODS[a.method] else last[2]).append(a.args[1])
    return out


def observe(kernel: Kernel, prefix: str, *, underlay: str = "") -> tuple[dict[str, Namespace], AgentNs]:
    """What the kernel holds: the owned namespaces' dump and the agent's namespace (with
    the host faults on `underlay`, when named)."""
    return kernel.dump(prefix), kernel.agent_ns(underlay=underlay)


class Reconciler:
    def __init__(self, kernel: Kernel, me: HostInfo, *, underlay_dev: str = "") -> None:
        self.kernel = kernel
        self.me = me
        self.underlay_dev = underlay_dev  # host faults act on it ("": none are planned)
        self.naming = me.naming
        self._believed: dict[str, Namespace] | None = None
        self._believed_own = AgentNs()

    def actual(self, *, full: bool) -> dict[str, Namespace]:
        if full or self._believed is None:
            self._believed, self._believed_own = observe(self.kernel, self.me.netns_prefix,
                                                         underlay=self.underlay_dev)
        return self._believed

    def plan(self, state: StateCache, *, full: bool = False, assume_alive: frozenset[str] = frozenset(),
             faults: HostFaults | None = None) -> tuple[list[Action], dict[str, Namespace]]:
        """The actions and the desired namespaces (`--dry-run`)."""
        actions, desired, _own = self._plan(state, full=full, assume_alive=assume_alive, faults=faults)
        return actions, desired

    def _plan(self, state: StateCache, *, full: bool, assume_alive: frozenset[str],
              faults: HostFaults | None) -> tuple[list[Action], dict[str, Namespace], AgentNs]:
        actual = self.actual(full=full)
        desired = desired_state(state, self.me, actual, assume_alive=assume_alive)
        own = desired_agent_ns(state, self.me, desired)
        actions = make_plan(desired, actual, self.naming, handoffs=own.handoffs)
        mine = plan_agent_ns(own, self._believed_own, desired, actions) + self._fault_plan(faults)
        own = dataclasses.replace(own, faults=self._believed_own.faults if faults is None else faults)
        return sorted(mine + actions, key=lambda a: a.phase), desired, own

    def _fault_plan(self, faults: HostFaults | None) -> list[Action]:
        if faults is None or not self.underlay_dev:
            return []
        return hostfaults.plan(faults, self._believed_own.faults, dev=self.underlay_dev)

    def _run(self, actions: list[Action], result: PassResult) -> None:
        """Carry out `actions` in order; what fails is recorded in `result`, the rest goes on."""
        before = Counter(self.kernel.writes)
        for step in _batched(actions):
            try:
                if isinstance(step, Action):
                    getattr(self.kernel, step.method)(*step.args, **dict(step.kwargs))
                else:
                    ns, add, delete = step
                    self.kernel.apply_entries(ns, add=add, delete=delete)
            except KernelError as e:
                what = step.describe() if isinstance(step, Action) else f"{len(step[1]) + len(step[2])} entries in {step[0]}"
                result.errors.append(f"{what}: {e}")
                if isinstance(step, Action):
                    result.failed.append(step)
                metrics.ERRORS.labels("kernel").inc()
                log.warning("%s failed: %s", what, e)
        result.writes = Counter(self.kernel.writes) - before
        for op, n in result.writes.items():
            metrics.NETLINK_OPS.labels(op).inc(n)

    def reconcile_faults(self, faults: HostFaults) -> PassResult:
        """A pass over the host faults alone, against a fresh read of the agent's namespace."""
        start = time.perf_counter()
        have = self.kernel.agent_ns(underlay=self.underlay_dev).faults
        result = PassResult(sorted(hostfaults.plan(faults, have, dev=self.underlay_dev), key=lambda a: a.phase),
                            full=True)
        self._run(result.actions, result)
        self._believed = None  # the next full pass reads everything
        result.seconds = time.perf_counter() - start
        return result

    def reconcile(self, state: StateCache, *, full: bool = False, assume_alive: frozenset[str] = frozenset(),
                  actual: tuple[dict[str, Namespace], AgentNs] | None = None,
                  faults: HostFaults | None = None) -> PassResult:
        """One pass. `actual`: an `observe` made elsewhere (the agent's dump thread);
        without it a full pass dumps here. `faults`: the host faults wanted (None: they
        are not planned)."""
        start = time.perf_counter()
        if actual is not None:
            self._believed, self._believed_own = actual
        actions, desired, own = self._plan(state, full=full and actual is None, assume_alive=assume_alive,
                                           faults=faults)
        result = PassResult(actions, full=full)
        had = self._believed_own.faults
        self._run(actions, result)
        if result.ok:
            kept = {k: v for k, v in (self._believed or {}).items() if not self.naming.owns_ns(k, v.marker)}
            self._believed = {**kept, **desired}
            self._believed_own = dataclasses.replace(own, faults=hostfaults.believed(own.faults, had))
        else:
            self._believed = None  # find out what really happened on the next pass
        result.seconds = time.perf_counter() - start
        metrics.RECONCILE_SECONDS.labels("full" if full else "event").observe(result.seconds)
        metrics.FDB_ENTRIES.set(sum(len(ns.fdb) for ns in desired.values()))
        metrics.NEIGH_ENTRIES.set(sum(len(ns.neigh) for ns in desired.values()))
        return result
