"""Addresses, routes, FDB and neighbour entries of the netlink driver, and the request
helpers `NetlinkKernel` shares (a mixin: `ObjectOps` leaves links and namespaces to it).

Each add reads the one object first (RTM_GETNEIGH for FDB/neighbour entries, a small
per-device dump for addresses and routes) and writes only when it differs; a delete of
something missing, or of an entry that now points elsewhere (a newer add replaced it),
writes nothing.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError
from vxlab.agent.kernel import Fdb, Kernel, KernelError, Neigh, Route
from vxlab.agent.netlink_dump import AF_BRIDGE, RT_TABLE_MAIN, Msg, read_addrs, route_of
from vxlab.agent.netlink_ns import NsHandle, ns_ident
from vxlab.agent.netlink_raw import (
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    RawNeigh,
    batch,
    get_neigh,
    link_index,
    neigh_request,
)

RTPROT_STATIC = 4
RT_SCOPE_LINK = 253
_ABSENT = (errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL)


def where(ns: str) -> str:
    return f"netns {ns}" if ns else "the agent's namespace"


class ObjectOps(Kernel):
    """Request helpers plus the address/route/FDB/neighbour methods of `Kernel`."""

    def _handle(self, ns: str) -> NsHandle:  # provided by NetlinkKernel
        raise NotImplementedError

    def _handle_if(self, ns: str) -> NsHandle | None:
        """The handle for a delete: None when the namespace is gone (nothing to delete)."""
        if ns and ns_ident(ns) is None:
            return None
        return self._handle(ns)

    # --- request helpers --------------------------------------------------------------
    @contextmanager
    def _op(self, op: str, ns: str, obj: str) -> Iterator[None]:
        """Turn netlink and OS errors into a KernelError naming op, namespace and object."""
        try:
            yield
        except NetlinkError as exc:
            raise KernelError(f"{op}: {obj} in {where(ns)}: {os.strerror(exc.code)} (errno {exc.code})") from exc
        except OSError as exc:
            raise KernelError(f"{op}: {obj} in {where(ns)}: {exc.strerror or exc}") from exc

    def _write(self, op: str, h: NsHandle, ns: str, obj: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Send one write request and count it under `op`."""
        with self._op(op, ns, obj):
            result = fn(*args, **kw)
        self.writes[op] += 1
        return result

    def _get(self, h: NsHandle, name: str) -> Msg | None:
        """The RTM_NEWLINK message of link `name`, None when it does not exist."""
        if len(name) > 15:
            raise KernelError(f"link name {name!r} is longer than 15 characters")
        if not self._find(h, name):  # a cheap raw lookup first: most gets are of missing links
            return None
        try:
            return h.ipr.link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code in _ABSENT:
                return None
            raise KernelError(f"get link {name} in {where(h.name)}: {os.strerror(exc.code)}") from exc

    def _must_get(self, h: NsHandle, ns: str, name: str) -> Msg:
        msg = self._get(h, name)
        if msg is None:
            raise KernelError(f"no link {name!r} in {where(ns)}")
        return msg

    def _index(self, h: NsHandle, ns: str, dev: str) -> int:
        """The ifindex of `dev` (a cheap raw lookup); KernelError when it is missing."""
        index = self._find(h, dev)
        if not index:
            raise KernelError(f"no link {dev!r} in {where(ns)}")
        return index

    def _find(self, h: NsHandle, dev: str) -> int:
        """The ifindex of `dev`, 0 when missing."""
        with self._op("lookup", h.name, f"link {dev}"):
            return link_index(h.raw, dev)

    def _dev(self, ns: str, dev: str) -> tuple[NsHandle, int] | None:
        """For a delete: the handle and ifindex of `dev`, None when it (or ns) is gone."""
        h = self._handle_if(ns)
        if h is None:
            return None
        index = self._find(h, dev)
        return (h, index) if index else None

    # --- addresses -----------------------------------------------------------------------
    def _has_addr(self, h: NsHandle, index: int, cidr: str) -> bool:
        want = ipaddress.ip_interface(cidr)
        return any(i == index and ipaddress.ip_interface(c) == want for i, c, _s in read_addrs(h))

    def _addr(self, op: str, command: str, h: NsHandle, ns: str, index: int, dev: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        self._write(op, h, ns, f"address {cidr} on {dev}", h.ipr.addr, command, index=index,
                    address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def add_addr(self, ns: str, dev: str, cidr: str) -> None:
        h = self._handle(ns)
        index = self._index(h, ns, dev)
        if not self._has_addr(h, index, cidr):
            self._addr("add_addr", "add", h, ns, index, dev, cidr)

    def del_addr(self, ns: str, dev: str, cidr: str) -> None:
        found = self._dev(ns, dev)
        if found is not None and self._has_addr(*found, cidr):
            self._addr("del_addr", "del", found[0], ns, found[1], dev, cidr)

    # --- routes ----------------------------------------------------------------------------
    @staticmethod
    def _route_args(route: Route, index: int) -> dict[str, Any]:
        if route.dst == "default":
            dst = {"dst": "0.0.0.0", "dst_len": 0}
        else:
            net = ipaddress.ip_network(route.dst, strict=True)
            dst = {"dst": str(net.network_address), "dst_len": net.prefixlen}
        # the scope too: a delete without it (universe) does not find an on-link route (ESRCH)
        return {**dst, "gateway": route.gateway or None, "oif": index, "table": RT_TABLE_MAIN,
                "scope": 0 if route.gateway else RT_SCOPE_LINK}

    @staticmethod
    def _has_route(h: NsHandle, index: int, route: Route) -> bool:
        if route.dst != "default":
            route = Route(dst=str(ipaddress.ip_network(route.dst, strict=True)), gateway=route.gateway, dev=route.dev)
        names = {index: route.dev}
        return any(route_of(m, names) == route for m in h.ipr.route("dump", family=socket.AF_INET))

    def add_route(self, ns: str, route: Route) -> None:
        h = self._handle(ns)
        index = self._index(h, ns, route.dev)
        if not self._has_route(h, index, route):
            self._write("add_route", h, ns, f"route {route.dst} via {route.gateway or '-'} dev {route.dev}",
                        h.ipr.route, "replace", **self._route_args(route, index), proto=RTPROT_STATIC)

    def del_route(self, ns: str, route: Route) -> None:
        found = self._dev(ns, route.dev)
        if found is not None and self._has_route(*found, route):
            h, index = found
            self._write("del_route", h, ns, f"route {route.dst} via {route.gateway or '-'} dev {route.dev}",
                        h.ipr.route, "del", **self._route_args(route, index))

    # --- FDB (vxlan remotes) ----------------------------------------------------------------
    def _fdb(self, h: NsHandle, index: int, mac: str) -> RawNeigh | None:
        with self._op("get fdb", h.name, mac):
            return get_neigh(h.raw, family=AF_BRIDGE, ifindex=index, lladdr=mac, flags=NTF_SELF)

    def _fdb_write(self, op: str, command: str, h: NsHandle, ns: str, index: int, entry: Fdb) -> None:
        self._write(op, h, ns, f"fdb {entry.mac} dst {entry.dst} dev {entry.dev}", h.ipr.neigh, command,
                    family=AF_BRIDGE, ifindex=index, lladdr=entry.mac, dst=entry.dst,
                    state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)

    def add_fdb(self, ns: str, entry: Fdb) -> None:
        h = self._handle(ns)
        index = self._index(h, ns, entry.dev)
        have = self._fdb(h, index, entry.mac)
        if have is None or have.dst != entry.dst or not have.state & NUD_PERMANENT:
            self._fdb_write("add_fdb", "replace", h, ns, index, entry)

    def del_fdb(self, ns: str, entry: Fdb) -> None:
        found = self._dev(ns, entry.dev)
        if found is not None:
            have = self._fdb(*found, entry.mac)
            if have is not None and have.dst == entry.dst:
                self._fdb_write("del_fdb", "del", found[0], ns, found[1], entry)

    def apply_entries(self, ns: str, *, add: list[Fdb | Neigh], delete: list[Fdb | Neigh]) -> None:
        """Batched replace/delete of FDB and neighbour entries (see netlink_raw.batch); a
        delete of a missing entry is no error and no write."""
        if not add and not delete:
            return
        h = self._handle(ns)
        reqs: list[tuple[str, Fdb | Neigh, Callable[[int], bytes]]] = []
        indexes: dict[str, int] = {}  # one lookup per device, not per entry
        for e, is_del in [*((e, False) for e in add), *((e, True) for e in delete)]:
            if e.dev not in indexes:
                indexes[e.dev] = self._find(h, e.dev)
            index = indexes[e.dev]
            if not index and not is_del:
                raise KernelError(f"no link {e.dev!r} in {where(ns)}")
            if not index:
                continue  # deleting from a device that is gone: nothing to do
            if isinstance(e, Fdb):
                kind = "del_fdb" if is_del else "add_fdb"
                make = functools.partial(neigh_request, delete=is_del, family=AF_BRIDGE, ifindex=index,
                                         state=NUD_PERMANENT, flags=NTF_SELF, dst=e.dst, lladdr=e.mac)
            else:
                kind = "del_neigh" if is_del else "add_neigh"
                make = functools.partial(neigh_request, delete=is_del, family=socket.AF_INET, ifindex=index,
                                         state=NUD_PERMANENT, flags=0, dst=e.ip, lladdr="" if is_del else e.mac)
            reqs.append((kind, e, lambda seq, m=make: m(seq=seq)))
        with self._op("apply_entries", ns, f"{len(reqs)} entries"):
            codes = batch(h.raw, [r[2] for r in reqs])
        failed = []
        for (kind, e, _), code in zip(reqs, codes, strict=True):
            if code == 0:
                self.writes[kind] += 1
            elif not (kind.startswith("del") and code in (errno.ENOENT, errno.ESRCH)):
                failed.append(f"{kind} {e}: {os.strerror(code)}")
        if failed:
            raise KernelError(f"{len(failed)} of {len(reqs)} entries failed in {where(ns)}: {'; '.join(failed[:3])}")

    # --- neighbours (ARP proxy table) ---------------------------------------------------------
    def _neigh(self, h: NsHandle, index: int, ip: str) -> RawNeigh | None:
        with self._op("get neigh", h.name, ip):
            return get_neigh(h.raw, family=socket.AF_INET, ifindex=index, dst=ip)

    def add_neigh(self, ns: str, entry: Neigh) -> None:
        h = self._handle(ns)
        index = self._index(h, ns, entry.dev)
        have = self._neigh(h, index, entry.ip)
        if have is None or have.lladdr != entry.mac.lower() or not have.state & NUD_PERMANENT:
            self._write("add_neigh", h, ns, f"neigh {entry.ip} lladdr {entry.mac} dev {entry.dev}", h.ipr.neigh,
                        "replace", family=socket.AF_INET, ifindex=index, dst=entry.ip, lladdr=entry.mac,
                        state=NUD_PERMANENT)

    def forget_stale_neigh(self, ns: str, dev: str, *, entries: tuple[tuple[str, str], ...]) -> None:
        found = self._dev(ns, dev)
        if found is None:
            return
        h, index = found
        for ip, mac in entries:
            have = self._neigh(h, index, ip)
            if have is not None and not have.state & NUD_PERMANENT and have.lladdr != mac.lower():
                self._write("forget_neigh", h, ns, f"neigh {ip} dev {dev} (was {have.lladdr})", h.ipr.neigh, "del",
                            family=socket.AF_INET, ifindex=index, dst=ip)

    def del_neigh(self, ns: str, entry: Neigh) -> None:
        found = self._dev(ns, entry.dev)
        if found is not None:
            h, index = found
            have = self._neigh(h, index, entry.ip)
            if have is not None and have.lladdr == entry.mac.lower():
                self._write("del_neigh", h, ns, f"neigh {entry.ip} dev {entry.dev}", h.ipr.neigh, "del",
                            family=socket.AF_INET, ifindex=index, dst=entry.ip)
