"""FakeKernel: an in-memory Kernel for reconciler unit tests.

Behaves like NetlinkKernel where the reconciler can tell: ensure-style adds that write
nothing when the object is already right, deletes of missing objects that are no
error, `Foreign` for unmarked objects in the way, `adopt_link` only in a namespace with
the given marker, veth pairs that vanish together, `interrupt` leaving an unmarked
object behind, and a write counter per method. The agent's own namespace holds the
allow-list, the NAT table and the uplinks' host ends (`own`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from vxlab.agent.kernel import (MARK, UPLINK_MARK, AgentNs, Fdb, Foreign, Kernel, KernelError, Link, Namespace, Nat, Neigh,
                               PolicyTable, Route, Underlay, VtepFilter)


@dataclass
class _Ns:
    marker: str
    links: dict[str, Link] = field(default_factory=dict)
    addrs: set[tuple[str, str]] = field(default_factory=set)
    routes: set[Route] = field(default_factory=set)
    fdb: dict[tuple[str, str], Fdb] = field(default_factory=dict)
    neigh: dict[tuple[str, str], Neigh] = field(default_factory=dict)
    policy: PolicyTable | None = None
    nat: Nat | None = None
    resolv: str | None = None


class FakeKernel(Kernel):
    def __init__(self, underlay: Underlay = Underlay("172.30.0.11", "eth0", 1500)) -> None:
        super().__init__()
        self.ns: dict[str, _Ns] = {}
        self._underlay = underlay
        self.peers: dict[tuple[str, str], tuple[str, str]] = {}  # veth end -> other end
        self.vteps: VtepFilter | None = None  # the allow-list table of the agent's namespace
        self.own = _Ns("")  # the agent's namespace: uplink host ends (links, addrs) and its NAT table

    def _get(self, ns: str) -> _Ns:
        """Namespace `ns`; "" is the agent's own."""
        if not ns:
            return self.own
        if ns not in self.ns:
            raise KernelError(f"namespace {ns}: does not exist")
        return self.ns[ns]

    def dump(self, prefix: str) -> dict[str, Namespace]:
        return {
            name: Namespace(name, n.marker, dict(n.links), frozenset(n.addrs), frozenset(n.routes),
                            frozenset(n.fdb.values()), frozenset(n.neigh.values()), n.policy, n.nat, n.resolv)
            for name, n in self.ns.items() if name.startswith(prefix)
        }

    def agent_ns(self) -> AgentNs:
        uplinks = {name: frozenset(c for d, c in self.own.addrs if d == name) for name, link in self.own.links.items()
                   if link.alias.startswith(UPLINK_MARK)}
        return AgentNs(self.vteps, self.own.nat, uplinks)

    def underlay(self, *, ip: str = "", dev: str = "", towards: Sequence[str] = ()) -> Underlay:
        return self._underlay

    def set_vtep_filter(self, want: VtepFilter) -> None:
        if self.vteps != want:
            self.vteps = want
            self.writes["set_vtep_filter"] += 1

    def set_policy(self, ns: str, table: PolicyTable) -> None:
        n = self._get(ns)
        if n.policy != table:
            n.policy = table
            self.writes["set_policy"] += 1

    def delete_policy(self, ns: str) -> None:
        n = self.ns.get(ns)
        if n is not None and n.policy is not None:
            n.policy = None
            self.writes["delete_policy"] += 1

    def set_nat(self, ns: str, want: Nat) -> None:
        n = self._get(ns)
        if n.nat != want:
            n.nat = want
            self.writes["set_nat"] += 1

    def delete_nat(self, ns: str) -> None:
        n = self.own if not ns else self.ns.get(ns)
        if n is not None and n.nat is not None:
            n.nat = None
            self.writes["delete_nat"] += 1

    def set_resolv(self, ns: str, text: str) -> None:
        n = self._get(ns)
        if n.resolv != text:
            n.resolv = text
            self.writes["set_resolv"] += 1

    def delete_resolv(self, ns: str) -> None:
        n = self.ns.get(ns)
        if n is not None and n.resolv is not None:
            n.resolv = None
            self.writes["delete_resolv"] += 1

    def delete_vtep_filter(self) -> None:
        if self.vteps is not None:
            self.vteps = None
            self.writes["delete_vtep_filter"] += 1

    def create_netns(self, name: str, *, marker: str) -> None:
        if name in self.ns:
            cur = self.ns[name]
            if cur.marker != marker:
                raise Foreign(f"namespace {name}: exists with marker {self.ns[name].marker!r}")
            return
        self.ns[name] = _Ns(marker)
        self.writes["create_netns"] += 1

    def delete_netns(self, name: str) -> None:
        if self.ns.pop(name, None) is not None:
            for end, other in list(self.peers.items()):
                if end[0] == name:
                    self._drop_link(*other)
                    self.peers.pop(end, None)
                    self.peers.pop(other, None)
            self.writes["delete_netns"] += 1

    def _ensure(self, ns: str, link: Link, method: str) -> None:
        n = self._get(ns)
        cur = n.links.get(link.name)
        if cur is not None and not cur.alias.startswith(MARK):
            raise Foreign(f"{ns}/{link.name}: exists and is not ours")
        if cur is not None and dataclasses.replace(cur, mtu=link.mtu, up=link.up) == link:
            if (cur.mtu, cur.up) != (link.mtu, link.up):
                n.links[link.name] = link
                self.writes["set_link"] += 1
            return
        if cur is not None:
            self.delete_link(ns, link.name)
        n.links[link.name] = dataclasses.replace(link, alias="", up=False)  # created, not yet marked
        self.writes[method] += 1
        self._interrupted(method, f"{link.kind} {link.name}")
        n.links[link.name] = link

    def add_bridge(self, ns: str, name: str, *, mtu: int, alias: str) -> None:
        self._ensure(ns, Link(name, "bridge", alias=alias, mtu=mtu, up=True), "add_bridge")

    def add_vxlan(self, ns: str, name: str, *, vni: int, local: str, port: int, mtu: int, alias: str,
                  master: str) -> None:
        self._ensure(ns, Link(name, "vxlan", alias=alias, mtu=mtu, up=True, master=master, vni=vni, local=local,
                              port=port, learning=False, proxy=True), "add_vxlan")

    def add_veth(self, ns: str, name: str, *, alias: str, master: str, mtu: int, peer_ns: str, peer_name: str,
                 peer_mac: str, peer_alias: str) -> None:
        n, p = self._get(ns), self._get(peer_ns)
        want = Link(name, "veth", alias=alias, mtu=mtu, up=True, master=master)
        cur = n.links.get(name)
        if cur is not None and not cur.alias.startswith(MARK):
            raise Foreign(f"{ns}/{name}: exists and is not ours")
        if cur is not None and cur.kind != "veth":
            self.delete_link(ns, name)
        elif cur is not None:  # fixed in place, like NetlinkKernel's `_fix`, both ends
            peer = Link(peer_name, "veth", alias=peer_alias, mac=peer_mac, mtu=mtu, up=True)
            ends = [(n, want)] + ([(p, peer)] if p.links.get(peer_name, peer).alias.startswith(MARK) else [])
            for links, end in ((x.links, e) for x, e in ends):
                if end.name in links and links[end.name] != end:
                    links[end.name] = end
                    self.writes["add_veth"] += 1
            return
        if peer_name in p.links:
            raise KernelError(f"{peer_ns}/{peer_name}: exists")
        n.links[name] = Link(name, "veth", mtu=mtu)  # created, not yet marked
        p.links[peer_name] = Link(peer_name, "veth", mac=peer_mac, mtu=mtu)
        self.peers[(ns, name)] = (peer_ns, peer_name)
        self.peers[(peer_ns, peer_name)] = (ns, name)
        self.writes["add_veth"] += 1
        self._interrupted("add_veth", f"veth {name}")
        n.links[name] = want
        p.links[peer_name] = Link(peer_name, "veth", alias=peer_alias, mac=peer_mac, mtu=mtu, up=True)

    def add_uplink(self, ns: str, name: str, *, alias: str, mtu: int, host_name: str, host_cidr: str) -> None:
        """Like NetlinkKernel: made and marked in `ns`, the host end then moved out."""
        n = self._get(ns)
        host, inside = self.own.links.get(host_name), n.links.get(host_name)
        for cur in (host, inside, n.links.get(name)):
            if cur is not None and not cur.alias.startswith(MARK):
                raise Foreign(f"{host_name}/{name}: exists and is not ours")
        if host is None and inside is None:
            self.delete_link(ns, name)
            n.links[host_name] = Link(host_name, "veth", mtu=mtu)
            n.links[name] = Link(name, "veth", mtu=mtu)
            self.peers[(ns, host_name)], self.peers[(ns, name)] = (ns, name), (ns, host_name)
            self.writes["add_uplink"] += 1
            self._interrupted("add_uplink", f"veth {host_name}")
            n.links[host_name] = Link(host_name, "veth", alias=alias, mtu=mtu)
            n.links[name] = Link(name, "veth", alias=alias, mtu=mtu)
            inside = n.links[host_name]
        if inside is not None:  # move the host end out
            del n.links[host_name]
            self.own.links[host_name] = inside
            self.peers.pop((ns, host_name))
            self.peers[("", host_name)], self.peers[(ns, name)] = (ns, name), ("", host_name)
            self.writes["add_uplink"] += 1
        for links, end in ((self.own.links, host_name), (n.links, name)):
            want = Link(end, "veth", alias=alias, mtu=mtu, up=True)
            if links[end] != want:
                links[end] = want
                self.writes["add_uplink"] += 1
        self._set_write(self.own.addrs, (host_name, host_cidr), True, "add_addr")

    def adopt_link(self, ns: str, name: str, *, alias: str, ns_marker: str) -> None:
        if not ns:
            raise Foreign(f"adopt_link: {name}: never in the agent's own namespace")
        n = self._get(ns)
        if not ns_marker.startswith(MARK) or n.marker != ns_marker:
            raise Foreign(f"adopt_link: namespace {ns} has marker {n.marker!r}, not {ns_marker!r}")
        cur = n.links.get(name)
        if cur is None or cur.alias.startswith(MARK):
            return
        if cur.alias:
            raise Foreign(f"adopt_link: {ns}/{name} has someone's alias {cur.alias!r}")
        n.links[name] = dataclasses.replace(cur, alias=alias)
        self.writes["adopt_link"] += 1

    def _drop_link(self, ns: str, name: str) -> None:
        n = self.own if not ns else self.ns.get(ns)
        if n is None or n.links.pop(name, None) is None:
            return
        n.addrs = {a for a in n.addrs if a[0] != name}
        n.routes = {r for r in n.routes if r.dev != name}
        n.fdb = {k: v for k, v in n.fdb.items() if v.dev != name}
        n.neigh = {k: v for k, v in n.neigh.items() if v.dev != name}

    def delete_link(self, ns: str, name: str) -> None:
        n = self.own if not ns else self.ns.get(ns)
        if n is None or name not in n.links:
            return
        if not n.links[name].alias.startswith(MARK):
            raise Foreign(f"{ns}/{name}: exists and is not ours")
        self._drop_link(ns, name)
        other = self.peers.pop((ns, name), None)
        if other is not None:
            self.peers.pop(other, None)
            self._drop_link(*other)
        self.writes["delete_link"] += 1

    def set_link(self, ns: str, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        n = self._get(ns)
        cur = n.links[name]
        new = dataclasses.replace(cur, mtu=cur.mtu if mtu is None else mtu, up=cur.up if up is None else up)
        if new != cur:
            n.links[name] = new
            self.writes["set_link"] += 1

    def _set_write(self, bag: set, item: object, add: bool, method: str) -> None:  # type: ignore[type-arg]
        if (item in bag) != add:
            (bag.add if add else bag.discard)(item)
            self.writes[method] += 1

    def add_addr(self, ns: str, dev: str, cidr: str) -> None:
        self._set_write(self._get(ns).addrs, (dev, cidr), True, "add_addr")

    def del_addr(self, ns: str, dev: str, cidr: str) -> None:
        self._set_write(self._get(ns).addrs, (dev, cidr), False, "del_addr")

    def add_route(self, ns: str, route: Route) -> None:
        self._set_write(self._get(ns).routes, route, True, "add_route")

    def del_route(self, ns: str, route: Route) -> None:
        self._set_write(self._get(ns).routes, route, False, "del_route")

    def add_fdb(self, ns: str, entry: Fdb) -> None:
        n = self._get(ns)
        if n.fdb.get((entry.dev, entry.mac)) != entry:
            n.fdb[(entry.dev, entry.mac)] = entry
            self.writes["add_fdb"] += 1

    def del_fdb(self, ns: str, entry: Fdb) -> None:
        if self._get(ns).fdb.pop((entry.dev, entry.mac), None) is not None:
            self.writes["del_fdb"] += 1

    def add_neigh(self, ns: str, entry: Neigh) -> None:
        n = self._get(ns)
        if n.neigh.get((entry.dev, entry.ip)) != entry:
            n.neigh[(entry.dev, entry.ip)] = entry
            self.writes["add_neigh"] += 1

    def forget_stale_neigh(self, ns: str, dev: str, *, entries: tuple[tuple[str, str], ...]) -> None:
        self._get(ns)  # the fake has no dynamic ARP cache: nothing is ever stale

    def del_neigh(self, ns: str, entry: Neigh) -> None:
        if self._get(ns).neigh.pop((entry.dev, entry.ip), None) is not None:
            self.writes["del_neigh"] += 1
