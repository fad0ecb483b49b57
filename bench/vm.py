"""VM host benchmark: what a VM host costs here (issue 16).

One switch namespace `vxbenchvmsw` and one VM host on it (lab/vm.py), booted `boots`
times (killed in between, as host-crash does): seconds from QEMU's start until the
command channel answers and until eth0 is configured; the KVM probe's verdict, its
reason and what the probe cost; QEMU's RSS right after boot and after the guest
imported the agent's modules; the guest's own view of its memory; Python in the
guest (bare start-up, and importing grpc, pyroute2, aetcd and vxlab.agent.runner, cold
and again warm) against the same on this machine; ping RTT switch -> guest and guest ->
switch. Then VM hosts in a lab (bench/vmlab.py, under `lab`): boot until the guest's
agent registered, memory per VM host, overlay ping and TCP namespace host <-> VM host.

`python -m vxlab.bench.vm [OUT_DIR]` or `vxlab bench vm` (default bench/results) writes vm.json.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab.bench import machine, summary
from vxlab.lab import hostns, vm, vmaccel, vminitrd, vmkernel

SWITCH = "vxbenchvmsw"
MARK = "vxlab:bench:vm"
SUBNET = "172.30.98"
AGENT_IMPORTS = "grpc, pyroute2, aetcd, vxlab.agent.runner"
TIMED_IMPORT = ("import time; t = time.monotonic(); import {mods}; "
                "print(round(time.monotonic() - t, 3))")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def rtts(out: str) -> list[float]:
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def _python(cmd: list[str], *, guest: vm.Vm | None) -> float | None:
    """Seconds a Python snippet reports (or its wall time), in the guest or here."""
    began = time.monotonic()
    if guest is None:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        rc, out = proc.returncode, proc.stdout
    else:
        rc, out, _ = guest.run(cmd, timeout=600)
    if rc != 0:
        return None
    return float(out.strip()) if out.strip() else round(time.monotonic() - began, 3)


def python_figures(guest: vm.Vm) -> dict[str, Any]:
    py = sys.executable
    timed = [py, "-c", TIMED_IMPORT.format(mods=AGENT_IMPORTS)]
    bare_here, bare_guest = _python([py, "-c", "pass"], guest=None), _python([py, "-c", "pass"], guest=guest)
    cold, warm, here = _python(timed, guest=guest), _python(timed, guest=guest), _python(timed, guest=None)
    return {"imports": AGENT_IMPORTS, "startup_s": {"guest": bare_guest, "here": bare_here},
            "import_s": {"guest_cold": cold, "guest_warm": warm, "here": here},
            "slowdown": summary.ratio(warm, here, digits=1)}


def ping_figures(guest: vm.Vm, *, count: int) -> dict[str, Any]:
    out = subprocess.run(["ip", "netns", "exec", SWITCH, "ping", "-n", "-c", str(count),
                          "-i", "0.2", f"{SUBNET}.50"], capture_output=True, text=True).stdout
    back = guest.run(f"ping -n -c {count} -i 0.2 {SUBNET}.1", timeout=60).stdout
    return {"switch_to_guest_ms": summary.dist(rtts(out), digits=3),
            "guest_to_switch_ms": summary.dist(rtts(back), digits=3)}


def run(out_dir: Path, *, boots: int = 3, pings: int = 20, memory_mb: int = 768,
        progress: Callable[[str], None] = lambda s: None, write: bool = True, lab: bool = True) -> dict[str, Any]:
    missing = vm.available()
    if missing:
        raise RuntimeError(missing)
    kernel = vmkernel.guest_kernel()
    initrd = vminitrd.ensure(kernel.modules, kernel.home)
    progress("vm: probing KVM (uncached)")
    began = time.monotonic()
    verdict = vmaccel.probe(kernel, initrd)
    probe_s = round(time.monotonic() - began, 2)
    hostns.delete_ns(SWITCH)
    hostns.create_switch(SWITCH, mark=MARK, outside=f"{SUBNET}.1/24")
    result: dict[str, Any] = {"machine": machine.describe(), "kernel": kernel.version,
                              "kvm_probe": {"verdict": verdict.name, "reason": verdict.reason, "seconds": probe_s},
                              "memory_mb": memory_mb, "cpus": 1, "nice": vm.VM_NICE}
    with tempfile.TemporaryDirectory(prefix="vxbenchvm-") as tmp:
        guest = vm.Vm(Path(tmp) / "run")
        config = vm.VmConfig(name="vmbench", spec=vm.VmSpec(memory_mb=memory_mb),
                             nic=vm.Nic(switch_ns=SWITCH, tap="vxbenchvmv", mark=MARK, address=f"{SUBNET}.50/24",
                                        gateway=f"{SUBNET}.1"))
        try:
            channel, configured = [], []
            for i in range(boots):
                progress(f"vm: boot {i + 1}/{boots}")
                guest.kill()
                boot = guest.start(config)
                channel.append(boot.channel_s)
                configured.append(boot.seconds)
            result["accel"] = {"name": boot.accel.name, "reason": boot.accel.reason}
            result["boot_s"] = {"channel_answers": summary.dist(channel, digits=2),
                                "network_configured": summary.dist(configured, digits=2)}
            pid = guest.pids()[0]
            result["qemu_rss_mib"] = {"after_boot": rss_mib(pid)}
            meminfo = guest.run("grep -E '^(MemTotal|MemAvailable):' /proc/meminfo").stdout.split()
            result["guest_meminfo_mib"] = {"total": round(int(meminfo[1]) / 1024, 1),
                                           "available": round(int(meminfo[4]) / 1024, 1)}
            progress("vm: Python in the guest")
            result["python"] = python_figures(guest)
            result["qemu_rss_mib"]["after_agent_imports"] = rss_mib(pid)
            progress("vm: ping")
            result["ping"] = ping_figures(guest, count=pings)
        finally:
            guest.cleanup()
            hostns.delete_ns(SWITCH)
    if lab:
        from vxlab.bench import vmlab

        result["lab"] = vmlab.run(boots=boots, progress=progress)
    if write:
        result["path"] = str(machine.write(out_dir, "vm", result))
    return result


if __name__ == "__main__":
    import json

    res = run(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results"), progress=lambda s: print(s, file=sys.stderr))
    print(json.dumps(res, indent=2))
