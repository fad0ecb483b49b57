"""FakeKernel: an in-memory Kernel for reconciler unit tests.

Behaves like NetlinkKernel where the reconciler can tell: ensure-style adds that write
nothing when the object is already right, deletes of missing objects that are no
error, `Foreign` for unmarked objects in the way, veth pairs that vanish together,
and a write counter per method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from vxlab.agent.kernel import (MARK, Fdb, Foreign, Kernel, KernelError, Link, Namespace, Neigh, PolicyTable, Route,
                               Underlay, VtepFilter)


@dataclass
class _Ns:
    marker: str
    links: dict[str, Link] = field(default_factory=dict)
    addrs: set[tuple[str, str]] = field(default_factory=set)
    routes: set[Route] = field(default_factory=set)
    fdb: dict[tuple[str, str], Fdb] = field(default_factory=dict)
    neigh: dict[tuple[str, str], Neigh] = field(default_factory=dict)
    policy: PolicyTable | None = None


class FakeKernel(Kernel):
    def __init__(self, underlay: Underlay = Underlay("172.30.0.11", "eth0", 1500)) -> None:
        super().__init__()
        self.ns: dict[str, _Ns] = {}
        self._underlay = underlay
        self.peers: dict[tuple[str, str], tuple[str, str]] = {}  # veth end -> other end
        self.vteps: VtepFilter | None = None  # the allow-list table of the agent's namespace

    def _get(self, ns: str) -> _Ns:
        if ns not in self.ns:
            raise KernelError(f"namespace {ns}: does not exist")
        return self.ns[ns]

    def dump(self, prefix: str) -> dict[str, Namespace]:
        return {
            name: Namespace(name, n.marker, dict(n.links), frozenset(n.addrs), frozenset(n.routes),
                            frozenset(n.fdb.values()), frozenset(n.neigh.values()), n.policy)
            for name, n in self.ns.items() if name.startswith(prefix)
        }

    def underlay(self, *, ip: str = "", dev: str = "", towards: Sequence[str] = ()) -> Underlay:
        return self._underlay

    def vtep_filter(self) -> VtepFilter | None:
        return self.vteps

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
        n.links[link.name] = link
        self.writes[method] += 1

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
        if name in n.links and (ns, name) in self.peers:
            self._ensure(ns, want, "add_veth")
            return
        if peer_name in p.links:
            raise KernelError(f"{peer_ns}/{peer_name}: exists")
        n.links[name] = want
        p.links[peer_name] = Link(peer_name, "veth", alias=peer_alias, mac=peer_mac, mtu=mtu, up=True)
        self.peers[(ns, name)] = (peer_ns, peer_name)
        self.peers[(peer_ns, peer_name)] = (ns, name)
        self.writes["add_veth"] += 1

    def add_uplink(self, ns: str, name: str, *, alias: str, mtu: int, host_name: str, host_cidr: str,
                   masquerade: str) -> None:
        self._ensure(ns, Link(name, "veth", alias=alias, mtu=mtu, up=True), "add_uplink")
        self.uplinks = {**getattr(self, "uplinks", {}), ns: (host_name, host_cidr, masquerade)}

    def _drop_link(self, ns: str, name: str) -> None:
        n = self.ns.get(ns)
        if n is None or n.links.pop(name, None) is None:
            return
        n.addrs = {a for a in n.addrs if a[0] != name}
        n.routes = {r for r in n.routes if r.dev != name}
        n.fdb = {k: v for k, v in n.fdb.items() if v.dev != name}
        n.neigh = {k: v for k, v in n.neigh.items() if v.dev != name}

    def delete_link(self, ns: str, name: str) -> None:
        n = self.ns.get(ns)
        if n is None or name not in n.links:
            return
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
