"""The registry of fault kinds: the one owner of what a fault is, before it touches anything.

Each kind (`Kind`) carries its parameters (`Param`: name, type, default, bounds, help),
where it runs (`AGENT`: the agents of its target hosts reconcile it; `LAB`: a lab
runner applies it to lab processes; `HOST`: an agent on real hosts, the lab runner in a
lab), the objects it holds exclusively (`claims`: two active faults may not claim one),
the hosts that act on it (`targets`), whether it can cut an agent from the control plane
(`cuts_control`: such a fault needs a duration, or its agent could never hear the heal),
a one-line description and its CLI help. The controller validates with it, the agents
read their faults with it, the lab and the CLI build their help and checks from it.

`validate(kind, params, hosts=…)` returns normalised, typed parameters or raises
`InvalidArgument` naming the field (`fault.params.percent`, or `percent` with
`field=""`) and the reason; `encode`/`decode` carry them as the API's string map.
Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vxlab.errors import FailedPrecondition, InvalidArgument

AGENT, LAB, HOST = "agent", "lab", "host"   # where a kind runs (HOST: the agent on real hosts, the lab in a lab)
CONTROL = "control"                          # a partition side: the controller addresses the agents dial
DIRECTIONS = ("egress", "ingress", "both")
ETCD_MEMBERS_MAX = 3
DURATION_MAX = 7 * 24 * 3600.0               # a week: longer is a mistake, not an experiment
_REQUIRED = object()
Params = dict[str, Any]


@dataclass(frozen=True)
class Param:
    """One parameter: `type` is host (one host name), hosts (a list, or "a,b"), sides (hosts
    or `control`), number, int, bool or choice; no `default`: required."""

    name: str
    type: str
    help: str
    default: Any = _REQUIRED
    low: float = 0.0
    high: float = 0.0
    low_open: bool = True      # low itself is out of range
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class Kind:
    name: str
    help: str                  # what it does, for `fault add --help`
    runs: str                  # AGENT, LAB or HOST
    params: tuple[Param, ...] = ()
    claims: Callable[[Params], set[str]] = lambda p: set()
    targets: Callable[[Params], list[str]] = lambda p: [p["host"]] if "host" in p else []
    describe: Callable[[Params], str] = lambda p: ""
    cuts_control: Callable[[Params], str] = lambda p: ""   # why it needs a duration ("" when it does not)
    check: Callable[[Params, int], None] = lambda p, members: None  # cross-parameter checks (members: etcd's)

    def usage(self) -> str:
        """`loss --host H --percent P [--direction D]`"""
        opts = [f"--{p.name.replace('_', '-')}" + ("" if p.type == "bool" else f" {_METAVAR[p.type]}")
                for p in self.params]
        return " ".join([self.name, *(o if p.required else f"[{o}]" for o, p in zip(opts, self.params))])


_METAVAR = {"host": "H", "hosts": "A[,B]", "sides": "A[,B]", "number": "N", "int": "N", "bool": "", "choice": "D"}


def sides(direction: str) -> tuple[str, ...]:
    return ("egress", "ingress") if direction == "both" else (direction,)


def _qdiscs(p: Params) -> set[str]:
    return {f"the {side} qdisc of {p['host']}" for side in sides(p["direction"])}


def _on(p: Params, what: str) -> str:
    return f"{what} on {p['host']} ({p['direction']})"


def _check_partition(p: Params, members: int) -> None:
    if both := set(p["hosts"]) & set(p["from"]):
        raise _Bad("from", f"{sorted(both)[0]!r} is on both sides of the partition")


def _check_member(p: Params, members: int) -> None:
    if not 1 <= p["member"] <= members:
        hint = " (a cluster needs `etcd: {members: 3}` in the topology)" if members == 1 else ""
        raise _Bad("member", f"the lab's etcd members are 1..{members}, not {p['member']!r}{hint}")


HOST_PARAM = Param("host", "host", "the host")
DIRECTION = "egress (leaving the host), ingress (arriving) or both"
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("partition", "drop IP between two sets of hosts (a side may be `control`: the controllers the "
         "agents dial)", AGENT,
         (Param("hosts", "sides", "partition: one side"), Param("from", "sides", "partition: the other side"),
          Param("oneway", "bool", "partition: drop only HOSTS -> FROM", default=False)),
         targets=lambda p: sorted((set(p["hosts"]) | set(p["from"])) - {CONTROL}),
         describe=lambda p: f"partition {','.join(p['hosts'])} {'->' if p['oneway'] else '<->'} {','.join(p['from'])}",
         cuts_control=lambda p: "a partition from the control plane" if CONTROL in p["hosts"] + p["from"] else "",
         check=_check_partition),
    Kind("loss", "drop a share of the host's underlay packets at random", AGENT,
         (HOST_PARAM, Param("percent", "number", "loss: percent of packets dropped", high=100),
          Param("direction", "choice", f"loss, rate, delay: {DIRECTION}", default="egress", choices=DIRECTIONS)),
         describe=lambda p: _on(p, f"loss {p['percent']:g}%"),
         cuts_control=lambda p: "a loss of 100 %" if p["percent"] >= 100 else ""),
    Kind("rate", "limit the host's underlay bandwidth (token bucket)", AGENT,
         (HOST_PARAM, Param("mbit", "number", "rate: the limit in Mbit/s", high=32_000),
          Param("direction", "choice", DIRECTION, default="both", choices=DIRECTIONS)),
         claims=_qdiscs, describe=lambda p: _on(p, f"rate {p['mbit']:g} Mbit/s")),
    Kind("delay", "delay the host's underlay packets (netem; never faked where the kernel lacks it)", AGENT,
         (HOST_PARAM, Param("ms", "number", "delay: milliseconds", high=60_000),
          Param("jitter_ms", "number", "delay: jitter in ms", default=0.0, high=60_000, low_open=False),
          Param("direction", "choice", DIRECTION, default="egress", choices=DIRECTIONS)),
         claims=_qdiscs, describe=lambda p: _on(p, f"delay {p['ms']:g} ms ±{p['jitter_ms']:g}")),
    Kind("link-down", "the host's underlay device down", AGENT, (HOST_PARAM,),
         claims=lambda p: {f"the link of {p['host']}"}, describe=lambda p: f"link-down {p['host']}",
         cuts_control=lambda p: "a link-down"),
    Kind("agent-kill", "the host's agent killed (a lab: kill -9, started again on heal; a real host: it exits "
         "with code 75 and systemd restarts it)", HOST, (HOST_PARAM,),
         claims=lambda p: {f"the agent of {p['host']}"}, describe=lambda p: f"agent-kill {p['host']}"),
    Kind("host-crash", "agent killed and underlay link down", HOST, (HOST_PARAM,),
         claims=lambda p: {f"the link of {p['host']}", f"the agent of {p['host']}"},
         describe=lambda p: f"host-crash {p['host']}", cuts_control=lambda p: "a host-crash"),
    Kind("etcd-stop", "SIGTERM every etcd member of the lab", LAB,
         claims=lambda p: {f"etcd member {i}" for i in range(1, ETCD_MEMBERS_MAX + 1)}, describe=lambda p: "etcd-stop"),
    Kind("etcd-member-kill", "SIGKILL one member of the lab's etcd cluster", LAB,
         (Param("member", "int", "etcd-member-kill: which member (1..3)", low=-1e9, high=1e9),),
         claims=lambda p: {f"etcd member {p['member']}"}, describe=lambda p: f"etcd-member-kill {p['member']}",
         check=_check_member),
    Kind("controller-kill", "SIGKILL the lab's controller", LAB,
         claims=lambda p: {"the controller"}, describe=lambda p: "controller-kill"),
)}


class _Bad(Exception):
    """A parameter error before the field prefix is known."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def _field(field: str, name: str) -> str:
    return f"{field}.params.{name}" if field else name


