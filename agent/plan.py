"""Plan: the difference between desired and actual kernel state, as ordered actions.

Each action names the kernel call that carries it out and the reason for it, so
`--dry-run` can print the plan and an empty plan touches nothing. Only owned objects
are compared: namespaces whose marker names this host, links whose ifalias carries the
vxlab mark, and addresses, routes, FDB and neighbour entries on such links.

Order: namespaces are created first, then bridges and VXLAN devices, veth pairs,
addresses, routes and entries; removals run in reverse (entries, links, namespaces).
What the agent keeps in its own namespace is planned by `plan_agent_ns`: the rogue-VTEP
allow-list (first: the filter is in place before any VXLAN device is up), the NAT table
(while any network has an uplink), the uplinks' host ends (an uplink whose host end
is missing or lacks its address is made again; a host end no network uses goes), the
published-ports table and the routes to published containers' subnets through their
uplinks (after the uplinks). A network namespace's policy and NAT tables, and a
container namespace's services table, are one action each, right after the namespace
exists (before any container is attached to its bridge).

A link left unmarked by a pass that stopped between creating and marking it, with the
exact name the agent gives it, in a namespace of ours, is adopted first (`adopt_link`)
and then planned like any of ours: kept, updated or replaced.
An endpoint with a runtime (Docker, CNI) has its veth made by `add_handoff`: the
bridge end as for any endpoint, the other end in the agent's namespace for the runtime
to take. Once taken, the bridge end alone is what the agent has of it, and it is
converged (a veth whose peer is elsewhere); if it vanishes (the runtime's namespace went
and took the pair), the pair is made again. A handoff end left in the agent's namespace
that no endpoint needs goes.
FDB entries are keyed by (dev, MAC) and neighbours by (dev, IP): a changed value is
one `replace`, never a delete racing an add.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from vxlab.agent import dns_nft, nat, policy_nft, ports_nft, services_nft, vtep
from vxlab.agent.kernel import MARK, UPLINK_MARK, AgentNs, Fdb, Link, Namespace, Neigh, NftTable
from vxlab.agent.names import Naming

Op = Literal["add", "delete", "replace", "update"]
# Execution order of the phases (lower first).
PHASE = {"vtep~": 0, "netns+": 0, "adopt": 0, "link^": 0, "policy~": 1, "nat~": 1, "resolv~": 1, "table~": 1,
         "bridge+": 1, "ports~": 6, "vxlan+": 2, "veth+": 3,
         "uplink+": 3, "link~": 4, "addr^": 4, "addr+": 5, "route+": 6,
         "fdb+": 7, "neigh+": 7, "neigh-": 8, "fdb-": 8, "route-": 9, "addr-": 9, "link-": 10, "netns-": 11,
         # host faults (agent/hostfaults.py): the underlay up again first, down last; the IFB
         # device before a qdisc on it, redirects off it before it goes
         "fault-link+": 0, "fault~": 1, "ingress+": 1, "qdisc~": 2, "qdisc-": 10, "ingress-": 11, "fault-link-": 12}


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


def _add_link(ns: Namespace, link: Link, reason: str, desired: dict[str, Namespace],
              handoffs: dict[str, Link]) -> list[Action]:
    if link.kind == "bridge":
        return [_act("add", "bridge", ns.name, link.name, reason, "add_bridge", "bridge+", ns.name, link.name,
                     mtu=link.mtu, alias=link.alias)]
    if link.kind == "vxlan":
        return [_act("add", "vxlan", ns.name, f"{link.name} (vni {link.vni}, local {link.local})", reason,
                     "add_vxlan", "vxlan+", ns.name, link.name, vni=link.vni, local=link.local, port=link.port,
                     mtu=link.mtu, alias=link.alias, master=link.master)]
    if link.alias.startswith(UPLINK_MARK):
        return [_add_uplink(ns, link, reason)]
    # A veth pair is created from the bridge side, with its peer in the container
    # namespace, whichever end was found missing (both missing: one action, deduplicated).
    pair = _veth_pair(link, desired)
    if pair is None:
        return _add_handoff(ns, link, reason, handoffs)
    (bns, bridge_end), (cns, peer) = pair
    return [_act("add", "veth", bns, f"{bridge_end.name} <-> {cns}/{peer.name}", reason, "add_veth", "veth+",
                 bns, bridge_end.name, alias=bridge_end.alias, master=bridge_end.master, mtu=bridge_end.mtu,
                 peer_ns=cns, peer_name=peer.name, peer_mac=peer.mac, peer_alias=peer.alias)]


def _add_handoff(ns: Namespace, link: Link, reason: str, handoffs: dict[str, Link]) -> list[Action]:
    """A runtime endpoint's veth: the bridge end `link`, its other end waiting in the
    agent's namespace for the runtime (`handoffs`: by alias)."""
    end = handoffs.get(link.alias)
    if end is None or not link.master:
        return []
    return [_act("add", "veth", ns.name, f"{link.name} <-> {end.name} (the agent's namespace, for the runtime)",
                 reason, "add_handoff", "veth+", ns.name, link.name, alias=link.alias, master=link.master,
                 mtu=link.mtu, handoff=end.name, mac=end.mac)]


