"""Conversions between the core dataclasses (vxlab.model) and the v1 protobuf messages.

Shared by the two edges that speak gRPC: the controller's servicer and vxlab.client.
Nothing else imports the generated code.
"""

from __future__ import annotations

from vxlab.model import Change, Endpoint, Host, Network, Policy, Selector, WatchBatch
from vxlab.v1 import vxlab_pb2 as pb


def host_to_pb(h: Host) -> pb.Host:
    return pb.Host(
        name=h.name, underlay_ip=h.underlay_ip, underlay_mtu=h.underlay_mtu, alive=h.alive,
        lease_ttl=h.lease_ttl, registered_at=h.registered_at, agent_version=h.agent_version,
        labels=dict(h.labels),
    )


def host_from_pb(m: pb.Host) -> Host:
    return Host(
        name=m.name, underlay_ip=m.underlay_ip, underlay_mtu=m.underlay_mtu, alive=m.alive,
        lease_ttl=m.lease_ttl, registered_at=m.registered_at, agent_version=m.agent_version,
        labels=dict(m.labels),
    )


def network_to_pb(n: Network) -> pb.Network:
    return pb.Network(
        name=n.name, id=n.id, subnet=n.subnet, gateway=n.gateway, vni=n.vni, mtu=n.mtu,
        internal=n.internal, created=n.created, driver=n.driver, labels=dict(n.labels), host=n.host,
    )


def network_from_pb(m: pb.Network) -> Network:
    return Network(
        name=m.name, id=m.id, subnet=m.subnet, gateway=m.gateway, vni=m.vni, mtu=m.mtu,
        internal=m.internal, created=m.created, driver=m.driver, labels=dict(m.labels), host=m.host,
    )


def endpoint_to_pb(e: Endpoint) -> pb.Endpoint:
    return pb.Endpoint(
        name=e.name, network=e.network, host=e.host, ip=e.ip, mac=e.mac, id=e.id,
        created=e.created, labels=dict(e.labels), aliases=list(e.aliases),
    )


def endpoint_from_pb(m: pb.Endpoint) -> Endpoint:
    return Endpoint(
        name=m.name, network=m.network, host=m.host, ip=m.ip, mac=m.mac, id=m.id,
        created=m.created, labels=dict(m.labels), aliases=tuple(m.aliases),
    )


def _selector_to_pb(s: Selector) -> pb.Selector:
    return pb.Selector(container=s.container, label=s.label, cidr=s.cidr)


def _selector_from_pb(m: pb.Selector) -> Selector:
    return Selector(container=m.container, label=m.label, cidr=m.cidr)


def policy_to_pb(p: Policy) -> pb.Policy:
    return pb.Policy(
        name=p.name, network=p.network, action=p.action, source=_selector_to_pb(p.source),
        destination=_selector_to_pb(p.destination), protocol=p.protocol, ports=list(p.ports),
        priority=p.priority, created=p.created,
    )


def policy_from_pb(m: pb.Policy) -> Policy:
    return Policy(
        name=m.name, network=m.network, action=m.action, source=_selector_from_pb(m.source),
        destination=_selector_from_pb(m.destination), protocol=m.protocol, ports=tuple(m.ports),
        priority=m.priority, created=m.created,
    )


def _change_to_pb(c: Change) -> pb.Change:
    kind = pb.Change.PUT if c.kind == "put" else pb.Change.DELETE
    if isinstance(c.obj, Host):
        return pb.Change(kind=kind, host=host_to_pb(c.obj))
    if isinstance(c.obj, Network):
        return pb.Change(kind=kind, network=network_to_pb(c.obj))
    if isinstance(c.obj, Policy):
        return pb.Change(kind=kind, policy=policy_to_pb(c.obj))
    return pb.Change(kind=kind, endpoint=endpoint_to_pb(c.obj))


def _change_from_pb(m: pb.Change) -> Change:
    kind = "put" if m.kind == pb.Change.PUT else "delete"
    which = m.WhichOneof("object")
    if which == "host":
        return Change(kind, host_from_pb(m.host))
    if which == "network":
        return Change(kind, network_from_pb(m.network))
    if which == "policy":
        return Change(kind, policy_from_pb(m.policy))
    return Change(kind, endpoint_from_pb(m.endpoint))


def batch_to_pb(b: WatchBatch) -> pb.WatchResponse:
    return pb.WatchResponse(
        revision=b.revision, snapshot=b.snapshot, compacted=b.compacted,
        hosts=[host_to_pb(h) for h in b.hosts],
        networks=[network_to_pb(n) for n in b.networks],
        endpoints=[endpoint_to_pb(e) for e in b.endpoints],
        changes=[_change_to_pb(c) for c in b.changes],
        policies=[policy_to_pb(p) for p in b.policies],
    )


def batch_from_pb(m: pb.WatchResponse) -> WatchBatch:
    return WatchBatch(
        revision=m.revision, snapshot=m.snapshot, compacted=m.compacted,
        hosts=tuple(host_from_pb(h) for h in m.hosts),
        networks=tuple(network_from_pb(n) for n in m.networks),
        endpoints=tuple(endpoint_from_pb(e) for e in m.endpoints),
        changes=tuple(_change_from_pb(c) for c in m.changes),
        policies=tuple(policy_from_pb(p) for p in m.policies),
    )
