"""`trace SRC DST`: the path a packet takes from one container to another, hop by hop,
proven with a live capture on the underlay decoded as VXLAN.

The hops are read from the kernel, not assumed: the container's interface and its
route, the veth end on the network's bridge, the VXLAN device (VNI, local VTEP) with
the FDB entry that sends the destination MAC to the remote VTEP and the neighbour
entry the ARP proxy answers from, the underlay devices, and the same on the far side.
Then a ping runs while tcpdump listens on the source host's underlay device.
"""

from __future__ import annotations

import re
import select
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from vxlab.model import Endpoint, Network


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


def _sh(ns: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True).stdout.strip()


def _fdb_line(ns: str, dev: str, mac: str) -> str:
    for line in _sh(ns, "bridge", "fdb", "show", "dev", dev).splitlines():
        if line.startswith(mac) and " dst " in line:
            return line
    return f"(no FDB entry for {mac}: the packet would be dropped)"


def build(src: Endpoint, dst: Endpoint, net: Network, *, container_ns: Any, host_ns: Any, network_ns: Any,
          underlay_ip: dict[str, str]) -> Trace:
    """The hops from `src` to `dst` on `net` (namespaces come from the lab's naming)."""
    t = Trace(src.name, dst.name, net.name, net.vni)
    sns, dns = container_ns(src.host, src.name), container_ns(dst.host, dst.name)
    snet, dnet = network_ns(src.host, net.name), network_ns(dst.host, net.name)
    sdev = _sh(sns, "ip", "-o", "-4", "addr", "show", "to", src.ip).split()[1] if src.ip else "?"
    route = _sh(sns, "ip", "route", "get", dst.ip)
    t.hops.append(Hop(sns, sdev, f"{src.ip} ({src.mac}); route: {route.splitlines()[0] if route else '?'}"))
    t.hops.append(Hop(snet, f"vxe-{src.id[:11]}", f"veth end on bridge vxb-{net.name}"))
    if src.host == dst.host:
        t.hops.append(Hop(snet, f"vxb-{net.name}", "bridged locally: same host, no VXLAN"))
    else:
        vx = f"vxv-{net.name}"
        neigh = _sh(snet, "ip", "neigh", "show", dst.ip, "dev", vx) or f"(no neighbour entry for {dst.ip})"
        t.hops.append(Hop(snet, f"vxb-{net.name}", f"bridge floods/forwards {dst.mac} to {vx}"))
        t.hops.append(Hop(snet, vx, f"VXLAN vni {net.vni}, local {underlay_ip[src.host]}; ARP proxy: {neigh}; "
                                    f"FDB: {_fdb_line(snet, vx, dst.mac)}"))
        t.hops.append(Hop(host_ns(src.host), "eth0",
                          f"UDP {underlay_ip[src.host]} -> {underlay_ip[dst.host]}:4789 (outer headers +50 bytes)"))
        t.hops.append(Hop("underlay switch", "vxsw", "bridged to the destination host's port"))
        t.hops.append(Hop(host_ns(dst.host), "eth0", "the VXLAN socket of the host namespace receives it"))
        t.hops.append(Hop(dnet, vx, f"decapsulated (vni {net.vni}), into bridge vxb-{net.name}"))
        t.hops.append(Hop(dnet, f"vxe-{dst.id[:11]}", "veth end towards the container"))
    ddev = _sh(dns, "ip", "-o", "-4", "addr", "show", "to", dst.ip).split()
    t.hops.append(Hop(dns, ddev[1] if len(ddev) > 1 else "?", f"{dst.ip} ({dst.mac})"))
    return t


def capture(t: Trace, *, src_ns: str, src_host_ns: str, dst_ip: str, count: int = 3) -> Trace:
    """Ping while tcpdump decodes the underlay; fills `capture` and `reached`."""
    local = not any(h.what.startswith("vxv-") for h in t.hops)
    cap = None if local else subprocess.Popen(
        ["ip", "netns", "exec", src_host_ns, "tcpdump", "-i", "eth0", "-nn", "-l", "-c", str(2 * count),
         "udp", "port", "4789"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if cap is not None:
            _wait_listening(cap)
        ping = subprocess.run(["ip", "netns", "exec", src_ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1",
                               dst_ip], capture_output=True, text=True)
        t.reached = ping.returncode == 0
        if cap is not None:
            try:
                out, _ = cap.communicate(timeout=3)
            except subprocess.TimeoutExpired:
                cap.kill()
                out, _ = cap.communicate()
            t.capture = [re.sub(r"^\S+ ", "", line) for line in out.splitlines() if line.strip()]
    finally:
        if cap is not None and cap.poll() is None:
            cap.kill()
    return t


def _wait_listening(cap: subprocess.Popen[str], *, timeout: float = 5.0) -> None:
    """Until tcpdump says it is capturing ("listening on eth0, …" on stderr): on a busy
    machine a fixed sleep misses the first packets."""
    assert cap.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([cap.stderr], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = cap.stderr.readline()
        if not line or "listening on" in line:
            break