def _uplink_host(link: Link) -> str:
    return Naming.uplink_host(link.alias[len(UPLINK_MARK):])


def _add_uplink(ns: Namespace, link: Link, reason: str) -> Action:
    host_name = _uplink_host(link)
    host_ip = next(r.gateway for r in ns.routes if r.dev == link.name)  # the uplink's far end
    return _act("add", "uplink", ns.name, f"{link.name} <-> {host_name}", reason, "add_uplink", "uplink+", ns.name,
                link.name, alias=link.alias, mtu=link.mtu, host_name=host_name, host_cidr=f"{host_ip}/30")


def _uplink_of(ns: Namespace) -> Link | None:
    return next((link for link in ns.links.values() if link.alias.startswith(UPLINK_MARK)), None)


def _adopt(want: Namespace, have: Namespace, handoffs: dict[str, Link]) -> tuple[list[Action], Namespace, set[str]]:
    """Links of `have` without any alias that carry a name `want` gives (or the host end
    of `want`'s uplink, or a runtime endpoint's handoff end, not moved out yet): adopted;
    `have` as it is once they are, and their names."""
    wanted = dict(want.links)
    uplink = _uplink_of(want)
    if uplink is not None:
        wanted[_uplink_host(uplink)] = uplink
    for link in want.links.values():
        end = handoffs.get(link.alias) if link.master else None
        if end is not None:
            wanted[end.name] = end
    out, links = [], dict(have.links)
    for name, cur in have.links.items():
        if name in wanted and name != "lo" and not cur.alias:
            alias = wanted[name].alias
            out.append(_act("update", "link", want.name, name, "unmarked, with our name in our namespace (a pass "
                            "stopped between creating and marking it): adopt", "adopt_link", "adopt", want.name, name,
                            alias=alias, ns_marker=want.marker))
            links[name] = dataclasses.replace(cur, alias=alias)
    return out, dataclasses.replace(have, links=links), {a.target for a in out}


def _uplink_readdressed(want: Namespace, have: Namespace, name: str) -> str:
    """Why an existing uplink must be made again: its address moved ("" when it did not)."""
    old = sorted(c for d, c in have.addrs if d == name)
    new = sorted(c for d, c in want.addrs if d == name)
    return f"uplink address {', '.join(old)} -> {', '.join(new)}" if old and old != new else ""


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


