"""Plan: the difference between desired and actual kernel state, as ordered actions.

Each action names the kernel call that carries it out and the reason for it, so
`--dry-run` can print the plan and an empty plan touches nothing. Only owned objects
are compared: namespaces whose marker names this host, links whose ifalias carries the
vxlab mark, and addresses, routes, FDB and neighbour entries on such links.

Order: namespaces are created first, then bridges and VXLAN devices, veth pairs,
addresses, routes and entries; removals run in reverse (entries, links, namespaces).
The rogue-VTEP allow-list of the agent's own namespace is one more action, planned by
`plan_vtep_filter` (first: the filter is in place before any VXLAN device is up); a
network namespace's policy table is one action too, right after the namespace exists
(before any container is attached to its bridge).
FDB entries are keyed by (dev, MAC) and neighbours by (dev, IP): a changed value is
one `replace`, never a delete racing an add.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from vxlab.agent import policy_nft, vtep
from vxlab.agent.kernel import MARK, Fdb, Link, Namespace, Neigh, VtepFilter
from vxlab.agent.names import Naming

Op = Literal["add", "delete", "replace", "update"]
# Execution order of the phases (lower first).
PHASE = {"vtep~": 0, "netns+": 0, "link^": 0, "policy~": 1, "bridge+": 1, "vxlan+": 2, "veth+": 3, "uplink+": 3, "link~": 4,
         "addr^": 4, "addr+": 5, "route+": 6,
         "fdb+": 7, "neigh+": 7, "neigh-": 8, "fdb-": 8, "route-": 9, "addr-": 9, "link-": 10, "netns-": 11}


@dataclass(frozen=True)
class Action:
    op: Op
    kind: str          # netns, bridge, vxlan, veth, link, addr, route, fdb, neigh
    ns: str
    target: str        # what, for people
    reason: str        # why, for people
    method: str        # the Kernel method that does it
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    phase: int = field(default=0, compare=False)

    def describe(self) -> str:
        sign = {"add": "+", "delete": "-", "replace": "~", "update": "~"}[self.op]
        return f"{sign} {self.op} {self.kind} {self.target} in {self.ns}: {self.reason}"


def _act(op: Op, kind: str, ns: str, target: str, reason: str, method: str, phase: str,
         *args: Any, **kwargs: Any) -> Action:
    return Action(op, kind, ns, target, reason, method, args, tuple(sorted(kwargs.items())), PHASE[phase])


def _add_link(ns: Namespace, link: Link, reason: str, desired: dict[str, Namespace]) -> list[Action]:
    if link.kind == "bridge":
        return [_act("add", "bridge", ns.name, link.name, reason, "add_bridge", "bridge+", ns.name, link.name,
                     mtu=link.mtu, alias=link.alias)]
    if link.kind == "vxlan":
        return [_act("add", "vxlan", ns.name, f"{link.name} (vni {link.vni}, local {link.local})", reason,
                     "add_vxlan", "vxlan+", ns.name, link.name, vni=link.vni, local=link.local, port=link.port,
                     mtu=link.mtu, alias=link.alias, master=link.master)]
    if link.alias.startswith(f"{MARK}uplink:"):
        network = link.alias[len(f"{MARK}uplink:"):]
        host_ip = next(r.gateway for r in ns.routes if r.dev == link.name)  # the uplink's far end
        gw = next((cidr for dev, cidr in ns.addrs if dev == Naming.bridge(network)), "")
        subnet = str(ipaddress.IPv4Network(gw, strict=False)) if gw else ""
        return [_act("add", "uplink", ns.name, f"{link.name} <-> {Naming.uplink_host(network)}", reason, "add_uplink",
                     "uplink+", ns.name, link.name, alias=link.alias, mtu=link.mtu,
                     host_name=Naming.uplink_host(network), host_cidr=f"{host_ip}/30", masquerade=subnet)]
    # A veth pair is created from the bridge side, with its peer in the container
    # namespace, whichever end was found missing (both missing: one action, deduplicated).
    pair = _veth_pair(link, desired)
    if pair is None:
        return []
    (bns, bridge_end), (cns, peer) = pair
    return [_act("add", "veth", bns, f"{bridge_end.name} <-> {cns}/{peer.name}", reason, "add_veth", "veth+",
                 bns, bridge_end.name, alias=bridge_end.alias, master=bridge_end.master, mtu=bridge_end.mtu,
                 peer_ns=cns, peer_name=peer.name, peer_mac=peer.mac, peer_alias=peer.alias)]


def _veth_pair(link: Link, desired: dict[str, Namespace]) -> tuple[tuple[str, Link], tuple[str, Link]] | None:
    """The (bridge-side, container-side) ends of the veth with this link's alias."""
    bridge_end = peer = None
    for ns in desired.values():
        for other in ns.links.values():
            if other.alias == link.alias and other.kind == "veth":
                if other.master:
                    bridge_end = (ns.name, other)
                else:
                    peer = (ns.name, other)
    return (bridge_end, peer) if bridge_end and peer else None


