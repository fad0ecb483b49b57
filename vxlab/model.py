"""The desired-state objects (hosts, networks, endpoints, policies, services, faults) as plain dataclasses.

This is the language of the core: the controller stores these as JSON in etcd, the
agent reconciles against them. Only vxlab.client and the controller's servicer convert
them to and from the generated protobuf messages.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T", "Host", "Network", "Endpoint", "Policy", "Service", "Fault", "FaultStatus")


@dataclass(frozen=True)
class Host:
    name: str
    underlay_ip: str = ""
    underlay_mtu: int = 0
    alive: bool = False
    lease_ttl: int = 0
    registered_at: str = ""
    agent_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Network:
    name: str
    id: str = ""
    subnet: str = ""
    gateway: str = ""
    vni: int = 0
    mtu: int = 0
    internal: bool = False
    created: str = ""
    driver: str = "overlay"
    labels: dict[str, str] = field(default_factory=dict)
    host: str = ""  # driver "bridge": the one host it lives on


@dataclass(frozen=True)
class PortMapping:
    """A published port: `host_ip:host_port` on the endpoint's host to `container_port`
    (vxlab.ports: parsing, validation, Docker's shape)."""

    host_port: int
    container_port: int
    protocol: str = "tcp"   # "tcp" or "udp"
    host_ip: str = ""       # "": every address of the host but loopback; "127.0.0.1": loopback only


@dataclass(frozen=True)
class Endpoint:
    name: str
    network: str
    host: str
    ip: str = ""
    mac: str = ""
    id: str = ""
    created: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # more DNS names of the container on this network
    ports: tuple[PortMapping, ...] = ()  # published ports (on one non-internal network of a container)
    runtime: str = ""  # who owns the container's namespace: "" vxlab, or one of RUNTIMES (the agent hands the veth over)
    netns: str = ""    # a runtime endpoint's namespace, a path the host's agent opens ("" unknown; vxlab's: always "")


RUNTIMES = ("docker", "cni")  # runtimes that take an endpoint's veth end (Layout.handoff_link) themselves


@dataclass(frozen=True)
class Selector:
    """Which endpoints of a network a policy matches: at most one of the fields is set;
    none set matches anything."""

    container: str = ""
    label: str = ""        # "key=value"
    cidr: str = ""

    def describe(self) -> str:
        if self.container:
            return self.container
        if self.label:
            return f"label:{self.label}"
        return self.cidr or "*"


@dataclass(frozen=True)
class Policy:
    """An allow/deny rule between endpoints of one network (semantics: vxlab.policy)."""

    name: str
    network: str
    action: str = "allow"
    source: Selector = field(default_factory=Selector)
    destination: Selector = field(default_factory=Selector)
    protocol: str = "any"
    ports: tuple[str, ...] = ()
    priority: int = 0
    created: str = ""


@dataclass(frozen=True)
class Service:
    """A virtual IP on a network, load-balanced across replicas (vxlab.services)."""

    name: str
    network: str
    vip: str = ""
    replicas: tuple[str, ...] = ()          # container names on the network ...
    selector: dict[str, str] = field(default_factory=dict)   # ... or the endpoints carrying these labels
    ports: tuple[str, ...] = ()             # "80/tcp", "53/udp"
    affinity: str = "none"                  # "none" or "client-ip"
    id: str = ""
    created: str = ""


@dataclass(frozen=True)
class FaultStatus:
    """What one target host reported about a fault: pending (nothing yet), applied,
    failed (with the reason) or healed (its duration ran out on the host)."""

    host: str
    state: str = "pending"
    reason: str = ""
    at: str = ""           # RFC 3339, when the host reported it


@dataclass(frozen=True)
class Fault:
    """An injected failure in the desired state (kinds and parameters: vxlab.faultkinds).
    `params` are the registry's string form; `targets` the hosts that act on it; with a
    `duration` (seconds, 0: none) the fault lives on an etcd lease and ends at
    `expires_at`. `status`: per target, read from the hosts' reports (not stored in the
    record, not on the Watch stream)."""

    id: str
    kind: str = ""
    params: dict[str, str] = field(default_factory=dict)
    targets: tuple[str, ...] = ()
    duration: float = 0.0
    expires_at: str = ""
    created: str = ""
    status: tuple[FaultStatus, ...] = ()


Object = Host | Network | Endpoint | Policy | Service | Fault


@dataclass(frozen=True)
class Change:
    """One object put or deleted at a revision."""

    kind: Literal["put", "delete"]
    obj: Object


@dataclass(frozen=True)
class WatchBatch:
    """What Watch delivers: a whole snapshot, or the changes of one revision.

    A batch with `snapshot=False` and no changes is a progress heartbeat: nothing
    changed up to `revision`.
    """

    revision: int
    snapshot: bool = False
    compacted: bool = False
    hosts: tuple[Host, ...] = ()
    networks: tuple[Network, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    changes: tuple[Change, ...] = ()
    policies: tuple[Policy, ...] = ()
    services: tuple[Service, ...] = ()
    faults: tuple[Fault, ...] = ()


def to_json(obj: Object | FaultStatus, *, exclude: tuple[str, ...] = ()) -> bytes:
    """Serialise an object for the store (sorted keys: equal objects, equal bytes);
    `exclude` leaves out derived fields (a host's liveness lives in its lease)."""
    raw = {k: v for k, v in dataclasses.asdict(obj).items() if k not in exclude}
    return json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()


def from_json(cls: type[T], data: bytes | str) -> T:
    """Inverse of to_json; unknown keys (from a newer controller) are ignored."""
    raw: dict[str, Any] = json.loads(data)
    return _build(cls, raw)


def _build(cls: type[Any], raw: dict[str, Any]) -> Any:
    names, nested = _shape(cls)
    kept = {k: v for k, v in raw.items() if k in names}
    for key, make in nested.items():  # nested dataclasses, and tuples JSON made lists
        if key in kept:
            kept[key] = make(kept[key])
    return cls(**kept)


@functools.cache
def _shape(cls: type[Any]) -> tuple[frozenset[str], dict[str, Callable[[Any], Any]]]:
    """A dataclass's field names, and a converter for each field JSON cannot give back
    as is (a nested dataclass, a tuple, a tuple of dataclasses). Computed once per class: from_json is on the
    controller's snapshot path."""
    hints = typing.get_type_hints(cls)
    nested: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            nested[f.name] = lambda v, sub=hint: _build(sub, v) if isinstance(v, dict) else v
        elif typing.get_origin(hint) is tuple and dataclasses.is_dataclass(sub := typing.get_args(hint)[0]):
            nested[f.name] = lambda v, sub=sub: tuple(_build(sub, x) if isinstance(x, dict) else x for x in v)
        elif typing.get_origin(hint) is tuple:
            nested[f.name] = tuple
    return frozenset(f.name for f in dataclasses.fields(cls)), nested
