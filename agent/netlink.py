"""`NetlinkKernel`: the `Kernel` contract on the real kernel, with pyroute2.

Namespaces, dumps and links live here; addresses, routes, FDB and neighbour entries in
`netlink_objs` (a mixin), nftables tables in `netlink_tables` (another, through the
firewall driver `nft`), host faults (tc, the IFB redirect, the underlay's state) in
`netlink_faults`. Handles: `netlink_ns`; reads: `netlink_dump`.

Create, then mark: a link is created in one request and marked (ifalias) in the next,
since RTM_NEWLINK ignores IFLA_IFALIAS on this kernel (6.18, measured: the device's and
a veth peer's). Every link is created in the namespace it belongs to, so what a stopped
pass leaves unmarked sits in a namespace of ours, where `adopt_link` takes it back: a
VXLAN device is created straight into its network namespace (its UDP socket still
binds in the agent's: the kernel opens it in the namespace the request came from), an
uplink is made in the network namespace and its host end moved out once marked.

Every write is ensure-style: the current object is read first (a netlink GET; a small
dump for addresses and routes), and a request is sent only when something differs;
`writes[<method>]` counts the requests sent. A `NetlinkKernel` must be created and used in ONE thread, outside any
running asyncio event loop (pyroute2 0.9 keeps its sockets and event loop per thread):
give the agent a dedicated worker thread, e.g. `ThreadPoolExecutor(max_workers=1)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError
from vxlab import netns
from vxlab.agent import netlink_ns
from vxlab.agent.kernel import ENDPOINT_MARK, MARK, UPLINK_MARK, AgentNs, Foreign, HostFaults, KernelError, Namespace, Underlay
from vxlab.agent.netlink_faults import FaultOps
from vxlab.agent.netlink_dump import (
    IFF_UP,
    Msg,
    find_underlay,
    link_of,
    read_addrs,
    read_links,
    read_namespace,
    route_of,
)
from vxlab.agent.netlink_ns import Handles, NamespaceMissing, NsHandle
from vxlab.agent.netlink_objs import ObjectOps, where
from vxlab.agent.netlink_raw import link_index
from vxlab.agent.netlink_tables import BRIDGE_NF_OFF, TableOps
from vxlab.agent.nft import Nft

ADDR_GEN_MODE_NONE = 1  # no IPv6 link-local address on the bridge itself


class NetlinkKernel(TableOps, FaultOps, ObjectOps):
    """The kernel of the calling thread's network namespace (the agent's "own" one).
    `nft`: the firewall driver's backend ("auto": libnftables when it loads, else `nft`)."""

    def __init__(self, *, nft: str = "auto") -> None:
        super().__init__()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise KernelError("NetlinkKernel can not run inside an asyncio event loop: "
                              "create and call it in a worker thread")
        self._thread = threading.get_ident()
        try:
            self._handles = Handles()
        except (OSError, NetlinkError) as exc:
            raise KernelError(f"open netlink in the agent's namespace: {exc}") from exc
        self._closed = False
        self._nft = Nft(backend=nft)

    # --- plumbing --------------------------------------------------------------------
    def _handle(self, ns: str) -> NsHandle:
        if threading.get_ident() != self._thread:
            raise KernelError("NetlinkKernel used from another thread than the one that created it")
        if self._closed:
            raise KernelError("NetlinkKernel is closed")
        try:
            return self._handles.get(ns)
        except NamespaceMissing as exc:
            raise KernelError(f"no network namespace {ns!r}") from exc
        except (OSError, NetlinkError) as exc:
            raise KernelError(f"open netlink in {where(ns)}: {exc}") from exc

    def _own(self) -> NsHandle:
        return self._handle("")

    def _ns_fd(self, ns: str) -> int:
        try:
            path = netlink_ns.path_of(ns) if ns else "/proc/thread-self/ns/net"
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, ValueError) as exc:
            raise KernelError(f"open namespace {ns!r}: {exc}") from exc

    def _master_index(self, h: NsHandle, ns: str, master: str) -> int:
        if not master:
            return 0
        index = self._find(h, master)
        if not index:
            raise KernelError(f"master {master!r} does not exist in {where(ns)}")
        return index

    def _fix(self, op: str, h: NsHandle, ns: str, msg: Msg, *, mtu: int | None = None, up: bool | None = None,
             master: str | None = None, alias: str | None = None, mac: str | None = None) -> None:
        """One `set` request for whatever differs from `msg` (nothing when all is right)."""
        name = msg.get("ifname")
        change: dict[str, Any] = {}
        if mtu is not None and msg.get("mtu") != mtu:
            change["mtu"] = mtu
        if up is not None and bool(msg["flags"] & IFF_UP) != up:
            change["state"] = "up" if up else "down"
        if master is not None:
            want = self._master_index(h, ns, master)
            if (msg.get("master") or 0) != want:
                change["master"] = want
        if alias is not None and (msg.get("ifalias") or "") != alias:
            change["ifalias"] = alias
        if mac is not None and (msg.get("address") or "") != mac.lower():
            change["address"] = mac
        if change:
            self._write(op, h, ns, f"link {name}", h.ipr.link, "set", index=msg["index"], **change)

    def _owned(self, op: str, ns: str, msg: Msg | None) -> Msg | None:
        if msg is not None and not (msg.get("ifalias") or "").startswith(MARK):
            raise Foreign(f"{op}: link {msg.get('ifname')!r} in {where(ns)} exists without a {MARK} marker "
                          f"(alias {msg.get('ifalias') or ''!r})")
        return msg

    # --- reads --------------------------------------------------------------------------
    def dump(self, prefix: str) -> dict[str, Namespace]:
        self._own()  # thread / closed checks
        names = netlink_ns.list_netns()
        self._handles.prune(set(names))
        out: dict[str, Namespace] = {}
        for name in names:
            if not name.startswith(prefix) or netlink_ns.ns_ident(name) is None:
                continue
            h = self._handle(name)
            with self._op("dump", name, "namespace"):
                ns = read_namespace(name, h)
            if ns.marker.startswith(MARK) and any(link.kind == "bridge" for link in ns.links.values()):
                policy, nat = self.network_tables(name)  # a network namespace
                ns = dataclasses.replace(ns, policy=policy, nat=nat)
            elif ns.marker.startswith(MARK):  # a container namespace
                services, dns = self.container_tables(name)
                ns = dataclasses.replace(ns, resolv=netns.read_resolv(name), services=services, dns=dns)
            out[name] = ns
        return out

    def agent_ns(self, *, underlay: str = "") -> AgentNs:
        own = self._own()
        with self._op("dump", "", "links"):
            links, names = read_links(own)
            addrs = read_addrs(own)
            ours = {n for n, link in links.items() if link.alias.startswith(UPLINK_MARK)}
            found = (route_of(m, names) for m in own.ipr.route("dump", family=socket.AF_INET))
            routes = frozenset(r for r in found if r is not None and r.dev in ours)
        vteps, nat, ports, faults = self.own_tables()
        uplinks = {n: frozenset(c for i, c, _s in addrs if names.get(i) == n) for n in ours}
        handoffs = {n: link for n, link in links.items() if link.alias.startswith(ENDPOINT_MARK)}
        return AgentNs(vteps, nat, uplinks, ports, routes,
                       faults=self.host_faults(underlay, faults) if underlay else HostFaults(), handoffs=handoffs)

    def underlay(self, *, ip: str = "", dev: str = "", towards: Sequence[str] = ()) -> Underlay:
        own = self._own()
        with self._op("underlay", "", dev or ip or "route towards the controller"):
            return find_underlay(own, ip=ip, dev=dev, towards=towards)

    # --- namespaces -------------------------------------------------------------------
    def create_netns(self, name: str, *, marker: str) -> None:
        self._own()
        if netlink_ns.ns_ident(name) is None:
            try:
                fds = netlink_ns.create_netns(name, marker=marker)
            except FileExistsError:
                pass  # created concurrently: check it below
            except (OSError, ValueError) as exc:
                raise KernelError(f"create_netns {name}: {exc}") from exc
            else:
                self.writes["create_netns"] += 1
                h = self._handles.adopt(name, fds)
                # ip_forward: not inherited from the host. Bridged frames skip the IP hooks
                # until a network policy needs them (netlink_tables.BRIDGE_NF_OFF).
                self._sysctls(name, {"net/ipv4/ip_forward": "0", **BRIDGE_NF_OFF})
                lo = self._must_get(h, name, "lo")
                self._fix("create_netns", h, name, lo, up=True, alias=marker)
                return
        h = self._handle(name)
        lo = self._must_get(h, name, "lo")
        found = lo.get("ifalias") or ""
        if found != marker:
            raise Foreign(f"create_netns: namespace {name!r} exists with marker {found!r}, not {marker!r}")
        self._fix("create_netns", h, name, lo, up=True)

    def delete_netns(self, name: str) -> None:
        """Unmount the namespace. Our vxlan and veth links in it are deleted first (one
        write each): the kernel destroys a namespace asynchronously, and until then its
        vxlan devices still hold their VNI in the agent's namespace (a new vxlan with it
        fails with EEXIST) and its veth peers still sit in the container namespaces."""
        self._own()
        if netlink_ns.ns_ident(name) is not None:
            h = self._handle(name)
            with self._op("delete_netns", name, "links"):
                links, _names = read_links(h)
            for link in links.values():
                if link.kind in ("vxlan", "veth") and link.alias.startswith(MARK):
                    index = link_index(h.raw, link.name)
                    if index:
                        self._write("delete_netns", h, name, f"link {link.name}", h.ipr.link, "del", index=index)
        self._handles.drop(name)  # an open socket would keep the namespace alive
        try:
            removed = netlink_ns.remove_netns(name)
        except (OSError, ValueError) as exc:
            raise KernelError(f"delete_netns {name}: {exc}") from exc
        netns.remove_etc(name)
        if removed:
            self.writes["delete_netns"] += 1

    def set_resolv(self, ns: str, text: str) -> None:
        if netns.read_resolv(ns) == text:
            return
        try:
            netns.write_resolv(ns, text)
        except OSError as exc:
            raise KernelError(f"set_resolv {ns}: {exc}") from exc
        self.writes["set_resolv"] += 1

    def delete_resolv(self, ns: str) -> None:
        try:
            removed = netns.remove_etc(ns)
        except OSError as exc:
            raise KernelError(f"delete_resolv {ns}: {exc}") from exc
        if removed:
            self.writes["delete_resolv"] += 1

    # --- links ---------------------------------------------------------------------------
    def add_bridge(self, ns: str, name: str, *, mtu: int, alias: str) -> None:
        h = self._handle(ns)
        msg = self._owned("add_bridge", ns, self._get(h, name))
        if msg is not None and link_of(msg, {}).kind != "bridge":
            self._write("add_bridge", h, ns, f"link {name}", h.ipr.link, "del", index=msg["index"])
            msg = None
        if msg is None:
            self._write("add_bridge", h, ns, f"bridge {name}", h.ipr.link, "add", ifname=name, kind="bridge",
                        mtu=mtu, br_stp_state=0)
            self._interrupted("add_bridge", f"bridge {name}")
            self._write("add_bridge", h, ns, f"bridge {name}", h.ipr.link, "set", index=self._index(h, ns, name),
                        ifalias=alias, state="up", af_spec={"attrs": [["AF_INET6", {
                            "attrs": [["IFLA_INET6_ADDR_GEN_MODE", ADDR_GEN_MODE_NONE]]}]]})
            return
        self._fix("add_bridge", h, ns, msg, mtu=mtu, up=True, alias=alias)

    def add_vxlan(self, ns: str, name: str, *, vni: int, local: str, port: int, mtu: int,
                  alias: str, master: str) -> None:
        """Created by the agent's namespace straight into `ns` (IFLA_NET_NS_FD) with its
        name, master and state in the one request: the kernel opens its UDP socket in the
        namespace the request came from, so it binds to the underlay there."""
        h = self._handle(ns)
        msg = self._owned("add_vxlan", ns, self._get(h, name))
        if msg is not None:
            have = link_of(msg, {})
            if (have.kind, have.vni, have.local, have.port, have.learning, have.proxy) == \
                    ("vxlan", vni, local, port, False, True):
                self._fix("add_vxlan", h, ns, msg, mtu=mtu, up=True, master=master, alias=alias)
                return
            self._write("add_vxlan", h, ns, f"link {name}", h.ipr.link, "del", index=msg["index"])
        master_index = self._master_index(h, ns, master)
        own = self._own()
        fd = self._ns_fd(ns)
        try:
            for delay in (0.05, 0.1, 0.2, 0.4, 0.8, 0.0):
                try:
                    self._write("add_vxlan", own, "", f"vxlan {ns}/{name}", own.ipr.link, "add", ifname=name,
                                kind="vxlan", vxlan_id=vni, vxlan_local=local, vxlan_port=port, vxlan_learning=0,
                                vxlan_proxy=1, mtu=mtu, net_ns_fd=fd, master=master_index, state="up")
                    break
                except KernelError as exc:
                    cause = exc.__cause__
                    if not (isinstance(cause, NetlinkError) and cause.code == errno.EEXIST):
                        raise
                    if not delay:  # another device, maybe in a namespace still being destroyed, has it
                        raise KernelError(f"add_vxlan {ns}/{name}: VNI {vni} (local {local}, port {port}) is in "
                                          "use by another vxlan device of the agent's namespace") from cause
                    time.sleep(delay)
        finally:
            os.close(fd)
        self._interrupted("add_vxlan", f"vxlan {name}")
        self._write("add_vxlan", h, ns, f"vxlan {name}", h.ipr.link, "set", index=self._index(h, ns, name),
                    ifalias=alias)

    def add_veth(self, ns: str, name: str, *, alias: str, master: str, mtu: int,
                 peer_ns: str, peer_name: str, peer_mac: str, peer_alias: str) -> None:
        h = self._handle(ns)
        ph = self._handle(peer_ns)
        msg = self._owned("add_veth", ns, self._get(h, name))
        if msg is not None and link_of(msg, {}).kind != "veth":
            self._write("add_veth", h, ns, f"link {name}", h.ipr.link, "del", index=msg["index"])
            msg = None
        peer = self._get(ph, peer_name)
        if msg is not None:
            self._fix("add_veth", h, ns, msg, mtu=mtu, up=True, master=master, alias=alias)
            if peer is not None and (peer.get("ifalias") or "").startswith(MARK):
                self._fix("add_veth", ph, peer_ns, peer, mtu=mtu, up=True, alias=peer_alias, mac=peer_mac)
            return
        stale = self._owned("add_veth", peer_ns, peer)
        if stale is not None:  # a peer of ours without its host end: remove it
            self._write("add_veth", ph, peer_ns, f"link {peer_name}", ph.ipr.link, "del", index=stale["index"])
        master_index = self._master_index(h, ns, master)
        fd = self._ns_fd(peer_ns)
        try:
            self._write("add_veth", h, ns, f"veth {name} (peer {peer_ns}/{peer_name})", h.ipr.link, "add",
                        ifname=name, kind="veth", mtu=mtu,
                        peer={"ifname": peer_name, "net_ns_fd": fd, "address": peer_mac, "mtu": mtu})
        finally:
            os.close(fd)
        self._interrupted("add_veth", f"veth {name}")
        self._write("add_veth", h, ns, f"link {name}", h.ipr.link, "set", index=self._index(h, ns, name),
                    ifalias=alias, master=master_index, state="up")
        self._write("add_veth", ph, peer_ns, f"link {peer_name}", ph.ipr.link, "set",
                    index=self._index(ph, peer_ns, peer_name), ifalias=peer_alias, state="up")

    def add_handoff(self, ns: str, name: str, *, alias: str, master: str, mtu: int, handoff: str, mac: str) -> None:
        h, own = self._handle(ns), self._own()
        msg = self._owned("add_handoff", ns, self._get(h, name))
        if msg is not None and link_of(msg, {}).kind != "veth":
            self._write("add_handoff", h, ns, f"link {name}", h.ipr.link, "del", index=msg["index"])
            msg = None
        if msg is None:
            for hh, where_ in ((own, ""), (h, ns)):  # an end of ours without its bridge end
                stale = self._owned("add_handoff", where_, self._get(hh, handoff))
                if stale is not None:
                    self._write("add_handoff", hh, where_, f"link {handoff}", hh.ipr.link, "del", index=stale["index"])
            master_index = self._master_index(h, ns, master)
            self._write("add_handoff", h, ns, f"veth {name} (peer {handoff})", h.ipr.link, "add", ifname=name,
                        kind="veth", mtu=mtu, peer={"ifname": handoff, "address": mac, "mtu": mtu})
            self._interrupted("add_handoff", f"veth {name}")
            self._write("add_handoff", h, ns, f"link {name}", h.ipr.link, "set", index=self._index(h, ns, name),
                        ifalias=alias, master=master_index, state="up")
            self._write("add_handoff", h, ns, f"link {handoff}", h.ipr.link, "set",
                        index=self._index(h, ns, handoff), ifalias=alias)
        else:
            self._fix("add_handoff", h, ns, msg, mtu=mtu, up=True, master=master, alias=alias)
        inside = self._owned("add_handoff", ns, self._get(h, handoff))
        if inside is not None:  # made (or left by a stopped pass) in `ns`: move it out
            self._fix("add_handoff", h, ns, inside, mtu=mtu, alias=alias, mac=mac)
            fd = self._ns_fd("")
            try:
                self._write("add_handoff", h, ns, f"link {handoff} -> the agent's namespace", h.ipr.link, "set",
                            index=inside["index"], net_ns_fd=fd)
            finally:
                os.close(fd)
            return
        host = self._get(own, handoff)
        if host is not None and (host.get("ifalias") or "") == alias:  # not taken yet: fixed in place
            self._fix("add_handoff", own, "", host, mtu=mtu, mac=mac)

    def add_uplink(self, ns: str, name: str, *, alias: str, mtu: int, host_name: str, host_cidr: str) -> None:
        h, own = self._handle(ns), self._own()
        mac = "02:" + ":".join(hashlib.sha1(f"{ns}/{name}".encode()).hexdigest()[i:i + 2] for i in range(0, 10, 2))
        host = self._owned("add_uplink", "", self._get(own, host_name))
        inside = self._owned("add_uplink", ns, self._get(h, host_name))  # a host end not moved out yet
        if host is None and inside is None:
            peer = self._owned("add_uplink", ns, self._get(h, name))
            if peer is not None:  # our end without its host end: remove it
                self._write("add_uplink", h, ns, f"link {name}", h.ipr.link, "del", index=peer["index"])
            self._write("add_uplink", h, ns, f"veth {host_name} (peer {name})", h.ipr.link, "add", ifname=host_name,
                        kind="veth", mtu=mtu, peer={"ifname": name, "address": mac, "mtu": mtu})
            self._interrupted("add_uplink", f"veth {host_name}")
            for end in (name, host_name):
                self._write("add_uplink", h, ns, f"link {end}", h.ipr.link, "set", index=self._index(h, ns, end),
                            ifalias=alias)
            inside = self._must_get(h, ns, host_name)
        if inside is not None:
            fd = self._ns_fd("")
            try:
                self._write("add_uplink", h, ns, f"link {host_name} -> the agent's namespace", h.ipr.link, "set",
                            index=inside["index"], net_ns_fd=fd, state="up")
            finally:
                os.close(fd)
            host = self._must_get(own, "", host_name)
        assert host is not None
        self._fix("add_uplink", own, "", host, mtu=mtu, up=True, alias=alias)
        self._fix("add_uplink", h, ns, self._must_get(h, ns, name), mtu=mtu, up=True, alias=alias, mac=mac)
        self.add_addr("", host_name, host_cidr)
        for where_ in ("", ns):
            if self._sysctls(where_, {"net/ipv4/ip_forward": "1"}):
                self.writes["add_uplink"] += 1

    def adopt_link(self, ns: str, name: str, *, alias: str, ns_marker: str) -> None:
        if not ns:
            raise Foreign(f"adopt_link: link {name!r}: never in the agent's own namespace")
        h = self._handle(ns)
        found = self._must_get(h, ns, "lo").get("ifalias") or ""
        if not ns_marker.startswith(MARK) or found != ns_marker:
            raise Foreign(f"adopt_link: namespace {ns!r} has marker {found!r}, not {ns_marker!r}")
        msg = self._get(h, name)
        have = "" if msg is None else msg.get("ifalias") or ""
        if msg is None or have.startswith(MARK):
            return
        if have:
            raise Foreign(f"adopt_link: link {name!r} in {where(ns)} has someone's alias {have!r}")
        self._write("adopt_link", h, ns, f"link {name}", h.ipr.link, "set", index=msg["index"], ifalias=alias)

    def _sysctls(self, ns: str, values: dict[str, str]) -> bool:
        """Set each /proc/sys/<key> inside `ns` ("" = ours) that exists and differs, in
        one visit to the namespace; a key that does not exist (its module is not loaded)
        is skipped. True when anything changed."""
        def rw() -> bool:
            changed = False
            for key, value in values.items():
                try:
                    with open(f"/proc/sys/{key}") as f:
                        if f.read().strip() == value:
                            continue
                except FileNotFoundError:
                    continue
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write(value)
                changed = True
            return changed
        try:
            return netns.run_in(netlink_ns.path_of(ns) if ns else "", rw)
        except (OSError, ValueError) as exc:
            raise KernelError(f"sysctl {', '.join(values)} in {where(ns)}: {exc}") from exc

    def delete_link(self, ns: str, name: str) -> None:
        h = self._handle_if(ns)
        msg = None if h is None else self._owned("delete_link", ns, self._get(h, name))
        if h is not None and msg is not None:
            self._write("delete_link", h, ns, f"link {name}", h.ipr.link, "del", index=msg["index"])

    def set_link(self, ns: str, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        h = self._handle(ns)
        msg = self._owned("set_link", ns, self._must_get(h, ns, name))
        self._fix("set_link", h, ns, msg, mtu=mtu, up=up)

    def close(self) -> None:
        """Release all sockets (and with them the namespaces they pin). Call it from the
        thread that created the kernel: from another one pyroute2 leaks its event loops."""
        if not self._closed:
            self._closed = True
            self._handles.close()
