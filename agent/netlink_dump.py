"""Reads of the netlink driver: one namespace's state as a `Namespace`, and the
facts about the agent's own namespace its underlay is chosen from (agent/underlay.py).

Links, addresses and routes come from pyroute2 dumps (few objects); FDB and neighbour
entries, which may be thousands, come from `netlink_raw` on the same namespace.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vxlab.agent.kernel import Fdb, Link, Namespace, Neigh, Route, Underlay
from vxlab.agent.netlink_ns import NsHandle
from vxlab.agent.netlink_raw import NUD_NOARP, NUD_PERMANENT, dump_neigh
from vxlab.agent.underlay import NO_ROUTE, UnderlayFacts, select_underlay

IFF_UP = 0x1
ARPHRD_LOOPBACK = 772
RTPROT_KERNEL = 2
RTN_UNICAST = 1
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
AF_BRIDGE = 7
ZERO_MAC = "00:00:00:00:00:00"

Msg = Any  # a decoded pyroute2 message (nlmsg)


def link_of(msg: Msg, names: Mapping[int, str]) -> Link:
    """A `Link` from an RTM_NEWLINK message; `names` maps ifindex -> name (for master)."""
    kind = msg.get(("linkinfo", "kind")) or ""
    if not kind and msg["ifi_type"] == ARPHRD_LOOPBACK:
        kind = "loopback"
    fields: dict[str, Any] = {}
    if kind == "vxlan":
        data = msg.get(("linkinfo", "data"))
        if data is not None:
            fields = {"vni": data.get("vxlan_id") or 0, "local": data.get("vxlan_local") or "",
                      "port": data.get("vxlan_port") or 0, "learning": bool(data.get("vxlan_learning")),
                      "proxy": bool(data.get("vxlan_proxy"))}
    return Link(name=msg.get("ifname") or "", kind=kind, alias=msg.get("ifalias") or "",
                mac=msg.get("address") or "", mtu=msg.get("mtu") or 0, up=bool(msg["flags"] & IFF_UP),
                master=names.get(msg.get("master") or 0, ""), **fields)


def read_links(handle: NsHandle) -> tuple[dict[str, Link], dict[int, str]]:
    """All links of the namespace by name, and the ifindex -> name map."""
    msgs = handle.ipr.link("dump")
    names = {m["index"]: m.get("ifname") or "" for m in msgs}
    return {names[m["index"]]: link_of(m, names) for m in msgs}, names


def route_of(msg: Msg, names: Mapping[int, str]) -> Route | None:
    """A `Route` from an RTM_NEWROUTE message when it is one of ours: IPv4, main table,
    unicast, not added by the kernel, through one device."""
    table = msg.get("table") or msg["table"]
    oif = msg.get("oif")
    if (table != RT_TABLE_MAIN or msg["proto"] == RTPROT_KERNEL or msg["type"] != RTN_UNICAST
            or oif not in names):
        return None
    dst = "default" if msg["dst_len"] == 0 else f"{msg.get('dst')}/{msg['dst_len']}"
    return Route(dst=dst, gateway=msg.get("gateway") or "", dev=names[oif])


def read_addrs(handle: NsHandle) -> list[tuple[int, str, int]]:
    """IPv4 addresses as (ifindex, "ip/prefixlen", scope), in kernel order."""
    out = []
    for m in handle.ipr.addr("dump", family=socket.AF_INET):
        ip = m.get("local") or m.get("address")
        if ip:
            out.append((m["index"], f"{ip}/{m['prefixlen']}", m["scope"]))
    return out


def _unicast(mac: str) -> bool:
    return bool(mac) and mac != ZERO_MAC and not int(mac[:2], 16) & 1


def read_namespace(name: str, handle: NsHandle) -> Namespace:
    links, names = read_links(handle)
    lo = next((link for link in links.values() if link.kind == "loopback"), None)
    addrs = frozenset((names[i], cidr) for i, cidr, _scope in read_addrs(handle)
                      if i in names and links[names[i]].kind != "loopback")
    routes = frozenset(r for r in (route_of(m, names) for m in handle.ipr.route("dump", family=socket.AF_INET))
                       if r is not None)
    vxlans = {i: n for i, n in names.items() if links[n].kind == "vxlan"}
    fdb: frozenset[Fdb] = frozenset()
    neigh: frozenset[Neigh] = frozenset()
    if vxlans:
        fdb = frozenset(Fdb(dev=vxlans[e.ifindex], mac=e.lladdr, dst=e.dst)
                        for e in dump_neigh(handle.raw, AF_BRIDGE)
                        if e.ifindex in vxlans and e.dst and _unicast(e.lladdr)
                        and e.state & (NUD_PERMANENT | NUD_NOARP))
        neigh = frozenset(Neigh(dev=vxlans[e.ifindex], ip=e.dst, mac=e.lladdr)
                          for e in dump_neigh(handle.raw, socket.AF_INET)
                          if e.ifindex in vxlans and e.state & NUD_PERMANENT and e.dst and e.lladdr)
    return Namespace(name=name, marker=lo.alias if lo else "", links=links, addrs=addrs,
                     routes=routes, fdb=fdb, neigh=neigh)


def underlay_facts(handle: NsHandle, *, towards: Sequence[str] = ()) -> UnderlayFacts:
    """Links, global IPv4 addresses, default routes and the route to each of `towards`."""
    links, names = read_links(handle)
    addrs = [(names.get(i, ""), cidr.split("/")[0]) for i, cidr, scope in read_addrs(handle)
             if scope == RT_SCOPE_UNIVERSE]
    defaults = [names.get(r.get("oif"), "?") for r in handle.ipr.route("dump", family=socket.AF_INET)
                if r["dst_len"] == 0 and (r.get("table") or r["table"]) == RT_TABLE_MAIN and r["type"] == RTN_UNICAST]
    routes: dict[str, str] = {}
    for target in towards:
        try:
            found = handle.ipr.route("get", dst=target)
        except NetlinkError as e:
            if e.code not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL):
                raise
            found = []
        routes[target] = names.get(found[0].get("oif"), NO_ROUTE) if found else NO_ROUTE
    return UnderlayFacts(mtus={n: link.mtu for n, link in links.items()},
                         loopbacks=frozenset(n for n, link in links.items() if link.kind == "loopback"),
                         addrs=addrs, defaults=defaults, routes=routes)


def find_underlay(handle: NsHandle, *, ip: str = "", dev: str = "", towards: Sequence[str] = ()) -> Underlay:
    """The underlay of the handle's namespace (see `Kernel.underlay`)."""
    return select_underlay(underlay_facts(handle, towards=towards), ip=ip, dev=dev, towards=towards)
