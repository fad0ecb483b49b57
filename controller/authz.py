"""Authorization by identity: who may call which controller method, on what.

Pure policy (no gRPC): the server's interceptor hands in the caller's identity (from its
client certificate), the method name and the request; a refusal is a PermissionDenied
naming the field. With TLS off there is no identity and the server installs no check.

- admin (`vxlab://admin`): everything;
- a host (`vxlab://host/NAME`): RegisterHost, KeepAlive and DeregisterHost as itself
  only, its ops channel (AgentService.Connect, authorized on the stream's first
  message, the Hello naming the host) as itself only, plus every read (Get*, List*,
  Watch); never creates, updates or deletes networks, endpoints, policies or services, and never
  runs ops (OpsService.Run: probes, captures, commands on hosts are admin only);
- any other certificate of the CA: nothing.
"""

from __future__ import annotations

from typing import Any

from vxlab.errors import PermissionDenied
from vxlab.tls import Identity

READS = frozenset({"GetHost", "ListHosts", "GetNetwork", "ListNetworks", "GetEndpoint", "ListEndpoints",
                   "GetPolicy", "ListPolicies", "GetService", "ListServices", "Watch"})
AS_ITSELF = {"RegisterHost": "host.name", "KeepAlive": "name", "DeregisterHost": "name",
             "Connect": "hello.host"}  # where the host is named
WRITES = {"CreateNetwork": ("network", "create networks"), "DeleteNetwork": ("network", "delete networks"),
          "UpdateNetwork": ("network", "update networks"), "UpdateEndpoint": ("endpoint", "update endpoints"),
          "CreateEndpoint": ("endpoint", "create endpoints"), "DeleteEndpoint": ("endpoint", "delete endpoints"),
          "CreatePolicy": ("policy", "create policies"), "DeletePolicy": ("policy", "delete policies"),
          "CreateService": ("service", "create services"), "DeleteService": ("service", "delete services"),
          "Run": ("op", "run operations on hosts")}


def _field(request: Any, path: str) -> str:
    for part in path.split("."):
        request = getattr(request, part)
    return str(request)


def authorize(identity: Identity, method: str, request: Any) -> None:
    """Raise PermissionDenied unless `identity` may call `method` (a bare or a full gRPC
    method name, e.g. `/vxlab.v1.HostService/RegisterHost`) with `request`."""
    name = method.rsplit("/", 1)[-1]  # a stream's: its first message
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
    field, what = WRITES.get(name, ("method", f"call {name}"))
    raise PermissionDenied(field, f"host {identity.name!r} may not {what} (admin only)")
