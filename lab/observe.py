"""Looking at the data plane from outside, for experiments and fault tests.

`vtep_entries(lab, host)` counts, on every *other* host, the FDB entries that send
frames to `host`'s VTEP (its underlay address): what peers purge when a host dies and
program again when it returns. `time_until(cond)` measures how long a condition takes. Local to this machine's
namespaces: the integration tests and bench/ use it; experiments ask the agents
(vxlab.lab.expwatch).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from vxlab.lab import hostns, vm, vmhost

if TYPE_CHECKING:
    from vxlab.lab.lab import Lab


def vtep_entries(lab: Lab, host: str) -> dict[str, int]:
    """peer host -> number of FDB entries (all its networks) pointing at `host`'s VTEP
    (a VM peer's, in its guest; none while its VM is down)."""
    ips = {h.name: h.underlay_ip for h in (lab.applied.hosts if lab.applied else ())}
    needle = f" dst {ips[host]} "
    vms = vmhost.vm_hosts(lab.applied)
    counts = {peer: 0 for peer in ips if peer != host}
    for ns in hostns.netns_list():
        for peer in counts:
            if peer not in vms and lab.layout.agent(peer).is_network_ns(ns):
                out = subprocess.run(["bridge", "-n", ns, "fdb", "show"], capture_output=True, text=True).stdout
                counts[peer] += sum(1 for line in out.splitlines() if needle in line + " ")
    for peer in (p for p in counts if p in vms):
        prefix = lab.layout.agent(peer).network_ns("")
        script = (f"for ns in $(ip netns list | cut -d' ' -f1); do case $ns in {prefix}*) bridge -n $ns fdb show;; "
                  "esac; done")
        try:
            out = vmhost.machine(lab.state.dir, peer).run(["/bin/sh", "-c", script], timeout=30).stdout
        except vm.ChannelError:
            continue  # its VM is down: no entries
        counts[peer] = sum(1 for line in out.splitlines() if needle in line + " ")
    return counts


def time_until(cond: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until `cond()` first held (polled every `interval`), None on timeout."""
    start = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)
