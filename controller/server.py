"""The controller process: gRPC server with health, reflection and Prometheus metrics.

`ControllerServer` wires the core to grpc.aio: the vxlab services, the standard
health service (SERVING while etcd answers, NOT_SERVING while it does not), server
reflection (so grpcurl works) and a metrics interceptor. `serve_forever` is what
`vxlab controller serve` runs, optionally with an embedded etcd.

`listen_netns` adds listeners in other network namespaces (namespace -> host:port):
each is created by a thread that entered that namespace (vxlab.netns.run_in), since a
listening socket belongs to the namespace of the thread that opens it; the process
itself stays where it is (it reaches etcd on this machine's loopback, and its other
listener, e.g. a lab's unix socket, is unchanged). A lab serves its agents this way on
a control address of its underlay switch (`control: underlay`).

With `tls` the server speaks mutual TLS only: a client without a certificate of the
CA fails the handshake, and an interceptor authorizes every vxlab call by the identity
in the client's certificate (policy in vxlab.controller.authz). Without it, plaintext
and everything allowed, as before TLS existed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vxlab import netns
from vxlab.controller import authz, metrics, servicer
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store import Store
from vxlab.errors import PermissionDenied
from vxlab.tls import Identity, TlsConfig, identity_of_uris

log = logging.getLogger("vxlab.controller")
MAX_MESSAGE = 64 * 1024 * 1024
# The agents' ops channels are streams that may stay idle for hours: HTTP/2 pings both
# ways find a peer that vanished without a FIN (a VM cut off, a partition). The server
# pings every 20 s and accepts the agents' pings (every 10 s, vxlab.client.KEEPALIVE).
KEEPALIVE = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
             ("grpc.http2.min_ping_interval_without_data_ms", 5_000), ("grpc.http2.max_ping_strikes", 0)]


def _code_name(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()
    if code is None:
        return "UNKNOWN" if error is not None and not isinstance(error, asyncio.CancelledError) else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
Bidi = Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Any]]


class _Wrapping(grpc.aio.ServerInterceptor):
    """Wraps the unary, server-streaming and bidirectional handlers of the vxlab
    services (they have no client-streaming one). `wrap_bidi` reads a stream's first
    message and hands the rest to `wrap_stream`'s wrapper as a server-streaming call
    on that message (authorization decides on an agent's Hello; `_chain` gives the
    handler its whole stream back)."""

    def wrap_unary(self, method: str, inner: Unary) -> Unary:
        raise NotImplementedError

    def wrap_stream(self, method: str, inner: Stream) -> Stream:
        raise NotImplementedError

    def wrap_bidi(self, method: str, inner: Bidi) -> Bidi:
        async def bidi(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            rest = aiter(requests)
            first = await anext(rest, None)
            if first is None:
                return

            async def through(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async for item in inner(_chain(request, rest), ctx):
                    yield item
            async for item in self.wrap_stream(method, through)(first, context):
                yield item
        return bidi

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/vxlab."):
            return handler
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self.wrap_unary(details.method, handler.unary_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self.wrap_stream(details.method, handler.unary_stream), **kw)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(self.wrap_bidi(details.method, handler.stream_stream), **kw)
        raise AssertionError(f"{details.method}: a client-streaming handler, which nothing wraps")


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`first`, then what `rest` holds: the stream a bidi handler sees after a wrapper
    read its first message."""
    yield first
    async for item in rest:
        yield item


class MetricsInterceptor(_Wrapping):
    """Counts requests by method and status code and times them."""

    def wrap_unary(self, method: str, inner: Unary) -> Unary:
        method = method.rsplit("/", 1)[-1]

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, error = time.perf_counter(), None
            try:
                return await inner(request, context)
            except BaseException as e:
                error = e
                raise
            finally:
                metrics.LATENCY.labels(method).observe(time.perf_counter() - start)
                metrics.REQUESTS.labels(method, _code_name(context, error)).inc()
        return unary

    def wrap_stream(self, method: str, inner: Stream) -> Stream:
        method = method.rsplit("/", 1)[-1]

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            error = None
            try:
                async for item in inner(request, context):
                    yield item
            except BaseException as e:
                error = e
                raise
            finally:
                metrics.REQUESTS.labels(method, _code_name(context, error)).inc()
        return stream


def peer_identity(context: grpc.aio.ServicerContext) -> Identity:
    """The identity in the peer's (verified) client certificate."""
    sans = context.auth_context().get("x509_subject_alternative_name", [])
    return identity_of_uris([s.decode(errors="replace") for s in sans])


class AuthzInterceptor(_Wrapping):
    """Refuses (PERMISSION_DENIED) what the caller's certificate does not allow."""

    @staticmethod
    async def _check(method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        try:
            authz.authorize(peer_identity(context), method, request)
        except PermissionDenied as e:
            await servicer.abort(context, e)  # with the field as a BadRequest detail

    def wrap_unary(self, method: str, inner: Unary) -> Unary:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, request, context)
            return await inner(request, context)
        return unary

    def wrap_stream(self, method: str, inner: Stream) -> Stream:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._check(method, request, context)
            async for item in inner(request, context):
                yield item
        return stream