def _needs_replace(want: Link, have: Link) -> str:
    if want.kind != have.kind:
        return f"kind {have.kind} -> {want.kind}"
    if want.kind == "vxlan" and (want.vni, want.local, want.port, want.learning, want.proxy) != (
            have.vni, have.local, have.port, have.learning, have.proxy):
        return f"vni/local/port {have.vni}/{have.local}/{have.port} -> {want.vni}/{want.local}/{want.port}"
    if want.master != have.master:
        return f"master {have.master or '-'} -> {want.master or '-'}"
    if want.mac and want.mac != have.mac:
        return f"mac {have.mac} -> {want.mac}"
    return ""


def _diff_ns(want: Namespace, have: Namespace, desired: dict[str, Namespace]) -> list[Action]:
    out: list[Action] = []
    ns = want.name
    # `lo` carries the namespace's marker, not a link marker: never a link of ours.
    owned = {name: link for name, link in have.links.items() if link.alias.startswith(MARK) and name != "lo"}
    replaced: set[str] = set()
    for name, link in want.links.items():
        cur = owned.get(name)
        if cur is None:
            out += _add_link(want, link, "missing", desired)
            continue
        why = _needs_replace(link, cur)
        if why:
            out.append(_act("replace", "link", ns, name, f"{why}: delete", "delete_link", "link^", ns, name))
            out += _add_link(want, link, f"{why}: recreate", desired)
            replaced.add(name)
        elif (link.mtu, link.up) != (cur.mtu, cur.up):
            out.append(_act("update", "link", ns, name, f"mtu/up {cur.mtu}/{cur.up} -> {link.mtu}/{link.up}",
                            "set_link", "link~", ns, name, mtu=link.mtu, up=link.up))
    for name, link in owned.items():
        if name not in want.links:
            out.append(_act("delete", "link", ns, name, f"{link.alias} is not desired", "delete_link", "link-", ns, name))
    owned_devs = set(owned) | set(want.links)
    if replaced:  # what hung on a replaced device goes with it and must be added again
        have = Namespace(have.name, have.marker, have.links,
                         frozenset(a for a in have.addrs if a[0] not in replaced),
                         frozenset(r for r in have.routes if r.dev not in replaced),
                         frozenset(e for e in have.fdb if e.dev not in replaced),
                         frozenset(e for e in have.neigh if e.dev not in replaced))
    for dev, cidr in want.addrs - have.addrs:
        out.append(_act("add", "addr", ns, f"{cidr} on {dev}", "endpoint address", "add_addr", "addr+", ns, dev, cidr))
    # An address replaced on a device (a network's gateway moved) goes before the new one
    # is added: deleting a primary address takes the secondaries of its subnet with it.
    adding = {dev for dev, _ in want.addrs - have.addrs}
    for dev, cidr in have.addrs - want.addrs:
        if dev in owned_devs:
            out.append(_act("delete", "addr", ns, f"{cidr} on {dev}", "not desired", "del_addr",
                            "addr^" if dev in adding else "addr-", ns, dev, cidr))
    for r in want.routes - have.routes:
        out.append(_act("add", "route", ns, f"{r.dst} via {r.gateway} dev {r.dev}", "gateway of the first"
                        " non-internal network", "add_route", "route+", ns, r))
    for r in have.routes - want.routes:
        if r.dev in owned_devs:
            out.append(_act("delete", "route", ns, f"{r.dst} via {r.gateway} dev {r.dev}", "not desired",
                            "del_route", "route-", ns, r))
    out += _diff_entries(ns, want.fdb, have.fdb, "fdb")
    out += _diff_entries(ns, want.neigh, have.neigh, "neigh")
    why = policy_nft.diff_reason(want.policy, have.policy)
    if why and want.policy is not None:
        out.append(_act("add" if have.policy is None else "update", "policy", ns,
                        f"{policy_nft.FAMILY} {policy_nft.TABLE}", why, "set_policy", "policy~", ns, want.policy))
    elif why:
        out.append(_act("delete", "policy", ns, f"{policy_nft.FAMILY} {policy_nft.TABLE}", why, "delete_policy",
                        "policy~", ns))
    return out