def _diff_ns(want: Namespace, have: Namespace, desired: dict[str, Namespace],
             handoffs: dict[str, Link]) -> list[Action]:
    ns = want.name
    out, have, adopted = _adopt(want, have, handoffs)
    # `lo` carries the namespace's marker, not a link marker: never a link of ours.
    owned = {name: link for name, link in have.links.items() if link.alias.startswith(MARK) and name != "lo"}
    # Half-made links are finished by their ensure-style add (which fixes in place what
    # differs: state, master, MAC, marks), not replaced, unless their kind is wrong.
    finish = dict.fromkeys(adopted, "adopted: finish it")
    uplink = _uplink_of(want)
    if uplink is not None and _uplink_host(uplink) in owned:  # its host end was not moved out
        del owned[_uplink_host(uplink)]
        finish[uplink.name] = "host end still in the network's namespace: move it out"
    for link in want.links.values():  # a handoff end not moved out yet: its bridge end finishes it
        end = handoffs.get(link.alias) if link.master else None
        if end is not None and end.name in owned:
            del owned[end.name]
            finish.setdefault(link.name, "handoff end still in the network's namespace: move it out")
    replaced: set[str] = set()
    for name, link in want.links.items():
        cur = owned.get(name)
        if cur is None:
            out += _add_link(want, link, "missing", desired, handoffs)
            continue
        why = _needs_replace(link, cur) or (_uplink_readdressed(want, have, name) if link is uplink else "")
        if name in finish and not why.startswith(("kind", "vni", "uplink address")):
            out += _add_link(want, link, finish[name], desired, handoffs)
            continue
        if why:
            out.append(_act("replace", "link", ns, name, f"{why}: delete", "delete_link", "link^", ns, name))
            out += _add_link(want, link, f"{why}: recreate", desired, handoffs)
            replaced.add(name)
        elif (link.mtu, link.up) != (cur.mtu, cur.up):
            out.append(_act("update", "link", ns, name, f"mtu/up {cur.mtu}/{cur.up} -> {link.mtu}/{link.up}",
                            "set_link", "link~", ns, name, mtu=link.mtu, up=link.up))
    for name, link in owned.items():
        if name not in want.links:
            out.append(_act("delete", "link", ns, name, f"{link.alias} is not desired", "delete_link", "link-", ns, name))
    owned_devs = set(owned) | set(want.links)
    if replaced:  # what hung on a replaced device goes with it and must be added again
        have = dataclasses.replace(have, addrs=frozenset(a for a in have.addrs if a[0] not in replaced),
                                   routes=frozenset(r for r in have.routes if r.dev not in replaced),
                                   fdb=frozenset(e for e in have.fdb if e.dev not in replaced),
                                   neigh=frozenset(e for e in have.neigh if e.dev not in replaced))
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
    return out + _plan_nat(ns, want.nat, have.nat) + _plan_resolv(ns, want.resolv, have.resolv) + _plan_table(
        ns, "services", want.services, have.services, why=services_nft.diff_reason(want.services, have.services),
        table=f"{services_nft.FAMILY} {services_nft.TABLE}", method="services") + _plan_table(
        ns, "dns", want.dns, have.dns, why=dns_nft.diff_reason(want.dns, have.dns),
        table=f"{dns_nft.FAMILY} {dns_nft.TABLE}", method="dns_redirect")


def _plan_table(ns: str, kind: str, want: NftTable | None, have: NftTable | None, *, why: str, table: str,
                method: str, phase: str = "table~") -> list[Action]:
    """One action when a tagged table of `ns` ("" = the agent's) differs from `want`:
    `set_<method>` (the agent's namespace: no namespace argument) or `delete_<method>`."""
    if not why:
        return []
    where, args = (ns, (ns,)) if ns else (vtep.AGENT_NS, ())
    if want is None:
        return [_act("delete", kind, where, table, why, f"delete_{method}", phase, *args)]
    return [_act("add" if have is None else "update", kind, where, table, why, f"set_{method}", phase, *args, want)]


