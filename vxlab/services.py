"""Services: what one means, written once and shared by the controller (validation), the
agents (their load-balancing tables, agent/services_nft.py; their DNS, agent/dnsnames.py)
and the lab (`check` proves every VIP from every container of its network).

A service is a virtual IP (VIP) on one network and a set of replicas, endpoints of that
network named in `replicas` or carrying every label of `selector` (resolved whenever
the state changes: a container started with the labels joins). Every client container
on the network balances connections to `VIP:port` across the replicas whose hosts are
alive, in its own namespace (kube-proxy's nftables mode); `affinity: client-ip` sends
each client to one replica, the same while the replica set stays. Ports are `80/tcp`,
`53/udp` (`80` is tcp), the replica's port the same; ICMP echo to the VIP is balanced
too, so `check` can ping it. The name resolves to the VIP: `<name>`, `<name>.<network>`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from vxlab import ports as portspec
from vxlab import validate
from vxlab.errors import InvalidArgument
from vxlab.model import Endpoint, Service

AFFINITIES = ("none", "client-ip")
PORTS_MAX = 16
REPLICAS_MAX = 64  # a create's transaction checks each one exists (etcd allows 128 operations)


def parse_port(text: str, *, field: str) -> tuple[int, str]:
    """"80/tcp", "53/udp", "80" (tcp) as (port, protocol)."""
    number, _, proto = str(text).strip().partition("/")
    if not number.isdigit():
        shown = str(text)[:20] if str(text)[:20].isprintable() else repr(str(text)[:20])
        raise InvalidArgument(field, f"{shown!r} is not PORT[/tcp|udp]")
    return portspec.port(int(number), field=field), portspec.protocol(proto or "tcp", field=field)


def check(s: Service) -> Service:
    """Validate a create request; returns it normalised (ports as `N/proto`, affinity
    filled in). Whether the network, the VIP and the replicas exist is the controller's."""
    validate.name(s.name, field="service.name", max_len=validate.CONTAINER_NAME_MAX)
    validate.name(s.network, field="service.network", max_len=validate.NETWORK_NAME_MAX)
    if s.vip:
        validate.ipv4(s.vip, field="service.vip")
    if bool(s.replicas) == bool(s.selector):
        raise InvalidArgument("service.replicas", "give replicas or a selector" if not s.replicas
                              else "give replicas or a selector, not both")
    if len(s.replicas) > REPLICAS_MAX:
        raise InvalidArgument("service.replicas", f"{len(s.replicas)} replicas; at most {REPLICAS_MAX}")
    for i, r in enumerate(s.replicas):
        validate.name(r, field=f"service.replicas[{i}]", max_len=validate.CONTAINER_NAME_MAX)
        if r in s.replicas[:i]:
            raise InvalidArgument(f"service.replicas[{i}]", f"{r!r} is given twice")
    validate.labels(s.selector, field="service.selector")
    if not s.ports:
        raise InvalidArgument("service.ports", "required (e.g. 80/tcp)")
    if len(s.ports) > PORTS_MAX:
        raise InvalidArgument("service.ports", f"{len(s.ports)} ports; at most {PORTS_MAX}")
    normal: list[str] = []
    for i, text in enumerate(s.ports):
        number, proto = parse_port(text, field=f"service.ports[{i}]")
        if f"{number}/{proto}" in normal:
            raise InvalidArgument(f"service.ports[{i}]", f"{number}/{proto} is given twice")
        normal.append(f"{number}/{proto}")
    affinity = s.affinity or "none"
    if affinity not in AFFINITIES:
        raise InvalidArgument("service.affinity", f"{affinity[:20]!r} is not one of {', '.join(AFFINITIES)}")
    return dataclasses.replace(s, vip=str(validate.ipv4(s.vip, field="service.vip")) if s.vip else "",
                               ports=tuple(normal), affinity=affinity)


def selects(s: Service, ep: Endpoint) -> bool:
    """Is `ep` a replica of `s` (by name, or carrying every label of its selector)?"""
    if ep.network != s.network:
        return False
    if s.replicas:
        return ep.name in s.replicas
    return all(ep.labels.get(k) == v for k, v in s.selector.items())


def replicas(s: Service, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """The endpoints that are replicas of `s`: in the order of `replicas`, or by name."""
    found = [e for e in endpoints if selects(s, e)]
    order = {name: i for i, name in enumerate(s.replicas)}
    return sorted(found, key=lambda e: (order.get(e.name, 0), e.name))


def port_list(s: Service) -> list[tuple[int, str]]:
    """The service's ports as (port, protocol)."""
    return [parse_port(p, field="service.ports") for p in s.ports]


def describe(s: Service) -> str:
    who = ",".join(s.replicas) if s.replicas else "selector " + ",".join(f"{k}={v}" for k, v in sorted(s.selector.items()))
    return f"{s.vip or '(vip allocated)'} {' '.join(s.ports)} -> {who}" + (
        f" (affinity {s.affinity})" if s.affinity == "client-ip" else "")
