"""Async gRPC client of the vxlab controller: model objects in, model objects out.

The one edge (with vxlab.wire) that speaks the generated v1 code on the client side.
It keeps one channel per controller address, fails a call over to the next address
when one answers UNAVAILABLE, or does not answer within `failover_timeout` (a hung
controller; only calls that are safe to repeat, and a Watch until its headers arrive),
and turns every gRPC error into the matching vxlab.errors class, so callers (the CLI,
the agent) never see grpc.

With `tls` (a vxlab.tls.TlsConfig) every channel is mutual TLS: the controller's
certificate must be signed by the CA, ours says who we are. A failed handshake is an
`Unauthenticated` error saying why. For `unix:` targets gRPC checks the certificate
against the socket path; the controller's certificate is for `localhost`, so the
client asks for that name (`grpc.ssl_target_name_override`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Self

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vxlab import errors, ops, wire
from vxlab.model import Endpoint, Fault, FaultStatus, Host, Network, Policy, Service, WatchBatch
from vxlab.tls import TlsConfig
from vxlab.v1 import vxlab_pb2 as pb
from vxlab.v1 import vxlab_pb2_grpc as pb_grpc

MAX_RECEIVE_BYTES = 64 * 1024 * 1024
_BY_CODE: dict[str, type[errors.VxError]] = {
    cls.code: cls
    for cls in (errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition,
                errors.ResourceExhausted, errors.Unavailable, errors.Aborted, errors.Unauthenticated)
}
UNIX_SERVER_NAME = "localhost"
# gRPC backs off reconnecting up to 2 minutes, failing calls at once meanwhile: a
# controller that came back would stay unused (and with every other one down, agents
# would lose their leases). Retry a lost controller at least once a second.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200),
                     ("grpc.max_reconnect_backoff_ms", 1000)]  # not min_…: that is also the connect timeout
# Not repeated on another controller after a timeout: the first may have done it.
# (UpdateNetwork and UpdateEndpoint set absolute values: doing one twice is doing it once.)
_NOT_REPEATABLE = frozenset({"CreateNetwork", "CreateEndpoint", "DeleteNetwork", "DeleteEndpoint",
                             "CreatePolicy", "DeletePolicy", "CreateService", "DeleteService", "CreateFault",
                             "DeleteFault"})
_STUBS = {"host": pb_grpc.HostServiceStub, "network": pb_grpc.NetworkServiceStub,
          "endpoint": pb_grpc.EndpointServiceStub, "policy": pb_grpc.PolicyServiceStub,
          "service": pb_grpc.ServiceServiceStub, "fault": pb_grpc.FaultServiceStub,
          "watch": pb_grpc.WatchServiceStub, "agent": pb_grpc.AgentServiceStub, "ops": pb_grpc.OpsServiceStub}
# An agent's ops channel idles for hours: HTTP/2 pings find a controller gone without a
# FIN (the server accepts pings this often, controller/server.py KEEPALIVE).
KEEPALIVE = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
             ("grpc.keepalive_permit_without_calls", 1)]
OP_HEADER = "vxlab-op"  # Run's headers name the op once the controller routed it to an agent


def parse_addresses(addresses: str | list[str]) -> list[str]:
    """'a:1, b:2' or ['a:1', 'b:2,c:3'] -> ['a:1', 'b:2', 'c:3']; none at all is an error."""
    items = [addresses] if isinstance(addresses, str) else list(addresses)
    out = [a.strip() for item in items for a in item.split(",") if a.strip()]
    if not out:
        raise errors.InvalidArgument("controller", "no controller address given")
    return out


def _connect_error(details: str, *, address: str, tls: bool) -> errors.VxError | None:
    """A connection that failed in the TLS handshake, as an Unauthenticated saying why.

    With TLS 1.3 the server checks our certificate after our side of the handshake is
    done: a refusal reaches us only as a connection closed or reset right after connect."""
    low = details.lower()
    if not low.startswith("failed to connect"):
        return None
    ssl = re.search(r"OPENSSL_internal:([A-Z_]+)(: [^:]+)?", details)
    reason = "".join(g or "" for g in ssl.groups()) if ssl else ""
    closed = any(w in low for w in ("socket closed", "connection reset", "broken pipe"))
    if tls and "wrong_version_number" in low:
        return errors.Unauthenticated(f"controller: TLS handshake with {address} failed: it does not speak "
                                      "TLS (started without --pki/--tls-*?)")
    if tls and ("hostname verification" in low or "certificate_verify_failed" in low):
        why = reason or "hostname verification failed"
        return errors.Unauthenticated(f"controller: TLS handshake with {address} failed: its certificate is "
                                      f"not one our CA signed for that name ({why})")
    if tls and (closed or "handshake" in low):
        return errors.Unauthenticated(f"controller: {address} refused our TLS handshake: it did not accept "
                                      f"our client certificate (signed by another CA?){f' ({reason})' if reason else ''}")
    if not tls and closed:
        return errors.Unauthenticated(f"controller: {address} closed the connection: it requires TLS with a "
                                      "client certificate (give --pki DIR or --tls-ca/--tls-cert/--tls-key)")
    return None


def _field_error(err: grpc.aio.AioRpcError, details: str, *, default: str) -> tuple[str, str]:
    """(field, reason) of a field error: from its google.rpc BadRequest detail, or, from a
    server that sends none, parsed out of the "field: reason" text (`default` names the
    field when the text has none)."""
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # a detail that contradicts the status: trust the status
        status = None
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            return bad.field_violations[0].field, bad.field_violations[0].description
    field, sep, reason = details.partition(": ")
    return (field, reason) if sep else (default, details)


def error_from_rpc(err: grpc.aio.AioRpcError, *, address: str, timeout: float,
                   tls: bool = False) -> errors.VxError:
    """Translate a failed RPC into the vxlab.errors class named by its status code."""
    code = err.code()
    details = err.details() or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE and (handshake := _connect_error(details, address=address, tls=tls)):
        return handshake
    if code == grpc.StatusCode.PERMISSION_DENIED:
        field, reason = _field_error(err, details, default="")
        return errors.PermissionDenied(field, reason)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, reason = _field_error(err, details, default="request")
        return errors.InvalidArgument(field, reason)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.Unavailable(f"controller: no answer from {address} within {timeout:g}s")
    if code == grpc.StatusCode.UNAVAILABLE and details.lower().startswith("failed to connect"):
        return errors.Unavailable(f"controller: cannot reach {address}")
    cls = _BY_CODE.get(code.name)
    if cls is not None:
        return cls(details)
    unknown = errors.VxError(details)
    unknown.code = code.name
    return unknown


class Client:
    """The controller's API as coroutines; use `async with Client(...) as c:`."""

    def __init__(self, addresses: str | list[str], *, timeout: float = 10.0, failover_timeout: float | None = 3.0,
                 max_receive_bytes: int = MAX_RECEIVE_BYTES, tls: TlsConfig | None = None,
                 keepalive: bool = False) -> None:
        """`timeout`: the deadline of a call; `failover_timeout`: the shorter one of an
        attempt that has another address to fail over to (None: `timeout`);
        `keepalive`: HTTP/2 pings on idle channels (an agent's ops channel)."""
        self._addresses = parse_addresses(addresses)
        self._timeout = timeout
        self._failover_timeout = timeout if failover_timeout is None else min(timeout, failover_timeout)
        self._options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", max_receive_bytes),
                                                *RECONNECT_OPTIONS, *(KEEPALIVE if keepalive else [])]
        self._tls = tls
        self._credentials: grpc.ChannelCredentials | None = None
        if tls is not None:  # read now: a missing file is bad input, not a failed call
            ca, cert, key = tls.read()
            self._credentials = grpc.ssl_channel_credentials(ca, key, cert)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._current = 0  # index of the address that answered last

    @property
    def address(self) -> str:
        """The address the next call goes to first (the one that worked last)."""
        return self._addresses[self._current]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()

    def _stub(self, address: str, service: str) -> Any:
        stub = self._stubs.get((address, service))
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:  # created lazily: a grpc.aio channel binds to the running loop
                channel = self._channels[address] = self._channel(address)
            stub = self._stubs[address, service] = _STUBS[service](channel)
        return stub

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self._credentials is None or self._tls is None:
            return grpc.aio.insecure_channel(address, options=self._options)
        name = self._tls.server_name or (UNIX_SERVER_NAME if address.startswith("unix") else "")
        options = self._options + ([("grpc.ssl_target_name_override", name)] if name else [])
        return grpc.aio.secure_channel(address, self._credentials, options=options)

    def _error(self, err: grpc.aio.AioRpcError, address: str, timeout: float | None = None) -> errors.VxError:
        return error_from_rpc(err, address=address, timeout=self._timeout if timeout is None else timeout,
                              tls=self._tls is not None)

    def _order(self) -> list[int]:
        n = len(self._addresses)
        return [(self._current + k) % n for k in range(n)]

    async def _unary(self, service: str, method: str, request: Any) -> Any:
        """Call `service.method`, failing over on UNAVAILABLE; returns the response message."""
        order = self._order()
        for attempt, i in enumerate(order):
            address = self._addresses[i]
            call: Callable[..., Awaitable[Any]] = getattr(self._stub(address, service), method)
            last = attempt + 1 == len(order)
            # a call that is not repeated after a hang gets the whole deadline on any address:
            # the shorter one would only turn a slow controller into an error
            timeout = self._timeout if last or method in _NOT_REPEATABLE else self._failover_timeout
            try:
                response = await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                hung = err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and method not in _NOT_REPEATABLE
                if (err.code() == grpc.StatusCode.UNAVAILABLE or hung) and not last:
                    continue
                if err.code() == grpc.StatusCode.UNAVAILABLE:  # every address refused
                    address = ", ".join(self._addresses[j] for j in order)
                raise self._error(err, address, timeout) from None
            self._current = i
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # -- hosts --------------------------------------------------------------------------

    async def register_host(self, host: Host) -> tuple[Host, int, int]:
        r = await self._unary("host", "RegisterHost", pb.RegisterHostRequest(host=wire.host_to_pb(host)))
        return wire.host_from_pb(r.host), r.lease_id, r.lease_ttl

    async def keepalive(self, name: str, lease_id: int) -> tuple[int, int, bool]:
        r = await self._unary("host", "KeepAlive", pb.KeepAliveRequest(name=name, lease_id=lease_id))
        return r.lease_id, r.ttl, r.renewed

    async def get_host(self, name: str) -> Host:
        return wire.host_from_pb(await self._unary("host", "GetHost", pb.GetHostRequest(name=name)))

    async def list_hosts(self) -> list[Host]:
        r = await self._unary("host", "ListHosts", pb.ListHostsRequest())
        return [wire.host_from_pb(h) for h in r.hosts]

    async def revision(self) -> int:
        """The store revision the controller reads at now (what converged agents have applied)."""
        r = await self._unary("host", "ListHosts", pb.ListHostsRequest())
        return int(r.revision)

    async def deregister_host(self, name: str, *, force: bool = False) -> None:
        await self._unary("host", "DeregisterHost", pb.DeregisterHostRequest(name=name, force=force))

    # -- networks -----------------------------------------------------------------------

    async def create_network(self, net: Network) -> Network:
        request = pb.CreateNetworkRequest(network=wire.network_to_pb(net))
        return wire.network_from_pb(await self._unary("network", "CreateNetwork", request))

    async def get_network(self, name: str) -> Network:
        request = pb.GetNetworkRequest(name=name)
        return wire.network_from_pb(await self._unary("network", "GetNetwork", request))

    async def list_networks(self) -> list[Network]:
        r = await self._unary("network", "ListNetworks", pb.ListNetworksRequest())
        return [wire.network_from_pb(n) for n in r.networks]

    async def update_network(self, net: Network, *, fields: Sequence[str] = ()) -> Network:
        """Change `fields` (mtu, gateway, internal, labels; none given: all four) of the
        network `net.name` to `net`'s values."""
        request = pb.UpdateNetworkRequest(network=wire.network_to_pb(net), update_mask=list(fields))
        return wire.network_from_pb(await self._unary("network", "UpdateNetwork", request))

    async def delete_network(self, name: str, *, force: bool = False) -> int:
        request = pb.DeleteNetworkRequest(name=name, force=force)
        r = await self._unary("network", "DeleteNetwork", request)
        return int(r.deleted_endpoints)

    # -- endpoints ----------------------------------------------------------------------

    async def create_endpoint(self, ep: Endpoint) -> Endpoint:
        request = pb.CreateEndpointRequest(endpoint=wire.endpoint_to_pb(ep))
        return wire.endpoint_from_pb(await self._unary("endpoint", "CreateEndpoint", request))

    async def get_endpoint(self, network: str, name: str) -> Endpoint:
        request = pb.GetEndpointRequest(network=network, name=name)
        return wire.endpoint_from_pb(await self._unary("endpoint", "GetEndpoint", request))

    async def list_endpoints(self, *, network: str = "", host: str = "", name: str = "") -> list[Endpoint]:
        request = pb.ListEndpointsRequest(network=network, host=host, name=name)
        r = await self._unary("endpoint", "ListEndpoints", request)
        return [wire.endpoint_from_pb(e) for e in r.endpoints]

    async def update_endpoint(self, ep: Endpoint, *, fields: Sequence[str] = ()) -> Endpoint:
        """Change `fields` (labels) of the endpoint `ep.name` on `ep.network`."""
        request = pb.UpdateEndpointRequest(endpoint=wire.endpoint_to_pb(ep), update_mask=list(fields))
        return wire.endpoint_from_pb(await self._unary("endpoint", "UpdateEndpoint", request))

    async def delete_endpoint(self, network: str, name: str) -> None:
        request = pb.DeleteEndpointRequest(network=network, name=name)
        await self._unary("endpoint", "DeleteEndpoint", request)

    # -- policies -----------------------------------------------------------------------

    async def create_policy(self, p: Policy) -> Policy:
        request = pb.CreatePolicyRequest(policy=wire.policy_to_pb(p))
        return wire.policy_from_pb(await self._unary("policy", "CreatePolicy", request))

    async def get_policy(self, network: str, name: str) -> Policy:
        request = pb.GetPolicyRequest(network=network, name=name)
        return wire.policy_from_pb(await self._unary("policy", "GetPolicy", request))

    async def list_policies(self, *, network: str = "") -> list[Policy]:
        r = await self._unary("policy", "ListPolicies", pb.ListPoliciesRequest(network=network))
        return [wire.policy_from_pb(p) for p in r.policies]

    async def delete_policy(self, network: str, name: str) -> None:
        await self._unary("policy", "DeletePolicy", pb.DeletePolicyRequest(network=network, name=name))

    # -- faults -------------------------------------------------------------------------

    async def create_fault(self, kind: str, params: dict[str, str], *, duration: float = 0.0) -> Fault:
        """Inject a fault of `kind` (vxlab.faultkinds) with `params` (the registry's string
        form); `duration` seconds, 0: until deleted."""
        request = pb.CreateFaultRequest(fault=pb.Fault(kind=kind, params=params, duration=duration))
        return wire.fault_from_pb(await self._unary("fault", "CreateFault", request))

    async def get_fault(self, fault_id: str) -> Fault:
        return wire.fault_from_pb(await self._unary("fault", "GetFault", pb.GetFaultRequest(id=fault_id)))

    async def list_faults(self) -> list[Fault]:
        r = await self._unary("fault", "ListFaults", pb.ListFaultsRequest())
        return [wire.fault_from_pb(f) for f in r.faults]

    async def delete_fault(self, fault_id: str) -> None:
        await self._unary("fault", "DeleteFault", pb.DeleteFaultRequest(id=fault_id))

    async def report_fault_status(self, fault_id: str, status: FaultStatus) -> None:
        request = pb.ReportFaultStatusRequest(id=fault_id, status=wire.fault_status_to_pb(status))
        await self._unary("fault", "ReportFaultStatus", request)

    # -- services -----------------------------------------------------------------------

    async def create_service(self, s: Service) -> Service:
        request = pb.CreateServiceRequest(service=wire.service_to_pb(s))
        return wire.service_from_pb(await self._unary("service", "CreateService", request))

    async def get_service(self, network: str, name: str) -> Service:
        request = pb.GetServiceRequest(network=network, name=name)
        return wire.service_from_pb(await self._unary("service", "GetService", request))

    async def list_services(self, *, network: str = "") -> list[Service]:
        r = await self._unary("service", "ListServices", pb.ListServicesRequest(network=network))
        return [wire.service_from_pb(s) for s in r.services]

    async def delete_service(self, network: str, name: str) -> None:
        await self._unary("service", "DeleteService", pb.DeleteServiceRequest(network=network, name=name))

    # -- watch --------------------------------------------------------------------------

    async def watch(self, *, start_revision: int = 0) -> AsyncIterator[WatchBatch]:
        """Stream WatchBatches; fails over only while no batch has been received yet, and
        to the next address when one sends no headers within `failover_timeout`.

        No deadline: the stream lives until the caller stops iterating (which cancels
        the call) or the controller goes away (raised as Unavailable).
        """
        request = pb.WatchRequest(start_revision=start_revision)
        order = self._order()
        for attempt, i in enumerate(order):
            address = self._addresses[i]
            call = self._stub(address, "watch").Watch(request)
            received = False
            try:
                if attempt + 1 < len(order):
                    try:
                        async with asyncio.timeout(self._failover_timeout):
                            await call.initial_metadata()
                    except TimeoutError:
                        continue  # hung: the next address (`finally` cancels this call)
                async for response in call:
                    if not received:
                        received, self._current = True, i
                    yield wire.batch_from_pb(response)
                return
            except grpc.aio.AioRpcError as err:
                retry = not received and attempt + 1 < len(order)
                if err.code() == grpc.StatusCode.UNAVAILABLE and retry:
                    continue
                raise self._error(err, address) from None
            finally:
                call.cancel()

    # -- the ops channel (vxlab.ops) ----------------------------------------------------

    async def run_op(self, request: ops.OpRequest) -> AsyncIterator[ops.OpEvent]:
        """Run an op on `request.host`'s agent: its events, the last a Done. Tries the
        next controller while one answers UNAVAILABLE before routing the op (the agent
        is not connected to it, or it is down): nothing ran there. Once routed, no
        failover (an exec must not run twice). Stopping the iteration cancels the op."""
        message = wire.op_request_to_pb(request)
        deadline = ops.timeout_of(ops.check(request)) + self._timeout
        order = self._order()
        for attempt, i in enumerate(order):
            address = self._addresses[i]
            call = self._stub(address, "ops").Run(message, timeout=deadline)
            routed = False
            try:
                headers = await call.initial_metadata()
                routed = any(k == OP_HEADER for k, _ in (headers or ()))
                async for response in call:
                    yield wire.op_event_from_pb(response)
                self._current = i
                return
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE and not routed and attempt + 1 < len(order):
                    continue
                raise self._error(err, address, deadline) from None
            finally:
                call.cancel()

    async def connect_ops(self, address: str, *, host: str, version: str, events: AsyncIterator[ops.OpEvent],
                          opened: Callable[[], None] = lambda: None,
                          resume: Sequence[str] = ()) -> AsyncIterator[ops.OpRequest]:
        """An agent's ops channel to the controller at `address` (one of ours): a Hello
        for `host` (naming the ops it kept running, `resume`), then `events` up; yields
        the requests coming down. `opened` is called once the controller took the Hello."""
        async def up() -> AsyncIterator[Any]:
            yield wire.hello_to_pb(host, version, resume)
            async for event in events:
                yield wire.agent_message_to_pb(event)
        call = self._stub(address, "agent").Connect(up())
        try:
            await call.initial_metadata()
            opened()
            async for request in call:
                yield wire.op_request_from_pb(request)
        except grpc.aio.AioRpcError as err:
            raise self._error(err, address) from None
        finally:
            call.cancel()
