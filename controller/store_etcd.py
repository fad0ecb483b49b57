"""The store contract on a real etcd, through aetcd (the production backend).

Every call carries a deadline (`timeout`) and maps connection failures and timeouts to
`StoreUnavailable`; the gRPC channel reconnects on its own (with a short backoff), so the
same `EtcdStore` works again once etcd is back. Several endpoints share one channel that
round-robins over them and skips members that are down.

Where aetcd falls short its own gRPC stubs are used directly: `Client.get`/`get_range`
cannot read at a past revision; `Client.transaction` drops the response header (we need
the revision); `Client.refresh_lease` leaves its keep-alive
stream open; aetcd's shared `Watcher` drops progress notifications (responses without
events) and headers. So each `watch()` opens its own Watch stream on the client's
channel, independent of other watches, and cancels it when the iterator is closed.

`https://` endpoints are mutual TLS with `tls` (etcd's CA, our client certificate and
key); aetcd has no TLS option, so `_Client` builds the secure channel itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import exceptions as aerr
from aetcd import rpc, transactions, watcher
from vxlab.controller.store import (
    Absent,
    Compacted,
    Compare,
    Delete,
    DeletePrefix,
    Event,
    KeyValue,
    ModRevisionIs,
    Op,
    PrefixUnchangedSince,
    Put,
    Store,
    StoreUnavailable,
    TxnResult,
)
from vxlab.tls import TlsConfig

_Code = grpc.StatusCode
_UNAVAILABLE = {_Code.UNAVAILABLE, _Code.DEADLINE_EXCEEDED, _Code.CANCELLED}
_REJECTED = {_Code.INVALID_ARGUMENT, _Code.NOT_FOUND, _Code.OUT_OF_RANGE}  # -> ValueError
_REQUIRE_LEADER = (("hasleader", "true"),)  # etcd cancels the watch if its member loses the leader
_REVISION_PROBE = b"\x00vxlab/revision-probe"


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd's [key, range_end) for every key starting with `prefix`."""
    key = prefix.encode()
    if not key:
        return b"\x00", b"\x00"
    end = bytearray(key)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return key, b"\x00"
    end[-1] += 1
    return key, bytes(end)


def endpoints_scheme(endpoints: list[str]) -> str:
    """'http' or 'https', the one scheme of all `endpoints` (a bare host:port is http)."""
    schemes = {urlsplit(e if "://" in e else f"http://{e}").scheme for e in endpoints}
    if len(schemes) != 1:
        raise ValueError(f"etcd endpoints mix schemes ({', '.join(sorted(schemes))}): use one")
    return schemes.pop()


def channel_target(endpoints: list[str]) -> str:
    """A gRPC target for `http(s)://host:port` endpoints; several become one address list."""
    hosts: list[tuple[str, int]] = []
    for endpoint in endpoints:
        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"unsupported etcd endpoint {endpoint!r} (want http(s)://host:port)")
        hosts.append((url.hostname, url.port or 2379))
    if len(hosts) == 1:
        host, port = hosts[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if all(":" in host for host, _ in hosts):
        return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in hosts)
    # An IPv4 address list (names resolved now): one channel, balanced over all members.
    return "ipv4:" + ",".join(f"{socket.gethostbyname(host)}:{port}" for host, port in hosts)


class _Client(aetcd.Client):
    """aetcd's client on a channel we build: any gRPC target, our channel options."""

    def __init__(self, target: str, *, timeout: float, options: dict[str, Any],
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        super().__init__(timeout=timeout, options=options)
        self._target = target
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        options = list(self._options.items())
        if self._credentials is not None:
            self.channel = rpc.secure_channel(self._target, self._credentials, options=options)
        else:
            self.channel = rpc.insecure_channel(self._target, options=options)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout)
        self._connected.set()


def _rpc_error(exc: BaseException) -> grpc.aio.AioRpcError | None:
    """The gRPC error behind `exc` (aetcd re-raises them as its own exceptions)."""
    for e in (exc, exc.__cause__):
        if isinstance(e, grpc.aio.AioRpcError):
            return e
    return None


