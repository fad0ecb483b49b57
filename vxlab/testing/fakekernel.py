"""FakeKernel: an in-memory Kernel for reconciler unit tests.

Behaves like NetlinkKernel wherever the kernel contract says what happens: the contract
suite (tests/contract_kernel.py) runs on both, and where they disagreed the fake was
made to follow the real kernel. Ensure-style adds that write nothing when the object
is already right, deletes of missing objects (or in a missing namespace) that are no
error, `Foreign` for unmarked objects in the way, `adopt_link` only in a namespace with
the given marker, veth pairs that vanish together, `interrupt` leaving an unmarked
object behind, a write counter per method called, a dump with `lo` (carrying the
marker) and only what the real dump reads. The agent's own namespace holds the
allow-list, the NAT and published-ports tables, the uplinks' host ends and routes
(`own`; its sysctls in `sysctls`); `arp` holds a namespace's dynamic ARP entries (what
`forget_stale_neigh` may delete). Host faults: the fault table, root qdiscs (`qdiscs`;
kinds in `missing` are `Unsupported`, as netem is on a kernel without sch_netem;
`foreign_qdiscs`: devices whose root qdisc is someone else's), the IFB redirect, and
the underlay's state (`down`), whose routes go when it goes down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from vxlab.agent.kernel import (ENDPOINT_MARK, FAULT_IFB, MARK, NETEM_MISSING, UPLINK_MARK, AgentNs, FaultTable, Fdb, Foreign,
                               HostFaults, Kernel, KernelError, Link, Namespace, Nat, Neigh, NftTable, PolicyTable,
                               Qdisc, Route, Underlay, Unsupported, VtepFilter)
from vxlab.agent.underlay import UnderlayFacts, select_underlay

ZERO_MAC = "00:00:00:00:00:00"


@dataclass
class _Ns:
    marker: str
    links: dict[str, Link] = field(default_factory=dict)   # every link but `lo` (the dump adds it)
    addrs: set[tuple[str, str]] = field(default_factory=set)
    routes: set[Route] = field(default_factory=set)
    fdb: dict[tuple[str, str], Fdb] = field(default_factory=dict)
    neigh: dict[tuple[str, str], Neigh] = field(default_factory=dict)
    arp: dict[tuple[str, str], str] = field(default_factory=dict)  # dynamic entries: (dev, ip) -> MAC
    policy: PolicyTable | None = None
    nat: Nat | None = None
    resolv: str | None = None
    services: NftTable | None = None  # a container namespace's
    dns: NftTable | None = None       # a container namespace's
    ports: NftTable | None = None     # the agent's own namespace's


def _lo(marker: str) -> Link:
    return Link("lo", "loopback", alias=marker, mac=ZERO_MAC, mtu=65536, up=True)


def _dumped(name: str, n: _Ns) -> Namespace:
    """`n` as NetlinkKernel's dump reads it: FDB and neighbour entries of vxlan devices
    only, tables only in a network namespace (ours, with a bridge), a resolv.conf and a
    services and a DNS redirect table only in one of ours without a bridge (a container's)."""
    vxlans = {d for d, link in n.links.items() if link.kind == "vxlan"}
    network = n.marker.startswith(MARK) and any(link.kind == "bridge" for link in n.links.values())
    container = n.marker.startswith(MARK) and not network
    return Namespace(name, n.marker, {"lo": _lo(n.marker), **n.links}, frozenset(n.addrs), frozenset(n.routes),
                     frozenset(e for e in n.fdb.values() if e.dev in vxlans),
                     frozenset(e for e in n.neigh.values() if e.dev in vxlans),
                     n.policy if network else None, n.nat if network else None,
                     n.resolv if container else None, n.services if container else None,
                     n.dns if container else None)


class FakeKernel(Kernel):
    def __init__(self, underlay: Underlay = Underlay("172.30.0.11", "eth0", 1500)) -> None:
        super().__init__()
        self.ns: dict[str, _Ns] = {}
        self._underlay = underlay
        self.peers: dict[tuple[str, str], tuple[str, str]] = {}  # veth end -> other end
        self.vteps: VtepFilter | None = None  # the allow-list table of the agent's namespace
        self.own = _Ns("")  # the agent's namespace: uplink host ends (links, addrs, routes), NAT and ports tables
        self.sysctls: dict[tuple[str, str], str] = {}  # (namespace, key) -> value, as set_ports sets them
        self.fault_table: FaultTable | None = None
        self.qdiscs: dict[str, Qdisc] = {}
        self.ingress = False
        self.down = False          # the underlay device
        self.missing = {"netem"}   # qdisc kinds this kernel lacks (this machine's: no sch_netem)
        self.foreign_qdiscs: dict[str, str] = {}  # device -> the root qdisc someone else put there

    def _get(self, ns: str) -> _Ns:
        """Namespace `ns`; "" is the agent's own."""
        if not ns:
            return self.own
        if ns not in self.ns:
            raise KernelError(f"no network namespace {ns!r}")
        return self.ns[ns]

    def _with_dev(self, ns: str, dev: str) -> _Ns:
        """Namespace `ns` for an add on `dev`, which must exist."""
        n = self._get(ns)
        if dev not in n.links:
            raise KernelError(f"no link {dev!r} in {ns or 'the agent namespace'}")
        return n

    def dump(self, prefix: str) -> dict[str, Namespace]:
        return {name: _dumped(name, n) for name, n in self.ns.items() if name.startswith(prefix)}

    def agent_ns(self, *, underlay: str = "") -> AgentNs:
        uplinks = {name: frozenset(c for d, c in self.own.addrs if d == name) for name, link in self.own.links.items()
                   if link.alias.startswith(UPLINK_MARK)}
        faults = HostFaults(self.fault_table, dict(self.qdiscs), self.ingress, self.down,
                            tuple(sorted(r for r in self.own.routes if r.dev == underlay))) if underlay else HostFaults()
        handoffs = {name: link for name, link in self.own.links.items() if link.alias.startswith(ENDPOINT_MARK)}
        return AgentNs(self.vteps, self.own.nat, uplinks, self.own.ports,
                       frozenset(r for r in self.own.routes if r.dev in uplinks), faults=faults, handoffs=handoffs)

    # --- host faults ------------------------------------------------------------------------
    def set_fault_table(self, table: FaultTable) -> None:
        if self.fault_table != table:
            self.fault_table = table
            self.writes["set_fault_table"] += 1

    def delete_fault_table(self) -> None:
        if self.fault_table is not None:
            self.fault_table = None
            self.writes["delete_fault_table"] += 1

    def _fault_dev(self, op: str, dev: str) -> None:
        if dev != self._underlay.dev and not (dev == FAULT_IFB and self.ingress):
            raise KernelError(f"{op}: no device {dev!r} in the agent's namespace")

    def set_fault_qdisc(self, dev: str, want: Qdisc) -> None:
        self._fault_dev("set_fault_qdisc", dev)
        if dev in self.foreign_qdiscs:
            raise Foreign(f"set_fault_qdisc: the root qdisc of {dev} is {self.foreign_qdiscs[dev]}: not ours")
        if want.kind in self.missing:
            raise Unsupported(NETEM_MISSING if want.kind == "netem" else f"no {want.kind} qdisc")
        if self.qdiscs.get(dev) != want:
            self.qdiscs[dev] = want
            self.writes["set_fault_qdisc"] += 1

    def delete_fault_qdisc(self, dev: str) -> None:
        if self.qdiscs.pop(dev, None) is not None:
            self.writes["delete_fault_qdisc"] += 1

    def set_fault_ingress(self, dev: str) -> None:
        self._fault_dev("set_fault_ingress", dev)
        if not self.ingress:
            self.ingress = True
            self.writes["set_fault_ingress"] += 1

    def delete_fault_ingress(self, dev: str) -> None:
        if self.ingress:
            self.ingress = False
            self.qdiscs.pop(FAULT_IFB, None)
            self.writes["delete_fault_ingress"] += 1

    def set_underlay_state(self, dev: str, *, up: bool, routes: tuple[Route, ...] = ()) -> None:
        self._fault_dev("set_underlay_state", dev)
        if self.down == up:
            self.down = not up
            self.writes["set_underlay_state"] += 1
            if not up:  # the kernel drops the routes through a device that goes down
                self.own.routes = {r for r in self.own.routes if r.dev != dev}
        for r in routes if up else ():
            self._set_write(self.own.routes, r, True, "add_route")

    def underlay(self, *, ip: str = "", dev: str = "", towards: Sequence[str] = ()) -> Underlay:
        """By agent/underlay.py's rules over one device holding the underlay address,
        the default route's, through which every address is reached."""
        u = self._underlay
        facts = UnderlayFacts(mtus={"lo": 65536, u.dev: u.mtu}, addrs=[(u.dev, u.ip)], defaults=[u.dev],
                              routes={t: u.dev for t in towards})
        return select_underlay(facts, ip=ip, dev=dev, towards=towards)

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

    def set_ports(self, want: NftTable) -> None:
        for key, value in want.sysctls:  # like /proc/sys: a device's keys only while it exists
            parts = key.split("/")
            if parts[:3] != ["net", "ipv4", "conf"] or parts[3] in self.own.links:
                self.sysctls[("", key)] = value
        if self.own.ports != want:
            self.own.ports = want
            self.writes["set_ports"] += 1

    def delete_ports(self) -> None:
        if self.own.ports is not None:
            self.own.ports = None
            self.writes["delete_ports"] += 1

    def _set_table(self, ns: str, attr: str, want: NftTable | None, *, op: str) -> None:
        """A container namespace's tagged table `attr` made `want` (None: deleted)."""
        n = self._get(ns) if want is not None else self.ns.get(ns)
        if n is not None and getattr(n, attr) != want:
            setattr(n, attr, want)
            self.writes[op] += 1

    def set_services(self, ns: str, want: NftTable) -> None:
        self._set_table(ns, "services", want, op="set_services")

    def delete_services(self, ns: str) -> None:
        self._set_table(ns, "services", None, op="delete_services")

    def set_dns_redirect(self, ns: str, want: NftTable) -> None:
        self._set_table(ns, "dns", want, op="set_dns_redirect")

    def delete_dns_redirect(self, ns: str) -> None:
        self._set_table(ns, "dns", None, op="delete_dns_redirect")

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

    def _owned(self, ns: str, name: str) -> Link | None:
        """The link `name` of `ns` when it is ours, None when there is none; Foreign else."""
        cur = self._get(ns).links.get(name)
        if cur is not None and not cur.alias.startswith(MARK):
            raise Foreign(f"{ns}/{name}: exists and is not ours (alias {cur.alias!r})")
        return cur

    def _master(self, n: _Ns, master: str) -> None:
        if master and master not in n.links:
            raise KernelError(f"master {master!r} does not exist")

    def _ensure(self, ns: str, link: Link, method: str) -> None:
        n = self._get(ns)
        cur = self._owned(ns, link.name)
        self._master(n, link.master)
        if cur is not None and dataclasses.replace(cur, mtu=link.mtu, up=link.up, master=link.master,
                                                   alias=link.alias) == link:  # fixed in place
            if cur != link:
                n.links[link.name] = link
                self.writes[method] += 1
            return
        if cur is not None:  # another kind or VNI: replaced
            self._remove(ns, link.name)
            self.writes[method] += 1
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
        peer = Link(peer_name, "veth", alias=peer_alias, mac=peer_mac, mtu=mtu, up=True)
        cur = self._owned(ns, name)
        if cur is not None and cur.kind != "veth":
            self._remove(ns, name)
            self.writes["add_veth"] += 1
        elif cur is not None:  # fixed in place, like NetlinkKernel's `_fix`, both ends
            self._master(n, master)
            ends = [(n, want)] + ([(p, peer)] if p.links.get(peer_name, peer).alias.startswith(MARK) else [])
            for links, end in ((x.links, e) for x, e in ends):
                if end.name in links and links[end.name] != end:
                    links[end.name] = end
                    self.writes["add_veth"] += 1
            return
        if self._owned(peer_ns, peer_name) is not None:  # a peer of ours without its host end
            self._remove(peer_ns, peer_name)
            self.writes["add_veth"] += 1
        self._master(n, master)
        n.links[name] = Link(name, "veth", mtu=mtu)  # created, not yet marked
        p.links[peer_name] = Link(peer_name, "veth", mac=peer_mac, mtu=mtu)
        self.peers[(ns, name)] = (peer_ns, peer_name)
        self.peers[(peer_ns, peer_name)] = (ns, name)
        self.writes["add_veth"] += 1
        self._interrupted("add_veth", f"veth {name}")
        n.links[name] = want
        p.links[peer_name] = peer

    def _move(self, end: tuple[str, str], into: str) -> None:
        """Move a veth end into namespace `into` ("" = the agent's), keeping its pair."""
        link = self._get(end[0]).links.pop(end[1])
        self._get(into).links[end[1]] = link
        other = self.peers.pop(end, None)
        if other is not None:
            self.peers[(into, end[1])], self.peers[other] = other, (into, end[1])

    def add_handoff(self, ns: str, name: str, *, alias: str, master: str, mtu: int, handoff: str, mac: str) -> None:
        """Like NetlinkKernel: made and marked in `ns`, the handoff end then moved out."""
        n = self._get(ns)
        want = Link(name, "veth", alias=alias, mtu=mtu, up=True, master=master)
        end = Link(handoff, "veth", alias=alias, mac=mac, mtu=mtu)
        self._master(n, master)
        cur = self._owned(ns, name)
        if cur is not None and cur.kind != "veth":
            self._remove(ns, name)
            self.writes["add_handoff"] += 1
            cur = None
        if cur is None:
            for where in ("", ns):  # an end of ours without its bridge end
                if self._owned(where, handoff) is not None:
                    self._remove(where, handoff)
                    self.writes["add_handoff"] += 1
            n.links[name] = Link(name, "veth", mtu=mtu)  # created, not yet marked
            n.links[handoff] = Link(handoff, "veth", mac=mac, mtu=mtu)
            self.peers[(ns, name)], self.peers[(ns, handoff)] = (ns, handoff), (ns, name)
            self.writes["add_handoff"] += 1
            self._interrupted("add_handoff", f"veth {name}")
            n.links[name], n.links[handoff] = want, end
        elif cur != want:
            n.links[name] = want
            self.writes["add_handoff"] += 1
        if self._owned(ns, handoff) is not None and self.peers.get((ns, handoff)) == (ns, name):
            if n.links[handoff] != end:
                n.links[handoff] = end
            self._move((ns, handoff), "")
            self.writes["add_handoff"] += 1
        host = self._owned("", handoff)
        if host is not None and host != end and host.alias == alias:  # still here: fixed in place
            self.own.links[handoff] = end
            self.writes["add_handoff"] += 1

    def add_uplink(self, ns: str, name: str, *, alias: str, mtu: int, host_name: str, host_cidr: str) -> None:
        """Like NetlinkKernel: made and marked in `ns`, the host end then moved out."""
        n = self._get(ns)
        host, inside = self._owned("", host_name), self._owned(ns, host_name)
        if host is None and inside is None:
            if self._owned(ns, name) is not None:
                self._remove(ns, name)
                self.writes["add_uplink"] += 1
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
        n.arp = {k: v for k, v in n.arp.items() if k[0] != name}

    def _remove(self, ns: str, name: str) -> None:
        """Remove link `name` of `ns` and its veth peer."""
        self._drop_link(ns, name)
        other = self.peers.pop((ns, name), None)
        if other is not None:
            self.peers.pop(other, None)
            self._drop_link(*other)

    def delete_link(self, ns: str, name: str) -> None:
        n = self.own if not ns else self.ns.get(ns)
        if n is None or self._owned(ns, name) is None:
            return
        self._remove(ns, name)
        self.writes["delete_link"] += 1

    def set_link(self, ns: str, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        n = self._get(ns)
        cur = self._owned(ns, name)
        if cur is None:
            raise KernelError(f"no link {name!r} in {ns or 'the agent namespace'}")
        new = dataclasses.replace(cur, mtu=cur.mtu if mtu is None else mtu, up=cur.up if up is None else up)
        if new != cur:
            n.links[name] = new
            self.writes["set_link"] += 1

    def _set_write(self, bag: set, item: object, add: bool, method: str) -> None:  # type: ignore[type-arg]
        if (item in bag) != add:
            (bag.add if add else bag.discard)(item)
            self.writes[method] += 1

    def _if(self, ns: str) -> _Ns:
        """Namespace `ns` for a delete; an empty one when it is gone (nothing to delete)."""
        return self.own if not ns else self.ns.get(ns, _Ns(""))

    def add_addr(self, ns: str, dev: str, cidr: str) -> None:
        self._set_write(self._with_dev(ns, dev).addrs, (dev, cidr), True, "add_addr")

    def del_addr(self, ns: str, dev: str, cidr: str) -> None:
        self._set_write(self._if(ns).addrs, (dev, cidr), False, "del_addr")

    def add_route(self, ns: str, route: Route) -> None:
        self._set_write(self._with_dev(ns, route.dev).routes, route, True, "add_route")

    def del_route(self, ns: str, route: Route) -> None:
        self._set_write(self._if(ns).routes, route, False, "del_route")

    def _put_fdb(self, ns: str, entry: Fdb, *, force: bool) -> None:
        n = self._with_dev(ns, entry.dev)
        if entry.mac == ZERO_MAC or int(entry.mac[:2], 16) & 1:
            raise KernelError(f"fdb {entry.mac} on {entry.dev}: Operation not supported (a replace cannot add "
                              "a multicast or zero MAC)")
        if force or n.fdb.get((entry.dev, entry.mac)) != entry:
            n.fdb[(entry.dev, entry.mac)] = entry
            self.writes["add_fdb"] += 1

    def add_fdb(self, ns: str, entry: Fdb) -> None:
        self._put_fdb(ns, entry, force=False)

    def del_fdb(self, ns: str, entry: Fdb) -> None:
        n = self._if(ns)
        if n.fdb.get((entry.dev, entry.mac)) == entry:
            del n.fdb[(entry.dev, entry.mac)]
            self.writes["del_fdb"] += 1

    def _put_neigh(self, ns: str, entry: Neigh, *, force: bool) -> None:
        n = self._with_dev(ns, entry.dev)
        if force or n.neigh.get((entry.dev, entry.ip)) != entry:
            n.arp.pop((entry.dev, entry.ip), None)
            n.neigh[(entry.dev, entry.ip)] = entry
            self.writes["add_neigh"] += 1

    def add_neigh(self, ns: str, entry: Neigh) -> None:
        self._put_neigh(ns, entry, force=False)

    def forget_stale_neigh(self, ns: str, dev: str, *, entries: tuple[tuple[str, str], ...]) -> None:
        n = self._if(ns)
        for ip, mac in entries:
            if n.arp.get((dev, ip), mac) != mac:
                del n.arp[(dev, ip)]
                self.writes["forget_neigh"] += 1

    def del_neigh(self, ns: str, entry: Neigh) -> None:
        n = self._if(ns)
        if n.neigh.get((entry.dev, entry.ip)) == entry:
            del n.neigh[(entry.dev, entry.ip)]
            self.writes["del_neigh"] += 1

    def apply_entries(self, ns: str, *, add: list[Fdb | Neigh], delete: list[Fdb | Neigh]) -> None:
        """Like NetlinkKernel's batch: every add sent (and counted), then every delete;
        the failures reported together at the end."""
        if not add and not delete:
            return
        n = self._get(ns)
        missing = next((e.dev for e in add if e.dev not in n.links), None)
        if missing is not None:
            raise KernelError(f"no link {missing!r} in {ns}")
        delete = [e for e in delete if e.dev in n.links]  # a device that is gone has no entries
        failed = []
        for e in add:
            try:
                self._put_fdb(ns, e, force=True) if isinstance(e, Fdb) else self._put_neigh(ns, e, force=True)
            except KernelError as exc:
                failed.append(f"{'add_fdb' if isinstance(e, Fdb) else 'add_neigh'} {e}: {exc}")
        for e in delete:
            if isinstance(e, Fdb):
                self.del_fdb(ns, e)
            elif n.neigh.pop((e.dev, e.ip), None) is not None:  # by IP, whatever its MAC (RTM_DELNEIGH)
                self.writes["del_neigh"] += 1
        if failed:
            raise KernelError(f"{len(failed)} of {len(add) + len(delete)} entries failed in {ns}: "
                              f"{'; '.join(failed[:3])}")