def _plan_resolv(ns: str, want: str | None, have: str | None) -> list[Action]:
    """A container namespace's resolv.conf (its embedded DNS, 127.0.0.11)."""
    if want == have:
        return []
    if want is None:
        return [_act("delete", "resolv", ns, "resolv.conf", "not desired", "delete_resolv", "resolv~", ns)]
    return [_act("add" if have is None else "update", "resolv", ns, "resolv.conf",
                 "nameserver 127.0.0.11 (the agent's DNS)" if have is None else "not what the agent writes",
                 "set_resolv", "resolv~", ns, want)]


def _plan_nat(ns: str, want: nat.Nat | None, have: nat.Nat | None) -> list[Action]:
    """One action when the NAT table of `ns` ("" = the agent's) differs from `want`."""
    why = nat.diff_reason(want, have)
    where = ns or vtep.AGENT_NS
    if not why:
        return []
    if want is None:
        return [_act("delete", "nat", where, f"{nat.FAMILY} {nat.TABLE}", why, "delete_nat", "nat~", ns)]
    return [_act("add" if have is None else "update", "nat", where, f"{nat.FAMILY} {nat.TABLE}", why, "set_nat",
                 "nat~", ns, want)]


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


def plan_agent_ns(want: AgentNs, have: AgentNs, desired: dict[str, Namespace], planned: list[Action]) -> list[Action]:
    """The agent's own namespace: allow-list, NAT table, uplink host ends. `planned`: the
    namespaces' actions (an uplink they make already is not planned twice)."""
    out = []
    reason = vtep.diff_reason(want.vteps, have.vteps) if want.vteps is not None else ""
    if reason:
        out.append(_act("add" if have.vteps is None else "update", "vteps", vtep.AGENT_NS,
                        f"{vtep.FAMILY} {vtep.TABLE}", reason, "set_vtep_filter", "vtep~", want.vteps))
    out += _plan_nat("", want.nat, have.nat)
    out += _plan_table("", "ports", want.ports, have.ports, why=ports_nft.diff_reason(want.ports, have.ports),
                       table=f"{ports_nft.FAMILY} {ports_nft.TABLE}", method="ports",
                       phase="ports~")  # after the uplinks: its sysctls are theirs
    for r in sorted(want.routes - have.routes):
        out.append(_act("add", "route", vtep.AGENT_NS, f"{r.dst} via {r.gateway} dev {r.dev}",
                        "to a container with published ports", "add_route", "route+", "", r))
    for r in sorted(have.routes - want.routes):
        out.append(_act("delete", "route", vtep.AGENT_NS, f"{r.dst} via {r.gateway} dev {r.dev}",
                        "no container of that network publishes here any more", "del_route", "route-", "", r))
    making = {dict(a.kwargs)["host_name"] for a in planned if a.method == "add_uplink"}
    for ns in desired.values():
        link = _uplink_of(ns)
        host = _uplink_host(link) if link is not None else ""
        if link is None or host in making or want.uplinks.get(host, frozenset()) <= have.uplinks.get(host, frozenset()):
            continue
        why = "host end missing" if host not in have.uplinks else "host end lacks its address"
        out.append(_add_uplink(ns, link, why))
    for name in sorted(set(have.handoffs) - set(want.handoffs)):
        out.append(_act("delete", "link", vtep.AGENT_NS, name, "a handoff end no runtime endpoint of this host has",
                        "delete_link", "link-", "", name))
    for host in sorted(set(have.uplinks) - set(want.uplinks)):
        out.append(_act("delete", "link", vtep.AGENT_NS, host, "an uplink no network uses", "delete_link", "link-",
                        "", host))
    return out


def make_plan(desired: dict[str, Namespace], actual: dict[str, Namespace], naming: Naming, *,
              handoffs: dict[str, Link] | None = None) -> list[Action]:
    """Actions that turn `actual` into `desired`, in execution order. `handoffs`: the
    container ends of runtime endpoints, by name (desired AgentNs.handoffs)."""
    by_alias = {link.alias: link for link in (handoffs or {}).values()}
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
        out += _diff_ns(want, have, desired, by_alias)
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
