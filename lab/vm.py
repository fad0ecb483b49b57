"""VM hosts: a lab host that is a QEMU guest with a kernel, neighbour table and conntrack
of its own.

Why QEMU directly rather than virtme-ng: virtme-ng boots the same way (this
machine's root read-only over 9p, tmpfs overlays) but is built for running a command
in a throw-away guest. A lab host must be long-lived, started detached from the
process that asks for it, found and killed again after that process died, and must
load modules of a kernel that is not installed here; virtme-ng looks for them in this
machine's /lib/modules (so it needs files copied there) and drives its own console
protocol. Our init (vminitrd, ~50 lines of busybox sh) and QEMU command line (below)
are small, everything they do is visible here, and the only packages needed are
qemu-system-x86, busybox-static and kmod (no PyPI dependency).

A VM lives in a run directory (a lab's `vms/<host>/`, lab/vmhost.py) holding `vm.json` (its
configuration, written before anything is created, so `cleanup` finds the tap and the
process after a kill -9 of whoever started it), QEMU's `qemu.pid`, `qemu.log` (its own
errors) and `ctl.sock` (the command channel, see vmchan). QEMU's command line holds
the run directory, so `find_qemu` finds it by scanning /proc even without the pid file
(the lab's supervisor does the scanning and the killing, vxlab.lab.supervisor).

- Boot: `-kernel` from vmkernel (the uncompressed PVH vmlinux: 3 s less under TCG),
  `-initrd` from vminitrd, the root over 9p read-only,
  KVM only when vmaccel's probe proved it runs the guest, TCG otherwise; at nice 19 by
  default (a VM under TCG is a whole busy core, the lab's etcd and controller come first).
- Underlay NIC: a persistent tap `vx…` made in the switch namespace with the lab's
  marker as ifalias, enslaved to `vxsw`; QEMU runs in that namespace (nsenter --net)
  and attaches to it. The tap outlives QEMU, so a killed VM is a host whose cable is
  pulled, and it is plugged in again when the VM boots again.
- The guest gets its address, MTU and default route through the command channel
  (`modprobe virtio_net`, `ip …`) as soon as the channel answers; `start` returns then.
- The serial console (kernel and init messages, the channel server's errors) goes to
  `console` (a lab's `logs/vm-<host>.console.log`), appended to with a line per boot.
- A disk VM (`VmConfig.disk`, deploy/ booted for real: lab/vmimage.py) boots an image
  instead: the image's own kernel and initramfs, its root on the first virtio disk (a
  qcow2 overlay per VM: its writes survive a kill, as a crashed machine's disk does), a
  cloud-init seed on the second; no 9p root and no `vx.*` arguments. The image runs the
  channel's server as a systemd service, so `start` returns once the guest's systemd got
  that far, and the guest configures its own network (cloud-init).
"""

from __future__ import annotations

import json
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vxlab import netns, validate
from vxlab.lab import hostns, supervisor, vmaccel, vmchan, vminitrd, vmkernel
from vxlab.lab.supervisor import Proc
from vxlab.lab.vmchan import Channel, ChannelError, RunResult

VM_KEYS = ("cpus", "memory", "kernel")
VM_CPUS_MAX = 64
VM_MEMORY_MIN, VM_MEMORY_MAX = 256, 65536  # MiB; 256 boots the kernel and the agent's Python
VM_NICE = 19
BOOT_TIMEOUT = 180.0  # about 5 s on an idle machine; TCG at nice 19 on a busy one is slow
SWITCH_BRIDGE = "vxsw"
FILES = ("vm.json", "qemu.pid", "ctl.sock", "qemu.log", "vm.lock", "vm.json.tmp")


class VmError(RuntimeError):
    """A VM could not be started or reached; the message says where to look."""


@dataclass(frozen=True)
class VmSpec:
    """What a topology says of a VM host: `vm: true` or `vm: {cpus, memory, kernel}`."""

    cpus: int = 1
    memory_mb: int = 768
    kernel: str | None = None  # a vmlinuz; None: the cached Debian kernel


