"""Host faults: what the agent's own namespace should hold for the faults that target its
host, and the plan that gets it there (pure; kinds and parameters: vxlab.faultkinds).

- partition: rules in the fault table (agent/fault_nft.py) dropping IP to and from the
  underlay addresses of the other side's hosts (from the watch cache) and, for the side
  `control`, the controller addresses the agent dials; one-way (A -> B): A drops its
  output to B, B its input from A; both ways, each side drops both.
- loss: `numgen random mod 10000 < P·100` on the underlay device, output/input/forward
  by direction.
- rate (tbf) and delay (netem): a root qdisc of ours on the underlay (egress), and for
  ingress one on vxifb0, the IFB device the underlay's ingress is redirected to.
- link-down, and the link part of a host-crash: the underlay device down; when no fault
  holds it down any more and the agent took it down, up again with the routes it lost.
- agent-kill, host-crash: the agent carries them out once (reports, notes it in its
  journal, exits with EXIT_KILLED); a fault carried out already is applied.

A fault past its `expires_at` is dropped here (the agent's own deadline, so a fault
heals even when the agent cannot hear its lease expire), and so is one that failed on
this host (it stays failed: `Context.failed`). `plan` turns desired and actual
`HostFaults` into actions with reasons, in the order that never leaves a redirect to a
missing device nor a qdisc on one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vxlab import faultkinds
from vxlab.agent import fault_nft, vtep
from vxlab.agent.kernel import FAULT_IFB, HostFaults, Qdisc, Route
from vxlab.agent.plan import Action, _act
from vxlab.errors import VxError
from vxlab.model import Fault

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
KILLS = ("agent-kill", "host-crash")


@dataclass(frozen=True)
class Context:
    """What the agent knows besides the faults."""

    host: str
    underlay_dev: str
    now: float                                      # wall clock (expires_at is wall clock)
    hosts: Mapping[str, str] = field(default_factory=dict)   # host -> underlay IP (the cache's)
    control: tuple[str, ...] = ()                   # the controller IPv4 addresses the agent dials
    control_note: str = ""                          # why there are none (for the reason)
    failed: Mapping[str, str] = field(default_factory=dict)  # fault id -> why it failed here
    killed: frozenset[str] = frozenset()            # agent-kill/host-crash carried out already
    taken_down: tuple[Route, ...] | None = None     # we took the underlay down (its routes then); None: we did not


@dataclass
class Outcome:
    """What `desired` found: the faults in force here, new failures, the ones whose time
    ran out, the kills still to carry out, and when the next one ends."""

    active: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    healed: list[str] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    deadline: float | None = None


def expires(f: Fault) -> float | None:
    """expires_at as a POSIX time (None: no duration)."""
    if not f.expires_at:
        return None
    return dt.datetime.fromisoformat(f.expires_at.replace("Z", "+00:00")).timestamp()


class _Builder:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rules: list[tuple[str, str]] = []
        self.qdiscs: dict[str, Qdisc] = {}
        self.down = False
        self.sources: dict[str, list[str]] = {}

    def _src(self, obj: str, fid: str) -> None:
        ids = self.sources.setdefault(obj, [])
        if fid not in ids:
            ids.append(fid)

    def rule(self, fid: str, chain: str, match: str) -> None:
        self.rules.append((chain, f'{match} counter drop comment "{fid}"'))
        self._src("table", fid)

    def qdisc(self, fid: str, side: str, q: Qdisc) -> str:
        dev = self.ctx.underlay_dev if side == "egress" else FAULT_IFB
        if dev in self.qdiscs:
            return f"the {side} qdisc is taken by {self.sources[f'qdisc:{dev}'][0]}"
        self.qdiscs[dev] = q
        self._src(f"qdisc:{dev}", fid)
        if side == "ingress":
            self._src("ingress", fid)
        return ""

    def side_ips(self, names: list[str]) -> tuple[list[str], str]:
        """The underlay addresses of a partition side, or why there are none."""
        ips: list[str] = []
        for name in names:
            if name == faultkinds.CONTROL:
                ips += self.ctx.control
            elif name in self.ctx.hosts and _ipv4(self.ctx.hosts[name]):
                ips.append(self.ctx.hosts[name])
        if ips:
            return sorted(set(ips), key=ipaddress.IPv4Address), ""
        if names == [faultkinds.CONTROL]:
            return [], f"the controllers this agent dials have no IPv4 address to cut ({self.ctx.control_note})"
        return [], f"no underlay address known for {', '.join(names)}"


def _ipv4(ip: str) -> bool:
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return True


def _set(ips: list[str]) -> str:
    return "{ " + ", ".join(ips) + " }"


def _render(b: _Builder, f: Fault, p: faultkinds.Params) -> str:
    """Add `f`'s part to `b`; why it cannot be done here ("" when it can)."""
    dev = b.ctx.underlay_dev
    if f.kind == "partition":
        mine_a = b.ctx.host in p["hosts"]
        other = p["from"] if mine_a else p["hosts"]
        ips, why = b.side_ips(other)
        if why:
            return why
        out_, in_ = (True, not p["oneway"]) if mine_a else (not p["oneway"], True)
        if out_:
            b.rule(f.id, "output", f"ip daddr {_set(ips)}")
            b.rule(f.id, "forward", f"ip daddr {_set(ips)}")
        if in_:
            b.rule(f.id, "input", f"ip saddr {_set(ips)}")
            b.rule(f.id, "forward", f"ip saddr {_set(ips)}")
        return ""
    if f.kind == "loss":
        if not _IFNAME.fullmatch(dev):
            return f"underlay device {dev!r}: not an interface name"
        share = round(p["percent"] * 100)  # of 10000
        chance = f" numgen random mod 10000 < {share}" if share < 10000 else ""  # 100 %: every packet
        for side in faultkinds.sides(p["direction"]):
            key, chain = ("oifname", "output") if side == "egress" else ("iifname", "input")
            b.rule(f.id, chain, f'{key} "{dev}"{chance}')
            b.rule(f.id, "forward", f'{key} "{dev}"{chance}')
        return ""
    if f.kind in ("rate", "delay"):
        q = Qdisc("tbf", rate=int(p["mbit"] * 1e6 / 8)) if f.kind == "rate" else \
            Qdisc("netem", delay_us=round(p["ms"] * 1000), jitter_us=round(p["jitter_ms"] * 1000))
        for side in faultkinds.sides(p["direction"]):
            if why := b.qdisc(f.id, side, q):
                return why
        return ""
    if f.kind in ("link-down", "host-crash"):
        b.down = True
        b._src("link", f.id)
        return ""
    if f.kind == "agent-kill":
        return ""
    return f"kind {f.kind!r}: this agent does not carry it out"


