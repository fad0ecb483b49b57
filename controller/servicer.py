"""gRPC servicers: request -> core call -> response, and core errors -> status codes.

The only controller module that touches the generated protobuf code (with
vxlab.wire for the conversions). No logic lives here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncio
import collections
import logging
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from vxlab import validate, wire
from vxlab.controller import authz
from vxlab.controller.core import Controller
from vxlab.controller.store import StoreUnavailable
from vxlab.errors import InvalidArgument, PermissionDenied, VxError
from vxlab.v1 import vxlab_pb2 as pb
from vxlab.v1 import vxlab_pb2_grpc as pbg

T = TypeVar("T")
log = logging.getLogger("vxlab.controller")


async def abort(context: grpc.aio.ServicerContext, e: VxError) -> None:
    """End the call with `e`'s status code and message. A field error (InvalidArgument,
    PermissionDenied) also carries a google.rpc BadRequest detail naming the field and
    the reason, so clients need not parse them back out of the "field: reason" text."""
    code = getattr(grpc.StatusCode, e.code)
    if not isinstance(e, InvalidArgument | PermissionDenied):
        await context.abort(code, e.message)
        return
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=e.field, description=e.reason)]))
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=e.message, details=[detail]))
    await context.abort(code, e.message, trailing_metadata=status.trailing_metadata)


async def _call(context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return await fn()
    except VxError as e:
        await abort(context, e)
    except StoreUnavailable as e:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd: unavailable ({e})")
    except Exception as e:  # noqa: BLE001 - a bug: log it whole, answer INTERNAL
        log.exception("internal error")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
    raise AssertionError("unreachable")  # abort() raises


class HostServicer(pbg.HostServiceServicer):
    def __init__(self, core: Controller) -> None:
        self.core = core

    async def RegisterHost(self, request: pb.RegisterHostRequest, context: grpc.aio.ServicerContext) -> pb.RegisterHostResponse:
        host, lease, ttl = await _call(context, lambda: self.core.hosts.register(wire.host_from_pb(request.host)))
        return pb.RegisterHostResponse(host=wire.host_to_pb(host), lease_id=lease, lease_ttl=ttl)

    async def KeepAlive(self, request: pb.KeepAliveRequest, context: grpc.aio.ServicerContext) -> pb.KeepAliveResponse:
        lease, ttl, renewed = await _call(context, lambda: self.core.hosts.keepalive(request.name, request.lease_id))
        return pb.KeepAliveResponse(lease_id=lease, ttl=ttl, renewed=renewed)

    async def GetHost(self, request: pb.GetHostRequest, context: grpc.aio.ServicerContext) -> pb.Host:
        return wire.host_to_pb(await _call(context, lambda: self.core.hosts.get(request.name)))

    async def ListHosts(self, request: pb.ListHostsRequest, context: grpc.aio.ServicerContext) -> pb.ListHostsResponse:
        hosts, rev = await _call(context, self.core.hosts.list)
        return pb.ListHostsResponse(hosts=[wire.host_to_pb(h) for h in hosts], revision=rev)

    async def DeregisterHost(self, request: pb.DeregisterHostRequest, context: grpc.aio.ServicerContext) -> pb.DeregisterHostResponse:
        await _call(context, lambda: self.core.hosts.deregister(request.name, force=request.force))
        return pb.DeregisterHostResponse()


class NetworkServicer(pbg.NetworkServiceServicer):
    def __init__(self, core: Controller) -> None:
        self.core = core

    async def CreateNetwork(self, request: pb.CreateNetworkRequest, context: grpc.aio.ServicerContext) -> pb.Network:
        net = await _call(context, lambda: self.core.networks.create(wire.network_from_pb(request.network)))
        return wire.network_to_pb(net)

    async def GetNetwork(self, request: pb.GetNetworkRequest, context: grpc.aio.ServicerContext) -> pb.Network:
        return wire.network_to_pb(await _call(context, lambda: self.core.networks.get(request.name)))

    async def ListNetworks(self, request: pb.ListNetworksRequest, context: grpc.aio.ServicerContext) -> pb.ListNetworksResponse:
        nets, rev = await _call(context, self.core.networks.list)
        return pb.ListNetworksResponse(networks=[wire.network_to_pb(n) for n in nets], revision=rev)

    async def UpdateNetwork(self, request: pb.UpdateNetworkRequest, context: grpc.aio.ServicerContext) -> pb.Network:
        net = await _call(context, lambda: self.core.networks.update(wire.network_from_pb(request.network),
                                                                     fields=tuple(request.update_mask)))
        return wire.network_to_pb(net)

    async def DeleteNetwork(self, request: pb.DeleteNetworkRequest, context: grpc.aio.ServicerContext) -> pb.DeleteNetworkResponse:
        n = await _call(context, lambda: self.core.networks.delete(request.name, force=request.force))
        return pb.DeleteNetworkResponse(deleted_endpoints=n)


class EndpointServicer(pbg.EndpointServiceServicer):
    def __init__(self, core: Controller) -> None:
        self.core = core

    async def CreateEndpoint(self, request: pb.CreateEndpointRequest, context: grpc.aio.ServicerContext) -> pb.Endpoint:
        ep = await _call(context, lambda: self.core.endpoints.create(wire.endpoint_from_pb(request.endpoint)))
        return wire.endpoint_to_pb(ep)

    async def GetEndpoint(self, request: pb.GetEndpointRequest, context: grpc.aio.ServicerContext) -> pb.Endpoint:
        ep = await _call(context, lambda: self.core.endpoints.get(request.network, request.name))
        return wire.endpoint_to_pb(ep)

    async def ListEndpoints(self, request: pb.ListEndpointsRequest, context: grpc.aio.ServicerContext) -> pb.ListEndpointsResponse:
        eps, rev = await _call(context, lambda: self.core.endpoints.list(
            network=request.network, host=request.host, name=request.name))
        return pb.ListEndpointsResponse(endpoints=[wire.endpoint_to_pb(e) for e in eps], revision=rev)

    async def UpdateEndpoint(self, request: pb.UpdateEndpointRequest, context: grpc.aio.ServicerContext) -> pb.Endpoint:
        ep = await _call(context, lambda: self.core.endpoints.update(wire.endpoint_from_pb(request.endpoint),
                                                                     fields=tuple(request.update_mask),
                                                                     guard=authz.guard()))
        return wire.endpoint_to_pb(ep)

    async def DeleteEndpoint(self, request: pb.DeleteEndpointRequest, context: grpc.aio.ServicerContext) -> pb.DeleteEndpointResponse:
        await _call(context, lambda: self.core.endpoints.delete(request.network, request.name, guard=authz.guard()))
        return pb.DeleteEndpointResponse()


class PolicyServicer(pbg.PolicyServiceServicer):
    def __init__(self, core: Controller) -> None:
        self.core = core

    async def CreatePolicy(self, request: pb.CreatePolicyRequest, context: grpc.aio.ServicerContext) -> pb.Policy:
        p = await _call(context, lambda: self.core.policies.create(wire.policy_from_pb(request.policy)))
        return wire.policy_to_pb(p)

    async def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.aio.ServicerContext) -> pb.Policy:
        return wire.policy_to_pb(await _call(context, lambda: self.core.policies.get(request.network, request.name)))

    async def ListPolicies(self, request: pb.ListPoliciesRequest, context: grpc.aio.ServicerContext) -> pb.ListPoliciesResponse:
        found, rev = await _call(context, lambda: self.core.policies.list(network=request.network))
        return pb.ListPoliciesResponse(policies=[wire.policy_to_pb(p) for p in found], revision=rev)

    async def DeletePolicy(self, request: pb.DeletePolicyRequest, context: grpc.aio.ServicerContext) -> pb.DeletePolicyResponse:
        await _call(context, lambda: self.core.policies.delete(request.network, request.name))
        return pb.DeletePolicyResponse()


class FaultServicer(pbg.FaultServiceServicer):
    def __init__(self, core: Controller) -> None:
        self.core = core

    async def CreateFault(self, request: pb.CreateFaultRequest, context: grpc.aio.ServicerContext) -> pb.Fault:
        return wire.fault_to_pb(await _call(context, lambda: self.core.faults.create(wire.fault_from_pb(request.fault))))

    async def GetFault(self, request: pb.GetFaultRequest, context: grpc.aio.ServicerContext) -> pb.Fault:
        return wire.fault_to_pb(await _call(context, lambda: self.core.faults.get(request.id)))

    async def ListFaults(self, request: pb.ListFaultsRequest, context: grpc.aio.ServicerContext) -> pb.ListFaultsResponse:
        found, rev = await _call(context, self.core.faults.list)
        return pb.ListFaultsResponse(faults=[wire.fault_to_pb(f) for f in found], revision=rev)

    async def DeleteFault(self, request: pb.DeleteFaultRequest, context: grpc.aio.ServicerContext) -> pb.DeleteFaultResponse:
        await _call(context, lambda: self.core.faults.delete(request.id))
        return pb.DeleteFaultResponse()

    async def ReportFaultStatus(self, request: pb.ReportFaultStatusRequest,
                                context: grpc.aio.ServicerContext) -> pb.ReportFaultStatusResponse:
        await _call(context, lambda: self.core.faults.report(request.id, wire.fault_status_from_pb(request.status)))
        return pb.ReportFaultStatusResponse()


class ServiceServicer(pbg.ServiceServiceServicer):
    def __init__(self, core: Controller) -> None:
        self.core = core

    async def CreateService(self, request: pb.CreateServiceRequest, context: grpc.aio.ServicerContext) -> pb.Service:
        s = await _call(context, lambda: self.core.services.create(wire.service_from_pb(request.service)))
        return wire.service_to_pb(s)

    async def GetService(self, request: pb.GetServiceRequest, context: grpc.aio.ServicerContext) -> pb.Service:
        return wire.service_to_pb(await _call(context, lambda: self.core.services.get(request.network, request.name)))

    async def ListServices(self, request: pb.ListServicesRequest, context: grpc.aio.ServicerContext) -> pb.ListServicesResponse:
        found, rev = await _call(context, lambda: self.core.services.list(network=request.network))
        return pb.ListServicesResponse(services=[wire.service_to_pb(s) for s in found], revision=rev)

    async def DeleteService(self, request: pb.DeleteServiceRequest, context: grpc.aio.ServicerContext) -> pb.DeleteServiceResponse:
        await _call(context, lambda: self.core.services.delete(request.network, request.name))
        return pb.DeleteServiceResponse()


class WatchServicer(pbg.WatchServiceServicer):
    def __init__(self, core: Controller) -> None:
        self.core = core
        # The shared watch hands every subscriber the same batch objects: convert once.
        self._converted: collections.OrderedDict[int, tuple[Any, pb.WatchResponse]] = collections.OrderedDict()
        self._snapshot: tuple[Any, pb.WatchResponse] | None = None  # only the latest: they can be big

    def _to_pb(self, batch: Any) -> pb.WatchResponse:
        hit = self._snapshot if batch.snapshot else self._converted.get(id(batch))
        if hit is not None and hit[0] is batch:
            return hit[1]
        msg = wire.batch_to_pb(batch)
        if batch.snapshot:  # the hub's view hands joiners one snapshot object until it changes
            self._snapshot = (batch, msg)
            return msg
        self._converted[id(batch)] = (batch, msg)
        if len(self._converted) > 1024:
            self._converted.popitem(last=False)
        return msg

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchResponse]:
        if request.start_revision < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start_revision: must be >= 0")
        # Headers at once: a resume may see no batch for a while, and the client tells a
        # live controller from a hung one by them (then fails over).
        await context.send_initial_metadata(())
        stream = self.core.watcher.watch(start_revision=request.start_revision)
        try:
            async for batch in stream:
                yield self._to_pb(batch)
        except StoreUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd: unavailable ({e})")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


class AgentServicer(pbg.AgentServiceServicer):
    """An agent's ops channel: its Hello (authorized by the interceptor: a host may only
    connect as itself; it names the ops the agent kept running), then requests down and
    events up until either side goes."""

    def __init__(self, core: Controller) -> None:
        self.hub = core.ops

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.OpRequest]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        host, resume = wire.hello_from_pb(first)
        try:
            validate.name(host, field="hello.host", max_len=validate.HOST_NAME_MAX)
        except VxError as e:
            await abort(context, e)
        link = self.hub.attach(host, resume=resume)
        await context.send_initial_metadata(())  # the agent knows it is connected

        async def read() -> None:
            async for message in request_iterator:
                _, event = wire.agent_message_from_pb(message)
                if event is not None:
                    link.deliver(event)
        reader = asyncio.create_task(read())
        try:
            while not reader.done():
                sending = asyncio.ensure_future(link.outbox.get())
                await asyncio.wait({sending, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not sending.done():
                    sending.cancel()
                    break
                yield wire.op_request_to_pb(sending.result())
        finally:
            reader.cancel()
            self.hub.detach(link)


class OpsServicer(pbg.OpsServiceServicer):
    """Run an op on a host's agent: the events, relayed, until its Done. Headers carry
    the op's id (`vxlab-op`) once it was routed: a client may try another controller
    only before them (nothing ran)."""

    def __init__(self, core: Controller) -> None:
        self.hub = core.ops

    async def Run(self, request: pb.OpRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.OpEvent]:
        try:
            running = self.hub.start(wire.op_request_from_pb(request))
        except VxError as e:
            await abort(context, e)
        await context.send_initial_metadata((("vxlab-op", running.id),))
        events = running.events()
        try:
            async for event in events:
                yield wire.op_event_to_pb(event)
        except VxError as e:
            await abort(context, e)
        finally:
            await events.aclose()  # type: ignore[attr-defined]


def add_all(server: grpc.aio.Server, core: Controller) -> list[str]:
    """Register every vxlab service on `server`; returns their full names (for reflection)."""
    pbg.add_HostServiceServicer_to_server(HostServicer(core), server)
    pbg.add_NetworkServiceServicer_to_server(NetworkServicer(core), server)
    pbg.add_EndpointServiceServicer_to_server(EndpointServicer(core), server)
    pbg.add_PolicyServiceServicer_to_server(PolicyServicer(core), server)
    pbg.add_ServiceServiceServicer_to_server(ServiceServicer(core), server)
    pbg.add_FaultServiceServicer_to_server(FaultServicer(core), server)
    pbg.add_WatchServiceServicer_to_server(WatchServicer(core), server)
    pbg.add_AgentServiceServicer_to_server(AgentServicer(core), server)
    pbg.add_OpsServiceServicer_to_server(OpsServicer(core), server)
    return [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()]
