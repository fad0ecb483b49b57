"""The published ports and services of a topology file (sections of lab/topology.py):
validated with exactly the rules of the controller (vxlab.ports, vxlab.services), each
error at the YAML path of what it names, and what the controller would refuse halfway
through `up` refused here: a host port twice on one host, a port on a container without
a non-internal network, a replica that is not on the service's network, a VIP outside
the subnet or on a container's address, a service named like a container or an alias.

    containers:
      - {name: web, host: h1, networks: [app], ports: ["8080:80", "127.0.0.1:9000:9000"]}
    services:
      - {name: api, network: app, replicas: [api1, api2], ports: [80/tcp], affinity: client-ip}
      - {name: api-all, network: app, selector: {tier: api}, ports: [80], vip: 10.50.0.100}

A container's ports go on its first non-internal network (its default route's).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TYPE_CHECKING, Any

from vxlab import ports as portspec
from vxlab import services as semantics
from vxlab.errors import InvalidArgument
from vxlab.lab.yamlfile import TopologyError, _join, _kind, _mapping, _opt, _str
from vxlab.model import PortMapping, Service

if TYPE_CHECKING:
    from vxlab.lab.topology import ContainerSpec, NetworkSpec

SERVICE_KEYS = ("name", "network", "vip", "replicas", "selector", "ports", "affinity")


def container_ports(c: dict[str, Any], path: str) -> tuple[PortMapping, ...]:
    """A container's `ports:` list of `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`."""
    raw = _opt(c, "ports", path, list, "a list of HOST_PORT:CONTAINER_PORT") or []
    out = []
    for k, text in enumerate(raw):
        if not isinstance(text, str):
            raise TopologyError(f"{path}.ports[{k}]", f"expected a string like '8080:80', got {_kind(text)}")
        out.append(portspec.parse(text, field=f"{path}.ports[{k}]"))
    return portspec.check_all(out, field=f"{path}.ports")


def publishing_network(c: ContainerSpec, networks: dict[str, NetworkSpec]) -> str:
    """The network a container's ports go on: its first non-internal one ("": none)."""
    return next((a.network for a in c.networks if not networks[a.network].internal), "")


def check_ports(containers: list[ContainerSpec], networks: dict[str, NetworkSpec]) -> None:
    """Every container with ports has a network to publish on; no host port twice on a host."""
    taken: dict[tuple[str, str, int], str] = {}
    for i, c in enumerate(containers):
        if c.ports and not publishing_network(c, networks):
            raise TopologyError(f"containers[{i}].ports", "the container has no non-internal network to publish on")
        for k, p in enumerate(c.ports):
            other = taken.setdefault((c.host, p.protocol, p.host_port), c.name)
            if other != c.name:
                raise TopologyError(f"containers[{i}].ports[{k}]", f"{p.protocol} {p.host_port} on host {c.host!r}"
                                                                   f" is already published by container {other!r}")


def services(raw: list[Any], networks: dict[str, NetworkSpec], containers: list[ContainerSpec]) -> tuple[Service, ...]:
    """The `services:` section."""
    out: list[Service] = []
    for i, item in enumerate(raw):
        path = f"services[{i}]"
        m = _mapping(item, path, SERVICE_KEYS)
        net_name = _str(m, "network", path, required=True) or ""
        net = networks.get(net_name)
        if net is None:
            raise TopologyError(f"{path}.network", f"unknown network {net_name!r}")
        replicas = _opt(m, "replicas", path, list, "a list of container names") or []
        selector = _opt(m, "selector", path, dict, "a mapping of labels") or {}
        ports = _opt(m, "ports", path, list, "a list like [80/tcp]") or []
        for key, values in (("replicas", replicas), ("ports", ports)):
            for k, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, (str, int)) or (key == "replicas" and isinstance(v, int)):
                    raise TopologyError(f"{path}.{key}[{k}]", f"expected a {'name' if key == 'replicas' else 'port'},"
                                                              f" got {_kind(v)}")
        try:
            s = semantics.check(Service(name=_str(m, "name", path, required=True) or "", network=net_name,
                                        vip=_str(m, "vip", path) or "", replicas=tuple(replicas),
                                        selector={str(k): str(v) for k, v in selector.items()},
                                        ports=tuple(str(p) for p in ports), affinity=_str(m, "affinity", path) or ""))
        except InvalidArgument as e:
            raise TopologyError(_join(path, e.field.removeprefix("service.")), e.reason) from None
        _against_the_file(s, path, net, containers)
        if any((o.network, o.name) == (s.network, s.name) for o in out):
            raise TopologyError(f"{path}.name", f"duplicate service {s.name!r} on network {net_name!r}")
        vip_of = {o.vip: o.name for o in out if o.network == s.network and o.vip}
        if s.vip and s.vip in vip_of:
            raise TopologyError(f"{path}.vip", f"{s.vip} is already the VIP of service {vip_of[s.vip]!r}")
        out.append(s)
    return tuple(out)


def _against_the_file(s: Service, path: str, net: NetworkSpec, containers: list[ContainerSpec]) -> None:
    """What the controller would refuse: replicas not on the network, a VIP outside its
    subnet or a container's address there, a name a container or an alias has."""
    on = {c.name: a for c in containers for a in c.networks if a.network == s.network}
    for k, r in enumerate(s.replicas):
        if r not in on:
            raise TopologyError(f"{path}.replicas[{k}]", f"no container {r!r} on network {s.network!r}")
    names = {n: c for c, a in on.items() for n in (c, *a.aliases)}
    if s.name in names:
        what = "the name of" if names[s.name] == s.name else "an alias of"
        raise TopologyError(f"{path}.name", f"{s.name!r} is already {what} container {names[s.name]!r}"
                                            f" on network {s.network!r}")
    if s.vip and net.subnet:
        try:
            vip = ipaddress.IPv4Address(s.vip)
            subnet = ipaddress.IPv4Network(net.subnet)
            if vip not in subnet or vip in (subnet.network_address, subnet.broadcast_address):
                raise ValueError(f"{vip} is outside subnet {subnet}" if vip not in subnet else
                                 f"{vip} is not a host address of {subnet}")
            gateway = ipaddress.IPv4Address(net.gateway) if net.gateway else subnet.network_address + 1
            if vip == gateway:
                raise ValueError(f"{vip} is the gateway of network {s.network!r}")
        except ValueError as e:
            raise TopologyError(f"{path}.vip", str(e)) from None
        holder = next((c for c, a in on.items() if a.ip == s.vip), None)
        if holder is not None:
            raise TopologyError(f"{path}.vip", f"{s.vip} is the address of container {holder!r}")


def to_plain(s: Service) -> dict[str, Any]:
    """A service as the topology file writes it (for the stored, canonical form)."""
    d = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("id", "created") and v not in ("", (), {}, [])}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
