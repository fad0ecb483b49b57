"""Conversions between the core dataclasses (vxlab.model) and the v1 protobuf messages.

Shared by the two edges that speak gRPC: the controller's servicer and vxlab.client
(and the agent's end of the ops channel, through the client). Nothing else imports the
generated code. The ops channel's dataclasses (vxlab.ops) mostly mirror their messages
field by field (`_flat_*`); the nested ones are spelled out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from vxlab import ops
from vxlab.model import (Change, Endpoint, Fault, FaultStatus, Host, Network, Policy, PortMapping, Selector, Service,
                         WatchBatch)
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
        ports=[_flat_to_pb(p, pb.PortMapping) for p in e.ports], runtime=e.runtime, netns=e.netns,
    )


def endpoint_from_pb(m: pb.Endpoint) -> Endpoint:
    return Endpoint(
        name=m.name, network=m.network, host=m.host, ip=m.ip, mac=m.mac, id=m.id,
        created=m.created, labels=dict(m.labels), aliases=tuple(m.aliases),
        ports=tuple(_flat_from_pb(p, PortMapping) for p in m.ports), runtime=m.runtime, netns=m.netns,
    )


def service_to_pb(s: Service) -> pb.Service:
    return pb.Service(name=s.name, network=s.network, vip=s.vip, replicas=list(s.replicas), selector=dict(s.selector),
                      ports=list(s.ports), affinity=s.affinity, id=s.id, created=s.created)


def service_from_pb(m: pb.Service) -> Service:
    return Service(name=m.name, network=m.network, vip=m.vip, replicas=tuple(m.replicas), selector=dict(m.selector),
                   ports=tuple(m.ports), affinity=m.affinity, id=m.id, created=m.created)


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


def fault_status_to_pb(s: FaultStatus) -> pb.FaultStatus:
    return pb.FaultStatus(host=s.host, state=s.state, reason=s.reason, at=s.at)


def fault_status_from_pb(m: pb.FaultStatus) -> FaultStatus:
    return FaultStatus(host=m.host, state=m.state, reason=m.reason, at=m.at)


def fault_to_pb(f: Fault) -> pb.Fault:
    return pb.Fault(
        id=f.id, kind=f.kind, params=dict(f.params), targets=list(f.targets), duration=f.duration,
        expires_at=f.expires_at, created=f.created, status=[fault_status_to_pb(s) for s in f.status],
    )


def fault_from_pb(m: pb.Fault) -> Fault:
    return Fault(
        id=m.id, kind=m.kind, params=dict(m.params), targets=tuple(m.targets), duration=m.duration,
        expires_at=m.expires_at, created=m.created, status=tuple(fault_status_from_pb(s) for s in m.status),
    )


def _change_to_pb(c: Change) -> pb.Change:
    kind = pb.Change.PUT if c.kind == "put" else pb.Change.DELETE
    if isinstance(c.obj, Host):
        return pb.Change(kind=kind, host=host_to_pb(c.obj))
    if isinstance(c.obj, Network):
        return pb.Change(kind=kind, network=network_to_pb(c.obj))
    if isinstance(c.obj, Policy):
        return pb.Change(kind=kind, policy=policy_to_pb(c.obj))
    if isinstance(c.obj, Service):
        return pb.Change(kind=kind, service=service_to_pb(c.obj))
    if isinstance(c.obj, Fault):
        return pb.Change(kind=kind, fault=fault_to_pb(c.obj))
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
    if which == "service":
        return Change(kind, service_from_pb(m.service))
    if which == "fault":
        return Change(kind, fault_from_pb(m.fault))
    return Change(kind, endpoint_from_pb(m.endpoint))


def batch_to_pb(b: WatchBatch) -> pb.WatchResponse:
    return pb.WatchResponse(
        revision=b.revision, snapshot=b.snapshot, compacted=b.compacted,
        hosts=[host_to_pb(h) for h in b.hosts],
        networks=[network_to_pb(n) for n in b.networks],
        endpoints=[endpoint_to_pb(e) for e in b.endpoints],
        changes=[_change_to_pb(c) for c in b.changes],
        policies=[policy_to_pb(p) for p in b.policies],
        services=[service_to_pb(s) for s in b.services],
        faults=[fault_to_pb(f) for f in b.faults],
    )


def batch_from_pb(m: pb.WatchResponse) -> WatchBatch:
    return WatchBatch(
        revision=m.revision, snapshot=m.snapshot, compacted=m.compacted,
        hosts=tuple(host_from_pb(h) for h in m.hosts),
        networks=tuple(network_from_pb(n) for n in m.networks),
        endpoints=tuple(endpoint_from_pb(e) for e in m.endpoints),
        changes=tuple(_change_from_pb(c) for c in m.changes),
        policies=tuple(policy_from_pb(p) for p in m.policies),
        services=tuple(service_from_pb(s) for s in m.services),
        faults=tuple(fault_from_pb(f) for f in m.faults),
    )


# --- the ops channel (vxlab.ops) ---------------------------------------------------------
_SCALAR = (str, bytes, int, float, bool)


def _flat_to_pb(obj: Any, cls: Any) -> Any:
    """A dataclass whose fields are the message's (tuples for repeated scalars)."""
    return cls(**{f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v
                  for f in dataclasses.fields(obj)})


