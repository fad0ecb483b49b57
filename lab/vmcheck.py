"""Whether this machine could run VM hosts well: KVM for a stock guest kernel, QEMU's 9p.

`/dev/kvm` existing proves little: a PVM-only KVM (the `kvm_pvm` module, no `kvm_intel`
or `kvm_amd`) opens fine, but a stock kernel hangs under it. So KVM is tested by booting
a stock kernel: QEMU with `-enable-kvm` (its default CPU model; `-cpu host` fails early on
PVM), no disk, `panic=-1`; a kernel that gets as far as failing to mount its root went
through the whole early boot. The boot is
bounded by `BOOT_TIMEOUT` (QEMU is killed), so a hanging guest cannot hang the caller.
Without QEMU or a guest kernel (`$VXLAB_GUEST_KERNEL`, else the newest /boot/vmlinuz-*)
the answer is "untested", with the reason and what /sys/module says serves /dev/kvm.
"""

from __future__ import annotations

import glob
import os

from vxlab.lab.kernelcheck import Found
from vxlab.lab.sysprobe import System

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 8.0  # TCG boots the same kernel this far in ~4 s here; KVM in well under that
_BOOTED = ("VFS: Unable to mount root", "Kernel panic", "Run /init", "Freeing unused kernel")


def _backend(system: System) -> str:
    mods = [m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if system.exists(f"/sys/module/{m}")]
    if mods == ["kvm_pvm"]:
        return "/dev/kvm is kvm_pvm only (stock kernels hang under PVM)"
    return f"/dev/kvm is {', '.join(mods)}" if mods else "no KVM module in /sys/module"


def guest_kernel() -> str | None:
    """A stock kernel to test-boot: $VXLAB_GUEST_KERNEL, else the newest /boot/vmlinuz-*."""
    if env := os.environ.get("VXLAB_GUEST_KERNEL"):
        return env
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    return found[-1] if found else None


def kvm(system: System, *, kernel: str | None = None) -> Found:
    if not system.exists("/dev/kvm"):
        return Found("absent", "no /dev/kvm")
    backend = _backend(system)
    if system.which(QEMU) is None:
        return Found("untested", f"{QEMU} missing, so no test boot; {backend}")
    kernel = kernel or guest_kernel()
    if kernel is None:
        return Found("untested", f"no guest kernel to test-boot (set VXLAB_GUEST_KERNEL); {backend}")
    ran = system.run([QEMU, "-enable-kvm", "-m", "256", "-smp", "1", "-nodefaults",
                      "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", kernel,
                      "-append", "console=ttyS0 panic=-1 root=/dev/vxdoctor-none"], timeout=BOOT_TIMEOUT)
    if any(mark in ran.out for mark in _BOOTED):
        return Found("ok", f"booted {os.path.basename(kernel)} under KVM to its root mount")
    if ran.rc is None:
        return Found("absent", f"{os.path.basename(kernel)} did not boot under KVM within {BOOT_TIMEOUT:g}s "
                               f"(hung; QEMU killed); {backend}")
    return Found("absent", f"{QEMU} -enable-kvm: {ran.why()}; {backend}")


def virtfs(system: System) -> Found:
    """QEMU's virtio-9p device: a VM host's root filesystem is this machine's, over 9p."""
    if system.which(QEMU) is None:
        return Found("untested", f"{QEMU} missing")
    ran = system.run([QEMU, "-device", "help"], timeout=10)
    if "virtio-9p" in ran.out + ran.err:
        return Found("ok", "QEMU has virtio-9p-pci")
    if ran.rc is None:
        return Found("error", ran.why())
    return Found("absent", "QEMU lists no virtio-9p device (built without virtfs)")
