"""The runtime's side of a runtime endpoint's veth (issue 18), for the plugins (vxlab-cni,
the Docker plugin), each in its own process on the endpoint's host.

The host's agent makes the pair (Kernel.add_handoff): the bridge end in the network's
namespace, the other end in the host's namespace (the agent's) as
`Layout.handoff_link(endpoint)`, with the endpoint's MAC and the network's MTU. A plugin
waits until that is done (`wait_programmed`), then the runtime takes the end: Docker
moves and renames it itself; vxlab-cni calls `take` (into the container's namespace,
renamed, addressed, a default route via the gateway). `interface` reads it back there
(CNI CHECK); `release` removes it (CNI DEL; the agent removes the bridge end, and with
it the pair, once the endpoint is deleted anyway). `view` reads a runtime's whole
namespace, read only, as a dump does (the agent's ops, agent/runtime_ns.py).

pyroute2 in short-lived threads that entered the namespace (vxlab.netns.run_in), so any
caller (a thread of an asyncio program too) may use these; `host_ns` "" is the caller's
own namespace, else a name under /run/netns or a path. Namespaces of containers are
paths or names alike (CNI_NETNS is a path).
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vxlab import netns
from vxlab.agent.kernel import KernelError, Namespace
from vxlab.agent.names import Naming
from vxlab.agent.netlink_dump import read_namespace
from vxlab.agent.netlink_ns import NsHandle, rtnl_fds
from vxlab.layout import Layout
from vxlab.model import Endpoint


@dataclass(frozen=True)
class Iface:
    """An interface as a namespace holds it: name, MAC, MTU, up, ifalias, IPv4 "ip/len"s."""

    name: str
    mac: str
    mtu: int
    up: bool
    alias: str
    addrs: tuple[str, ...] = ()


def _read(ipr: IPRoute, name: str) -> Iface | None:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return None
    msg = ipr.link("get", index=found[0])[0]
    addrs = tuple(sorted(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                         for a in ipr.get_addr(family=2, index=found[0])))
    return Iface(name, (msg.get("IFLA_ADDRESS") or "").lower(), msg.get("IFLA_MTU") or 0, bool(msg["flags"] & 1),
                 msg.get("IFLA_IFALIAS") or "", addrs)


def _in(ns: str, fn: Any) -> Any:
    def go() -> Any:
        with IPRoute() as ipr:
            return fn(ipr)
    try:
        return netns.run_in(ns, go)
    except (OSError, NetlinkError) as exc:
        raise KernelError(f"{ns or 'the host namespace'}: {exc}") from exc


def interface(ns: str, name: str) -> Iface | None:
    """Interface `name` of namespace `ns` ("" = the caller's), None when there is none
    (or the namespace is gone)."""
    if ns and not os.path.exists(netns.path(ns)):
        return None
    return _in(ns, lambda ipr: _read(ipr, name))


def view(ns: str) -> Namespace:
    """Namespace `ns` (a path) as a dump reads it: links, addresses, routes; nothing written."""
    try:
        handle = NsHandle.from_fds(ns, None, netns.run_in(ns, rtnl_fds))
    except OSError as exc:
        raise KernelError(f"{ns}: {exc.strerror or exc}") from exc
    try:
        return read_namespace(ns, handle)
    except (OSError, NetlinkError) as exc:
        raise KernelError(f"{ns}: {exc}") from exc
    finally:
        handle.close()


def state(layout: Layout, ep: Endpoint, *, host_ns: str = "") -> str:
    """How far the host's agent got with `ep`: "handoff" (its handoff end waits in the
    host's namespace with the endpoint's MAC), "taken" (no handoff end here nor in the
    network's namespace, the bridge end is on the network's bridge: a runtime took it
    already), "" (not programmed yet, or the agent is between making the pair and moving
    its end out)."""
    end = interface(host_ns, layout.handoff_link(ep))
    if end is not None and end.mac == ep.mac.lower() and end.alias == Naming.endpoint_alias(ep.id):
        return "handoff"
    bridge_ns = layout.network_ns(ep.network)
    # while the agent makes the pair, the handoff end sits in the network's namespace
    # before it is moved out: not taken, not programmed yet
    if (end is None and interface(bridge_ns, Naming.veth(ep.id)) is not None
            and interface(bridge_ns, layout.handoff_link(ep)) is None):
        return "taken"
    return ""


def wait_programmed(layout: Layout, ep: Endpoint, *, timeout: float, host_ns: str = "",
                    interval: float = 0.05) -> str:
    """Poll `state` until the agent has programmed `ep` (a bounded poll: the agent's pass
    is in another process); KernelError naming the host's agent after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = state(layout, ep, host_ns=host_ns)
        if got:
            return got
        if time.monotonic() >= deadline:
            raise KernelError(f"endpoint {ep.name!r} on network {ep.network!r}: the agent of host {ep.host!r} has not"
                              f" made its veth ({layout.handoff_link(ep)}) within {timeout:g} s; is that agent"
                              " running and connected to the controller?")
        time.sleep(interval)


def take(handoff: str, *, into: str, ifname: str, cidr: str, gateway: str = "", mtu: int = 0,
         host_ns: str = "") -> Iface:
    """Move the handoff end `handoff` from the host's namespace into `into`, name it
    `ifname`, give it `cidr` ("ip/len") and the MTU, bring it (and lo) up, and route
    the default via `gateway` (when given); the interface as it then is."""
    iface = ipaddress.IPv4Interface(cidr)

    def move(ipr: IPRoute) -> None:
        found = ipr.link_lookup(ifname=handoff)
        if not found:
            raise KernelError(f"no link {handoff} in the host namespace (not programmed, or taken already)")
        fd = os.open(netns.path(into), os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("set", index=found[0], net_ns_fd=fd)
        finally:
            os.close(fd)

    def configure(ipr: IPRoute) -> Iface:
        if ipr.link_lookup(ifname=ifname):
            raise KernelError(f"{into}: an interface named {ifname} exists already")
        index = ipr.link_lookup(ifname=handoff)[0]
        ipr.link("set", index=index, ifname=ifname, **({"mtu": mtu} if mtu else {}))
        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        if gateway:
            ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)
        got = _read(ipr, ifname)
        assert got is not None
        return got

    _in(host_ns, move)
    return _in(into, configure)  # type: ignore[no-any-return]


def release(ns: str, name: str, *, alias: str) -> bool:
    """Delete interface `name` of `ns` when it carries `alias` (it is that endpoint's);
    False when there is none (or the namespace is gone)."""
    found = interface(ns, name)
    if found is None or found.alias != alias:
        return False

    def delete(ipr: IPRoute) -> None:
        ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
    _in(ns, delete)
    return True
