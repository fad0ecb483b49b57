"""KVM or TCG for a VM host: use KVM only when a short boot proves the guest runs under it.

/dev/kvm existing is not enough: on a machine whose KVM is PVM-only (this one), a
stock kernel hangs under it (`-cpu host` fails on MSR 0x10a, without that feature it
hangs). So `probe()` boots the guest kernel with our initramfs and `vx.probe` on the
command line — the init prints "vxlab-init: probe ok" and powers off as soon as it
runs — under `-accel kvm` with each of PROBE_CPUS, and waits at most `timeout`
seconds a try for that line (QEMU is killed then: the caller never hangs). The verdict, with the reason, is
cached in the kernel cache (`kvm-probe.json`) per guest kernel, QEMU build and host
kernel, so only the first VM of a machine pays for it (about a second where KVM works;
here 8 s, for the try that hangs).

`VXLAB_VM_ACCEL=tcg|kvm` (or `accel=`) forces a choice; `kvm` without a working
/dev/kvm is then QEMU's error, in the VM's log.
"""

from __future__ import annotations

import json
import os
import tempfile
import platform
import select
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vxlab.lab import vmkernel

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT = 8.0  # a guest that works under KVM reaches its init in about a second
# `-cpu host` first; without arch-capabilities second (where KVM refuses that MSR).
PROBE_CPUS = ("host", "host,-arch-capabilities")
PROBE_OK = b"vxlab-init: probe ok"
TCG_CPU = "max"  # every feature TCG emulates: the host's binaries and wheels may want them


@dataclass(frozen=True)
class Accel:
    name: str    # "kvm" or "tcg"
    cpu: str     # QEMU's -cpu
    reason: str  # why this one (the probe's finding)

    def args(self) -> list[str]:
        return ["-accel", self.name, "-cpu", self.cpu]


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if not found:
        raise FileNotFoundError(f"{QEMU} is missing: apt-get install qemu-system-x86 (./vx setup --vm)")
    return found


def tcg(reason: str) -> Accel:
    return Accel("tcg", TCG_CPU, reason)


def choose(kernel: vmkernel.GuestKernel, initrd: Path, *, want: str = "") -> Accel:
    """The accelerator for `kernel`: forced by `want` / VXLAB_VM_ACCEL, else the probe's."""
    want = want or os.environ.get("VXLAB_VM_ACCEL", "auto")
    if want == "tcg":
        return tcg("TCG was asked for")
    if want == "kvm":
        return Accel("kvm", "host", "KVM was asked for")
    if want != "auto":
        raise ValueError(f"accel: expected auto, kvm or tcg, got {want!r}")
    return cached_probe(kernel, initrd)


def _key(kernel: vmkernel.GuestKernel) -> str:
    st = os.stat(qemu_binary())
    return f"{kernel.version}|{st.st_size}:{st.st_mtime_ns}|{platform.release()}"


def cached_probe(kernel: vmkernel.GuestKernel, initrd: Path) -> Accel:
    path = vmkernel.cache_root() / "kvm-probe.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    key = _key(kernel)
    if isinstance(known.get(key), dict):
        return Accel(**known[key])
    verdict = probe(kernel, initrd)
    known[key] = asdict(verdict)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")  # one per writer
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(known, indent=1) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return verdict


def probe(kernel: vmkernel.GuestKernel, initrd: Path, *, timeout: float = PROBE_TIMEOUT) -> Accel:
    """Boot `kernel` under KVM with each of PROBE_CPUS until its init answers (each try
    at most `timeout` s); TCG with every try's failure when none does."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return tcg("no usable /dev/kvm")
    failures = []
    for cpu in PROBE_CPUS:
        failure = boots(kernel, initrd, accel="kvm", cpu=cpu, timeout=timeout)
        if failure is None:
            return Accel("kvm", cpu, f"a {kernel.version} guest reached its init under KVM (-cpu {cpu})")
        failures.append(f"-cpu {cpu}: {failure}")
    return tcg("KVM cannot run a stock guest here (" + "; ".join(failures) + ")")


def boots(kernel: vmkernel.GuestKernel, initrd: Path, *, accel: str, cpu: str, timeout: float) -> str | None:
    """None when the guest's init answered under `accel`, else what went wrong."""
    args = ["nice", "-n", "19", qemu_binary(), "-accel", accel, "-cpu", cpu, "-m", "256M", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(vmkernel.boot_image(kernel)), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet vx.probe"]
    start = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    seen = b""
    try:
        while (left := start + timeout - time.monotonic()) > 0:
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:  # QEMU exited
                proc.wait()
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                return f"QEMU exited: {(err or ['no message'])[-1][-160:]}"
            seen += chunk
            if PROBE_OK in seen:
                return None
        return f"the guest did not reach its init within {timeout:g} s (it hangs)"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
