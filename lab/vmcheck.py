"""Whether this machine could run VM hosts well: KVM for a stock guest kernel, QEMU's 9p.

`/dev/kvm` existing proves little: a PVM-only KVM (the `kvm_pvm` module, no `kvm_intel`
or `kvm_amd`) opens fine, but a stock kernel hangs under it. So KVM is what the probe VM
hosts themselves use says (lab/vmaccel.py: boot the cached guest kernel under KVM with
our init, bounded in time, the verdict cached per kernel, QEMU and host kernel): doctor
and `up` can never disagree. Without QEMU or a cached guest kernel (`./vx setup --vm`
fetches one) the answer is "untested", with the reason and what /sys/module says serves
/dev/kvm.
"""

from __future__ import annotations

from collections.abc import Callable

from vxlab.lab import vmaccel
from vxlab.lab.kernelcheck import Found
from vxlab.lab.sysprobe import System

QEMU = vmaccel.QEMU
Probe = Callable[[], "vmaccel.Accel | None"]  # the accelerator VM hosts would get; None: no guest kernel


def _backend(system: System) -> str:
    mods = [m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if system.exists(f"/sys/module/{m}")]
    if mods == ["kvm_pvm"]:
        return "/dev/kvm is kvm_pvm only (stock kernels hang under PVM)"
    return f"/dev/kvm is {', '.join(mods)}" if mods else "no KVM module in /sys/module"


def vm_probe() -> vmaccel.Accel | None:
    """The verdict of VM hosts' own KVM probe on the newest cached guest kernel."""
    from vxlab.lab import vminitrd, vmkernel

    kernels = vmkernel.cached()
    if not kernels:
        return None
    kernel = kernels[0]
    return vmaccel.cached_probe(kernel, vminitrd.ensure(kernel.modules, kernel.home))


def kvm(system: System, *, probe: Probe = vm_probe) -> Found:
    if not system.exists("/dev/kvm"):
        return Found("absent", "no /dev/kvm")
    backend = _backend(system)
    if system.which(QEMU) is None:
        return Found("untested", f"{QEMU} missing, so no test boot; {backend}")
    try:
        accel = probe()
    except (OSError, RuntimeError, ValueError) as e:
        return Found("error", f"the KVM probe failed: {e}; {backend}")
    if accel is None:
        return Found("untested", f"no guest kernel to test-boot (./vx setup --vm fetches one); {backend}")
    if accel.name == "kvm":
        return Found("ok", accel.reason)
    return Found("absent", f"{accel.reason}; {backend}")


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