class ControllerServer:
    """One controller: a gRPC server over a store. `await start()`, then `await stop()`."""

    def __init__(self, store: Store, *, config: Config | None = None, listen: str = "127.0.0.1:7070",
                 listen_netns: Mapping[str, str] | None = None, health_interval: float = 1.0,
                 tls: TlsConfig | None = None) -> None:
        self.core = Controller(store, config)
        self.listen = listen
        self.listen_netns = dict(listen_netns or {})
        self.tls = tls
        self.health_interval = health_interval
        self.address = ""
        self.netns_addresses: dict[str, str] = {}  # namespace -> host:port bound there
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._names: list[str] = []
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> str:
        credentials = None
        if self.tls is not None:
            ca, cert, key = self.tls.read()
            credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(), *([AuthzInterceptor()] if credentials else [])],
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE),
                     ("grpc.so_reuseport", 0), *KEEPALIVE],
        )
        self._names = servicer.add_all(server, self.core)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*self._names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server)
        def bind(address: str) -> int:
            if credentials is not None:
                return server.add_secure_port(address, credentials)
            return server.add_insecure_port(address)

        port = bind(self.listen)
        if port == 0:
            raise OSError(f"listen: cannot bind {self.listen}")
        if self.listen.startswith("unix:"):
            self.address = self.listen  # a socket file: reachable from every network namespace
        else:
            self.address = f"{self.listen.rpartition(':')[0]}:{port}"
        for ns, address in self.listen_netns.items():
            try:
                port = netns.run_in(ns, lambda a=address: bind(a))  # type: ignore[misc]
            except OSError as e:
                raise OSError(f"listen-netns: cannot enter network namespace {ns}: {e.strerror or e}") from None
            if port == 0:
                raise OSError(f"listen-netns: cannot bind {address} in network namespace {ns}")
            self.netns_addresses[ns] = f"{address.rpartition(':')[0]}:{port}"
        await server.start()
        self._server = server
        await self._set_health(await self.core.healthy())
        self._probe = asyncio.create_task(self._probe_loop())
        return self.address

    async def _set_health(self, ok: bool) -> None:
        metrics.ETCD_UP.set(1 if ok else 0)
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self._names]:
            await self._health.set(name, status)

    async def _probe_loop(self) -> None:
        last = None
        while True:
            await asyncio.sleep(self.health_interval)
            ok = await self.core.healthy()
            if ok != last:
                await self._set_health(ok)
                log.info("etcd %s", "reachable" if ok else "UNREACHABLE")
                last = ok

    async def stop(self, grace: float = 1.0) -> None:
        if self._probe:
            self._probe.cancel()
        if self._server:
            await self._server.stop(grace)
        await self.core.store.close()


async def serve(
    *, listen: str, etcd_endpoints: list[str] | None, embedded_etcd_dir: str | None,
    metrics_listen: str | None, config: Config, ready_file: str | None = None,
    listen_netns: Mapping[str, str] | None = None,
    tls: TlsConfig | None = None, etcd_tls: TlsConfig | None = None, embedded_etcd_tls: TlsConfig | None = None,
) -> None:
    """Run a controller until SIGINT/SIGTERM; start an embedded etcd when asked.

    `tls`: serve mutual TLS with these files; `etcd_tls`: the client certificate for etcd
    (https endpoints); `embedded_etcd_tls`: the embedded etcd's server certificate."""
    from vxlab.controller.store_etcd import EtcdStore
    from vxlab.etcdproc import EtcdProcess

    etcd = None
    if embedded_etcd_dir:
        etcd = EtcdProcess(data_dir=Path(embedded_etcd_dir), tls=embedded_etcd_tls, client_tls=etcd_tls)
        etcd.start()
        etcd_endpoints = etcd.endpoints
        log.warning("embedded etcd %s (%s) at %s", etcd.version, etcd.binary.source, ",".join(etcd.endpoints))
    if not etcd_endpoints:
        raise SystemExit("error: etcd: give --etcd URL[,URL…] or --embedded-etcd DIR")
    if tls is None:
        log.warning("serving WITHOUT TLS: anyone who can reach %s can change every network",
                    ", ".join([listen, *(f"{a} in {ns}" for ns, a in (listen_netns or {}).items())]))
    try:
        store = EtcdStore(etcd_endpoints, tls=etcd_tls)
    except ValueError as e:
        if etcd:
            etcd.stop()
        raise SystemExit(f"error: {e}") from None
    ctl = ControllerServer(store, config=config, listen=listen, listen_netns=listen_netns, tls=tls)
    try:
        address = await ctl.start()
        if metrics_listen:
            host, port = metrics.start_metrics_server(metrics_listen)
            log.warning("metrics on http://%s:%d/metrics", host, port)
        where = ", ".join([address, *(f"{a} in network namespace {ns}" for ns, a in ctl.netns_addresses.items())])
        log.warning("controller listening on %s%s (etcd %s)", where, " with mutual TLS" if tls else "",
                    ",".join(etcd_endpoints))
        if ready_file:
            Path(ready_file).write_text(address + "\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await ctl.stop()
        if etcd:
            etcd.stop()


def serve_forever(**kwargs: Any) -> None:
    """Blocking entry point for the CLI (see `serve` for the arguments)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = Config(
        lease_ttl=kwargs.pop("lease_ttl", 5), subnet_pool=kwargs.pop("subnet_pool", "10.0.0.0/8"),
        subnet_prefix=kwargs.pop("subnet_prefix", 24),
    )
    kwargs["metrics_listen"] = kwargs.pop("metrics", None)
    asyncio.run(serve(config=config, **kwargs))
