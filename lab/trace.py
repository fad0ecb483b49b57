"""`trace SRC DST`: the path a packet takes from one container to another, hop by hop,
proven with a live capture on the underlay decoded as VXLAN.

The hops are read from the kernel, not assumed: the agents of both hosts send their
kernel views (ops channel: the network's namespace and the containers' namespaces,
as their own dumps hold them; a runtime's container, Docker's or CNI's, is the
namespace its endpoint records, named by that path): the container's interface and its route, the veth end
on the network's bridge, the VXLAN device (VNI, local VTEP) with the FDB entry that
sends the destination MAC to the remote VTEP and the neighbour entry the ARP proxy
answers from, the underlay devices, and the same on the far side. Then the source
container pings the destination (a ping stream op) while the source host's agent
captures its underlay device (a capture op, started first: its Ready says tcpdump
listens). Nothing runs on the caller's machine, so `trace` works against real hosts
as in a lab; `Places` names what no agent sees (the lab's host namespaces, its switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from vxlab import hostops, ops
from vxlab.client import Client
from vxlab.errors import InvalidArgument
from vxlab.model import Endpoint, Network
from vxlab.ops import KernelState, NamespaceView

MARK = "vxlab:"


@dataclass(frozen=True)
class Hop:
    where: str      # namespace
    what: str       # device or step
    detail: str


@dataclass
class Trace:
    src: str
    dst: str
    network: str
    vni: int
    hops: list[Hop] = field(default_factory=list)
    capture: list[str] = field(default_factory=list)
    reached: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Places:
    """What the hops call the places no agent's view names: a host's own namespace, and
    the underlay between hosts (a lab passes its namespace names and its switch)."""

    host: Callable[[str], str] = lambda h: f"host {h}"
    underlay: tuple[str, str, str] = ("underlay", "(network)", "carried to the destination host's underlay address")


def _ns(view: KernelState, host: str, kind: str, name: str) -> NamespaceView | None:
    """The namespace of `view` whose marker says it is host's `kind` (net, ctr) `name`."""
    return next((n for n in view.namespaces if n.marker == f"{MARK}{host}:{kind}:{name}"), None)


def _container(view: KernelState, ep: Endpoint) -> NamespaceView | None:
    """`ep`'s container namespace in `view`: vxlab's by its marker, a runtime's (Docker's,
    CNI's: not ours, no marker) by the path its endpoint records."""
    if ep.runtime:
        return next((n for n in view.namespaces if ep.netns and n.name == ep.netns and not n.marker), None)
    return _ns(view, ep.host, "ctr", ep.name)


def _where_container(ns: NamespaceView | None, ep: Endpoint) -> str:
    if ns is None or not ep.runtime:
        return _where(ns, ep.host, "container")
    return f"{ns.name} ({ep.runtime}'s)"


def _dev_of(ns: NamespaceView | None, ip: str) -> str:
    return next((dev for dev, cidr in ns.addrs if cidr.split("/")[0] == ip), "?") if ns else "?"


def _route(ns: NamespaceView | None, dst: str) -> str:
    """What the container's routes say about `dst` (as `ip route get` would)."""
    if ns is None:
        return "?"
    ip = ipaddress.IPv4Address(dst)
    for dev, cidr in ns.addrs:
        if ip in ipaddress.IPv4Interface(cidr).network:
            return f"{dst} dev {dev} src {cidr.split('/')[0]}"
    for rdst, gw, dev in ns.routes:
        if rdst == "default" or ip in ipaddress.IPv4Network(rdst, strict=False):
            src = next((c.split("/")[0] for d, c in ns.addrs if d == dev), "")
            return f"{dst} via {gw} dev {dev}" + (f" src {src}" if src else "")
    return f"{dst}: no route"


def _fdb_line(ns: NamespaceView | None, dev: str, mac: str) -> str:
    for d, m, dst in ns.fdb if ns else ():
        if d == dev and m == mac:
            return f"{mac} dst {dst} self permanent"
    return f"(no FDB entry for {mac}: the packet would be dropped)"


def _neigh_line(ns: NamespaceView | None, dev: str, ip: str) -> str:
    for d, i, mac in ns.neigh if ns else ():
        if d == dev and i == ip:
            return f"{ip} lladdr {mac} PERMANENT"
    return f"(no neighbour entry for {ip})"


def _veth(ns: NamespaceView | None, ep: Endpoint) -> str:
    """The bridge-side end of `ep`'s veth, by its marker."""
    link = next((k for k in ns.links if k.alias == f"{MARK}ep:{ep.id}"), None) if ns else None
    return link.name if link else f"(no veth for {ep.name})"


def _where(ns: NamespaceView | None, host: str, what: str) -> str:
    return ns.name if ns else f"(no {what} namespace on {host})"


