"""Async gRPC client of the vxlab controller: model objects in, model objects out.

The one edge (with vxlab.wire) that speaks the generated v1 code on the client side.
It keeps one channel per controller address, fails a call over to the next address
when one answers UNAVAILABLE, or does not answer within `failover_timeout` (a hung
controller; only calls that are safe to repeat, and a Watch until its headers arrive),
and turns every gRPC error into the matching vxlab.errors class, so callers (the CLI,
the agent) never see grpc.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self

import grpc
import grpc.aio

from vxlab import errors, wire
from vxlab.model import Endpoint, Host, Network, WatchBatch
from vxlab.v1 import vxlab_pb2 as pb
from vxlab.v1 import vxlab_pb2_grpc as pb_grpc

MAX_RECEIVE_BYTES = 64 * 1024 * 1024
_BY_CODE: dict[str, type[errors.VxError]] = {
    cls.code: cls
    for cls in (errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition,
                errors.ResourceExhausted, errors.Unavailable, errors.Aborted)
}
# gRPC backs off reconnecting up to 2 minutes, failing calls at once meanwhile: a
# controller that came back would stay unused (and with every other one down, agents
# would lose their leases). Retry a lost controller at least once a second.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200),
                     ("grpc.max_reconnect_backoff_ms", 1000)]  # not min_…: that is also the connect timeout
# Not repeated on another controller after a timeout: the first may have done it.
_NOT_REPEATABLE = frozenset({"CreateNetwork", "CreateEndpoint", "DeleteNetwork", "DeleteEndpoint"})
_STUBS = {"host": pb_grpc.HostServiceStub, "network": pb_grpc.NetworkServiceStub,
          "endpoint": pb_grpc.EndpointServiceStub, "watch": pb_grpc.WatchServiceStub}


def parse_addresses(addresses: str | list[str]) -> list[str]:
    """'a:1, b:2' or ['a:1', 'b:2,c:3'] -> ['a:1', 'b:2', 'c:3']; none at all is an error."""
    items = [addresses] if isinstance(addresses, str) else list(addresses)
    out = [a.strip() for item in items for a in item.split(",") if a.strip()]
    if not out:
        raise errors.InvalidArgument("controller", "no controller address given")
    return out


def error_from_rpc(err: grpc.aio.AioRpcError, *, address: str, timeout: float) -> errors.VxError:
    """Translate a failed RPC into the vxlab.errors class named by its status code."""
    code = err.code()
    details = err.details() or code.name.lower()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, sep, reason = details.partition(": ")
        return errors.InvalidArgument(field, reason) if sep else errors.InvalidArgument("request", details)
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
                 max_receive_bytes: int = MAX_RECEIVE_BYTES) -> None:
        """`timeout`: the deadline of a call; `failover_timeout`: the shorter one of an
        attempt that has another address to fail over to (None: `timeout`)."""
        self._addresses = parse_addresses(addresses)
        self._timeout = timeout
        self._failover_timeout = timeout if failover_timeout is None else min(timeout, failover_timeout)
        self._options = [("grpc.max_receive_message_length", max_receive_bytes), *RECONNECT_OPTIONS]
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
                channel = grpc.aio.insecure_channel(address, options=self._options)
                self._channels[address] = channel
            stub = self._stubs[address, service] = _STUBS[service](channel)
        return stub

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
            timeout = self._timeout if last else self._failover_timeout
            try:
                response = await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                hung = err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and method not in _NOT_REPEATABLE
                if (err.code() == grpc.StatusCode.UNAVAILABLE or hung) and not last:
                    continue
                if err.code() == grpc.StatusCode.UNAVAILABLE:  # every address refused
                    address = ", ".join(self._addresses[j] for j in order)
                raise error_from_rpc(err, address=address, timeout=timeout) from None
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

    async def delete_endpoint(self, network: str, name: str) -> None:
        request = pb.DeleteEndpointRequest(network=network, name=name)
        await self._unary("endpoint", "DeleteEndpoint", request)

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
                raise error_from_rpc(err, address=address, timeout=self._timeout) from None
            finally:
                call.cancel()
