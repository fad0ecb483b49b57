"""Published ports (the role of Docker's `-p` and its DOCKER chain): parsing, validation
and Docker's shape. Shared by the controller (validation), the topology file, the CLI
and `container inspect`; the agent renders them (agent/ports_nft.py).

A mapping is `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL]`, as Docker writes it:
`8080:80`, `5353:53/udp`, `127.0.0.1:9000:9000`. The host address is empty (or
`0.0.0.0`: the same) for every address of the host but loopback, a loopback address for
the host's loopback only, or one other address of the host. Docker's other forms (a
container port alone, which takes a random host port; port ranges) are refused, saying so.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from vxlab.errors import InvalidArgument
from vxlab.model import PortMapping

PROTOCOLS = ("tcp", "udp")
PORTS_MAX = 16  # a create's transaction claims each one (etcd allows 128 operations)
_SPEC = re.compile(r"^(?:(?P<ip>[0-9.]+):)?(?P<host>[0-9]+):(?P<container>[0-9]+)(?:/(?P<proto>[a-z]+))?$")


def port(value: int, *, field: str) -> int:
    """A TCP/UDP port number, 1..65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidArgument(field, f"{str(value)[:20]} is out of range 1..65535")
    return value


def protocol(value: str, *, field: str) -> str:
    if value not in PROTOCOLS:
        raise InvalidArgument(field, f"{value[:20]!r} is not one of {', '.join(PROTOCOLS)}")
    return value


def parse(text: str, *, field: str = "ports") -> PortMapping:
    """`[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL]` (`8080:80`, `127.0.0.1:9000:9000`,
    `5353:53/udp`), validated (`check`)."""
    m = _SPEC.match(text.strip())
    if m is None:
        shown = text[:40] if text[:40].isprintable() else repr(text[:40])
        hint = (" (a container port alone, for a random host port, is not supported: give HOST_PORT:CONTAINER_PORT)"
                if text.strip().split("/")[0].isdigit() else "")
        raise InvalidArgument(field, f"{shown!r} is not [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]{hint}")
    return check(PortMapping(host_port=int(m["host"]), container_port=int(m["container"]),
                             protocol=m["proto"] or "tcp", host_ip=m["ip"] or ""), field=field)


def check(p: PortMapping, *, field: str = "ports") -> PortMapping:
    """One mapping, normalised (`0.0.0.0` is written ""); InvalidArgument naming the part."""
    port(p.host_port, field=f"{field}.host_port")
    port(p.container_port, field=f"{field}.container_port")
    protocol(p.protocol or "tcp", field=f"{field}.protocol")
    host_ip = p.host_ip.strip()
    if host_ip:
        try:
            addr = ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InvalidArgument(f"{field}.host_ip", f"{host_ip[:40]!r} is not an IPv4 address") from None
        if addr.is_multicast or addr == ipaddress.IPv4Address("255.255.255.255"):
            raise InvalidArgument(f"{field}.host_ip", f"{addr} is not a host address")
        host_ip = "" if addr.is_unspecified else str(addr)
    return PortMapping(p.host_port, p.container_port, p.protocol or "tcp", host_ip)


def check_all(ports: Sequence[PortMapping], *, field: str = "ports") -> tuple[PortMapping, ...]:
    """Every mapping of an endpoint, normalised: at most PORTS_MAX, no host port twice
    for one protocol (a host port is taken once per host, whatever its address)."""
    if len(ports) > PORTS_MAX:
        raise InvalidArgument(field, f"{len(ports)} published ports; at most {PORTS_MAX}")
    out: list[PortMapping] = []
    for i, p in enumerate(ports):
        p = check(p, field=f"{field}[{i}]")
        other = next((j for j, q in enumerate(out) if (q.host_port, q.protocol) == (p.host_port, p.protocol)), None)
        if other is not None:
            raise InvalidArgument(f"{field}[{i}].host_port", f"{p.protocol} {p.host_port} is published twice"
                                                             f" (also {field}[{other}])")
        out.append(p)
    return tuple(out)


def loopback(p: PortMapping) -> bool:
    """The mapping binds the host's loopback only."""
    return bool(p.host_ip) and ipaddress.IPv4Address(p.host_ip).is_loopback


def describe(p: PortMapping) -> str:
    """Docker's form back: `8080:80/tcp`, `127.0.0.1:9000:9000/tcp`."""
    return f"{p.host_ip + ':' if p.host_ip else ''}{p.host_port}:{p.container_port}/{p.protocol}"


def docker(ports: Iterable[PortMapping]) -> dict[str, list[dict[str, str]]]:
    """`NetworkSettings.Ports` as `docker container inspect` shows it:
    `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`."""
    out: dict[str, list[dict[str, str]]] = {}
    for p in sorted(ports, key=lambda p: (p.container_port, p.protocol, p.host_port)):
        out.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)})
    return out