def kind_of(kind: str, *, field: str = "fault") -> Kind:
    found = KINDS.get(kind)
    if found is None:
        raise InvalidArgument(f"{field}.kind" if field else "kind",
                              f"unknown fault kind {kind!r} (kinds: {', '.join(KINDS)})")
    return found


def validate(kind: str, params: Mapping[str, Any], *, hosts: Iterable[str] | None = None, members: int = 1,
             field: str = "fault") -> Params:
    """Normalised parameters (typed: str, list[str], float, int, bool) of a fault, or
    InvalidArgument. `hosts`: the names a host parameter may take (None: any valid name,
    for a reader of parameters the controller checked); `members`: the lab's etcd members;
    `field`: the prefix of the field names in errors ("": the bare parameter name)."""
    k = kind_of(kind, field=field)
    known = None if hosts is None else set(hosts)
    given = {_canonical(name): v for name, v in params.items() if v is not None}
    by_name = {p.name: p for p in k.params}
    try:
        for name in given:
            if name not in by_name:
                taken = ", ".join(by_name) or "none"
                raise _Bad(name, f"not a parameter of {kind} (it takes: {taken})")
        out: Params = {}
        for p in k.params:
            if p.name not in given:
                if p.required:
                    raise _Bad(p.name, f"{kind} needs it")
                out[p.name] = p.default
                continue
            out[p.name] = _coerce(p, given[p.name], known)
        k.check(out, members)
    except _Bad as e:
        raise InvalidArgument(_field(field, e.name), e.reason) from None
    return out


def _canonical(name: str) -> str:
    return "from" if name == "from_" else name.replace("-", "_")


