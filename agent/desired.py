"""Desired kernel state of one host, computed purely from the watch cache.

The result has the same shape as a kernel dump (`dict[ns name, Namespace]`), holding
only objects the agent owns, so the planner can diff the two field by field:

- a network namespace per network with at least one local endpoint (created lazily,
  like Docker's per-network sandbox): bridge, VXLAN device (the network's VNI, local
  = this host's underlay IP, learning off, ARP proxy on), the bridge-side veth end of
  each local endpoint, and for every endpoint on a *live remote* host a static FDB
  entry (MAC -> that host's VTEP) and a permanent neighbour entry (IP -> MAC), and
  the network's policy rules that apply to its local endpoints (policy_nft.py); on a
  non-internal network the gateway on the bridge, the uplink and its NAT (nat.py);
- a container namespace per local container of vxlab's own (an endpoint with a
  `runtime`, Docker's or CNI's, has none: its bridge end is made like any other, its
  container end waits in the agent's namespace for the runtime, `handoffs`): one interface per network, with the
  endpoint's MAC and address, a default route via the gateway of its first
  non-internal network (the one it publishes ports on, if any: the replies of a
  published port must leave through the uplink they came in by), a resolv.conf naming
  the agent's embedded DNS (127.0.0.11; `local_containers` is also the set of
  namespaces it listens in), and the load-balancing table of the services on its
  networks (services_nft.py) over the replicas on live hosts, and the table that
  redirects 127.0.0.11:53 to the port its listeners are bound to (dns_nft.py).

Interface names inside a container are kept when they exist (`actual`), so adding or
removing a network never renames eth0; new interfaces take the lowest free ethN (an
unmarked one, left by a pass stopped between creating and marking it, is not taken:
it gets its name again and is adopted). Uplink addresses likewise: an uplink is a veth
between the network's namespace and this host's, so its /30 must be unique on this
host only; the one an uplink has (`actual`) is kept, a new one takes the lowest free
/30 (names.UPLINK_BLOCKS). A restarted agent thus adopts every uplink without a
write, and two networks never share one, whatever their VNIs.

`desired_agent_ns`: what the agent's own namespace should hold (allow-list, NAT, the
uplinks' host ends, the published ports of local containers and the routes to them:
ports_nft.py, the handoff ends runtime endpoints may still have there).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass

from vxlab import netns
from collections.abc import Callable

from vxlab.agent import dns_nft, nat, policy_nft, ports_nft, services_nft, vtep
from vxlab.agent.cache import StateCache
from vxlab.agent.kernel import MARK, UPLINK_MARK, AgentNs, Fdb, Link, Namespace, Neigh, Route
from vxlab.agent.names import UPLINK_BLOCKS, VXLAN_OVERHEAD, VXLAN_PORT, Naming
from vxlab.layout import DEFAULT_PREFIX
from vxlab.model import Endpoint, Network


_BLOCKS = frozenset(UPLINK_BLOCKS)


@dataclass(frozen=True)
class HostInfo:
    """What the agent knows about its own host."""

    name: str
    underlay_ip: str
    underlay_mtu: int
    netns_prefix: str = DEFAULT_PREFIX
    vxlan_port: int = VXLAN_PORT

    @property
    def naming(self) -> Naming:
        return Naming(self.name, self.netns_prefix)


def overlay_mtu(net: Network, me: HostInfo) -> int:
    """The network's MTU, or the underlay's minus the VXLAN overhead."""
    return net.mtu or (me.underlay_mtu or 1500) - VXLAN_OVERHEAD


def _peer(state: StateCache, me: HostInfo, assume_alive: frozenset[str]) -> Callable[[str], bool]:
    """Is a remote host one to reach: known, alive (or assumed so), with an underlay
    address of its own? Unknown or dead hosts: peers are told they are unreachable."""
    def ok(name: str) -> bool:
        host = state.hosts.get(name)
        return host is not None and (host.alive or name in assume_alive) and bool(host.underlay_ip) \
            and host.underlay_ip != me.underlay_ip
    return ok


def _remote_entries(net: Network, vxlan: str, state: StateCache, me: HostInfo,
                    assume_alive: frozenset[str]) -> tuple[set[Fdb], set[Neigh]]:
    fdb: set[Fdb] = set()
    neigh: set[Neigh] = set()
    peer = _peer(state, me, assume_alive)
    for ep in state.endpoints.values():
        if ep.network != net.name or ep.host == me.name or not peer(ep.host):
            continue
        host = state.hosts[ep.host]
        fdb.add(Fdb(vxlan, ep.mac, host.underlay_ip))
        neigh.add(Neigh(vxlan, ep.ip, ep.mac))
    return fdb, neigh


def _uplink_blocks(nets: list[Network], me: HostInfo, actual: dict[str, Namespace]) -> dict[str, int]:
    """network -> the /30 of its uplink: the one it has (the first network by name keeps
    a /30 two of them have), else the lowest free one."""
    n = me.naming
    out: dict[str, int] = {}
    for net in sorted(nets, key=lambda x: x.name):
        have = actual.get(n.network_ns(net.name))
        found = [Naming.uplink_block(c) for d, c in (have.addrs if have else ()) if d == n.UPLINK]
        if found and found[0] in _BLOCKS and found[0] not in out.values():
            out[net.name] = found[0]
    used = set(out.values())
    free = (b for b in UPLINK_BLOCKS if b not in used)
    for net in sorted(nets, key=lambda x: x.name):
        if net.name not in out:
            block = next(free, None)
            if block is None:
                raise ValueError("no free uplink /30 in 169.254.0.0/16 on this host")
            out[net.name] = block
    return out


def _network_ns(net: Network, local: list[Endpoint], state: StateCache, me: HostInfo,
                assume_alive: frozenset[str], uplink: int | None) -> Namespace:
    n = me.naming
    mtu = overlay_mtu(net, me)
    bridge, vxlan = n.bridge(net.name), n.vxlan(net.name)
    links = {bridge: Link(bridge, "bridge", alias=n.bridge_alias(net.name), mtu=mtu, up=True)}
    overlay = net.driver != "bridge"  # a bridge network lives on one host: no VXLAN, no peers
    if overlay:
        links[vxlan] = Link(vxlan, "vxlan", alias=n.vxlan_alias(net.name), mtu=mtu, up=True, master=bridge,
                            vni=net.vni, local=me.underlay_ip, port=me.vxlan_port, learning=False, proxy=True)
    for ep in local:
        veth = n.veth(ep.id)
        links[veth] = Link(veth, "veth", alias=n.endpoint_alias(ep.id), mtu=mtu, up=True, master=bridge)
    fdb, neigh = _remote_entries(net, vxlan, state, me, assume_alive) if overlay else (set(), set())
    addrs: set[tuple[str, str]] = set()
    routes: set[Route] = set()
    masquerade = None
    if uplink is not None:
        # The gateway lives on the bridge on every host (a distributed gateway); traffic
        # for the outside leaves through the uplink, NATed (see Kernel.add_uplink).
        prefix = ipaddress.IPv4Network(net.subnet).prefixlen
        host_ip, ns_ip = n.uplink_addresses(uplink)
        links[n.UPLINK] = Link(n.UPLINK, "veth", alias=n.uplink_alias(net.name), mtu=mtu, up=True)
        addrs |= {(bridge, f"{net.gateway}/{prefix}"), (n.UPLINK, f"{ns_ip}/30")}
        routes.add(Route("default", host_ip, n.UPLINK))
        masquerade = nat.network(net.subnet)
    policy = policy_nft.build(net.name, local, state.endpoints.values(), state.policies.values()) \
        if state.policies else None
    return Namespace(n.network_ns(net.name), n.network_marker(net.name), links, frozenset(addrs),
                     frozenset(routes), fdb=frozenset(fdb), neigh=frozenset(neigh), policy=policy, nat=masquerade)


def _container_ns(name: str, eps: list[Endpoint], state: StateCache, me: HostInfo,
                  actual: Namespace | None, assume_alive: frozenset[str]) -> Namespace:
    n = me.naming
    existing = {link.alias: link.name for link in (actual.links.values() if actual else ())
                if link.alias.startswith(MARK) and link.name != "lo"}
    taken = set(existing.values())
    links: dict[str, Link] = {}
    addrs: set[tuple[str, str]] = set()
    routes: set[Route] = set()
    # The default route: the network it publishes ports on, else the first non-internal one.
    outward = [e for e in eps if not state.networks[e.network].internal and state.networks[e.network].gateway]
    default = min(outward, key=lambda e: (not e.ports, e.created, e.network)) if outward else None
    for ep in sorted(eps, key=lambda e: (e.created, e.network)):
        net = state.networks[ep.network]
        alias = n.endpoint_alias(ep.id)
        ifname = existing.get(alias)
        if ifname is None:
            ifname = next(f"eth{i}" for i in range(len(taken) + 1) if f"eth{i}" not in taken)
            taken.add(ifname)
        links[ifname] = Link(ifname, "veth", alias=alias, mac=ep.mac, mtu=overlay_mtu(net, me), up=True)
        prefix = ipaddress.IPv4Network(net.subnet).prefixlen
        addrs.add((ifname, f"{ep.ip}/{prefix}"))
        if ep is default:
            routes.add(Route("default", net.gateway, ifname))
    marker = n.container_marker(name)
    peer = _peer(state, me, assume_alive)
    table = services_nft.build(eps, state.services.values(), state.endpoints.values(),
                               alive=lambda host: host == me.name or peer(host)) if state.services else None
    return Namespace(n.container_ns(name), marker, links, frozenset(addrs), frozenset(routes),
                     resolv=netns.resolv_conf(marker), services=table, dns=dns_nft.build())


def desired_state(state: StateCache, me: HostInfo, actual: dict[str, Namespace] | None = None, *,
                  assume_alive: frozenset[str] = frozenset()) -> dict[str, Namespace]:
    """Every namespace this host should have, with the objects the agent owns in it.

    `assume_alive`: hosts to keep programming although the state says they are dead
    (the agent's grace period after it lost the control plane itself)."""
    actual = actual or {}
    by_network: dict[str, list[Endpoint]] = defaultdict(list)
    for eps in _local_endpoints(state, me).values():
        for ep in eps:
            by_network[ep.network].append(ep)
    by_container = _local_endpoints(state, me, own_ns=True)
    out: dict[str, Namespace] = {}
    blocks = _uplink_blocks([state.networks[name] for name in by_network
                             if not state.networks[name].internal and state.networks[name].gateway], me, actual)
    for net_name, local in by_network.items():
        ns = _network_ns(state.networks[net_name], local, state, me, assume_alive, blocks.get(net_name))
        out[ns.name] = ns
    for name, eps in by_container.items():
        ns_name = me.naming.container_ns(name)
        out[ns_name] = _container_ns(name, eps, state, me, actual.get(ns_name), assume_alive)
    return out


def _local_endpoints(state: StateCache, me: HostInfo, *, own_ns: bool = False) -> dict[str, list[Endpoint]]:
    """This host's containers and their endpoints (on networks the cache knows);
    `own_ns`: only the endpoints in a container namespace of vxlab's (not a runtime's)."""
    out: dict[str, list[Endpoint]] = defaultdict(list)
    for ep in state.endpoints.values():
        if ep.host == me.name and ep.network in state.networks and not (own_ns and ep.runtime):
            out[ep.name].append(ep)
    return out


def local_containers(state: StateCache, me: HostInfo) -> dict[str, str]:
    """Container namespace -> container, for every container of this host in a
    namespace of vxlab's (a runtime's namespaces are the runtime's)."""
    return {me.naming.container_ns(name): name for name in _local_endpoints(state, me, own_ns=True)}


def runtime_dns(state: StateCache, me: HostInfo) -> dict[str, list[Endpoint]]:
    """The namespaces of this host's CNI containers, by the path their endpoints record,
    with those endpoints: vxlab-cni redirected 127.0.0.11:53 there to the agent's listener
    (Docker's containers keep Docker's own DNS, which its resolv.conf names)."""
    out: dict[str, list[Endpoint]] = defaultdict(list)
    for eps in _local_endpoints(state, me).values():
        for ep in eps:
            if ep.runtime == "cni" and ep.netns:
                out[ep.netns].append(ep)
    return dict(out)


def handoffs(state: StateCache, me: HostInfo) -> dict[str, Link]:
    """The container ends of this host's runtime endpoints as they wait in the agent's
    namespace (Kernel.add_handoff): the handoff name, the endpoint's MAC, the network's MTU."""
    n = me.naming
    return {n.handoff_link(ep.id): Link(n.handoff_link(ep.id), "veth", alias=n.endpoint_alias(ep.id), mac=ep.mac,
                                        mtu=overlay_mtu(state.networks[ep.network], me))
            for eps in _local_endpoints(state, me).values() for ep in eps if ep.runtime}


def desired_agent_ns(state: StateCache, me: HostInfo, desired: dict[str, Namespace]) -> AgentNs:
    """The agent's own namespace: the allow-list of every known host and this one, the
    NAT table while any network has an uplink, each uplink's host end with its address
    (the far end of the network namespace's default route), and the published ports of
    this host's containers with a route to each one's subnet through its uplink."""
    vteps = vtep.desired_filter({h.name: h.underlay_ip for h in state.hosts.values()},
                                me_ip=me.underlay_ip, port=me.vxlan_port)
    uplinks = {}
    via: dict[str, tuple[str, str]] = {}  # network -> (uplink host end, the namespace's end)
    for ns in desired.values():
        link = ns.links.get(Naming.UPLINK)
        if link is not None:
            host_ip = next(r.gateway for r in ns.routes if r.dev == link.name)
            network = link.alias[len(UPLINK_MARK):]
            uplinks[Naming.uplink_host(network)] = frozenset({f"{host_ip}/30"})
            ns_ip = next(c for d, c in ns.addrs if d == link.name).split("/")[0]
            via[network] = (Naming.uplink_host(network), ns_ip)
    published = [ports_nft.Published(ep, state.networks[ep.network].subnet, *via[ep.network])
                 for eps in _local_endpoints(state, me).values() for ep in eps if ep.ports and ep.network in via]
    ports, routes = ports_nft.build(published)
    return AgentNs(vteps, nat.host(desired.values()), uplinks, ports, routes, handoffs=handoffs(state, me))
