"""NAT for external access: what each namespace's table should hold, why it changes, and
its nftables form (rendering and parsing, pure; agent/nft.py writes it).

A non-internal network leaves its namespace through the uplink (`vxgw0`, names.py) to
the host's namespace, NATed twice, in a table `ip vxlab` of our own on each side: the
network's subnet is masqueraded out of the uplink (the host sees one 169.254.x.y per
network), and in the agent's namespace every uplink's 169.254.0.0/16 is masqueraded out
of anything but an uplink (the outside sees the host's address). The host's table is
there while any network namespace has an uplink.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Any

from vxlab.agent.kernel import Namespace, Nat
from vxlab.agent.names import Naming

TABLE = "vxlab"
FAMILY = "ip"
CHAIN = "postrouting"
UPLINKS = "169.254.0.0/16"
HOST = Nat(UPLINKS, "vxg-*", oif_negated=True)  # the agent namespace's rule
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\*?")


def network(subnet: str) -> Nat:
    """A network namespace's rule: its subnet out through its uplink."""
    return Nat(str(ipaddress.IPv4Network(subnet, strict=False)), Naming.UPLINK)


def host(desired: Iterable[Namespace]) -> Nat | None:
    """The agent namespace's rule, while any desired namespace NATs through an uplink."""
    return HOST if any(ns.nat is not None for ns in desired) else None


def diff_reason(want: Nat | None, have: Nat | None) -> str:
    """Why the table must change ("" when it is right)."""
    if want == have:
        return ""
    if want is None:
        return "NAT: no uplink needs it any more"
    rule = f"{want.source} out {'!' if want.oif_negated else ''}{want.oif}"
    return f"NAT: create ({rule})" if have is None else f"NAT: {have.source} -> {rule}"


def render(want: Nat) -> str:
    """The table's `table ip vxlab { … }` text (nft.py replaces it atomically)."""
    source = ipaddress.IPv4Network(want.source)
    if not _IFNAME.fullmatch(want.oif):
        raise ValueError(f"NAT interface {want.oif!r}: not an interface name")
    op = "!= " if want.oif_negated else ""
    return (f"table {FAMILY} {TABLE} {{\n  chain {CHAIN} {{\n"
            f"    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr {source} oifname {op}"{want.oif}" masquerade\n  }}\n}}\n')


def _rule(want: Nat) -> list[dict[str, Any]]:
    """The rule of `render` as `nft -j` lists it."""
    net = ipaddress.IPv4Network(want.source)
    source: Any = str(net.network_address) if net.prefixlen == 32 else {
        "prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    return [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": source}},
            {"match": {"op": "!=" if want.oif_negated else "==", "left": {"meta": {"key": "oifname"}},
                       "right": want.oif}},
            {"masquerade": None}]


def parse(listing: str) -> Nat | None:
    """The rule from `nft -j list table ip vxlab`; None when the table is not exactly in
    the shape `render` writes."""
    try:
        items = json.loads(listing)["nftables"]
        chains = [i["chain"] for i in items if "chain" in i]
        rules = [i["rule"].get("expr", []) for i in items if "rule" in i]
        if len(chains) != 1 or len(rules) != 1:
            return None
        c = chains[0]
        if (c.get("name"), c.get("type"), c.get("hook"), c.get("prio"), c.get("policy")) != (
                CHAIN, "nat", "postrouting", 100, "accept"):
            return None
        saddr, oif = rules[0][0]["match"]["right"], rules[0][1]["match"]
        source = f"{saddr}/32" if isinstance(saddr, str) else f"{saddr['prefix']['addr']}/{saddr['prefix']['len']}"
        have = Nat(str(ipaddress.IPv4Network(source)), oif["right"], oif_negated=oif["op"] == "!=")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return have if isinstance(have.oif, str) and rules[0] == _rule(have) else None
