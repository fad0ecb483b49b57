"""Network policy in the kernel: the nftables table an agent keeps in each network
namespace, computed from the watch cache (pure: rendering and parsing; agent/nft.py
writes and reads it). Semantics: vxlab.policy.

Rules are enforced where the traffic arrives: in the namespace of the network on the
destination's host, the bridge hands IPv4 frames between its ports to the IP hooks
(br_netfilter, `bridge-nf-call-iptables`), so one `inet` table sees every frame to a
local container with conntrack state: replies of allowed connections pass, frames to
addresses that are not local containers pass (their own host decides), and then the
network's rules in evaluation order, first match wins, default accept. Selectors are
resolved here to addresses (a container name or a label to its endpoints' IPs); a rule
that matches no address on this host is left out. IPv6 between containers is dropped
in a network with rules (vxlab's overlay is IPv4; a rule must not be bypassed through
link-local IPv6).

The table's first rule carries `vxlab:<digest>:<rules>` as its comment, so a dump
compares one string: a missing table, another digest or rule count is rewritten whole,
atomically (agent/nfttag.py; agent/nft.py: `add table; delete table; table …` in one
transaction).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from vxlab import policy as semantics
from vxlab.agent import nfttag
from vxlab.agent.kernel import PolicyTable
from vxlab.model import Endpoint, Policy, Selector

TABLE = "vxlab_policy"
FAMILY = "inet"
CHAIN = "forward"
HEADER = "type filter hook forward priority filter; policy accept;"
SHAPE = nfttag.hooks([nfttag.Chain(CHAIN, HEADER, ())])


def _resolve(sel: Selector, members: list[Endpoint]) -> list[str] | None:
    """None: anything; else the addresses (or the CIDR) the selector stands for."""
    if sel.cidr:
        return [str(ipaddress.IPv4Network(sel.cidr))]
    if not sel.container and not sel.label:
        return None
    return sorted({e.ip for e in members if e.ip and semantics.matches(sel, e)}, key=ipaddress.IPv4Address)


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _rule(p: Policy, src: list[str] | None, dst: list[str] | None) -> str:
    parts = []
    if src is not None:
        parts.append(f"ip saddr {_set(src)}")
    if dst is not None:
        parts.append(f"ip daddr {_set(dst)}")
    if p.protocol in ("tcp", "udp", "icmp"):
        parts.append(f"meta l4proto {p.protocol}")
        if p.ports:
            ranges = semantics.port_ranges(p.ports)
            parts.append(f"{p.protocol} dport " + _set([f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]))
    verdict = "accept" if p.action == "allow" else "drop"
    return " ".join([*parts, "counter", verdict, f'comment "p:{p.name}"'])


def build(network: str, local: list[Endpoint], members: Iterable[Endpoint],
          policies: Iterable[Policy]) -> PolicyTable | None:
    """The table for one network namespace: `local` are this host's endpoints on the
    network, `members` every endpoint of it. None when no rule applies here."""
    members = [e for e in members if e.network == network]
    local = [e for e in local if e.network == network]
    local_ips = sorted({e.ip for e in local if e.ip}, key=ipaddress.IPv4Address)
    if not local_ips:
        return None
    rules = []
    for p in semantics.ordered(q for q in policies if q.network == network):
        src, dst = _resolve(p.source, members), _resolve(p.destination, local)
        if src != [] and dst != []:  # else it matches nothing here
            rules.append(_rule(p, src, dst))
    if not rules:
        return None
    head = ["ct state established,related accept", "meta nfproto ipv6 counter drop",
            f"ip daddr != {_set(local_ips)} accept"]
    script, tag = nfttag.render(FAMILY, TABLE, [nfttag.Chain(CHAIN, HEADER, (*head, *rules))])
    return PolicyTable(tag, script=script, local=tuple(local_ips), rules=len(rules))


def parse(listing: str) -> PolicyTable | None:
    """The table's tag from `nft -j list table inet vxlab_policy`; None when it is not in
    the shape `build` writes (a rewrite repairs it)."""
    tag = nfttag.parse(listing, SHAPE)
    return None if tag is None else PolicyTable(tag)


def diff_reason(want: PolicyTable | None, have: PolicyTable | None) -> str:
    """Why the namespace's table must change ("" when it is right)."""
    if want == have:
        return ""
    if want is None:
        return "no policy applies here any more"
    if have is None:
        return f"policy: create ({want.rules} rules)"
    return f"policy: rules changed ({want.rules} rules)"
