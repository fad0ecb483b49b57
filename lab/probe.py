"""Probes for experiments and fault tests: timed ICMP echoes and TCP throughput.

`Pinger` opens a raw ICMP socket *inside* a container's network namespace (the socket
is made by a short-lived thread that joined the namespace with setns(2); a socket stays
in the namespace it was made in), sends one echo request every `interval` on a fixed
schedule and matches replies by identifier, sequence and source. Each echo becomes a
`Sample`: when it was sent (time.monotonic()) and its RTT, or None when no reply came
within `timeout` (lost). Many pingers run side by side, one thread each.

`Throughput` runs iperf3 between two containers and yields one sample per interval.
"""

from __future__ import annotations

import json
import secrets
import select
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

from vxlab import netns


@dataclass(frozen=True)
class Sample:
    t: float                # when the echo was sent (time.monotonic())
    rtt_ms: float | None    # None: lost


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


class Pinger:
    """Ping `ip` from inside `namespace` every `interval` seconds until `stop()`."""

    def __init__(self, namespace: str, ip: str, *, interval: float = 0.1, timeout: float = 1.0) -> None:
        self.namespace, self.ip, self.interval, self.timeout = namespace, ip, interval, timeout
        self._sock = netns.socket_in(namespace, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._ident = secrets.randbits(16)
        self._sent: list[float] = []          # index k: send time of echo k
        self._rtt: dict[int, float] = {}      # k -> RTT in ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ping-{namespace}-{ip}", daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop sending, wait `timeout` for replies in flight, return every sample."""
        self._stop.set()
        self._thread.join()
        self._sock.close()
        return self.samples()

    def samples(self, *, until: float | None = None) -> list[Sample]:
        """Samples so far; echoes younger than `timeout` are left out (not yet decided)."""
        horizon = (until if until is not None else time.monotonic()) - self.timeout
        return [Sample(t, self._rtt.get(k)) for k, t in enumerate(list(self._sent))
                if k in self._rtt or t <= horizon]

    def _run(self) -> None:
        start = time.monotonic()
        stop_at: float | None = None
        while True:
            now = time.monotonic()
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
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 8 or src != self.ip:
            return
        kind, _, _, ident, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind != 0 or ident != self._ident:
            return
        last = len(self._sent) - 1  # map the 16-bit sequence back to the echo it answers
        k = last - ((last - seq) & 0xFFFF)
        if 0 <= k <= last and k not in self._rtt and now - self._sent[k] <= self.timeout:
            self._rtt[k] = (now - self._sent[k]) * 1000.0


@dataclass(frozen=True)
class Rate:
    t: float        # end of the interval (time.monotonic())
    mbit: float


class Throughput:
    """iperf3 TCP from `src_ns` to `dst_ip` (served in `dst_ns`) for `seconds`."""

    def __init__(self, src_ns: str, dst_ns: str, dst_ip: str, *, seconds: float, interval: float = 0.5,
                 port: int = 5201) -> None:
        self.src_ns, self.dst_ns, self.dst_ip = src_ns, dst_ns, dst_ip
        self.seconds, self.interval, self.port = seconds, interval, port
        self.rates: list[Rate] = []
        self.received_mbit = 0.0  # what the receiver got over the whole run
        self.error = ""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Throughput:
        self._thread.start()
        return self

    def join(self) -> list[Rate]:
        self._thread.join()
        return self.rates

    def _run(self) -> None:
        server = subprocess.Popen(["ip", "netns", "exec", self.dst_ns, "iperf3", "-s", "-1", "-p", str(self.port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            start = time.monotonic()
            out = subprocess.run(["ip", "netns", "exec", self.src_ns, "iperf3", "-c", self.dst_ip, "-p",
                                  str(self.port), "-t", str(self.seconds), "-i", str(self.interval), "-J"],
                                 capture_output=True, text=True, timeout=self.seconds + 30)
            report = json.loads(out.stdout or "{}")
            if report.get("error"):
                self.error = report["error"]
            self.received_mbit = report.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0) / 1e6
            for iv in report.get("intervals", []):
                s = iv["sum"]
                self.rates.append(Rate(start + s["end"], s["bits_per_second"] / 1e6))
        except (subprocess.TimeoutExpired, ValueError) as e:
            self.error = str(e)
        finally:
            server.kill()
            server.wait()


def measure_tcp(src_ns: str, dst_ns: str, dst_ip: str, *, seconds: float = 3.0) -> float:
    """TCP throughput the receiver measured, in Mbit/s (0.0 when iperf3 failed)."""
    t = Throughput(src_ns, dst_ns, dst_ip, seconds=seconds).start()
    t.join()
    return t.received_mbit
