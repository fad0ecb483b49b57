"""Fast reads on a plain NETLINK_ROUTE socket: neighbour-table dumps (FDB and ARP),
single neighbour/FDB lookups and name -> ifindex lookups.

pyroute2 decodes every message into a tree of NLA objects: about 110 µs per FDB or
neighbour entry and 1.5 ms per link; the agent dumps thousands of entries every resync
and looks up one per add/del. This module sends those requests itself and decodes only
the fixed headers and the attributes it needs (NDA_DST, NDA_LLADDR), 10-50 times faster.
Writes stay with pyroute2.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30
IFLA_IFNAME = 3
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NDA_DST = 1
NDA_LLADDR = 2
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02

_NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")      # family, ifindex, state, flags, type
_RTA = struct.Struct("=HH")               # len, type
_IFINFOMSG = struct.Struct("=BxHiII")     # family, type, index, flags, change
_BUFSIZE = 1 << 18
_seq = itertools.count(0x5A000000)


class RawNeigh(NamedTuple):
    family: int
    ifindex: int
    state: int
    flags: int
    dst: str        # "" when absent
    lladdr: str     # lower-case "aa:bb:..", "" when absent


def _mac(data: bytes) -> str:
    return data.hex(":")


def _ip(data: bytes) -> str:
    if len(data) == 4:
        return socket.inet_ntop(socket.AF_INET, data)
    if len(data) == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    return ""


def _attrs(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    while pos + _RTA.size <= end:
        rlen, rtype = _RTA.unpack_from(buf, pos)
        if rlen < _RTA.size:
            return
        yield rtype & 0x3FFF, bytes(buf[pos + _RTA.size:pos + rlen])
        pos += (rlen + 3) & ~3


def _neigh(buf: memoryview, off: int, length: int) -> RawNeigh:
    body = off + _NLMSGHDR.size
    family, ifindex, state, flags, _t = _NDMSG.unpack_from(buf, body)
    dst = lladdr = ""
    for rtype, data in _attrs(buf, body + _NDMSG.size, off + length):
        if rtype == NDA_DST:
            dst = _ip(data)
        elif rtype == NDA_LLADDR:
            lladdr = _mac(data)
    return RawNeigh(family, ifindex, state, flags, dst, lladdr)


def _rta(rtype: int, data: bytes) -> bytes:
    raw = _RTA.pack(_RTA.size + len(data), rtype) + data
    return raw + b"\0" * (-len(raw) % 4)


def _roundtrip(sock: socket.socket, mtype: int, flags: int, body: bytes,
               on_msg: Callable[[memoryview, int, int, int], None]) -> bool:
    """Send one request and feed every reply message (type, offset, length) of it to
    `on_msg` until the reply ends; returns True when a dump was interrupted (NLM_F_DUMP_INTR)."""
    seq = next(_seq) & 0xFFFFFFFF
    sock.sendto(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, NLM_F_REQUEST | flags, seq, 0) + body, (0, 0))
    buf = bytearray(_BUFSIZE if flags & NLM_F_DUMP else 1 << 16)
    view = memoryview(buf)
    intr = False
    while True:
        size = sock.recv_into(buf)
        off = 0
        while off + _NLMSGHDR.size <= size:
            length, rtype, rflags, rseq, _pid = _NLMSGHDR.unpack_from(view, off)
            if length < _NLMSGHDR.size or off + length > size:
                raise OSError(0, "truncated netlink message")
            if rseq == seq:
                intr |= bool(rflags & NLM_F_DUMP_INTR)
                if rtype == NLMSG_DONE:
                    return intr
                if rtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", view, off + _NLMSGHDR.size)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return intr
                on_msg(view, rtype, off, length)
                if not flags & NLM_F_DUMP:
                    return intr
            off += (length + 3) & ~3


def dump_neigh(sock: socket.socket, family: int, *, retries: int = 5) -> list[RawNeigh]:
    """All neighbour entries of `family` (AF_BRIDGE: the FDBs; AF_INET: ARP) in the
    socket's namespace. A dump interrupted by a concurrent change is repeated."""
    out: list[RawNeigh] = []

    def collect(buf: memoryview, rtype: int, off: int, length: int) -> None:
        if rtype == RTM_NEWNEIGH:
            out.append(_neigh(buf, off, length))

    for _attempt in range(retries):
        out.clear()
        if not _roundtrip(sock, RTM_GETNEIGH, NLM_F_DUMP, _NDMSG.pack(family, 0, 0, 0, 0), collect):
            return out
    raise OSError(0, f"neighbour dump interrupted {retries} times in a row")