def parse_spec(value: Any, path: str) -> VmSpec | None:
    """A host's `vm:` from a topology: absent/false -> None, true -> the defaults, or a
    mapping {cpus, memory ("768M", "1G" or MiB), kernel (a vmlinuz path)}; TopologyError
    naming the key otherwise."""
    from vxlab.lab.yamlfile import TopologyError, _int, _kind, _mapping, _str

    if value is None or value is False:
        return None
    if value is True:
        return VmSpec()
    if not isinstance(value, dict):
        raise TopologyError(path, f"expected true, false or a mapping, got {_kind(value)}")
    m = _mapping(value, path, VM_KEYS)
    cpus = _int(m, "cpus", path)
    if cpus is not None and not 1 <= cpus <= VM_CPUS_MAX:
        raise TopologyError(f"{path}.cpus", f"{cpus} is out of range 1..{VM_CPUS_MAX}")
    memory = m.get("memory")
    if memory is None:
        mib = VmSpec.memory_mb
    elif isinstance(memory, int) and not isinstance(memory, bool):
        mib = memory
    elif isinstance(memory, str) and (found := re.fullmatch(r"(\d+)\s*([MG])i?B?", memory.strip(), re.I)):
        mib = int(found.group(1)) * (1024 if found.group(2).upper() == "G" else 1)
    else:
        got = repr(memory) if isinstance(memory, str) else _kind(memory)
        raise TopologyError(f"{path}.memory", f"expected MiB or a size like 768M or 1G, got {got}")
    if not VM_MEMORY_MIN <= mib <= VM_MEMORY_MAX:
        raise TopologyError(f"{path}.memory", f"{mib} MiB is out of range {VM_MEMORY_MIN}..{VM_MEMORY_MAX}")
    kernel = _str(m, "kernel", path)
    if kernel is not None and (not kernel.startswith("/") or any(c.isspace() for c in kernel)):
        raise TopologyError(f"{path}.kernel", "expected an absolute path without spaces")
    return VmSpec(cpus=cpus or VmSpec.cpus, memory_mb=mib, kernel=kernel)


@dataclass(frozen=True)
class Nic:
    """The guest's underlay NIC: tap `tap` on the switch bridge in `switch_ns`."""

    switch_ns: str
    tap: str           # vx…, at most 15 characters
    mark: str          # ifalias of the tap: only a tap with this marker is ours
    address: str       # the guest's eth0 address with its prefix, e.g. 172.30.0.13/24
    mtu: int = 1500
    gateway: str = ""  # default route via (the switch's address), none when empty
    mac: str = ""      # default: derived from the tap's name and marker


@dataclass(frozen=True)
class Disk:
    """A VM booted from a disk image (lab/vmimage.py): `root` (qcow2 or raw) is its
    /dev/vda, `seed` (a NoCloud seed, read-only) its /dev/vdb; `kernel` and `initrd` are
    the image's own."""

    root: str
    kernel: str
    initrd: str
    seed: str = ""


@dataclass(frozen=True)
class VmConfig:
    name: str                      # the guest's hostname (the lab host's name)
    spec: VmSpec = VmSpec()
    nic: Nic | None = None
    console: str = ""              # serial console log; default <run dir>/console.log
    shares: tuple[str, ...] = ()   # host directories the guest mounts read-write at the same path
    accel: str = ""                # "", "kvm" or "tcg" ("": the probe's verdict)
    nice: int = VM_NICE
    disk: Disk | None = None       # boot a disk image instead of this machine's root


@dataclass(frozen=True)
class Boot:
    """What `start` did: the accelerator (and why), the guest kernel, seconds until the
    channel first answered and until the network was configured too (0 for a VM that
    was running already), QEMU's pid."""

    accel: vmaccel.Accel
    kernel: str
    seconds: float
    pid: int
    channel_s: float = 0.0


def available() -> str | None:
    """Why this machine cannot boot VM hosts (QEMU, busybox or kmod missing), None if it can."""
    missing = [pkg for pkg, path in (("qemu-system-x86", vmaccel.QEMU), ("busybox-static", vminitrd.BUSYBOX),
                                     ("kmod", "depmod"), ("util-linux", "nsenter"))
               if not (Path(path).is_file() if path.startswith("/") else shutil.which(path))]
    return f"VM hosts need: apt-get install {' '.join(missing)} (./vx setup --vm)" if missing else None


def mac_for(nic: Nic) -> str:
    """A stable locally administered MAC (52:54:00 is QEMU's prefix) for a tap."""
    h = zlib.crc32(f"{nic.mark}/{nic.tap}".encode())
    return "52:54:00:" + ":".join(f"{(h >> s) & 0xFF:02x}" for s in (16, 8, 0))


