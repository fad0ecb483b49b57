"""VM hosts in a lab: what one costs and how its overlay performs (issue 16).

A lab `vxbenchvml` of two namespace hosts (h1, h2) and one VM host (h3), a container on
each. Measured:

- `up` until converged (the VM's first boot included), and per crash/heal cycle
  (`host-crash h3`, then its heal, `boots` times): seconds from the heal's start until
  the guest's channel answered and eth0 was configured, until the guest's agent has
  registered (its status file), and until h1 has h3's FDB entries again;
- memory per VM host: QEMU's RSS on this machine, the guest's own MemTotal/MemAvailable,
  and the agent's RSS inside the guest;
- the overlay, namespace host to namespace host (c1 -> c2) against namespace host to VM
  host (c1 -> c3): ping RTT (from c1, this machine's kernel) and TCP throughput (iperf3
  through the agents' ops channel: its server in the destination container).

Which accelerator (KVM or TCG) and why is in the result, from the VM's boot record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab import hostops
from vxlab.bench import summary
from vxlab.lab import vmhost
from vxlab.lab.lab import Lab
from vxlab.lab.observe import time_until, vtep_entries
from vxlab.lab.topology import parse

NAME = "vxbenchvml"
TOPO = """name: vxbenchvml
hosts: [h1, h2, {name: h3, vm: {cpus: 1, memory: 768M}}]
networks: [{name: blue, subnet: 10.81.0.0/24}]
containers:
  - {name: c1, host: h1, networks: [{name: blue, ip: 10.81.0.11}]}
  - {name: c2, host: h2, networks: [{name: blue, ip: 10.81.0.12}]}
  - {name: c3, host: h3, networks: [{name: blue, ip: 10.81.0.13}]}
"""
IP = {"c1": "10.81.0.11", "c2": "10.81.0.12", "c3": "10.81.0.13"}


def kib(text: str, key: str) -> float | None:
    """`key:  N kB` of a /proc status or meminfo text, in MiB (pure)."""
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return round(int(found.group(1)) / 1024, 1) if found else None


def _registered(lab: Lab, host: str) -> bool:
    status, proc = lab.agent_status(host), lab.processes().get(f"agent/{host}")
    return bool(proc and status.registered and status.pid == proc.pid)


def cycle(lab: Lab) -> dict[str, float | None]:
    """One host-crash of h3 and its heal, timed from the heal's start."""
    f = lab.add_fault("host-crash", host="h3")
    gone = time_until(lambda: not any(vtep_entries(lab, "h3").values()), timeout=lab.lease_ttl + 30)
    t0 = time.monotonic()
    lab.heal(f.id)
    healed = time.monotonic() - t0
    registered = time_until(lambda: _registered(lab, "h3"), timeout=180, interval=0.05)
    programmed = time_until(lambda: vtep_entries(lab, "h3")["h1"] > 0, timeout=60, interval=0.05)
    return {"purged_after_crash_s": gone, "boot_and_agent_started_s": round(healed, 2),
            "agent_registered_s": None if registered is None else round(healed + registered, 2),
            "peer_programmed_s": None if registered is None or programmed is None
            else round(healed + registered + programmed, 2)}


def memory(lab: Lab) -> dict[str, Any]:
    guest = vmhost.machine(lab.state.dir, "h3")
    agent = lab.processes()["agent/h3"]
    qemu = lab.processes()["vm/h3"]
    status = Path(f"/proc/{qemu.pid}/status").read_text()
    meminfo = guest.run("cat /proc/meminfo").stdout
    agent_status = guest.run(f"cat /proc/{agent.pid}/status").stdout
    return {"qemu_rss_mib": kib(status, "VmRSS"), "guest_total_mib": kib(meminfo, "MemTotal"),
            "guest_available_mib": kib(meminfo, "MemAvailable"), "guest_agent_rss_mib": kib(agent_status, "VmRSS")}


def ping(lab: Lab, src: str, dst: str, count: int) -> dict[str, Any]:
    lab.exec(src, "ping", "-n", "-q", "-c", "3", "-W", "5", IP[dst])  # neighbours resolved, caches warm
    out = lab.exec(src, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "5", IP[dst]).stdout
    return summary.dist([float(x) for x in re.findall(r"time=([\d.]+) ms", out)], digits=3)


def tcp(lab: Lab, src: str, dst: str, seconds: float) -> float | None:
    hosts = {"c1": "h1", "c2": "h2", "c3": "h3"}

    async def go(c: Any) -> dict[str, Any]:
        return await hostops.iperf(c, src_host=hosts[src], src=src, dst_host=hosts[dst], dst=dst, ip=IP[dst],
                                   seconds=seconds)
    report = lab.call(go)
    bps = report.get("end", {}).get("sum_received", {}).get("bits_per_second")
    return round(bps / 1e6, 1) if bps else None


def run(*, boots: int = 3, pings: int = 50, seconds: float = 3.0,
        progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    lab = Lab(NAME)
    lab.down()
    try:
        progress("vm lab: up (two namespace hosts, one VM host)")
        t0 = time.monotonic()
        lab.up(parse(TOPO))
        out: dict[str, Any] = {"up_s": round(time.monotonic() - t0, 2), "vm": vmhost.accel(lab.state.dir, "h3")}
        out["memory"] = memory(lab)
        progress("vm lab: overlay ping and TCP")
        out["ping_ms"] = {"ns_to_ns": ping(lab, "c1", "c2", pings), "ns_to_vm": ping(lab, "c1", "c3", pings)}
        out["tcp_mbit_s"] = {"ns_to_ns": tcp(lab, "c1", "c2", seconds), "ns_to_vm": tcp(lab, "c1", "c3", seconds),
                             "vm_to_ns": tcp(lab, "c3", "c1", seconds)}
        cycles = []
        for i in range(boots):
            progress(f"vm lab: host-crash of the VM and its heal {i + 1}/{boots}")
            cycles.append(cycle(lab))
        out["heal"] = {k: summary.dist([c[k] for c in cycles if c[k] is not None], digits=2)
                       for k in ("boot_and_agent_started_s", "agent_registered_s", "peer_programmed_s",
                                 "purged_after_crash_s")}
        out["heal_runs"] = cycles
        return out
    finally:
        lab.down()


