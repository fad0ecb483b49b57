"""Reachability probes from inside network namespaces: raw-socket ICMP echoes and TCP
connects, the one implementation the agent (ops channel), the lab and the tests share.

A socket stays in the namespace it was made in, so every socket here is made by a
short-lived thread that joined the namespace with setns(2) (`sockets_in_netns`); the
caller's own namespace never changes.

- `Pinger`: one echo every `interval` on a fixed schedule from one namespace to one
  address, replies matched by identifier, sequence and source; each echo becomes a
  `Sample` (send time on time.monotonic(), RTT or None when lost). One thread each.
- `reach(targets)`: a batch, all at once from one thread: one raw ICMP socket per
  namespace (one echo per target, a random identifier per socket, the target's index
  as sequence) and one non-blocking TCP socket per TCP target, all multiplexed with
  select() until every target answered or passed its timeout. 380 probes cost one
  thread and a few system calls each, not 380 `ping` processes.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vxlab import netns


@dataclass(frozen=True)
class Sample:
    t: float                # when the echo was sent (time.monotonic())
    rtt_ms: float | None    # None: lost


def sockets_in_netns(namespace: str, specs: Sequence[tuple[int, int, int]]) -> list[socket.socket]:
    """Sockets of (family, kind, proto) created inside `namespace` (a name under
    /run/netns or a path; "" = the caller's namespace), in one thread."""
    def make() -> list[socket.socket]:
        if namespace:
            netns.enter(namespace)
        made: list[socket.socket] = []
        try:
            for spec in specs:
                made.append(socket.socket(*spec))
        except BaseException:
            for s in made:
                s.close()
            raise
        return made
    return netns.in_thread(make)


def socket_in_netns(namespace: str, family: int, kind: int, proto: int) -> socket.socket:
    """A socket created inside `namespace` (a name under /run/netns or a path)."""
    return sockets_in_netns(namespace, [(family, kind, proto)])[0]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"vxlab-probe-0123456789abcdef") -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
    return struct.pack("!BBHHH", 8, 0, _checksum(head + payload), ident, seq & 0xFFFF) + payload


def echo_reply(data: bytes) -> tuple[int, int] | None:
    """(identifier, sequence) of an IPv4 packet holding an ICMP echo reply; None else."""
    ihl = (data[0] & 0x0F) * 4 if data else 0
    if len(data) < ihl + 8:
        return None
    kind, _, _, ident, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    return (ident, seq) if kind == 0 else None