def desired(faults: Iterable[Fault], ctx: Context) -> tuple[HostFaults, Outcome]:
    """The host faults the agent's namespace should hold, and what was found on the way."""
    b, out = _Builder(ctx), Outcome()
    for f in sorted(faults, key=lambda x: (int(x.id[1:]) if x.id[1:].isdigit() else 0, x.id)):
        if ctx.host not in f.targets or f.id in ctx.failed:
            continue
        end = expires(f)
        if end is not None and end <= ctx.now:
            out.healed.append(f.id)
            continue
        if f.kind in KILLS and f.id not in ctx.killed:
            out.kills.append(f.id)  # carried out once the agent says so (no kernel state before)
        else:
            try:
                params = faultkinds.decode(f.kind, f.params)
            except VxError as e:
                out.failed[f.id] = e.message
                continue
            before = (list(b.rules), dict(b.qdiscs), b.down, {k: list(v) for k, v in b.sources.items()})
            why = _render(b, f, params)
            if why:
                b.rules, b.qdiscs, b.down, b.sources = before  # nothing of a fault that fails
                out.failed[f.id] = why
                continue
            out.active.append(f.id)
        if end is not None:
            out.deadline = end if out.deadline is None else min(out.deadline, end)
    down = True if b.down else (False if ctx.taken_down is not None else None)
    want = HostFaults(table=fault_nft.build(b.rules), qdiscs=b.qdiscs, ingress=FAULT_IFB in b.qdiscs, down=down,
                      routes=ctx.taken_down or (), sources={k: tuple(v) for k, v in b.sources.items()})
    return want, out