def qemu_args(run: Path, config: VmConfig, kernel: vmkernel.GuestKernel, initrd: Path,
              accel: vmaccel.Accel, *, chan: Path, python: str, image: Path | None = None) -> list[str]:
    """The QEMU command line of a VM (pure: a unit test reads it)."""
    spec, disk = config.spec, config.disk
    if disk:
        append = ["root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0", "panic=-1"]
    else:
        append = ["console=ttyS0", "panic=-1", "quiet", f"vx.host={config.name}", f"vx.chan={chan}",
                  f"vx.python={python}"]
        if kernel.modules:
            append.append(f"vx.mods={kernel.modules}")
    args = [vmaccel.qemu_binary(), *accel.args(), "-m", f"{spec.memory_mb}M", "-smp", str(spec.cpus),
            "-name", f"vxlab:{config.name},process=vxvm-{config.name}",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-rtc", "base=utc",
            "-kernel", str(image or kernel.vmlinuz), "-initrd", str(initrd)]
    if disk:
        fmt = "qcow2" if disk.root.endswith(".qcow2") else "raw"
        args += ["-drive", f"file={disk.root},format={fmt},if=virtio", "-device", "virtio-rng-pci"]
        if disk.seed:
            args += ["-drive", f"file={disk.seed},format=raw,if=virtio,readonly=on"]
    else:
        args += ["-fsdev", "local,id=vxroot,path=/,security_model=none,readonly=on,multidevs=remap",
                 "-device", "virtio-9p-pci,fsdev=vxroot,mount_tag=vxroot"]
    args += ["-chardev", f"file,id=vxcon,path={config.console or run / 'console.log'},append=on",
            "-serial", "chardev:vxcon",
            "-device", "virtio-serial-pci,id=vxser",
            "-chardev", f"socket,id=vxctl,path={run / 'ctl.sock'},server=on,wait=off",
            "-device", "virtconsole,bus=vxser.0,chardev=vxctl,name=vxlab.ctl",
            "-pidfile", str(run / "qemu.pid")]
    shares = [(share, "") for share in config.shares]
    if not disk:
        shares += [(path, ",readonly=on") for path in hidden_from_guest(chan, python, shares=config.shares)]
    for i, (share, mode) in enumerate(shares):
        args += ["-fsdev", f"local,id=vxs{i},path={share},security_model=none,multidevs=remap{mode}",
                 "-device", f"virtio-9p-pci,fsdev=vxs{i},mount_tag=vxs{i}"]
        append.append(f"vx.share=vxs{i}:{share}")
    if config.nic:
        nic = config.nic
        args += ["-netdev", f"tap,id=vxnet,ifname={nic.tap},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=vxnet,mac={nic.mac or mac_for(nic)},romfile="]
    for value in append:  # the kernel splits its command line at spaces
        if any(c.isspace() for c in value):
            raise VmError(f"cannot boot a VM: {value!r} holds a space (a path on the kernel command line)")
    return [*args, "-append", " ".join(append)]


def hidden_from_guest(chan: Path, python: str, *, shares: tuple[str, ...] = ()) -> list[str]:
    """The directories the guest must be given although its root is this machine's: the
    checkout that holds the channel server and the agent (and the Python it runs), when
    it lies under a path the guest mounts afresh (/tmp, /run: a clone in /tmp would be
    invisible there). Shared read-only, at the same path; none when a share covers it."""
    fresh = (Path("/tmp"), Path("/run"))
    wanted = [chan.resolve().parents[1], Path(python).parent.parent]
    out: list[str] = []
    for path in wanted:
        covered = [Path(p) for p in (*shares, *out)]
        if any(path.is_relative_to(f) for f in fresh) and not any(path.is_relative_to(c) for c in covered):
            out.append(str(path))
    return out


def net_script(nic: Nic) -> str:
    """The guest's underlay configuration, run through the channel once it answers."""
    lines = ["set -e", "modprobe virtio_net", "ip link set lo up",
             f"ip link set eth0 mtu {nic.mtu} up", f"ip addr add {nic.address} dev eth0"]
    if nic.gateway:
        lines.append(f"ip route add default via {nic.gateway}")
    return "\n".join(lines)


def find_qemu(run: Path) -> list[int]:
    """Pids of QEMU processes of the VM in `run` (their command line names its pid file)."""
    return [p.pid for p in supervisor.qemu_of(run)]


def _qemu_where(match: Callable[[bytes], bool]) -> list[Proc]:
    """Live QEMU processes with an argument `match` accepts (the lab's supervisor scans;
    `supervisor.qemu_of` is the one VM's)."""
    return supervisor.scan(lambda argv: b"qemu-system" in argv[0] and any(match(a) for a in argv))


def _kill(procs: list[Proc], *, timeout: float = 10.0) -> None:
    """SIGKILL each QEMU and wait until it is gone (reaped if it is our child)."""
    for proc in procs:
        proc.stop(sig=signal.SIGKILL, timeout=timeout)