def _icmp_socket(namespace: str) -> socket.socket:
    return socket_in_netns(namespace, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


class Pinger:
    """Ping `ip` from inside `namespace` every `interval` seconds until `stop()` (or
    `count` echoes, when given)."""

    def __init__(self, namespace: str, ip: str, *, interval: float = 0.1, timeout: float = 1.0,
                 count: int = 0) -> None:
        self.namespace, self.ip, self.interval, self.timeout = namespace, ip, interval, timeout
        self.count = count
        self._sock = _icmp_socket(namespace)
        self._ident = secrets.randbits(16)
        self._sent: list[float] = []          # index k: send time of echo k
        self._rtt: dict[int, float] = {}      # k -> RTT in ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ping-{namespace}-{ip}", daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def halt(self) -> None:
        """Stop sending; the thread ends `timeout` later by itself (waits for no one)."""
        self._stop.set()

    def stop(self) -> list[Sample]:
        """Stop sending, wait `timeout` for replies in flight, return every sample."""
        self._stop.set()
        self._thread.join()
        self._sock.close()
        return self.samples()

    @property
    def sent(self) -> int:
        return len(self._sent)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def samples(self, *, until: float | None = None) -> list[Sample]:
        """Samples so far; echoes younger than `timeout` are left out (not yet decided)."""
        horizon = (until if until is not None else time.monotonic()) - self.timeout
        return [Sample(t, self._rtt.get(k)) for k, t in enumerate(list(self._sent))
                if k in self._rtt or t <= horizon]

    def decided(self, start: int) -> list[Sample]:
        """Echoes `start`, `start`+1, … as far as each is decided (answered, or older
        than `timeout`, or the pinger is done): in order, for a caller that streams them."""
        horizon = time.monotonic() - self.timeout
        done = self.finished
        out = []
        for k, t in enumerate(list(self._sent)[start:], start):
            rtt = self._rtt.get(k)
            if rtt is None and t > horizon and not done:
                break
            out.append(Sample(t, rtt))
        return out

    def _run(self) -> None:
        start = time.monotonic()
        stop_at: float | None = None
        while True:
            now = time.monotonic()
            if self.count and len(self._sent) >= self.count:
                self._stop.set()
            if self._stop.is_set() and stop_at is None:
                stop_at = now + self.timeout
            if stop_at is not None and now >= stop_at:
                return
            nxt = start + len(self._sent) * self.interval
            if stop_at is None and now >= nxt:
                self._send(len(self._sent))
                continue
            wait = (stop_at if stop_at is not None else nxt) - now
            ready, _, _ = select.select([self._sock], [], [], max(0.0, min(wait, 0.05)))
            if ready:
                self._receive()

    def _send(self, k: int) -> None:
        self._sent.append(time.monotonic())
        try:
            self._sock.sendto(echo_request(self._ident, k), (self.ip, 0))
        except OSError:
            pass  # no route / unreachable: a lost probe, like ping's

    def _receive(self) -> None:
        now = time.monotonic()
        data, (src, _) = self._sock.recvfrom(2048)
        reply = echo_reply(data)
        if reply is None or src != self.ip or reply[0] != self._ident:
            return
        last = len(self._sent) - 1  # map the 16-bit sequence back to the echo it answers
        k = last - ((last - reply[1]) & 0xFFFF)
        if 0 <= k <= last and k not in self._rtt and now - self._sent[k] <= self.timeout:
            self._rtt[k] = (now - self._sent[k]) * 1000.0


# --- batches -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    namespace: str
    ip: str
    protocol: str = "icmp"   # or "tcp"
    port: int = 0
    timeout: float = 1.0


@dataclass(frozen=True)
class Reached:
    reached: bool
    rtt_ms: float = 0.0
    error: str = ""


def reach(targets: Sequence[Target], *, cancelled: Callable[[], bool] = lambda: False) -> list[Reached]:
    """Every target probed at once (see the module docstring); results in order. A
    namespace that cannot be entered fails its targets with the reason. `cancelled` is
    polled every 50 ms: when it says so, what is still open is abandoned."""
    if len(targets) > 0xFFFF:
        raise ValueError(f"{len(targets)} targets: at most 65535 in one batch (16-bit sequence numbers)")
    out: list[Reached | None] = [None] * len(targets)
    icmp: dict[str, socket.socket] = {}
    ident: dict[str, int] = {}
    tcp: dict[socket.socket, int] = {}
    sent: dict[int, float] = {}
    try:
        by_ns: dict[str, list[int]] = {}
        for i, t in enumerate(targets):
            by_ns.setdefault(t.namespace, []).append(i)
        for ns, idx in by_ns.items():
            kinds = [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)] * any(
                targets[i].protocol != "tcp" for i in idx)
            kinds += [(socket.AF_INET, socket.SOCK_STREAM, 0)] * sum(targets[i].protocol == "tcp" for i in idx)
            try:
                socks = sockets_in_netns(ns, kinds)
            except OSError as e:
                for i in idx:
                    out[i] = Reached(False, error=f"namespace {ns}: {e.strerror or e}")
                continue
            if kinds and kinds[0][1] == socket.SOCK_RAW:
                icmp[ns], ident[ns] = socks.pop(0), secrets.randbits(16)
            streams = iter(socks)
            for i in idx:
                t = targets[i]
                sent[i] = time.monotonic()
                if t.protocol == "tcp":
                    s = next(streams)
                    s.setblocking(False)
                    code = s.connect_ex((t.ip, t.port))
                    if code in (0, errno.EINPROGRESS):
                        tcp[s] = i
                    else:
                        out[i] = Reached(False, error=os.strerror(code))
                        s.close()
                else:
                    try:
                        icmp[ns].sendto(echo_request(ident[ns], i), (t.ip, 0))
                    except OSError as e:
                        out[i] = Reached(False, error=e.strerror or str(e))
        _collect(targets, out, icmp=icmp, ident=ident, tcp=tcp, sent=sent, cancelled=cancelled)
    finally:
        for s in [*icmp.values(), *tcp]:
            s.close()
    return [r or Reached(False, error="cancelled") for r in out]


def _collect(targets: Sequence[Target], out: list[Reached | None], *, icmp: dict[str, socket.socket],
             ident: dict[str, int], tcp: dict[socket.socket, int], sent: dict[int, float],
             cancelled: Callable[[], bool]) -> None:
    """Answers until every target has one or timed out."""
    ns_of = {s: ns for ns, s in icmp.items()}
    while not cancelled():
        now = time.monotonic()
        for i, r in enumerate(out):
            if r is None and now - sent.get(i, now) > targets[i].timeout:
                out[i] = Reached(False, error="timed out")
        for s in [s for s, i in tcp.items() if out[i] is not None]:
            del tcp[s]
            s.close()
        if all(r is not None for r in out):
            return
        pending = [sent[i] + targets[i].timeout for i, r in enumerate(out) if r is None]
        wait = max(0.0, min(min(pending) - now, 0.05))
        readable, writable, _ = select.select(list(icmp.values()), list(tcp), [], wait)
        now = time.monotonic()
        for s in readable:
            _echo_answers(s, ns_of[s], targets, out, ident=ident[ns_of[s]], sent=sent, now=now)
        for s in writable:
            i = tcp.pop(s)
            code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            out[i] = Reached(True, (now - sent[i]) * 1000.0) if code == 0 else Reached(False, error=os.strerror(code))
            s.close()


def _echo_answers(s: socket.socket, ns: str, targets: Sequence[Target], out: list[Reached | None], *,
                  ident: int, sent: dict[int, float], now: float) -> None:
    """Read every datagram waiting on `s`; fill in the targets they answer."""
    while True:
        try:
            data, (src, _) = s.recvfrom(2048, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        reply = echo_reply(data)
        if reply is None or reply[0] != ident:
            continue
        i = reply[1]
        if i < len(targets) and out[i] is None and targets[i].namespace == ns and targets[i].ip == src:
            out[i] = Reached(True, (now - sent[i]) * 1000.0)
