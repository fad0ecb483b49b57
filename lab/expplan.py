"""An experiment's plan: the scenario against what the controller knows, before anything starts.

`plan(sc, endpoints=…, hosts=…, lab=…)` resolves the probes to (src, dst, network,
address) from the controller's endpoints and turns each timeline entry into a `Step`:
when it starts and heals, which way it goes and with what lease.

- `API`: the kinds the agents carry out (partition, loss, rate, delay, link-down; and
  agent-kill and host-crash on real hosts) go through the controller's fault API; the
  entry's `for:` is the fault's duration (its etcd lease), the heal its delete (or the
  lease running out first). An entry without `for:` lasts until the end: its lease is
  the rest of the run plus LEASE_MARGIN, so a run that dies leaves nothing behind.
- `LAB`: the lab's own processes (etcd, the controller, and in a lab agent-kill and
  host-crash, which also take the host's switch port down) go through the lab runner,
  and only in a lab: without one the entry is refused, one line naming it and why.

Every problem is a ScenarioError naming the scenario's path (`probes[0].src: no
container 'c9' in this deployment`, `timeline[1].fault.host: no host 'h9' …`). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vxlab import faultkinds
from vxlab.errors import VxError
from vxlab.lab.scenario import ProbeSpec, Scenario, ScenarioError
from vxlab.model import Endpoint

API, LAB = "api", "lab"
LEASE_MARGIN = 2.0  # seconds an entry without `for:` outlives the run (its lease: a safety net)


@dataclass
class Pair:
    src: str
    dst: str
    network: str
    ip: str
    src_host: str = ""
    dst_host: str = ""
    interval: float = 0.1
    tcp: bool = False
    samples: list[tuple[float, float | None]] = field(default_factory=list)  # (t, rtt ms | None)
    rates: list[tuple[float, float]] = field(default_factory=list)           # (t, Mbit/s)
    tcp_error: str = ""
    gaps: list[tuple[float, float]] = field(default_factory=list)  # no samples: the probe's op was down
    probe_error: str = ""
    held: list[tuple[float, float, int]] = field(default_factory=list)  # (from, to, dropped): samples its
    # agent held while cut from the controller, handed over when it was back

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"


@dataclass(frozen=True)
class Step:
    index: int                  # in the timeline
    at: float
    heal_at: float | None       # None: healed at the end
    kind: str
    params: dict[str, object]
    via: str                    # API or LAB
    lease: float                # API: the fault's duration; 0 for LAB
    targets: tuple[str, ...]    # the hosts it acts on


@dataclass(frozen=True)
class Plan:
    pairs: list[Pair]
    steps: list[Step]


def plan(sc: Scenario, *, endpoints: Iterable[Endpoint], hosts: Iterable[str], lab: bool) -> Plan:
    """See the module's docstring; `lab`: a lab runner is there for the LAB kinds."""
    eps = list(endpoints)
    known = set(hosts)
    steps = [_step(sc, i, known, lab=lab) for i in range(len(sc.timeline))]
    return Plan(resolve(sc, eps), steps)


def resolve(sc: Scenario, eps: list[Endpoint]) -> list[Pair]:
    """The probes as pairs, from the controller's endpoints."""
    nets: dict[str, dict[str, Endpoint]] = {}
    for e in eps:
        nets.setdefault(e.name, {})[e.network] = e
    for i, p in enumerate(sc.probes):
        for side, name in (("src", p.src), ("dst", p.dst)):
            if name not in nets:
                raise ScenarioError(f"{p.path or f'probes[{i}]'}.{side}", f"no container {name!r} in this deployment")
    specs = list(sc.probes)
    if sc.all_pairs:  # every pair sharing a network, once, unless a probe names it already
        named = {frozenset((p.src, p.dst)) for p in specs}
        names = sorted(nets)
        specs += [ProbeSpec(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                  if set(nets[a]) & set(nets[b]) and frozenset((a, b)) not in named]
    pairs = []
    for i, p in enumerate(specs):
        shared = sorted(set(nets[p.src]) & set(nets[p.dst]))
        if p.network:
            shared = [n for n in shared if n == p.network]
        if not shared:
            raise ScenarioError(p.path or "probes", f"{p.src!r} and {p.dst!r} share no network"
                                + (f" named {p.network!r}" if p.network else ""))
        src, dst = nets[p.src][shared[0]], nets[p.dst][shared[0]]
        pairs.append(Pair(p.src, p.dst, shared[0], dst.ip, src.host, dst.host, p.interval, p.tcp))
    return pairs


def _step(sc: Scenario, i: int, known: set[str], *, lab: bool) -> Step:
    e = sc.timeline[i]
    kind = faultkinds.KINDS[e.kind]
    path = f"timeline[{i}].fault"
    for name in ("host", "hosts", "from"):
        value = e.params.get(name)
        for h in ([value] if isinstance(value, str) else list(value or [])):  # type: ignore[call-overload]
            if h != faultkinds.CONTROL and h not in known:
                raise ScenarioError(f"{path}.{name}", f"no host {h!r} in this deployment")
    via = API if kind.runs == faultkinds.AGENT or (kind.runs == faultkinds.HOST and not lab) else LAB
    if via == LAB and not lab:
        raise ScenarioError(f"{path}.kind", f"{e.kind} acts on a lab's own processes: it runs only in a lab, "
                                            "not against a deployment (--controller)")
    lease = 0.0
    if via == API:
        lease = e.duration if e.duration is not None else sc.duration - e.at + LEASE_MARGIN
        try:
            faultkinds.check_duration(e.kind, e.params, lease, field="")
        except VxError as err:
            raise ScenarioError(f"timeline[{i}].for", err.message.partition(": ")[2] or err.message) from None
    heal_at = e.at + e.duration if e.duration is not None else None
    return Step(i, e.at, heal_at, e.kind, dict(e.params), via, lease, tuple(kind.targets(e.params)))
