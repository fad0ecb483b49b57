"""Host faults in nftables: the table an agent keeps in its own namespace for every
partition and loss fault that targets its host (pure: rendering and parsing; agent/nft.py
writes and reads it; agent/hostfaults.py decides the rules).

One table, `inet vxlab_fault`, with an input, an output and a forward chain (filter
hooks, policy accept): VXLAN's UDP socket lives in the agent's namespace, so every
tunnelled packet of the host passes input or output there, and traffic its uplinks NAT
passes forward. The table is rebuilt whole, atomically (`add table; delete table;
table …` in one transaction), from every active fault: a fault that goes takes its rules
with it, one that stays keeps its place. The first rule of the input chain carries
`vxlab:<digest>:<rules>` as its comment, so a dump compares one string.
"""

from __future__ import annotations

import hashlib
import json
import re

from vxlab.agent.kernel import FaultTable

TABLE = "vxlab_fault"
FAMILY = "inet"
CHAINS = ("input", "output", "forward")
_SAFE = re.compile(r"[A-Za-z0-9 .,{}<>!=\"/:_-]+")  # what our rules are made of (addresses, names, numbers)


def build(rules: list[tuple[str, str]]) -> FaultTable | None:
    """The table for `rules` ((chain, rule text) in order); None when there is none."""
    if not rules:
        return None
    for chain, rule in rules:
        if chain not in CHAINS or not _SAFE.fullmatch(rule):
            raise ValueError(f"fault rule {rule!r} in {chain!r}: not one of ours")
    body = [f"{c}\t{r}" for c, r in rules]
    digest = hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]
    tag = f"vxlab:{digest}:{len(rules) + 1}"
    chains = []
    for c in CHAINS:
        lines = ([f'counter comment "{tag}"'] if c == "input" else []) + [r for rc, r in rules if rc == c]
        chains.append(f"  chain {c} {{\n    type filter hook {c} priority filter - 5; policy accept;\n"
                      + "".join(f"    {line}\n" for line in lines) + "  }\n")
    script = f"table {FAMILY} {TABLE} {{\n{''.join(chains)}}}\n"
    return FaultTable(tag, script=script, rules=len(rules))


def parse(listing: str) -> FaultTable | None:
    """The table's tag from `nft -j list table inet vxlab_fault`; None when it is not in
    the shape `build` writes (a rewrite repairs it)."""
    try:
        items = json.loads(listing)["nftables"]
    except (ValueError, KeyError, TypeError):
        return None
    chains = {i["chain"].get("name"): i["chain"] for i in items if isinstance(i, dict) and "chain" in i}
    rules = [i["rule"] for i in items if isinstance(i, dict) and "rule" in i]
    if set(chains) != set(CHAINS) or any((c.get("type"), c.get("hook"), c.get("policy")) != ("filter", name, "accept")
                                         for name, c in chains.items()):
        return None
    first = next((r for r in rules if r.get("chain") == "input"), None)
    tag = first.get("comment", "") if first else ""
    if not isinstance(tag, str) or not tag.startswith("vxlab:") or tag.rsplit(":", 1)[-1] != str(len(rules)):
        return None
    return FaultTable(tag)


def diff_reason(want: FaultTable | None, have: FaultTable | None) -> str:
    """Why the table must change ("" when it is right)."""
    if want == have:
        return ""
    if want is None:
        return "no partition or loss fault targets this host any more"
    return f"{'create' if have is None else 'rules changed'} ({want.rules} rules)"