def _flat_from_pb(m: Any, cls: Any) -> Any:
    return cls(**{f.name: v if isinstance(v := getattr(m, f.name), _SCALAR) else tuple(v)
                  for f in dataclasses.fields(cls)})


_OPS: dict[str, tuple[type, Any]] = {
    "probe": (ops.ProbeBatch, pb.ProbeBatch), "ping": (ops.PingStream, pb.PingStream),
    "capture": (ops.Capture, pb.Capture), "kernel_view": (ops.KernelView, pb.KernelView),
    "drift": (ops.Drift, pb.Drift), "exec": (ops.Exec, pb.Exec), "iperf_server": (ops.IperfServer, pb.IperfServer),
    "iperf_client": (ops.IperfClient, pb.IperfClient), "cancel": (ops.Cancel, pb.Cancel)}
_EVENTS: dict[str, tuple[type, Any]] = {
    "ready": (ops.Ready, pb.Ready), "probes": (ops.ProbeResults, pb.ProbeResults),
    "sample": (ops.PingSample, pb.PingSample), "line": (ops.Line, pb.Line), "kernel": (ops.KernelState, pb.KernelState),
    "drift": (ops.DriftReport, pb.DriftReport), "exec": (ops.ExecResult, pb.ExecResult),
    "iperf": (ops.IperfReport, pb.IperfReport), "done": (ops.Done, pb.Done), "resumed": (ops.Resumed, pb.Resumed)}
_OP_NAME = {cls: name for name, (cls, _) in _OPS.items()}
_EVENT_NAME = {cls: name for name, (cls, _) in _EVENTS.items()}


def _op_to_pb(op: ops.Op) -> Any:
    if isinstance(op, ops.ProbeBatch):
        return pb.ProbeBatch(probes=[_flat_to_pb(p, pb.ProbeSpec) for p in op.probes])
    return _flat_to_pb(op, _OPS[_OP_NAME[type(op)]][1])


def _op_from_pb(m: Any, name: str) -> ops.Op:
    if name == "probe":
        return ops.ProbeBatch(tuple(_flat_from_pb(p, ops.ProbeSpec) for p in m.probes))
    return _flat_from_pb(m, _OPS[name][0])  # type: ignore[no-any-return]


def op_request_to_pb(r: ops.OpRequest) -> pb.OpRequest:
    m = pb.OpRequest(id=r.id, host=r.host, timeout=r.timeout)
    if r.op is not None:
        getattr(m, _OP_NAME[type(r.op)]).CopyFrom(_op_to_pb(r.op))
    return m


def op_request_from_pb(m: pb.OpRequest) -> ops.OpRequest:
    name = m.WhichOneof("op")
    return ops.OpRequest(host=m.host, op=None if name is None else _op_from_pb(getattr(m, name), name), id=m.id,
                         timeout=m.timeout)


def _namespace_to_pb(n: ops.NamespaceView) -> pb.KernelNamespace:
    return pb.KernelNamespace(
        name=n.name, marker=n.marker, links=[_flat_to_pb(k, pb.KernelLink) for k in n.links],
        addrs=[pb.KernelAddr(dev=d, cidr=c) for d, c in n.addrs],
        routes=[pb.KernelRoute(dst=d, gateway=g, dev=v) for d, g, v in n.routes],
        fdb=[pb.KernelFdb(dev=d, mac=m, dst=t) for d, m, t in n.fdb],
        neigh=[pb.KernelNeigh(dev=d, ip=i, mac=m) for d, i, m in n.neigh])