class EtcdStore(Store):
    """`Store` on etcd v3; see the module docstring."""

    def __init__(self, endpoints: list[str], *, timeout: float = 5.0, tls: TlsConfig | None = None) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = list(endpoints)
        secure = endpoints_scheme(self.endpoints) == "https"
        if secure and tls is None:
            raise ValueError("etcd: https endpoints need a client certificate (--etcd-ca/--etcd-cert/--etcd-key or --pki)")
        if tls is not None and not secure:
            raise ValueError("etcd: a client certificate was given for plain http endpoints (use https://)")
        self._timeout = timeout
        options = {
            "grpc.lb_policy_name": "round_robin",
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.min_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 1000,
            "grpc.keepalive_time_ms": 10_000,  # notice a silent peer on idle watch streams
            "grpc.keepalive_timeout_ms": max(1000, int(timeout * 1000)),
            "grpc.keepalive_permit_without_calls": 0,  # etcd answers idle pings with GOAWAY
            "grpc.max_receive_message_length": -1,
        }
        credentials = None
        if tls is not None:
            ca, cert, key = tls.read()
            credentials = grpc.ssl_channel_credentials(ca, key, cert)
            # an address list ("ipv4:a,b") is no name to check: check the first endpoint's
            options["grpc.ssl_target_name_override"] = tls.server_name or urlsplit(self.endpoints[0]).hostname
        self._client = _Client(channel_target(self.endpoints), timeout=timeout, options=options,
                               credentials=credentials)
        self._closed = False

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[_Client]:
        """Run one etcd request under the deadline, translating connection failures."""
        if self._closed:
            raise StoreUnavailable("store closed")
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.connect()
                yield self._client
        except TimeoutError as e:
            raise StoreUnavailable(f"etcd did not answer within {self._timeout} s") from e
        except asyncio.CancelledError:
            if _we_are_cancelled():
                raise
            raise StoreUnavailable("store closed") from None
        except (aerr.ClientError, grpc.aio.AioRpcError) as e:
            rpc_error = _rpc_error(e)
            code = rpc_error.code() if rpc_error else None
            why = f"{code.name}: {rpc_error.details()}" if rpc_error and code else str(e)
            if code in _UNAVAILABLE or isinstance(e, aerr.ConnectionFailedError):
                raise StoreUnavailable(f"etcd unavailable: {why}") from e
            if code in _REJECTED:
                raise ValueError(f"etcd rejected the request: {why}") from e
            raise

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        kvs, _ = await self._read(rpc.RangeRequest(key=key.encode(), revision=revision))
        return kvs[0] if kvs else None

    async def range(self, prefix: str, *, revision: int = 0) -> tuple[list[KeyValue], int]:
        key, end = _prefix_range(prefix)
        return await self._read(rpc.RangeRequest(
            key=key, range_end=end, revision=revision,
            sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY))

    async def _read(self, request: Any) -> tuple[list[KeyValue], int]:
        """One Range (aetcd's get and get_range cannot read at a revision); the revision
        read at is the request's, or the store's current one for a read of now."""
        try:
            async with self._call() as c:
                resp = await c.kvstub.Range(request, timeout=self._timeout)
        except ValueError as e:  # OUT_OF_RANGE: compacted, or a future revision
            if "compacted" not in str(e):
                raise
            raise await self._compaction(request.revision) from e
        return [_kv(kv) for kv in resp.kvs], request.revision or int(resp.header.revision)

    async def _compaction(self, revision: int) -> Compacted:
        """The `Compacted` (with etcd's compaction point) for a read at `revision`: a Range
        refused as compacted does not say the point, a watch from there does."""
        watch = self.watch(_REVISION_PROBE.decode(), start_revision=revision)
        try:
            async with asyncio.timeout(self._timeout):
                await anext(watch)
        except Compacted as e:
            return e
        except TimeoutError:
            pass
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        raise StoreUnavailable(f"etcd refused a read at revision {revision} as compacted but did not say since when")

    async def txn(self, compares: list[Compare], ops: list[Op]) -> TxnResult:
        request = rpc.TxnRequest(
            compare=[_compare(c).build_message() for c in compares],
            success=[_op(op) for op in ops],
        )
        async with self._call() as c:
            resp = await c.kvstub.Txn(request, timeout=self._timeout)
        return TxnResult(succeeded=resp.succeeded, revision=resp.header.revision)

    async def revision(self) -> int:
        probe = rpc.RangeRequest(key=_REVISION_PROBE, count_only=True)
        async with self._call() as c:
            resp = await c.kvstub.Range(probe, timeout=self._timeout)
        return int(resp.header.revision)

    async def grant_lease(self, ttl: int) -> int:
        if ttl < 1:
            raise ValueError(f"lease TTL must be at least 1 s, got {ttl}")
        async with self._call() as c:
            lease = await c.lease(ttl)
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        async with self._call() as c:
            stream = c.leasestub.LeaseKeepAlive(timeout=self._timeout)
            try:
                await stream.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                reply = await stream.read()
            finally:
                stream.cancel()
        if reply is grpc.aio.EOF:
            raise StoreUnavailable("etcd closed the lease keep-alive stream")
        return int(reply.TTL)  # etcd answers TTL 0 for a lease that no longer exists

    async def revoke_lease(self, lease_id: int) -> None:
        try:
            async with self._call() as c:
                await c.revoke_lease(lease_id)
        except ValueError:  # NOT_FOUND: already expired or revoked
            pass

    async def compact(self, revision: int) -> None:
        try:
            async with self._call() as c:
                await c.compact(revision)
        except ValueError as e:
            if "compacted" not in str(e):  # compacting again is a no-op, as in MemoryStore
                raise

    async def close(self) -> None:
        self._closed = True
        await self._client.close()

    async def watch(
        self, prefix: str, *, start_revision: int
    ) -> AsyncIterator[tuple[int, list[Event]]]:
        key, end = _prefix_range(prefix)
        create = rpc.WatchCreateRequest(
            key=key, range_end=end, start_revision=max(start_revision, 0), progress_notify=True
        )
        async with self._call() as c:  # opening the stream is bounded by the deadline
            stream = rpc.WatchStub(c.channel).Watch(metadata=_REQUIRE_LEADER)
        try:
            async with self._call():
                await stream.write(rpc.WatchRequest(create_request=create))
                first = await stream.read()
            resp = first
            while True:
                if resp is grpc.aio.EOF:
                    raise StoreUnavailable("etcd closed the watch stream")
                if resp.compact_revision:
                    raise Compacted(resp.compact_revision)
                if resp.canceled:
                    raise StoreUnavailable(f"etcd canceled the watch: {resp.cancel_reason}")
                if resp is not first:  # the creation answer carries no progress guarantee
                    for item in _group(resp):
                        yield item
                resp = await stream.read()
        except grpc.aio.AioRpcError as e:
            raise StoreUnavailable(f"etcd watch failed: {e.code().name}: {e.details()}") from e
        except asyncio.CancelledError:
            if _we_are_cancelled():
                raise
            raise StoreUnavailable("etcd watch stream closed (store closed)") from None
        finally:
            stream.cancel()


