"""Network policy: what a rule means, written once and shared by the controller
(validation), the agents (their nftables rules, agent/policy_nft.py) and the lab
(`check` expects exactly what the rules allow).

A policy belongs to one network and matches traffic between its endpoints by source
and destination selector (a container, a label `key=value`, an IPv4 CIDR, or anything),
protocol (`any`, `tcp`, `udp`, `icmp`) and, for TCP and UDP, destination ports. The
rules of a network are evaluated in order of priority (lowest first, then name) and
the first match decides; traffic no rule matches is allowed (Docker's default within a
network). Rules govern new connections: the replies of an allowed connection pass.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from vxlab import validate
from vxlab.errors import InvalidArgument, NotFound
from vxlab.model import Endpoint, Policy, Selector

ACTIONS = ("allow", "deny")
PROTOCOLS = ("any", "tcp", "udp", "icmp")
DEFAULT_PRIORITY = 1000
PRIORITY_MAX = 65_535
PORTS_MAX = 16
NAME_MAX = 32


def check_selector(sel: Selector, *, field: str) -> Selector:
    """At most one of container, label and cidr, each well formed."""
    given = [k for k in ("container", "label", "cidr") if getattr(sel, k)]
    if len(given) > 1:
        raise InvalidArgument(field, f"give one of container, label or cidr, not {' and '.join(given)}")
    if sel.container:
        validate.name(sel.container, field=f"{field}.container", max_len=validate.CONTAINER_NAME_MAX)
    if sel.label:
        key, eq, value = sel.label.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"{field}.label", f"{sel.label[:40]!r} is not key=value")
        validate.labels({key: value}, field=f"{field}.label")
    if sel.cidr:
        try:
            net = ipaddress.IPv4Network(sel.cidr.strip())
        except ValueError:
            raise InvalidArgument(f"{field}.cidr", f"{sel.cidr[:50]!r} is not an IPv4 CIDR with host bits"
                                  " zero (e.g. 10.10.0.0/24)") from None
        return Selector(cidr=str(net))
    return sel


def _port(text: str, *, field: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65_535:
        raise InvalidArgument(field, f"{text[:20]!r} is not a port in 1..65535")
    return int(text)


def port_ranges(ports: Iterable[str], *, field: str = "policy.ports") -> list[tuple[int, int]]:
    """"80" and "8000-8099" as (low, high) pairs."""
    out = []
    for text in ports:
        lo, dash, hi = text.strip().partition("-")
        a = _port(lo, field=field)
        b = _port(hi, field=field) if dash else a
        if b < a:
            raise InvalidArgument(field, f"{text[:20]!r}: the range ends below its start")
        out.append((a, b))
    return out


def check(p: Policy) -> Policy:
    """Validate a create request; returns it normalised (defaults filled in, ports and
    CIDRs in canonical form)."""
    validate.name(p.name, field="policy.name", max_len=NAME_MAX)
    validate.name(p.network, field="policy.network", max_len=validate.NETWORK_NAME_MAX)
    if p.action not in ACTIONS:
        raise InvalidArgument("policy.action", f"{p.action[:20]!r} is not one of {', '.join(ACTIONS)}")
    protocol = p.protocol or "any"
    if protocol not in PROTOCOLS:
        raise InvalidArgument("policy.protocol", f"{protocol[:20]!r} is not one of {', '.join(PROTOCOLS)}")
    if len(p.ports) > PORTS_MAX:
        raise InvalidArgument("policy.ports", f"{len(p.ports)} entries; at most {PORTS_MAX}")
    if p.ports and protocol not in ("tcp", "udp"):
        raise InvalidArgument("policy.ports", f"ports need protocol tcp or udp, not {protocol}")
    ranges = port_ranges(p.ports)
    if not 0 <= p.priority <= PRIORITY_MAX:
        raise InvalidArgument("policy.priority", f"{p.priority} is out of range 0..{PRIORITY_MAX} (0 = {DEFAULT_PRIORITY})")
    return dataclasses.replace(
        p, protocol=protocol, priority=p.priority or DEFAULT_PRIORITY,
        source=check_selector(p.source, field="policy.source"),
        destination=check_selector(p.destination, field="policy.destination"),
        ports=tuple(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges))


def parse_selector(text: str, *, field: str) -> Selector:
    """The CLI's and topology files' short form: `*` or "" (anything), `a.b.c.d/n` (a
    CIDR), `key=value` (a label), else a container name."""
    text = text.strip()
    if text in ("", "*", "any"):
        return Selector()
    if "/" in text and "=" not in text:
        sel = Selector(cidr=text)
    elif "=" in text:
        sel = Selector(label=text)
    else:
        sel = Selector(container=text)
    return check_selector(sel, field=field)


def selector_text(sel: Selector) -> str:
    """The short form `parse_selector` reads back."""
    return sel.container or sel.label or sel.cidr or "*"


def to_plain(p: Policy) -> dict[str, object]:
    """A rule as a topology file writes it (`policies:`)."""
    d: dict[str, object] = {"name": p.name, "network": p.network, "action": p.action,
                            "from": selector_text(p.source), "to": selector_text(p.destination),
                            "proto": p.protocol or "any", "priority": p.priority or DEFAULT_PRIORITY}
    if p.ports:
        d["ports"] = list(p.ports)
    return d


def ordered(policies: Iterable[Policy]) -> list[Policy]:
    """Evaluation order: priority, then name."""
    return sorted(policies, key=lambda p: (p.priority or DEFAULT_PRIORITY, p.name))


def matches(sel: Selector, ep: Endpoint) -> bool:
    """Does the selector match this endpoint (of the policy's network)?"""
    if sel.container:
        return ep.name == sel.container
    if sel.label:
        key, _, value = sel.label.partition("=")
        return ep.labels.get(key) == value
    if sel.cidr:
        return bool(ep.ip) and ipaddress.IPv4Address(ep.ip) in ipaddress.IPv4Network(sel.cidr)
    return True


def _covers(p: Policy, protocol: str, port: int) -> bool:
    if p.protocol in ("", "any"):
        return True
    if p.protocol != protocol:
        return False
    return not p.ports or any(a <= port <= b for a, b in port_ranges(p.ports))


def decide(policies: Iterable[Policy], src: Endpoint, dst: Endpoint, *, protocol: str,
           port: int = 0) -> Policy | None:
    """The rule that decides a new connection from `src` to `dst` (same network), or None
    when none matches (allowed by default)."""
    for p in ordered(q for q in policies if q.network == dst.network):
        if matches(p.source, src) and matches(p.destination, dst) and _covers(p, protocol, port):
            return p
    return None


def allowed(policies: Iterable[Policy], src: Endpoint, dst: Endpoint, *, protocol: str, port: int = 0) -> bool:
    rule = decide(policies, src, dst, protocol=protocol, port=port)
    return rule is None or rule.action == "allow"


def describe(p: Policy) -> str:
    """One line: `deny tcp web -> db :5432 (priority 100)`."""
    ports = f" :{','.join(p.ports)}" if p.ports else ""
    return (f"{p.action} {p.protocol or 'any'} {p.source.describe()} -> {p.destination.describe()}{ports}"
            f" (priority {p.priority or DEFAULT_PRIORITY})")


def pair(endpoints: Iterable[Endpoint], source: str, destination: str, *, network: str = "") -> tuple[Endpoint, Endpoint]:
    """The endpoints of containers `source` and `destination` on the network they share
    (`network`, or the only one they share)."""
    eps = [e for e in endpoints if not network or e.network == network]
    on = f" on network {network!r}" if network else ""
    src = {e.network: e for e in eps if e.name == source}
    dst = {e.network: e for e in eps if e.name == destination}
    if not src:
        raise NotFound(f"source: no container {source!r}{on}")
    if not dst:
        raise NotFound(f"destination: no container {destination!r}{on}")
    common = sorted(set(src) & set(dst))
    if not common:
        raise InvalidArgument("network", f"{source!r} and {destination!r} share no network")
    if len(common) > 1:
        raise InvalidArgument("network", f"they share {', '.join(common)}: pick one with --network")
    return src[common[0]], dst[common[0]]