# --- the plan -------------------------------------------------------------------------------
def _why(want: HostFaults, obj: str, reason: str) -> str:
    ids = want.sources.get(obj, ())
    return f"{', '.join(ids)}: {reason}" if ids else reason


def plan(want: HostFaults, have: HostFaults, *, dev: str) -> list[Action]:
    """Actions that turn `have` into `want` in the agent's namespace (`dev`: the underlay)."""
    out: list[Action] = []
    here = vtep.AGENT_NS
    table = f"{fault_nft.FAMILY} {fault_nft.TABLE}"
    if why := fault_nft.diff_reason(want.table, have.table):
        if want.table is not None:
            out.append(_act("add" if have.table is None else "update", "fault-table", here, table,
                            _why(want, "table", why), "set_fault_table", "fault~", want.table))
        else:
            out.append(_act("delete", "fault-table", here, table, why, "delete_fault_table", "fault~"))
    if want.ingress and not have.ingress:
        out.append(_act("add", "fault-ingress", here, f"{FAULT_IFB} (the ingress of {dev})",
                        _why(want, "ingress", "ingress rate or delay"), "set_fault_ingress", "ingress+", dev))
    elif have.ingress and not want.ingress:
        out.append(_act("delete", "fault-ingress", here, f"{FAULT_IFB} (the ingress of {dev})",
                        "no ingress fault any more", "delete_fault_ingress", "ingress-", dev))
    for d in sorted(set(want.qdiscs) | set(have.qdiscs)):
        q, cur = want.qdiscs.get(d), have.qdiscs.get(d)
        if q is not None and q != cur:
            why = f"{q.describe()}" + (f" (was {cur.describe()})" if cur else "")
            out.append(_act("add" if cur is None else "update", "fault-qdisc", here, f"root qdisc of {d}",
                            _why(want, f"qdisc:{d}", why), "set_fault_qdisc", "qdisc~", d, q))
        elif q is None and cur is not None and not (d == FAULT_IFB and have.ingress and not want.ingress):
            out.append(_act("delete", "fault-qdisc", here, f"root qdisc of {d}", f"no fault wants {cur.describe()}",
                            "delete_fault_qdisc", "qdisc-", d))
    if want.down and not have.down:
        out.append(_act("update", "fault-link", here, dev, _why(want, "link", "down"), "set_underlay_state",
                        "fault-link-", dev, up=False, routes=have.routes))
    elif want.down is False and have.down:
        routes = ", ".join(f"{r.dst} via {r.gateway or '-'}" for r in want.routes)
        out.append(_act("update", "fault-link", here, dev, "up again: no fault holds it down"
                        + (f" (routes back: {routes})" if routes else ""), "set_underlay_state", "fault-link+", dev,
                        up=True, routes=want.routes))
    return out


def believed(want: HostFaults, have: HostFaults) -> HostFaults:
    """What the kernel holds after `plan(want, have)` was applied: `want`, but where it
    leaves the link alone, the link as it was."""
    if want.down is None:
        return dataclasses.replace(want, down=have.down, routes=have.routes)
    return dataclasses.replace(want, routes=have.routes if want.down else want.routes)


def objects(action: Action) -> str:
    """The object of a fault action, as `HostFaults.sources` names it ("" for others)."""
    if action.kind == "fault-qdisc":
        return f"qdisc:{action.args[0]}"
    return {"fault-table": "table", "fault-ingress": "ingress", "fault-link": "link"}.get(action.kind, "")