def _namespace_from_pb(m: pb.KernelNamespace) -> ops.NamespaceView:
    return ops.NamespaceView(
        name=m.name, marker=m.marker, links=tuple(_flat_from_pb(k, ops.LinkView) for k in m.links),
        addrs=tuple((a.dev, a.cidr) for a in m.addrs), routes=tuple((r.dst, r.gateway, r.dev) for r in m.routes),
        fdb=tuple((f.dev, f.mac, f.dst) for f in m.fdb), neigh=tuple((n.dev, n.ip, n.mac) for n in m.neigh))


def _event_to_pb(e: ops.Event) -> Any:
    if isinstance(e, ops.ProbeResults):
        return pb.ProbeResults(results=[_flat_to_pb(r, pb.ProbeResult) for r in e.results])
    if isinstance(e, ops.PingSample):
        return pb.PingSample(seq=e.seq, sent=e.sent, rtt_ms=e.rtt_ms or 0.0, lost=e.rtt_ms is None)
    if isinstance(e, ops.KernelState):
        return pb.KernelState(namespaces=[_namespace_to_pb(n) for n in e.namespaces], underlay_ip=e.underlay_ip,
                              underlay_dev=e.underlay_dev, underlay_mtu=e.underlay_mtu)
    if isinstance(e, ops.DriftReport):
        return pb.DriftReport(entries=[_flat_to_pb(x, pb.DriftEntry) for x in e.entries], revision=e.revision,
                              applied_revision=e.applied_revision)
    return _flat_to_pb(e, _EVENTS[_EVENT_NAME[type(e)]][1])


def _event_from_pb(m: Any, name: str) -> ops.Event:
    if name == "probes":
        return ops.ProbeResults(tuple(_flat_from_pb(r, ops.ProbeResult) for r in m.results))
    if name == "sample":
        return ops.PingSample(seq=m.seq, sent=m.sent, rtt_ms=None if m.lost else m.rtt_ms)
    if name == "kernel":
        return ops.KernelState(tuple(_namespace_from_pb(n) for n in m.namespaces), underlay_ip=m.underlay_ip,
                               underlay_dev=m.underlay_dev, underlay_mtu=m.underlay_mtu)
    if name == "drift":
        return ops.DriftReport(tuple(_flat_from_pb(x, ops.DriftEntry) for x in m.entries), revision=m.revision,
                               applied_revision=m.applied_revision)
    return _flat_from_pb(m, _EVENTS[name][0])  # type: ignore[no-any-return]


def op_event_to_pb(e: ops.OpEvent) -> pb.OpEvent:
    m = pb.OpEvent(id=e.id)
    getattr(m, _EVENT_NAME[type(e.event)]).CopyFrom(_event_to_pb(e.event))
    return m


def op_event_from_pb(m: pb.OpEvent) -> ops.OpEvent:
    """An event without a kind (a newer agent's) reads as a Done saying so."""
    name = m.WhichOneof("event")
    if name is None:
        return ops.OpEvent(m.id, ops.Done("an event of a kind this controller does not know"))
    return ops.OpEvent(m.id, _event_from_pb(getattr(m, name), name))


def hello_to_pb(host: str, agent_version: str, resume: Sequence[str] = ()) -> pb.AgentMessage:
    return pb.AgentMessage(hello=pb.Hello(host=host, agent_version=agent_version, resume=list(resume)))


def agent_message_to_pb(e: ops.OpEvent) -> pb.AgentMessage:
    return pb.AgentMessage(event=op_event_to_pb(e))


def hello_from_pb(m: pb.AgentMessage) -> tuple[str, tuple[str, ...]]:
    """A Hello's host and the ids of the ops it resumes; ("", ()) for anything else."""
    if m.WhichOneof("message") != "hello":
        return "", ()
    return m.hello.host, tuple(m.hello.resume)


def agent_message_from_pb(m: pb.AgentMessage) -> tuple[str, ops.OpEvent | None]:
    """(the Hello's host, None) for a Hello; ("", the event) for an event; ("", None) else."""
    which = m.WhichOneof("message")
    if which == "hello":
        return m.hello.host, None
    if which == "event":
        return "", op_event_from_pb(m.event)
    return "", None