def build(src: Endpoint, dst: Endpoint, net: Network, *, src_view: KernelState, dst_view: KernelState,
          places: Places = Places()) -> Trace:
    """The hops from `src` to `dst` on `net`, from the two hosts' kernel views."""
    t = Trace(src.name, dst.name, net.name, net.vni)
    sns, dns = _container(src_view, src), _container(dst_view, dst)
    snet, dnet = _ns(src_view, src.host, "net", net.name), _ns(dst_view, dst.host, "net", net.name)
    bridge, vx = f"vxb-{net.name}", f"vxv-{net.name}"
    t.hops.append(Hop(_where_container(sns, src), _dev_of(sns, src.ip),
                      f"{src.ip} ({src.mac}); route: {_route(sns, dst.ip)}"))
    t.hops.append(Hop(_where(snet, src.host, "network"), _veth(snet, src), f"veth end on bridge {bridge}"))
    if src.host == dst.host:
        t.hops.append(Hop(_where(snet, src.host, "network"), bridge, "bridged locally: same host, no VXLAN"))
    else:
        link = snet.link(vx) if snet else None
        local = link.local if link else src_view.underlay_ip
        port = link.port if link and link.port else 4789
        t.hops.append(Hop(_where(snet, src.host, "network"), bridge, f"bridge floods/forwards {dst.mac} to {vx}"))
        t.hops.append(Hop(_where(snet, src.host, "network"), vx,
                          f"VXLAN vni {link.vni if link else net.vni}, local {local}; ARP proxy: "
                          f"{_neigh_line(snet, vx, dst.ip)}; FDB: {_fdb_line(snet, vx, dst.mac)}"))
        t.hops.append(Hop(places.host(src.host), src_view.underlay_dev or "?",
                          f"UDP {src_view.underlay_ip} -> {dst_view.underlay_ip}:{port} (outer headers +50 bytes)"))
        t.hops.append(Hop(*places.underlay))
        t.hops.append(Hop(places.host(dst.host), dst_view.underlay_dev or "?",
                          "the VXLAN socket of the host namespace receives it"))
        t.hops.append(Hop(_where(dnet, dst.host, "network"), vx, f"decapsulated (vni {net.vni}), into bridge {bridge}"))
        t.hops.append(Hop(_where(dnet, dst.host, "network"), _veth(dnet, dst), "veth end towards the container"))
    t.hops.append(Hop(_where_container(dns, dst), _dev_of(dns, dst.ip), f"{dst.ip} ({dst.mac})"))
    return t


def _pick(src: str, dst: str, network: str, eps: list[Endpoint], nets: list[Network]) -> tuple[Endpoint, Endpoint, Network]:
    mine = {e.network: e for e in eps if e.name == src}
    theirs = {e.network: e for e in eps if e.name == dst}
    if not mine:
        raise InvalidArgument("src", f"no container named {src!r}")
    if not theirs:
        raise InvalidArgument("dst", f"no container named {dst!r}")
    shared = [n for n in sorted(theirs) if n in mine and (not network or n == network)]
    if not shared:
        raise InvalidArgument("network", f"{src!r} and {dst!r} share no network"
                              + (f" named {network!r}" if network else "") + "; they cannot reach each other")
    net = next(n for n in nets if n.name == shared[0])
    return mine[net.name], theirs[net.name], net


async def trace(client: Client, src: str, dst: str, *, network: str = "", count: int = 3,
                places: Places = Places()) -> Trace:
    """The path from container `src` to `dst` (on their first shared network, or
    `network`), with a live underlay capture decoded as VXLAN."""
    eps, nets = await asyncio.gather(client.list_endpoints(), client.list_networks())
    a, b, net = _pick(src, dst, network, eps, nets)
    if a.host == b.host:
        view = await hostops.kernel_view(client, a.host, network=net.name, containers=[a.name, b.name])
        views = (view, view)
    else:
        views = await asyncio.gather(hostops.kernel_view(client, a.host, network=net.name, containers=[a.name]),
                                     hostops.kernel_view(client, b.host, network=net.name, containers=[b.name]))
    t = build(a, b, net, src_view=views[0], dst_view=views[1], places=places)
    return await capture(client, t, src=a, dst_ip=b.ip, count=count)


async def capture(client: Client, t: Trace, *, src: Endpoint, dst_ip: str, count: int = 3) -> Trace:
    """Ping from `src` while its host's agent captures VXLAN on its underlay device;
    fills `capture` (timestamps cut) and `reached` (any echo answered)."""
    local = not any(h.what.startswith("vxv-") for h in t.hops)
    cap = None if local else hostops.stream(client, src.host, ops.Capture(
        filter=("udp", "port", "4789"), count=2 * count, seconds=count * 0.2 + 5.0))
    try:
        if cap is not None:
            await hostops.until_ready(cap)
        samples = [s async for s in hostops.stream(client, src.host, ops.PingStream(
            src.name, dst_ip, interval=0.2, count=count, timeout=1.0))]
        t.reached = any(isinstance(s, ops.PingSample) and s.rtt_ms is not None for s in samples)
        if cap is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    async for event in cap:
                        if isinstance(event, ops.Line):
                            t.capture.append(re.sub(r"^\S+ ", "", event.text))
    finally:
        if cap is not None:
            await cap.aclose()  # type: ignore[attr-defined]
    return t


def _wait_listening(cap: subprocess.Popen[str], *, timeout: float = 5.0) -> None:
    """Until a local tcpdump says it is capturing ("listening on eth0, …" on stderr): on
    a busy machine a fixed sleep misses the first packets (tests' own captures)."""
    assert cap.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([cap.stderr], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = cap.stderr.readline()
        if not line or "listening on" in line:
            break