def _diff_entries(ns: str, want: frozenset[Fdb] | frozenset[Neigh], have: frozenset[Fdb] | frozenset[Neigh],
                  kind: str) -> list[Action]:
    """Set differences in C first (O(n)), then Python only for what changed. Entries are
    keyed by (dev, MAC) for FDB and (dev, IP) for neighbours: a changed value under the
    same key is one `replace`, never a delete racing an add."""
    out: list[Action] = []
    if want == have:
        return out
    gone = {_entry_key(e): e for e in have - want}
    for entry in sorted(want - have):
        cur = gone.pop(_entry_key(entry), None)
        what = f"{entry.mac} -> {entry.dst}" if isinstance(entry, Fdb) else f"{entry.ip} -> {entry.mac}"
        op: Op = "add" if cur is None else "replace"
        reason = "remote endpoint" if cur is None else f"was {cur.dst if isinstance(cur, Fdb) else cur.mac}"
        out.append(_act(op, kind, ns, f"{what} on {entry.dev}", reason, f"add_{kind}", f"{kind}+", ns, entry))
    for entry in gone.values():
        what = f"{entry.mac}" if isinstance(entry, Fdb) else f"{entry.ip}"
        out.append(_act("delete", kind, ns, f"{what} on {entry.dev}", "endpoint gone or its host dead",
                        f"del_{kind}", f"{kind}-", ns, entry))
    return out


def _entry_key(e: Fdb | Neigh) -> tuple[str, str]:
    return (e.dev, e.mac) if isinstance(e, Fdb) else (e.dev, e.ip)


def plan_vtep_filter(want: VtepFilter, have: VtepFilter | None) -> list[Action]:
    """One action when the allow-list differs from `want` (none when it is right)."""
    reason = vtep.diff_reason(want, have)
    if not reason:
        return []
    return [_act("add" if have is None else "update", "vteps", vtep.AGENT_NS, f"{vtep.FAMILY} {vtep.TABLE}",
                 reason, "set_vtep_filter", "vtep~", want)]


def make_plan(desired: dict[str, Namespace], actual: dict[str, Namespace], naming: Naming) -> list[Action]:
    """Actions that turn `actual` into `desired`, in execution order."""
    out: list[Action] = []
    refused: set[str] = set()
    for name, want in desired.items():
        have = actual.get(name)
        if have is None:
            out.append(_act("add", "netns", name, name, "has local endpoints", "create_netns", "netns+",
                            name, marker=want.marker))
            have = Namespace(name, want.marker)
        elif not naming.owns_ns(name, have.marker):
            out.append(_act("add", "netns", name, name, f"exists but not ours (marker {have.marker!r}):"
                            " refusing to touch it", "create_netns", "netns+", name, marker=want.marker))
            refused.add(name)
            continue  # create_netns raises Foreign; nothing else is attempted in it
        out += _diff_ns(want, have, desired)
    for name, have in actual.items():
        if name not in desired and naming.owns_ns(name, have.marker):
            out.append(_act("delete", "netns", name, name, "no local endpoint needs it", "delete_netns",
                            "netns-", name))
    # Nothing may reach into a namespace that is not ours, not even a veth peer.
    out = [a for a in out if dict(a.kwargs).get("peer_ns") not in refused]
    out += _arp_refresh(out, desired, actual)
    return sorted(dict.fromkeys(out), key=lambda a: a.phase)


def _arp_refresh(actions: list[Action], desired: dict[str, Namespace], actual: dict[str, Namespace]) -> list[Action]:
    """Addresses get reused with a new (random) MAC, and containers that talked to the
    old owner still cache its MAC for 30-60 s: their frames would go to a MAC no FDB
    knows (there is no flooding). So for every neighbour added or replaced on a network,
    and every address a local container gets, the *existing* local containers on that
    network drop a differing dynamic ARP entry for that IP (one action per container)."""
    ports: dict[str, str] = {}                       # endpoint alias -> network namespace
    ends: dict[str, tuple[str, Link]] = {}           # endpoint alias -> (container namespace, its end)
    for ns in desired.values():
        for link in ns.links.values():
            if link.kind == "veth":
                if link.master:
                    ports[link.alias] = ns.name
                else:
                    ends[link.alias] = (ns.name, link)
    changed: dict[str, dict[str, str]] = {}          # network namespace -> IP -> MAC
    for a in actions:
        if a.kind == "neigh" and a.op in ("add", "replace"):
            changed.setdefault(a.ns, {})[a.args[1].ip] = a.args[1].mac
        elif a.kind == "addr" and a.op == "add":
            dev, cidr = a.args[1], a.args[2]
            for alias, (cns, link) in ends.items():
                if cns == a.ns and link.name == dev and alias in ports:
                    changed.setdefault(ports[alias], {})[cidr.split("/")[0]] = link.mac
    out = []
    for alias, (cns, link) in sorted(ends.items()):
        todo = changed.get(ports.get(alias, ""), {})
        if todo and cns in actual and link.name in actual[cns].links:
            entries = tuple(sorted((ip, mac) for ip, mac in todo.items() if mac != link.mac))
            if entries:
                out.append(_act("update", "arp", cns, f"{len(entries)} address(es) on {link.name}",
                                "drop cached MACs a reused address may have had", "forget_stale_neigh",
                                "neigh+", cns, link.name, entries=entries))
    return out