def _we_are_cancelled() -> bool:
    """Whether a CancelledError is our task's; grpc.aio raises one too, for calls that
    closing the channel cancelled, and that one means the store is closed."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(), bytes(kv.value), kv.create_revision, kv.mod_revision, kv.lease)


def _compare(c: Compare) -> transactions.BaseCompare:
    match c:
        case Absent(key=key):
            return transactions.Create(key.encode()) == 0
        case ModRevisionIs(key=key, revision=rev):
            return transactions.Mod(key.encode()) == rev
        case PrefixUnchangedSince(prefix=prefix, revision=rev):
            key, end = _prefix_range(prefix)
            return transactions.Mod(key, range_end=end) < rev + 1
    raise TypeError(f"not a store comparison: {c!r}")


def _op(op: Op) -> Any:
    match op:
        case Put(key=key, value=value, lease=lease):
            put = rpc.PutRequest(key=key.encode(), value=value, lease=lease)
            return rpc.RequestOp(request_put=put)
        case Delete(key=key):
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key.encode()))
        case DeletePrefix(prefix=prefix):
            key, end = _prefix_range(prefix)
            delete = rpc.DeleteRangeRequest(key=key, range_end=end)
            return rpc.RequestOp(request_delete_range=delete)
    raise TypeError(f"not a store operation: {op!r}")


def _group(resp: Any) -> list[tuple[int, list[Event]]]:
    """One watch response as `(revision, events)` items; no events means progress."""
    if not resp.events:
        return [(int(resp.header.revision), [])]
    by_rev: dict[int, list[Event]] = defaultdict(list)
    for ev in resp.events:
        put = ev.type == rpc.Event.PUT
        rev = int(ev.kv.mod_revision)
        value = bytes(ev.kv.value) if put else b""
        by_rev[rev].append(Event("put" if put else "delete", ev.kv.key.decode(), value, rev))
    return sorted(by_rev.items())