def get_neigh(sock: socket.socket, *, family: int, ifindex: int, dst: str = "", lladdr: str = "",
              flags: int = 0) -> RawNeigh | None:
    """One entry: an ARP entry by (ifindex, dst), or an FDB entry (family AF_BRIDGE,
    flags NTF_SELF) by (ifindex, lladdr); None when there is none."""
    body = _NDMSG.pack(family, ifindex, 0, flags, 0)
    if dst:
        body += _rta(NDA_DST, socket.inet_pton(socket.AF_INET6 if ":" in dst else socket.AF_INET, dst))
    if lladdr:
        body += _rta(NDA_LLADDR, bytes.fromhex(lladdr.replace(":", "")))
    found: list[RawNeigh] = []
    try:
        _roundtrip(sock, RTM_GETNEIGH, 0, body,
                   lambda buf, rtype, off, length: found.append(_neigh(buf, off, length)))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENODEV):
            return None
        raise
    return found[0] if found else None


def link_index(sock: socket.socket, name: str) -> int:
    """The ifindex of link `name`, 0 when there is none (RTM_GETLINK by IFLA_IFNAME,
    decoding only the ifinfomsg header: pyroute2 takes ~1.5 ms to decode the reply)."""
    found: list[int] = []

    def index(buf: memoryview, rtype: int, off: int, length: int) -> None:
        if rtype == RTM_NEWLINK:
            found.append(_IFINFOMSG.unpack_from(buf, off + _NLMSGHDR.size)[2])

    body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _rta(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS)) + \
        _rta(IFLA_IFNAME, name.encode() + b"\0")
    try:
        _roundtrip(sock, RTM_GETLINK, 0, body, index)
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENOENT):
            return 0
        raise
    return found[0] if found else 0


RTM_DELNEIGH = 29
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
_BATCH = 256  # messages per sendmsg; ACKs are read before the next batch


def neigh_request(*, delete: bool, family: int, ifindex: int, state: int, flags: int,
                  dst: str, lladdr: str, seq: int) -> bytes:
    """One RTM_NEWNEIGH (replace) or RTM_DELNEIGH message: FDB entries are AF_BRIDGE with
    NTF_SELF (NDA_LLADDR = MAC, NDA_DST = VTEP), neighbours AF_INET (NDA_DST = IP)."""
    body = _NDMSG.pack(family, ifindex, state, flags, 0)
    if dst:
        body += _rta(NDA_DST, socket.inet_aton(dst))
    if lladdr:
        body += _rta(NDA_LLADDR, bytes.fromhex(lladdr.replace(":", "")))
    mtype = RTM_DELNEIGH if delete else RTM_NEWNEIGH
    nlflags = NLM_F_REQUEST | NLM_F_ACK | (0 if delete else NLM_F_CREATE | NLM_F_REPLACE)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, nlflags, seq, 0) + body


def batch(sock: socket.socket, requests: list[Callable[[int], bytes]]) -> list[int]:
    """Send many requests, `_BATCH` per sendmsg, without waiting between them, and collect
    every ACK: returns the errno of each request (0 = done). One system call carries
    hundreds of FDB or neighbour entries, where one request each costs a round trip."""
    errors: list[int] = []
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    for start in range(0, len(requests), _BATCH):
        chunk = requests[start:start + _BATCH]
        seqs = [next(_seq) & 0xFFFFFFFF for _ in chunk]
        sock.sendto(b"".join(make(seq) for make, seq in zip(chunk, seqs, strict=True)), (0, 0))
        pending = {seq: i for i, seq in enumerate(seqs)}
        result = [0] * len(chunk)
        while pending:
            size = sock.recv_into(buf)
            off = 0
            while off + _NLMSGHDR.size <= size:
                length, rtype, _flags, rseq, _pid = _NLMSGHDR.unpack_from(view, off)
                if rtype == NLMSG_ERROR and rseq in pending:
                    (code,) = struct.unpack_from("=i", view, off + _NLMSGHDR.size)
                    result[pending.pop(rseq)] = -code
                off += (length + 3) & ~3
        errors += result
    return errors
