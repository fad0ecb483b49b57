"""A DNS upstream for tests: UDP and TCP on one port of 127.0.0.1 (in the namespace of
whoever starts it), answering every question with an A record 192.0.2.7 and keeping
the names it was asked."""

from __future__ import annotations

import asyncio
import socket

import dns.message
import dns.rrset


class Upstream:
    """A DNS server on 127.0.0.1 (UDP and TCP, one port) that answers every A question
    with 192.0.2.7."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen()
        self.seen: list[str] = []

    def answer(self, data: bytes) -> bytes:
        q = dns.message.from_wire(data)
        self.seen.append(q.question[0].name.to_text())
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.7"))
        return r.to_wire()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        up = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):  # type: ignore[no-untyped-def]
                self.t = transport

            def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
                self.t.sendto(up.answer(data), addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = int.from_bytes(await reader.readexactly(2), "big")
            out = self.answer(await reader.readexactly(n))
            writer.write(len(out).to_bytes(2, "big") + out)
            await writer.drain()
            writer.close()

        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self._udp, _ = await loop.create_datagram_endpoint(Udp, sock=self.udp)
        self._tcp = await asyncio.start_server(tcp, sock=self.tcp)

    def close(self) -> None:
        self._udp.close()
        self._tcp.close()