def _coerce(p: Param, value: Any, known: set[str] | None) -> Any:
    if p.type == "host":
        names = _names(value, p.name, known, control=False)
        if len(names) != 1:
            raise _Bad(p.name, f"exactly one host, not {value!r}")
        return names[0]
    if p.type in ("hosts", "sides"):
        return _names(value, p.name, known, control=p.type == "sides")
    if p.type == "bool":
        return _bool(value, p.name)
    if p.type == "choice":
        if value not in p.choices:
            raise _Bad(p.name, f"must be one of {', '.join(p.choices)}, not {value!r}")
        return value
    return _number(p, value)


_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


def _names(value: Any, name: str, known: set[str] | None, *, control: bool) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else None
    if items is None:
        raise _Bad(name, f"a host name or a list of host names, not {value!r}")
    names = [str(x).strip() for x in items if str(x).strip()]
    if not names:
        raise _Bad(name, "names no host")
    for n in names:
        if control and n == CONTROL:
            continue
        if not _NAME.fullmatch(n) or (known is not None and n not in known):
            listed = f" (hosts: {', '.join(sorted(known))})" if known is not None else ""
            raise _Bad(name, f"unknown host {n!r}{listed}")
    return sorted(set(names))


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", ""):
        return False
    raise _Bad(name, f"true or false, not {value!r}")


def _number(p: Param, value: Any) -> float | int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _Bad(p.name, f"not a number: {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(x) or x > p.high or x < p.low or (p.low_open and x == p.low):
        raise _Bad(p.name, f"must be {'>' if p.low_open else '>='} {p.low:g} and <= {p.high:g}, not {value!r}")
    if p.type == "int":
        if x != int(x):
            raise _Bad(p.name, f"a whole number, not {value!r}")
        return int(x)
    return x


def encode(kind: str, params: Params) -> dict[str, str]:
    """Validated parameters as the API's string map (every parameter, defaults too)."""
    out = {}
    for p in kind_of(kind).params:
        v = params[p.name]
        if p.type in ("hosts", "sides"):
            out[p.name] = ",".join(v)
        elif p.type == "bool":
            out[p.name] = "true" if v else "false"
        elif p.type in ("number", "int"):
            out[p.name] = str(int(v)) if float(v).is_integer() else repr(float(v))
        else:
            out[p.name] = str(v)
    return out


def decode(kind: str, params: Mapping[str, str]) -> Params:
    """The typed parameters of a stored fault (InvalidArgument when they are not valid)."""
    return validate(kind, params)


def check_duration(kind: str, params: Params, duration: float, *, field: str = "fault") -> None:
    """A duration is seconds, 0 meaning none; a fault that can cut its agent from the
    control plane needs one (InvalidArgument otherwise)."""
    name = f"{field}.duration" if field else "for"
    if not math.isfinite(duration) or duration < 0 or duration > DURATION_MAX:
        raise InvalidArgument(name, f"must be 0 (none) or up to {DURATION_MAX:g} seconds, not {duration!r}")
    why = kind_of(kind, field=field).cuts_control(params)
    if why and not duration:
        raise InvalidArgument(name, f"{why} can cut an agent from the control plane: give it a duration "
                                    "(--for), or the agent could never hear the heal")


def conflict(kind: str, params: Params, active: Iterable[tuple[str, str, Params]]) -> None:
    """FailedPrecondition when the fault claims an object that one of `active` ((id, kind,
    params) of the faults in force) holds already."""
    mine = kind_of(kind).claims(params)
    for fid, other_kind, other in active:
        clash = mine & kind_of(other_kind).claims(other)
        if clash:
            raise FailedPrecondition(f"{kind}: conflicts with active fault {fid} ({describe(other_kind, other)}) "
                                     f"on {sorted(clash)[0]}; heal it first")


def describe(kind: str, params: Params) -> str:
    return kind_of(kind).describe(params) or kind


def parse_duration(value: Any, *, field: str = "for") -> float:
    """'10s', '500ms', '2m', '1.5' or a number -> seconds (InvalidArgument naming `field`)."""
    if isinstance(value, bool):
        raise InvalidArgument(field, f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
        if not m:
            raise InvalidArgument(field, f"not a duration (use e.g. 10s, 500ms, 2m): {value!r}")
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if seconds < 0 or not math.isfinite(seconds):
        raise InvalidArgument(field, "must not be negative")
    return seconds


def kinds_help() -> str:
    """Every kind's usage, for the CLI's KIND argument."""
    return " | ".join(k.usage() for k in KINDS.values())


def option_help(name: str) -> str:
    """The help of option `name` (as a parameter of every kind that takes it)."""
    helps = dict.fromkeys(p.help for k in KINDS.values() for p in k.params if p.name == name)
    users = [k.name for k in KINDS.values() if any(p.name == name for p in k.params)]
    return "; ".join(helps) if len(helps) > 1 or name != "host" else f"The host ({', '.join(users)})."
