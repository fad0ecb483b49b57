"""Probes for experiments and fault tests: timed ICMP echoes and TCP throughput.

`Pinger` and `Sample` (raw ICMP sockets inside a container's namespace) live in the
shared core, vxlab.icmp, which the agents' ops channel uses too; they are re-exported
here for the lab's callers.

`Throughput` runs iperf3 between two containers and yields one sample per interval.
Local to this machine's namespaces: used by the integration tests and bench/ only
(deadhost, firstreply, peer, vmlab); experiments probe through the agents (vxlab.lab.expsite).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass

from vxlab.icmp import Pinger, Sample, echo_request, socket_in_netns

__all__ = ["Pinger", "Rate", "Sample", "Throughput", "echo_request", "measure_tcp", "socket_in_netns"]


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
