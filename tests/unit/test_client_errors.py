"""vxlab.client against a tiny in-process grpc.aio server: error mapping and failover.

The servicer aborts GetNetwork with the status code named by the request's network
name, so each gRPC code can be checked against the vxlab.errors class it becomes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from vxlab.v1 import vxlab_pb2 as pb
from vxlab.v1 import vxlab_pb2_grpc as pb_grpc

from vxlab import errors
from vxlab.client import Client, parse_addresses
from vxlab.controller.servicer import abort
from vxlab.model import Network

DETAILS = {"INVALID_ARGUMENT": "subnet: not a valid IPv4 CIDR"}
# Field errors as the controller sends them (a BadRequest detail), by request name. The
# fields hold ": ", so only the detail, not the "field: reason" text, can say where they end.
FIELD_ERRORS: dict[str, errors.VxError] = {
    "field-invalid": errors.InvalidArgument("network.labels['a: b']", "not a valid label key"),
    "field-denied": errors.PermissionDenied("host: h1", "may not create networks (admin only)"),
    "denied-no-field": errors.PermissionDenied("", "the client certificate names no identity"),
}


class Networks(pb_grpc.NetworkServiceServicer):
    """GetNetwork(name=CODE) aborts with CODE; 'slow' sleeps; the rest answer."""

    def __init__(self) -> None:
        self.calls = 0

    async def GetNetwork(self, request: pb.GetNetworkRequest, context: grpc.aio.ServicerContext) -> pb.Network:
        self.calls += 1
        if request.name == "slow":
            await asyncio.sleep(5)
        if request.name in FIELD_ERRORS:
            await abort(context, FIELD_ERRORS[request.name])
        code = grpc.StatusCode[request.name]
        await context.abort(code, DETAILS.get(request.name, f"{request.name.lower()} happened"))
        raise AssertionError("unreachable")

    async def CreateNetwork(self, request: pb.CreateNetworkRequest, context: grpc.aio.ServicerContext) -> pb.Network:
        self.calls += 1
        out = pb.Network()
        out.CopyFrom(request.network)
        out.id = "ab" * 32
        return out

    async def ListNetworks(self, request: pb.ListNetworksRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListNetworksResponse:
        self.calls += 1
        return pb.ListNetworksResponse(networks=[pb.Network(name="front", vni=4096)], revision=7)


class Watch(pb_grpc.WatchServiceServicer):
    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchResponse]:
        yield pb.WatchResponse(revision=request.start_revision + 1, snapshot=True,
                               networks=[pb.Network(name="front")])
        yield pb.WatchResponse(revision=request.start_revision + 2, changes=[
            pb.Change(kind=pb.Change.DELETE, network=pb.Network(name="front"))])


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Networks]]:
    srv = grpc.aio.server()
    servicer = Networks()
    pb_grpc.add_NetworkServiceServicer_to_server(servicer, srv)
    pb_grpc.add_WatchServiceServicer_to_server(Watch(), srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}", servicer
    await srv.stop(None)


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(("code", "cls"), [
    ("NOT_FOUND", errors.NotFound),
    ("ALREADY_EXISTS", errors.AlreadyExists),
    ("FAILED_PRECONDITION", errors.FailedPrecondition),
    ("RESOURCE_EXHAUSTED", errors.ResourceExhausted),
    ("ABORTED", errors.Aborted),
    ("UNAVAILABLE", errors.Unavailable),
    ("UNAUTHENTICATED", errors.Unauthenticated),
    ("PERMISSION_DENIED", errors.PermissionDenied),
])
async def test_codes_map_to_error_classes(server: tuple[str, Networks], code: str, cls: type[errors.VxError]) -> None:
    async with Client(server[0]) as client:
        with pytest.raises(cls) as info:
            await client.get_network(code)
    assert type(info.value) is cls and info.value.code == code
    assert info.value.message == f"{code.lower()} happened"


async def test_invalid_argument_carries_field_and_reason(server: tuple[str, Networks]) -> None:
    async with Client(server[0]) as client:
        with pytest.raises(errors.InvalidArgument) as info:
            await client.get_network("INVALID_ARGUMENT")
    assert (info.value.field, info.value.reason) == ("subnet", "not a valid IPv4 CIDR")
    assert info.value.message == "subnet: not a valid IPv4 CIDR"


@pytest.mark.parametrize("name", sorted(FIELD_ERRORS))
async def test_field_errors_come_from_the_bad_request_detail(server: tuple[str, Networks], name: str) -> None:
    sent = FIELD_ERRORS[name]
    async with Client(server[0]) as client:
        with pytest.raises(type(sent)) as info:
            await client.get_network(name)
    got = info.value
    assert (got.field, got.reason, got.message) == (sent.field, sent.reason, sent.message)  # type: ignore[attr-defined]


async def test_field_error_text_stays_readable_without_the_detail(server: tuple[str, Networks]) -> None:
    """Other clients see the same "field: reason" text as before, and a detail of ours."""
    async with grpc.aio.insecure_channel(server[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.NetworkServiceStub(channel).GetNetwork(pb.GetNetworkRequest(name="field-invalid"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "network.labels['a: b']: not a valid label key"
    assert any(key == "grpc-status-details-bin" for key, _ in info.value.trailing_metadata() or ())


async def test_unknown_code_is_plain_vxerror(server: tuple[str, Networks]) -> None:
    async with Client(server[0]) as client:
        with pytest.raises(errors.VxError) as info:
            await client.get_network("DATA_LOSS")
    assert type(info.value) is errors.VxError
    assert (info.value.code, info.value.message) == ("DATA_LOSS", "data_loss happened")


async def test_deadline_is_unavailable(server: tuple[str, Networks]) -> None:
    async with Client(server[0], timeout=0.2) as client:
        with pytest.raises(errors.Unavailable, match="no answer from"):
            await client.get_network("slow")


async def test_success_converts_to_model(server: tuple[str, Networks]) -> None:
    async with Client(server[0]) as client:
        created = await client.create_network(Network("blue", subnet="10.1.0.0/24", labels={"a": "b"}))
        listed = await client.list_networks()
    assert created == Network("blue", id="ab" * 32, subnet="10.1.0.0/24", labels={"a": "b"})
    assert [(n.name, n.vni) for n in listed] == [("front", 4096)]


async def test_failover_to_second_address(server: tuple[str, Networks]) -> None:
    address, servicer = server
    down = closed_port()
    client = Client(f"{down}, {address}")
    try:
        assert client.address == down
        assert [n.name for n in await client.list_networks()] == ["front"]
        assert client.address == address  # remembered: the next call goes there first
        with pytest.raises(errors.NotFound):  # non-UNAVAILABLE errors are not retried
            await client.get_network("NOT_FOUND")
        assert servicer.calls == 2
    finally:
        await client.close()


async def test_all_addresses_down() -> None:
    down1, down2 = closed_port(), closed_port()
    async with Client([down1, down2], timeout=2) as client:
        with pytest.raises(errors.Unavailable) as info:
            await client.list_hosts()
    assert info.value.message == f"controller: cannot reach {down1}, {down2}"


async def test_watch_streams_batches_with_failover(server: tuple[str, Networks]) -> None:
    async with Client([closed_port(), server[0]]) as client:
        batches = [b async for b in client.watch(start_revision=10)]
    assert [(b.revision, b.snapshot) for b in batches] == [(11, True), (12, False)]
    assert batches[0].networks[0].name == "front"
    assert batches[1].changes[0].kind == "delete" and batches[1].changes[0].obj.name == "front"


def test_parse_addresses() -> None:
    assert parse_addresses(" a:1, b:2 ,") == ["a:1", "b:2"]
    assert parse_addresses(["a:1", "b:2,c:3"]) == ["a:1", "b:2", "c:3"]
    with pytest.raises(errors.InvalidArgument):
        parse_addresses(" , ")


class Hung(pb_grpc.NetworkServiceServicer, pb_grpc.WatchServiceServicer):
    """A controller that accepts calls and never answers (a hung VM, a partition)."""

    def __init__(self) -> None:
        self.calls = 0

    async def ListNetworks(self, request: pb.ListNetworksRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListNetworksResponse:
        self.calls += 1
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    CreateNetwork = ListNetworks  # type: ignore[assignment]

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchResponse]:
        self.calls += 1
        await asyncio.sleep(30)
        yield pb.WatchResponse()


@pytest.fixture
async def hung() -> AsyncIterator[tuple[str, Hung]]:
    srv = grpc.aio.server()
    servicer = Hung()
    pb_grpc.add_NetworkServiceServicer_to_server(servicer, srv)
    pb_grpc.add_WatchServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}", servicer
    await srv.stop(None)


async def test_a_hung_controller_is_failed_over_for_repeatable_calls_and_watch(
        server: tuple[str, Networks], hung: tuple[str, Hung]) -> None:
    async with Client([hung[0], server[0]], failover_timeout=0.3) as client:
        assert [n.name for n in await client.list_networks()] == ["front"]
        assert client.address == server[0]
    async with Client([hung[0], server[0]], failover_timeout=0.3) as client:
        batches = [b async for b in client.watch(start_revision=10)]
        assert [b.revision for b in batches] == [11, 12]
    assert hung[1].calls == 2


async def test_a_create_is_not_repeated_after_a_timeout(server: tuple[str, Networks], hung: tuple[str, Hung]) -> None:
    """Not repeated elsewhere, so it gets the whole deadline (1 s), not the failover one:
    a slow controller (a TCG VM under load took 3 s) is waited for, not turned into an error."""
    async with Client([hung[0], server[0]], timeout=1.0, failover_timeout=0.3) as client:
        with pytest.raises(errors.Unavailable, match=f"no answer from {hung[0]} within 1s"):
            await client.create_network(Network("blue"))
    assert server[1].calls == 0  # the first controller may have created it: not done twice
