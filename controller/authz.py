"""Authorization by identity: who may call which controller method, on what.

Pure policy (no gRPC): the server's interceptor hands in the caller's identity (from its
client certificate), the method name and the request; a refusal is a PermissionDenied
naming the field. With TLS off there is no identity and the server installs no check.

- admin (`vxlab://admin`): everything;
- a host (`vxlab://host/NAME`): RegisterHost, KeepAlive, DeregisterHost and
  ReportFaultStatus as itself only, its ops channel (AgentService.Connect, authorized on
  the stream's first message, the Hello naming the host) as itself only, plus every read
  (Get*, List*, Watch); and the endpoints of a runtime on itself (Endpoint.runtime
  docker or cni, host = itself: what its Docker and CNI plugins make): CreateEndpoint is
  checked on the request, UpdateEndpoint and DeleteEndpoint on the stored record, by a
  guard the core applies inside the same transaction (so the record cannot change
  between the check and the write). It never creates, updates or deletes networks,
  vxlab's own endpoints, policies, services or faults, and never runs ops (OpsService.Run:
  probes, captures, commands on hosts are admin only);
- any other certificate of the CA: nothing.

A guard travels from the interceptor to the servicer in a context variable (each call
is a task of its own): `guard()` is the current call's, None for a call without one.
"""

from __future__ import annotations

import contextvars
from typing import Any

from vxlab.controller.endpoints import Guard
from vxlab.errors import PermissionDenied
from vxlab.model import RUNTIMES, Endpoint
from vxlab.tls import Identity

_GUARD: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("vxlab_authz_guard", default=None)

READS = frozenset({"GetHost", "ListHosts", "GetNetwork", "ListNetworks", "GetEndpoint", "ListEndpoints",
                   "GetPolicy", "ListPolicies", "GetService", "ListServices", "GetFault", "ListFaults", "Watch"})
AS_ITSELF = {"RegisterHost": "host.name", "KeepAlive": "name", "DeregisterHost": "name",
             "Connect": "hello.host", "ReportFaultStatus": "status.host"}  # where the host is named
WRITES = {"CreateNetwork": ("network", "create networks"), "DeleteNetwork": ("network", "delete networks"),
          "UpdateNetwork": ("network", "update networks"), "UpdateEndpoint": ("endpoint", "update endpoints"),
          "CreateEndpoint": ("endpoint", "create endpoints"), "DeleteEndpoint": ("endpoint", "delete endpoints"),
          "CreatePolicy": ("policy", "create policies"), "DeletePolicy": ("policy", "delete policies"),
          "CreateService": ("service", "create services"), "DeleteService": ("service", "delete services"),
          "CreateFault": ("fault", "create faults"), "DeleteFault": ("fault", "delete faults"),
          "Run": ("op", "run operations on hosts")}


def _field(request: Any, path: str) -> str:
    for part in path.split("."):
        request = getattr(request, part)
    return str(request)


def guard() -> Guard | None:
    """The guard `authorize` set for the current call (None: the caller may change any record)."""
    return _GUARD.get()


def runtime_owner(host: str, *, verb: str = "change") -> Guard:
    """Only endpoints of a runtime (docker, cni) on `host`."""
    def check(ep: Endpoint) -> None:
        if ep.host != host or ep.runtime not in RUNTIMES:
            kind = f"a {ep.runtime} endpoint" if ep.runtime else "a vxlab endpoint (admin only)"
            raise PermissionDenied("endpoint", f"host {host!r} may {verb} only endpoints of a runtime "
                                               f"({', '.join(RUNTIMES)}) on itself, not {kind} on host {ep.host!r}")
    return check


def authorize(identity: Identity, method: str, request: Any) -> None:
    """Raise PermissionDenied unless `identity` may call `method` (a bare or a full gRPC
    method name, e.g. `/vxlab.v1.HostService/RegisterHost`) with `request`; set the call's
    guard where the answer depends on a stored record."""
    name = method.rsplit("/", 1)[-1]  # a stream's: its first message
    _GUARD.set(None)
    if identity.kind == "admin":
        return
    if identity.kind != "host":
        raise PermissionDenied("identity", f"the client certificate is for {identity}, "
                                           "not for vxlab://admin or vxlab://host/NAME")
    if name in READS:
        return
    if name in AS_ITSELF:
        asked = _field(request, AS_ITSELF[name])
        if asked != identity.name:
            raise PermissionDenied("host", f"certificate is for {identity.name!r}, not {asked!r}")
        return
    if name == "CreateEndpoint":
        runtime_owner(identity.name, verb="create")(_endpoint_of(request))
        return
    if name in ("UpdateEndpoint", "DeleteEndpoint"):
        _GUARD.set(runtime_owner(identity.name))
        return
    field, what = WRITES.get(name, ("method", f"call {name}"))
    raise PermissionDenied(field, f"host {identity.name!r} may not {what} (admin only)")


def _endpoint_of(request: Any) -> Endpoint:
    """The owner fields of a CreateEndpoint request's endpoint (no wire conversion here)."""
    ep = request.endpoint
    return Endpoint(name=ep.name, network=ep.network, host=ep.host, runtime=ep.runtime)
