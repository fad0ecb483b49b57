"""What a fault is, before it touches anything: kinds, parameters, validation, claims.

`validate(kind, params, hosts=…)` returns normalised parameters or raises FaultError
naming the field and the reason — nothing is changed by a bad fault. `claims` names the
objects a fault holds exclusively (a host's link, its agent, the tc root on one side of
its link, etcd, the controller); two active faults may not claim the same object.
"""

from __future__ import annotations

import re
from typing import Any

from vxlab.lab.procs import LabError


class FaultError(LabError):
    """A fault that cannot be added or healed; the message names the field."""


DIRECTIONS = ("egress", "ingress", "both")
CONTROL = "control"  # a partition side: the controller's control address (`control: underlay` labs)
# kind -> (required, optional with defaults)
KINDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "partition": (("hosts", "from"), {"oneway": False}),
    "loss": (("host", "percent"), {"direction": "egress"}),
    "rate": (("host", "mbit"), {"direction": "both"}),
    "delay": (("host", "ms"), {"jitter_ms": 0.0, "direction": "egress"}),
    "link-down": (("host",), {}),
    "agent-kill": (("host",), {}),
    "host-crash": (("host",), {}),
    "etcd-stop": ((), {}),
    "etcd-member-kill": (("member",), {}),
    "controller-kill": ((), {}),
}
ETCD_MEMBERS_MAX = 3


def parse_duration(value: Any, *, field: str = "for") -> float:
    """'10s', '500ms', '2m', '1.5' or a number -> seconds."""
    if isinstance(value, bool):
        raise FaultError(f"{field}: not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
        if not m:
            raise FaultError(f"{field}: not a duration (use e.g. 10s, 500ms, 2m): {value!r}")
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if seconds < 0:
        raise FaultError(f"{field}: must not be negative")
    return seconds


def _names(value: Any, field: str, hosts: set[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else None
    if items is None:
        raise FaultError(f"{field}: a host name or a list of host names, not {value!r}")
    names = [str(x).strip() for x in items if str(x).strip()]
    if not names:
        raise FaultError(f"{field}: names no host")
    for n in names:
        if n not in hosts:
            raise FaultError(f"{field}: unknown host {n!r} (hosts: {', '.join(sorted(hosts))})")
    return sorted(set(names))


def _number(value: Any, field: str, *, low: float, high: float, low_open: bool = True) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise FaultError(f"{field}: not a number: {value!r}") from None
    if isinstance(value, bool) or x > high or x < low or (low_open and x == low):
        raise FaultError(f"{field}: must be {'>' if low_open else '>='} {low:g} and <= {high:g}, not {value!r}")
    return x


def validate(kind: str, params: dict[str, Any], *, hosts: set[str], members: int = 1,
             control: bool = False) -> dict[str, Any]:
    """Normalised parameters of a fault, or FaultError; `members`: the lab's etcd members;
    `control`: the agents dial the controller across the underlay, so a partition's side
    may name `control` (the control address)."""
    if kind not in KINDS:
        raise FaultError(f"kind: unknown fault kind {kind!r} (kinds: {', '.join(KINDS)})")
    required, optional = KINDS[kind]
    given = {("from" if k == "from_" else k.replace("-", "_")): v for k, v in params.items() if v is not None}
    for k in given:
        if k not in required and k not in optional:
            raise FaultError(f"{k}: not a parameter of {kind} (it takes: {', '.join(required + tuple(optional)) or 'none'})")
    for k in required:
        if k not in given:
            raise FaultError(f"{k}: {kind} needs it")
    out: dict[str, Any] = {**optional, **given}
    if "host" in out:
        out["host"] = _single(out["host"], hosts)
    if kind == "partition":
        sides_ = hosts | ({CONTROL} if control else set())
        for side in ("hosts", "from"):
            if not control and CONTROL in _names(out[side], side, hosts | {CONTROL}):
                raise FaultError(f"{side}: 'control' is the control plane, which a partition cuts only in a lab with"
                                 " `control: underlay` (this lab's agents use the controller's unix socket)")
        out["hosts"], out["from"] = _names(out["hosts"], "hosts", sides_), _names(out["from"], "from", sides_)
        if both := set(out["hosts"]) & set(out["from"]):
            raise FaultError(f"from: {sorted(both)[0]!r} is on both sides of the partition")
        out["oneway"] = bool(out["oneway"])
    if "direction" in out and out["direction"] not in DIRECTIONS:
        raise FaultError(f"direction: must be one of {', '.join(DIRECTIONS)}, not {out['direction']!r}")
    if kind == "loss":
        out["percent"] = _number(out["percent"], "percent", low=0, high=100)
    if kind == "rate":
        out["mbit"] = _number(out["mbit"], "mbit", low=0, high=100_000)
    if kind == "etcd-member-kill":
        m = out["member"]
        if isinstance(m, bool) or not isinstance(m, int | str) or not str(m).isdigit() or not 1 <= int(m) <= members:
            raise FaultError(f"member: the lab's etcd members are 1..{members}, not {m!r}"
                             + (" (a cluster needs `etcd: {members: 3}` in the topology)" if members == 1 else ""))
        out["member"] = int(m)
    if kind == "delay":
        out["ms"] = _number(out["ms"], "ms", low=0, high=60_000)
        out["jitter_ms"] = _number(out["jitter_ms"], "jitter_ms", low=0, high=60_000, low_open=False)
    return out


def _single(value: Any, hosts: set[str]) -> str:
    names = _names(value, "host", hosts)
    if len(names) != 1:
        raise FaultError(f"host: exactly one host, not {value!r}")
    return names[0]


def sides(direction: str) -> tuple[str, ...]:
    return ("egress", "ingress") if direction == "both" else (direction,)


def claims(kind: str, params: dict[str, Any]) -> set[str]:
    h = params.get("host", "")
    if kind in ("rate", "delay"):
        return {f"the {side} qdisc of {h}" for side in sides(params["direction"])}
    if kind == "etcd-member-kill":
        return {f"etcd member {params['member']}"}
    return {"link-down": {f"the link of {h}"}, "agent-kill": {f"the agent of {h}"},
            "host-crash": {f"the link of {h}", f"the agent of {h}"},
            "etcd-stop": {f"etcd member {i}" for i in range(1, ETCD_MEMBERS_MAX + 1)},
            "controller-kill": {"the controller"}}.get(kind, set())


def describe(kind: str, p: dict[str, Any]) -> str:
    if kind == "partition":
        arrow = "->" if p["oneway"] else "<->"
        return f"partition {','.join(p['hosts'])} {arrow} {','.join(p['from'])}"
    if kind == "loss":
        return f"loss {p['percent']:g}% on {p['host']} ({p['direction']})"
    if kind == "rate":
        return f"rate {p['mbit']:g} Mbit/s on {p['host']} ({p['direction']})"
    if kind == "delay":
        return f"delay {p['ms']:g} ms ±{p['jitter_ms']:g} on {p['host']} ({p['direction']})"
    if kind == "etcd-member-kill":
        return f"etcd-member-kill {p['member']}"
    return f"{kind} {p['host']}" if "host" in p else kind