class Vm:
    """One VM host, known by its run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> VmConfig | None:
        try:
            raw = json.loads((self.dir / "vm.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            return None
        nic = Nic(**raw.pop("nic")) if raw.get("nic") else None
        disk = Disk(**raw.pop("disk")) if raw.get("disk") else None
        return VmConfig(**{**raw, "spec": VmSpec(**raw["spec"]), "nic": nic, "disk": disk,
                           "shares": tuple(raw["shares"])})

    def booted(self) -> dict[str, Any]:
        """What the last boot recorded: `kernel` (its version) and `accel` ({name, reason});
        {} before any boot."""
        try:
            raw = json.loads((self.dir / "vm.json").read_text())
        except (OSError, ValueError):
            return {}
        return {"kernel": raw["kernel"], "accel": raw["accel"]} if "kernel" in raw and "accel" in raw else {}

    @property
    def console(self) -> Path:
        config = self.config()
        return Path(config.console) if config and config.console else self.dir / "console.log"

    @property
    def channel(self) -> Channel:
        return Channel(self.dir / "ctl.sock", hint=f" (console: {self.console})")

    def pids(self) -> list[int]:
        return find_qemu(self.dir)

    def alive(self) -> bool:
        return bool(self.pids())

    def run(self, cmd: str | list[str], *, timeout: float = 60.0, stdin: str = "") -> RunResult:
        """Run `cmd` in the guest (a string through /bin/sh -c): (rc, stdout, stderr)."""
        return self.channel.run(cmd, timeout=timeout, stdin=stdin)

    def spawn(self, argv: list[str], *, log: str = "", env: dict[str, str] | None = None) -> int:
        """Leave `argv` running in the guest (e.g. its agent); its pid in the guest."""
        return self.channel.spawn(argv, log=log, env=env)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, config: VmConfig, *, timeout: float = BOOT_TIMEOUT) -> Boot:
        """Boot the VM (a running one is kept: its channel must answer) and return once its
        channel answers and its NIC is configured; VmError naming the console otherwise.
        One start at a time per run directory (a lock file): `up` and a heal may overlap."""
        validate.name(config.name, field="vm.name", max_len=validate.HOST_NAME_MAX)
        if config.disk:  # the image's kernel; the KVM probe boots it with our initramfs
            kernel = vmkernel.from_path(Path(config.disk.kernel))
            initrd = Path(config.disk.initrd)
            accel = vmaccel.choose(kernel, vminitrd.ensure(None, kernel.home), want=config.accel)
        else:
            kernel = vmkernel.guest_kernel(config.spec.kernel)
            initrd = vminitrd.ensure(kernel.modules, kernel.home)
            accel = vmaccel.choose(kernel, initrd, want=config.accel)
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "vm.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.alive():
                self.channel.ping(timeout=timeout)
                return Boot(accel, kernel.version, 0.0, self.pids()[0])
            return self._boot(config, kernel, initrd, accel, timeout)

    def _boot(self, config: VmConfig, kernel: vmkernel.GuestKernel, initrd: Path, accel: vmaccel.Accel,
              timeout: float) -> Boot:
        self._record(config, kernel=kernel.version, accel=asdict(accel))  # before anything exists
        if config.nic:
            ensure_tap(config.nic)
        for stale in ("ctl.sock", "qemu.pid"):
            (self.dir / stale).unlink(missing_ok=True)
        console = Path(config.console) if config.console else self.dir / "console.log"
        console.parent.mkdir(parents=True, exist_ok=True)
        with console.open("a") as f:
            f.write(f"--- vxlab: booting {config.name} ({kernel.version}, {accel.name}) at "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
        args = qemu_args(self.dir, config, kernel, initrd, accel, chan=Path(vmchan.__file__),
                         python=os.path.realpath(sys.executable), image=vmkernel.boot_image(kernel))
        prefix = ["nice", "-n", str(config.nice)]
        if config.nic:
            prefix = ["nsenter", f"--net={netns.path(config.nic.switch_ns)}", "--", *prefix]
        began = time.monotonic()
        with (self.dir / "qemu.log").open("wb") as log:  # this boot's QEMU errors
            self._proc = subprocess.Popen([*prefix, *args], stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_channel(began, timeout)
            answered = time.monotonic() - began
            if config.nic and not config.disk:  # a disk VM configures its own (cloud-init)
                rc, _, err = self.run(net_script(config.nic), timeout=60)
                if rc != 0:
                    raise VmError(f"VM {config.name}: configuring eth0 failed: {err.strip()[-300:]}")
        except BaseException:
            self.kill()
            raise
        return Boot(accel, kernel.version, round(time.monotonic() - began, 2), self._proc.pid, round(answered, 2))

    def _wait_channel(self, began: float, timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        sock, deadline = self.dir / "ctl.sock", began + timeout
        while not sock.exists():
            if proc.poll() is not None:
                raise VmError(f"QEMU exited at once (status {proc.returncode}): {_tail(self.dir / 'qemu.log')}")
            if time.monotonic() > deadline:
                raise VmError(f"QEMU made no channel socket within {timeout:g} s (see {self.dir / 'qemu.log'})")
            time.sleep(0.02)
        try:
            self.channel.ping(timeout=max(0.1, deadline - time.monotonic()), alive=lambda: proc.poll() is None)
        except ChannelError:
            try:
                why = f"QEMU exited with status {proc.wait(5)}"
            except subprocess.TimeoutExpired:
                why = f"no answer within {timeout:g} s"
            qemu_log = _tail(self.dir / "qemu.log")
            raise VmError(f"the VM did not answer on its channel ({why}); console {self.console}: "
                          f"{_tail(self.console)}" + (f"; QEMU: {qemu_log}" if qemu_log != "(empty)" else "")) from None

    def kill(self) -> None:
        """Host crash: SIGKILL QEMU (the tap stays, without carrier)."""
        _kill(supervisor.qemu_of(self.dir))
        if self._proc is not None:
            self._proc.wait()
            self._proc = None

    def stop(self, *, timeout: float = 10.0) -> None:
        """Power the guest off (sysrq o), SIGKILL QEMU if it is still there after `timeout`."""
        if not self.alive():
            return
        try:
            self.channel.call({"op": "run", "argv": ["/bin/sh", "-c", "echo o > /proc/sysrq-trigger"],
                               "timeout": 5}, timeout=2)
        except ChannelError:
            pass  # the guest went before it answered, as it should
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill()

    def cleanup(self) -> None:
        """Remove everything of this VM: its QEMU, its tap (if it carries our marker), its
        files; also after a kill -9 of the process that started it."""
        self.kill()
        config = self.config()
        if config and config.nic:
            delete_tap(config.nic)
        for name in (*FILES, "console.log"):
            (self.dir / name).unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            pass  # not empty (files of someone else's) or gone

    def _record(self, config: VmConfig, **extra: Any) -> None:
        tmp = self.dir / "vm.json.tmp"
        tmp.write_text(json.dumps({"config": asdict(config), **extra}, indent=1) + "\n")
        tmp.replace(self.dir / "vm.json")


def sweep(root: Path) -> list[str]:
    """Clean up every VM whose run directory is directly under `root` (`lab down`), and
    any QEMU whose pid file lies under `root` although its directory is gone; returns
    the run directories cleaned."""
    done = []
    for spec in sorted(root.glob("*/vm.json")) if root.is_dir() else []:
        Vm(spec.parent).cleanup()
        done.append(str(spec.parent))
    prefix = str(root).rstrip("/").encode() + b"/"
    _kill(_qemu_where(lambda arg: arg.startswith(prefix) and arg.endswith(b"/qemu.pid")))
    return done


def _alias(ns: str, dev: str) -> str | None:
    """The ifalias of `dev` in `ns` ("" when unset), None when there is no such device."""
    shown = hostns.ip("-o", "link", "show", "dev", dev, ns=ns, check=False)
    if shown.returncode != 0:
        return None
    return shown.stdout.split(" alias ", 1)[1].split()[0] if " alias " in shown.stdout else ""


def ensure_tap(nic: Nic) -> None:
    """The tap on the switch bridge: created, or adopted when it carries our marker."""
    alias = _alias(nic.switch_ns, nic.tap)
    if alias is not None and alias != nic.mark:
        raise VmError(f"{nic.tap} exists in {nic.switch_ns} and is not ours (no marker {nic.mark})")
    if alias is None:
        hostns.ip("tuntap", "add", "dev", nic.tap, "mode", "tap", ns=nic.switch_ns)
    hostns.ip("link", "set", nic.tap, "mtu", str(nic.mtu), "alias", nic.mark, "master", SWITCH_BRIDGE, "up",
                ns=nic.switch_ns)


def delete_tap(nic: Nic) -> None:
    if os.path.exists(netns.path(nic.switch_ns)) and _alias(nic.switch_ns, nic.tap) == nic.mark:
        hostns.ip("link", "del", nic.tap, ns=nic.switch_ns, check=False)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(empty)"
    except OSError:
        return f"({path} is missing)"
