"""Pure allocation logic: subnets from a pool, VNIs, endpoint addresses, VIPs and MACs.

No I/O here. The controller reads what is in use from etcd, asks these functions for
a candidate, and commits it with a compare-and-create transaction; when another
writer won the race it reads again and asks again (see controller/txn.py).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Container, Iterable

from vxlab.errors import ResourceExhausted
from vxlab.validate import VNI_MAX

VNI_AUTO_START = 4096
DEFAULT_POOL = "10.0.0.0/8"
DEFAULT_PREFIX = 24

Net4 = ipaddress.IPv4Network


def overlapping(candidate: Net4, used: Iterable[tuple[str, Net4]]) -> tuple[str, Net4] | None:
    """The first (name, subnet) in `used` that overlaps `candidate`, if any."""
    for name, net in used:
        if candidate.overlaps(net):
            return name, net
    return None


def subnet_from_pool(pool: Net4, prefix: int, used: Iterable[Net4]) -> Net4:
    """The lowest /`prefix` block of `pool` that overlaps none of `used`.

    Skips ahead past each blocking subnet instead of testing every block, so a pool of
    65 536 blocks with thousands in use stays cheap.
    """
    blockers = sorted(n for n in used if n.overlaps(pool))
    size = 2 ** (32 - prefix)
    addr = int(pool.network_address)
    end = int(pool.broadcast_address)
    i = 0
    while addr + size - 1 <= end:
        cand = ipaddress.IPv4Network((addr, prefix))
        # Blockers ending before the candidate can be ignored from now on.
        while i < len(blockers) and int(blockers[i].broadcast_address) < addr:
            i += 1
        hit = next((b for b in blockers[i:] if b.overlaps(cand)), None)
        if hit is None:
            return cand
        # Jump to the first aligned block after the blocker.
        nxt = int(hit.broadcast_address) + 1
        addr = ((nxt + size - 1) // size) * size
    raise ResourceExhausted(f"subnet: pool {pool} has no free /{prefix} left")


def lowest_free_vni(used: Iterable[int], *, start: int = VNI_AUTO_START) -> int:
    taken = set(used)
    for vni in range(start, VNI_MAX + 1):
        if vni not in taken:
            return vni
    raise ResourceExhausted(f"vni: no free VNI from {start} to {VNI_MAX}")


def default_gateway(net: Net4) -> ipaddress.IPv4Address:
    """The first usable address, as Docker does."""
    return net.network_address + 1


def lowest_free_ip(
    net: Net4, *, gateway: ipaddress.IPv4Address, used: Container[int], start: int = 0,
) -> ipaddress.IPv4Address:
    """The lowest address of `net` from `start` on that is not network, broadcast, gateway
    or in `used` (addresses as integers; `start` lets a caller that knows everything
    below it is taken skip the scan over every address in use)."""
    gw = int(gateway)
    for addr in range(max(start, int(net.network_address) + 1), int(net.broadcast_address)):
        if addr != gw and addr not in used:
            return ipaddress.IPv4Address(addr)
    raise ResourceExhausted(f"ip: subnet {net} is full")


def highest_free_ip(net: Net4, *, gateway: ipaddress.IPv4Address, used: Container[int]) -> ipaddress.IPv4Address:
    """The highest address of `net` that is not broadcast, gateway or in `used`: where
    service VIPs go (containers take the lowest, so their addresses stay predictable)."""
    gw = int(gateway)
    for addr in range(int(net.broadcast_address) - 1, int(net.network_address), -1):
        if addr != gw and addr not in used:
            return ipaddress.IPv4Address(addr)
    raise ResourceExhausted(f"ip: subnet {net} is full")


def random_mac() -> str:
    """A random locally administered unicast MAC (02:xx:…), never derived from the IP.

    Deriving the MAC from the IP (as Docker does) lets a reused IP on another host
    revive a stale FDB entry (moby#52661); a random MAC, reserved in etcd, cannot.
    """
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0b11111100) | 0b00000010  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)


def new_id() -> str:
    """A 64-hex-digit object id, as Docker's network and endpoint ids."""
    return secrets.token_hex(32)
