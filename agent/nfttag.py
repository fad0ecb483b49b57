"""Tables of ours that a dump compares by one string, their tag (pure: building and
parsing; agent/nft.py writes and reads them).

A table's first rule carries `vxlab:<digest>:<rules>` as its comment: the digest of
every rule the table holds, and how many rules it has. A dump reads the tag back and
checks the shape it can see (the chains, their hooks, the number of rules), so a
missing table, another digest, a rule added or removed, or a chain changed is rewritten
whole, atomically (agent/nft.py: `add table; delete table; table …` in one
transaction). Used by the network-policy table (policy_nft.py), the published ports
of the agent's namespace (ports_nft.py) and the services of a container's namespace
(services_nft.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import NamedTuple

PREFIX = "vxlab:"


class Chain(NamedTuple):
    """One chain: its name, its base-chain header (`type nat hook output priority -100;
    policy accept;`, "" for a regular chain) and its rules in order."""

    name: str
    header: str
    rules: tuple[str, ...]


def hooks(chains: Sequence[Chain]) -> tuple[tuple[str, str, str], ...]:
    """(name, type, hook) of each chain as a listing shows them ("" for a regular chain)."""
    out = []
    for c in chains:
        words = c.header.replace(";", " ").split()
        kind = words[words.index("type") + 1] if "type" in words else ""
        hook = words[words.index("hook") + 1] if "hook" in words else ""
        out.append((c.name, kind, hook))
    return tuple(out)


def render(family: str, table: str, chains: Sequence[Chain]) -> tuple[str, str]:
    """The table's text with the tag on its first rule, and the tag."""
    rules = [r for c in chains for r in c.rules]
    if not rules:
        raise ValueError(f"table {family} {table}: no rules")
    text = "\n".join(f"{c.name}|{c.header}|{r}" for c in chains for r in c.rules)
    tag = f"{PREFIX}{hashlib.sha256(text.encode()).hexdigest()[:16]}:{len(rules)}"
    body: list[str] = []
    first = True
    for c in chains:
        lines = [f"    {c.header}"] if c.header else []
        for r in c.rules:
            lines.append(f'    {r} comment "{tag}"' if first else f"    {r}")
            first = False
        body.append(f"  chain {c.name} {{\n" + "\n".join(lines) + "\n  }")
    return f"table {family} {table} {{\n" + "\n".join(body) + "\n}\n", tag


def parse(listing: str, shape: tuple[tuple[str, str, str], ...]) -> str | None:
    """The tag of `nft -j list table …` when the table has exactly the chains of `shape`
    ((name, type, hook), in any order) and as many rules as its tag says; else None."""
    try:
        items = json.loads(listing)["nftables"]
        chains = {(c["name"], c.get("type", ""), c.get("hook", "")) for c in (i["chain"] for i in items if "chain" in i)}
        rules = [i["rule"] for i in items if "rule" in i]
    except (ValueError, KeyError, TypeError):
        return None
    if not rules or chains != set(shape) or len(chains) != len(shape):
        return None
    tag = rules[0].get("comment", "")
    if not isinstance(tag, str) or not tag.startswith(PREFIX) or tag.rsplit(":", 1)[-1] != str(len(rules)):
        return None
    return tag


def reason(want: object, have: object, *, what: str, gone: str) -> str:
    """Why a tagged table must change ("" when it is right): `what` names it, `gone`
    says why it goes; a table's `summary` says what it holds."""
    if want == have:
        return ""
    if want is None:
        return gone
    return f"{what}: {'create' if have is None else 'changed'} ({getattr(want, 'summary', '')})"
