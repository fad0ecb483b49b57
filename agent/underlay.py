"""Which device and address the agent uses as its underlay (VTEP), and its MTU.

Pure selection over facts the kernel driver gathers (`UnderlayFacts`), so the rules
are unit-tested without a kernel:

1. `ip` given: the device holding it (`dev`, when also given, must be that device);
2. `dev` given: its one global IPv4 address;
3. neither: the device of the route towards the controller(s) (`towards`: their IPv4
   addresses; a controller on this machine counts through the device holding its
   address, never through `lo`); all of them must agree on the device;
4. no controller address to route to (a `unix:` socket, or only loopback): the device
   of the default route; without one, the only device with a global IPv4 address.

The chosen device must hold exactly one global IPv4 address (never 169.254/16, which a
network's uplink uses). Every ambiguity is a `KernelError` saying what was found and
which flag settles it. `controller_ips()` resolves controller addresses for rule 3.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vxlab.agent.kernel import KernelError, Underlay

NO_ROUTE = ""  # UnderlayFacts.routes value: the kernel has no route to that address


@dataclass(frozen=True)
class UnderlayFacts:
    """What the kernel says about the agent's namespace."""

    mtus: Mapping[str, int]                       # device -> MTU (every link)
    loopbacks: frozenset[str] = frozenset({"lo"})
    addrs: Sequence[tuple[str, str]] = ()         # (device, IPv4), scope global, kernel order
    defaults: Sequence[str] = ()                  # devices of IPv4 default routes (main table)
    routes: Mapping[str, str] = field(default_factory=dict)  # target IP -> output device, NO_ROUTE


def controller_ips(addresses: Iterable[str]) -> list[str]:
    """The IPv4 addresses of the TCP controller addresses (`host:port`, `[v6]:port`,
    `ipv4:host:port`); `unix:` sockets and IPv6-only names give none. A name that does
    not resolve is an error (the agent could not reach that controller anyway)."""
    out: list[str] = []
    for address in addresses:
        if address.startswith(("unix:", "unix-abstract:")):
            continue
        host = address.removeprefix("ipv4:").removeprefix("dns:///").rpartition(":")[0] or address
        if host.startswith("["):
            continue  # IPv6 literal: the underlay is IPv4
        try:
            infos = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise KernelError(f"underlay: cannot resolve controller host {host!r} ({e.strerror}); "
                              "give --underlay-dev or --underlay-ip") from None
        for info in infos:
            ip = str(info[4][0])
            if ip not in out:
                out.append(ip)
    return out


def _describe(pairs: Iterable[tuple[str, str]]) -> str:
    found = sorted(f"{ip} on {dev}" for dev, ip in pairs)
    return ", ".join(found) if found else "none"


def _usable(facts: UnderlayFacts) -> list[tuple[str, str]]:
    return [(d, a) for d, a in facts.addrs if d not in facts.loopbacks and not a.startswith("169.254.")]


def _on(facts: UnderlayFacts, dev: str, *, why: str) -> Underlay:
    """`dev` with its only global IPv4 address; `why` says how `dev` was chosen."""
    mine = [a for d, a in _usable(facts) if d == dev]
    if not mine:
        raise KernelError(f"underlay: {dev} ({why}) has no global IPv4 address; found: {_describe(_usable(facts))}")
    if len(mine) > 1:
        raise KernelError(f"underlay: {dev} ({why}) has several IPv4 addresses ({', '.join(mine)}); "
                          "give --underlay-ip")
    return Underlay(ip=mine[0], dev=dev, mtu=facts.mtus[dev])


def _towards(facts: UnderlayFacts, targets: Sequence[str]) -> str:
    """The one device the routes towards `targets` leave by; "" when none is usable."""
    via: dict[str, str] = {}
    for target in targets:
        if ipaddress.ip_address(target).is_loopback:
            continue
        dev = facts.routes.get(target, NO_ROUTE)
        if dev == NO_ROUTE:
            raise KernelError(f"underlay: no route to the controller at {target}; "
                              "give --underlay-dev or --underlay-ip")
        if dev in facts.loopbacks:  # the controller is on this machine: the device holding its address
            dev = next((d for d, a in facts.addrs if a == target), dev)
            if dev in facts.loopbacks:
                continue
        via[target] = dev
    devices = sorted(set(via.values()))
    if len(devices) > 1:
        routes = ", ".join(f"{t} via {d}" for t, d in via.items())
        raise KernelError(f"underlay: ambiguous, the controllers are reached through different devices "
                          f"({routes}); give --underlay-dev")
    return devices[0] if devices else ""


def select_underlay(facts: UnderlayFacts, *, ip: str = "", dev: str = "", towards: Sequence[str] = ()) -> Underlay:
    """The underlay by the rules of the module docstring."""
    if dev and dev not in facts.mtus:
        raise KernelError(f"underlay: no device {dev!r} in the agent's namespace (devices: {', '.join(sorted(facts.mtus))})")
    if ip:
        having = sorted({d for d, a in facts.addrs if a == ip})
        if not having:
            raise KernelError(f"underlay: no device has address {ip}; IPv4 addresses: {_describe(_usable(facts))}")
        if dev and dev not in having:
            raise KernelError(f"underlay: {ip} is on {', '.join(having)}, not on {dev}")
        if len(having) > 1 and not dev:
            raise KernelError(f"underlay: {ip} is on several devices: {', '.join(having)}")
        return Underlay(ip=ip, dev=dev or having[0], mtu=facts.mtus[dev or having[0]])
    if dev:
        return _on(facts, dev, why="given")
    if found := _towards(facts, towards):
        return _on(facts, found, why="the route towards the controller")
    defaults = sorted(set(facts.defaults))
    if len(defaults) > 1 or any(d not in facts.mtus for d in defaults):
        raise KernelError(f"underlay: ambiguous, default routes via {', '.join(defaults)}; "
                          "give --underlay-dev or --underlay-ip")
    if defaults:
        return _on(facts, defaults[0], why="the default route")
    cands = _usable(facts)
    if len({d for d, _a in cands}) != 1:
        raise KernelError("underlay: no route towards a controller, no default route and "
                          f"{'no' if not cands else 'more than one'} device with a global IPv4 address "
                          f"(found: {_describe(cands)}); give --underlay-dev or --underlay-ip")
    return _on(facts, cands[0][0], why="the only one with an address")
