"""The rogue-VTEP allow-list: what it should hold, how it is planned, and its nftables
form (rendering and parsing, pure; agent/nft.py writes and reads it).

Like Calico's ipset of known hosts: in its own namespace every agent keeps a table of
its own, `inet vxlab_vtep`, with a set `vteps` of the underlay addresses of every host
in its cache (alive or not: a host that is only slow must not lose its tunnels) plus
its own, and an input-hook chain dropping UDP to the VXLAN port from any other source
(and all IPv6 UDP to it: the underlay is IPv4). A frame forged by a machine on the
underlay that is not a registered host never reaches a bridge.

The whole table is replaced in one transaction (agent/nft.py: `add table; delete
table; table …`), which the kernel commits atomically: there is no moment without the
filter, and no other table is ever named.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from vxlab.agent.kernel import VtepFilter

TABLE = "vxlab_vtep"
FAMILY = "inet"
SET = "vteps"
CHAIN = "input"
AGENT_NS = "(agent namespace)"  # how plans name the agent's own namespace


def desired_filter(hosts: dict[str, str], *, me_ip: str, port: int) -> VtepFilter:
    """The allow-list for the known hosts (name -> underlay IP) and this host. Anything
    that is not an IPv4 address is left out (it could never be a VTEP, and nothing that
    is not an address is ever written into a rule)."""
    ips: set[str] = set()
    for ip in [*hosts.values(), me_ip]:
        try:
            ips.add(str(ipaddress.IPv4Address(ip)))
        except ValueError:
            continue
    return VtepFilter(port, frozenset(ips))


def diff_reason(want: VtepFilter, have: VtepFilter | None) -> str:
    """Why the allow-list must be written ("" when it is right)."""
    if have == want:
        return ""
    if have is None:
        return f"VTEP allow-list: create (port {want.port}, {len(want.vteps)} hosts)"
    parts = [f"+{ip}" for ip in _sorted(want.vteps - have.vteps)]
    parts += [f"-{ip}" for ip in _sorted(have.vteps - want.vteps)]
    if have.port != want.port:
        parts.append(f"port {have.port} -> {want.port}")
    return "VTEP allow-list: " + " ".join(parts)


def _sorted(ips: frozenset[str]) -> list[str]:
    return sorted(ips, key=ipaddress.IPv4Address)


def render(want: VtepFilter) -> str:
    """Our table holding `want`: its `table inet vxlab_vtep { … }` text."""
    port = int(want.port)
    if not 0 < port < 65536:
        raise ValueError(f"vxlan port {port}: not a UDP port")
    elems = ", ".join(str(ipaddress.IPv4Address(ip)) for ip in _sorted(want.vteps))
    elements = f"    elements = {{ {elems} }}\n" if elems else ""
    return (f"table {FAMILY} {TABLE} {{\n"
            f"  set {SET} {{\n    type ipv4_addr\n{elements}  }}\n"
            f"  chain {CHAIN} {{\n    type filter hook input priority filter - 10; policy accept;\n"
            f"    udp dport {port} ip saddr != @{SET} counter drop\n"
            f"    meta nfproto ipv6 udp dport {port} counter drop\n  }}\n}}\n")


def _rules(port: int) -> list[list[dict[str, Any]]]:
    """The rules of `render` as `nft -j` lists them, counters left out."""
    dport = {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}}
    saddr = {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": f"@{SET}"}}
    v6 = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}
    return [[dport, saddr, {"drop": None}], [v6, dport, {"drop": None}]]


def parse(listing: str) -> VtepFilter | None:
    """The allow-list from `nft -j list table inet vxlab_vtep`; None when the table is
    not exactly in the shape `render` writes (a changed rule, an extra chain, …)."""
    try:
        items = json.loads(listing)["nftables"]
    except (ValueError, KeyError, TypeError):
        return None
    sets = [i["set"] for i in items if "set" in i]
    chains = [i["chain"] for i in items if "chain" in i]
    rules = [[e for e in i["rule"].get("expr", []) if "counter" not in e] for i in items if "rule" in i]
    if len(sets) != 1 or len(chains) != 1 or not rules:
        return None
    s, c = sets[0], chains[0]
    if (s.get("name"), s.get("type"), c.get("name"), c.get("type"), c.get("hook"), c.get("policy")) != (
            SET, "ipv4_addr", CHAIN, "filter", "input", "accept"):
        return None
    elems = s.get("elem", [])
    if not all(isinstance(e, str) for e in elems):
        return None
    try:
        port = rules[0][0]["match"]["right"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(port, int) or rules != _rules(port):
        return None
    return VtepFilter(port, frozenset(elems))
