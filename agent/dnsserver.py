"""The agent's embedded DNS (Docker's 127.0.0.11): listeners inside the container
namespaces, answered on the agent's asyncio loop from its live watch cache.

For every container namespace of this host the agent keeps one UDP and one TCP
socket bound to 127.0.0.11:PORT (a high port: port 53 of the container stays free for
its own servers; the namespace's `ip vxlab_dns` table, agent/dns_nft.py, DNATs
127.0.0.11:53 to it, planned with the namespace), made inside that namespace (a thread that entered it,
vxlab.netns.socket_in's pattern): the socket a query arrives on says which container
asks, and the answer follows agent/dnsnames.py. The set of listeners is a side
structure the reconciler drives: after every pass `sync` makes it the pass's
container namespaces (`desired.local_containers`), opens what is missing, closes what
is gone, and opens again in a namespace that was deleted and made anew under the same
name (its nsfs inode changed). After an agent restart the first pass adopts the
namespaces and `sync` opens their listeners (sockets die with a process: there is no
kernel state to adopt). The resolv.conf that points `ip netns exec` at 127.0.0.11 is
planned with the namespace (kernel.Namespace.resolv). A CNI container's namespace (a
runtime's: vxlab-cni wrote its redirect table at ADD, and its runtime the resolv.conf
from ADD's result) gets listeners too, by the path its endpoint records, once it proved
to hold the endpoint (agent/runtime_ns.py's `pin`); nothing else is written there.

Names that are not ours are forwarded (`forward`, the agent's `dns-forward`) to the
nameservers of the agent namespace's /etc/resolv.conf that are not loopback addresses
(127.0.0.53 of systemd-resolved answers in the agent's namespace, and a copy of it in
a container would reach nothing; systemd's own upstream list,
/run/systemd/resolve/resolv.conf, is read instead when that is all there is), from the
agent's namespace, over UDP or TCP as the question came; REFUSED without forwarding
(a lab: its traffic never leaves the machine). SERVFAIL when no upstream answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.resolver

from vxlab import netns
from vxlab.agent import netlink_handoff, runtime_ns
from vxlab.agent.cache import StateCache
from vxlab.agent.dns_nft import ADDRESS, PORT
from vxlab.agent.dnsnames import Names, error, respond
from vxlab.model import Endpoint
from vxlab.ops import OpFailed

log = logging.getLogger("vxlab.agent.dns")
FORWARD_TIMEOUT = 2.0   # per upstream
FORWARDS_MAX = 256      # forwarded questions in flight; more are SERVFAIL at once
TCP_IDLE = 10.0         # an idle TCP connection is closed after this long
RESOLV_CONF = "/etc/resolv.conf"
SYSTEMD_RESOLV = "/run/systemd/resolve/resolv.conf"


@dataclass
class _Listener:
    container: str
    ident: tuple[int, int]
    udp: asyncio.DatagramTransport
    tcp: asyncio.base_events.Server

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def _open(ns: str) -> tuple[tuple[int, int], socket.socket, socket.socket]:
    """(the namespace's ident, a UDP and a listening TCP socket on 127.0.0.11:PORT in it)."""
    def make() -> tuple[tuple[int, int], socket.socket, socket.socket]:
        st = os.stat("/proc/thread-self/ns/net")
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind((ADDRESS, PORT))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((ADDRESS, PORT))
            tcp.listen(64)
            udp.setblocking(False)
            tcp.setblocking(False)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        return (st.st_dev, st.st_ino), udp, tcp
    return netns.run_in(ns, make)


def upstreams(path: str = RESOLV_CONF) -> list[str]:
    """The nameservers of `path` that are not loopback addresses (or systemd-resolved's
    upstream list when only loopback ones are there)."""
    def read(p: str) -> list[str]:
        r = dns.resolver.Resolver(configure=False)
        try:
            r.read_resolv_conf(p)
        except (OSError, dns.resolver.NoResolverConfiguration):
            return []
        return [str(s) for s in r.nameservers]
    found = read(path)
    out = [s for s in found if not ipaddress.ip_address(s).is_loopback]
    if found and not out and os.path.exists(SYSTEMD_RESOLV):
        out = [s for s in read(SYSTEMD_RESOLV) if not ipaddress.ip_address(s).is_loopback]
    return out


class Resolver:
    """One agent's DNS: answers from `cache` (read at query time) for the containers
    of host `host`; `forward`: other names go to `servers()` (default: `upstreams()`)."""

    def __init__(self, cache: StateCache, host: str, *, forward: bool,
                 servers: Callable[[], list[str]] = upstreams, upstream_port: int = 53) -> None:
        self.cache, self.host, self.forward = cache, host, forward
        self._servers, self._port = servers, upstream_port
        self._names: Names | None = None
        self._listeners: dict[str, _Listener] = {}
        self._failed: dict[str, str] = {}   # namespace -> why its listener could not open (logged once)
        self._forwards = 0
        self._tasks: set[asyncio.Future[None]] = set()   # forwarded UDP questions in flight

    # --- answers --------------------------------------------------------------------
    def names(self) -> Names:
        """The answers' index, rebuilt when the cache moved to another revision."""
        c = self.cache
        if self._names is None or self._names.revision != c.revision:
            self._names = Names.of(c.endpoints.values(), c.networks, host=self.host, revision=c.revision,
                                   services=c.services.values())
        return self._names

    def answer(self, data: bytes, asker: str) -> tuple[dns.message.Message | None, dns.message.Message | None]:
        """(the query, its response); the response None when it is to be forwarded, the
        query None when `data` is no DNS message (no answer)."""
        try:
            query = dns.message.from_wire(data)
        except dns.message.ShortHeader:
            return None, None
        except dns.exception.DNSException:
            if len(data) < 12:
                return None, None
            bad = dns.message.Message(id=int.from_bytes(data[:2], "big"))
            bad.flags = dns.flags.QR
            bad.set_rcode(dns.rcode.FORMERR)
            return bad, bad
        return query, respond(query, asker, self.names(), forward=self.forward)

    async def forwarded(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message:
        """The upstream's response to `query` (from the agent's namespace), or SERVFAIL."""
        if self._forwards >= FORWARDS_MAX:
            return error(query, dns.rcode.SERVFAIL, forward=True)
        self._forwards += 1
        try:
            for server in self._servers():
                try:
                    if tcp:
                        return await dns.asyncquery.tcp(query, server, port=self._port, timeout=FORWARD_TIMEOUT)
                    return await dns.asyncquery.udp(query, server, port=self._port, timeout=FORWARD_TIMEOUT,
                                                    ignore_trailing=True)
                except (dns.exception.DNSException, OSError) as e:
                    log.info("dns: upstream %s: %s", server, e)
            return error(query, dns.rcode.SERVFAIL, forward=True)
        finally:
            self._forwards -= 1

    # --- listeners ------------------------------------------------------------------
    async def sync(self, wanted: dict[str, str], *, runtime: Mapping[str, Sequence[Endpoint]] | None = None) -> None:
        """Listen in exactly the namespaces of `wanted` (namespace -> container) and of
        `runtime` (a runtime's namespace, by its path -> the endpoints it holds)."""
        runtime = runtime or {}
        wanted = {**wanted, **{ns: eps[0].name for ns, eps in runtime.items()}}
        for ns in [ns for ns in self._listeners if ns not in wanted]:
            self._listeners.pop(ns).close()
        todo = []
        for ns, container in wanted.items():
            cur = self._listeners.get(ns)
            if cur is not None and cur.container == container and netns.ident(ns) == cur.ident:
                continue
            if cur is not None:  # deleted and made again: the old sockets listen in a dead namespace
                self._listeners.pop(ns).close()
            todo.append(ns)
        if not todo:
            return
        loop = asyncio.get_running_loop()
        opened = await loop.run_in_executor(None, _open_all, todo, runtime)
        for ns, got in opened.items():
            if isinstance(got, str):
                if self._failed.get(ns) != got:
                    log.warning("dns: no listener in %s yet: %s", ns, got)
                self._failed[ns] = got
                continue
            self._failed.pop(ns, None)
            ident, udp, tcp = got
            container = wanted[ns]
            transport, _ = await loop.create_datagram_endpoint(lambda c=container: _Udp(self, c), sock=udp)
            server = await asyncio.start_server(lambda r, w, c=container: self._tcp(r, w, c), sock=tcp)
            self._listeners[ns] = _Listener(container, ident, transport, server)  # type: ignore[arg-type]

    def close(self) -> None:
        for lst in self._listeners.values():
            lst.close()
        self._listeners.clear()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, asker: str) -> None:
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
                query, response = self.answer(data, asker)
                if query is None:
                    return
                if response is None:
                    response = await self.forwarded(query, tcp=True)
                out = response.to_wire()
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def _open_all(names: list[str], runtime: Mapping[str, Sequence[Endpoint]]) -> dict[str, Any]:
    """Each namespace's listeners, or why not; a runtime's through its pin (opened once,
    checked to hold its endpoints; the sockets keep it, the pin is closed)."""
    out: dict[str, Any] = {}
    for ns in names:
        try:
            if ns not in runtime:
                out[ns] = _open(ns)
                continue
            pinned = runtime_ns.pin(runtime[ns], read=netlink_handoff.view)
            try:
                out[ns] = _open(pinned.path)
            finally:
                pinned.close()
        except OSError as e:
            out[ns] = str(e)
        except OpFailed as e:
            out[ns] = e.message
    return out


def udp_wire(query: dns.message.Message, response: dns.message.Message) -> bytes:
    """`response` for a UDP client: at most the size it offered (512 without EDNS),
    else an empty one with TC set (the client asks again over TCP)."""
    limit = max(512, query.payload) if query.edns >= 0 else 512
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        short = dns.message.make_response(query)
        short.flags |= dns.flags.TC | (response.flags & (dns.flags.AA | dns.flags.RA))
        short.set_rcode(response.rcode())
        return short.to_wire(max_size=limit)


class _Udp(asyncio.DatagramProtocol):
    """The UDP listener of one container: answered inline; forwarded ones in a task."""

    def __init__(self, resolver: Resolver, asker: str) -> None:
        self.resolver, self.asker = resolver, asker
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query, response = self.resolver.answer(data, self.asker)
        if query is None or self.transport is None:
            return
        if response is not None:
            self.transport.sendto(udp_wire(query, response), addr)
        else:
            task = asyncio.ensure_future(self._forward(query, addr))
            self.resolver._tasks.add(task)
            task.add_done_callback(self.resolver._tasks.discard)

    async def _forward(self, query: dns.message.Message, addr: tuple[str, int]) -> None:
        response = await self.resolver.forwarded(query, tcp=False)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(udp_wire(query, response), addr)
