"""The initramfs of a VM host: busybox, the few modules that mount the root, and our init.

The guest's root is this machine's filesystem, exported read-only over 9p by QEMU
(`-fsdev …,readonly=on`: the guest cannot write to it even as root). The init here
(stage 1) loads the modules that 9p, the overlay and the command channel need
(`insmod`, in dependency order from the kernel's modules.dep), mounts the 9p root
(`cache=loose`: the guest caches what it read; a file this machine changes while the
VM runs may look stale in it — shares are `cache=none`),
puts a tmpfs overlay on top of the whole of it (every path is writable in the guest,
writes stay in the guest's memory), fresh tmpfs on /run and /tmp (the guest's
/run/netns is its own), the guest kernel's modules at /lib/modules/<version> (a
symlink in the overlay to the kernel cache, which the guest sees through the 9p root:
nothing is copied into this machine's /lib/modules), the extra 9p shares the VM asked
for, and then `switch_root`s to stage 2: this machine's /bin/sh as PID 1 (it reaps
orphans), running the command channel's server with this machine's python3. If that
server exits, the guest powers off, so QEMU exits and the host sees the VM gone.

Per-VM settings come on the kernel command line (`vx.host=`, `vx.chan=`, `vx.python=`,
`vx.mods=`, `vx.share=TAG:PATH`, …), so one initramfs per kernel serves every VM; it is
cached next to the kernel under a name holding the hash of its content. With `vx.probe`
the init only says "vxlab-init: probe ok" and powers off (vmaccel's KVM probe).

The archive is written here (cpio "newc", uncompressed: the kernel unpacks it faster
under TCG than it would gunzip it, and it is 3 MB).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"  # Debian's busybox-static
# What stage 1 needs before the 9p root is mounted; each is a module or built in.
BOOT_MODULES = ("virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay")

INIT = r"""#!/bin/busybox sh
# vxlab guest init, stage 1 (see vxlab/lab/vminitrd.py)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev
say() { echo "vxlab-init: $*"; }
case " $(cat /proc/cmdline) " in *" vx.probe "*) say "probe ok"; poweroff -f; sleep 5 ;; esac
fail() { say "error: $*"; poweroff -f; sleep 5; }
say "kernel $(uname -r), loading $(cat /modules/order | wc -w) modules"
for m in $(cat /modules/order); do insmod "/modules/$m" || fail "insmod $m"; done
host=vm chan= python=/usr/bin/python3 mods= shares=
for x in $(cat /proc/cmdline); do
  case "$x" in
    vx.host=*) host="${x#vx.host=}" ;;
    vx.chan=*) chan="${x#vx.chan=}" ;;
    vx.python=*) python="${x#vx.python=}" ;;
    vx.mods=*) mods="${x#vx.mods=}" ;;
    vx.share=*) shares="$shares ${x#vx.share=}" ;;
  esac
done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 vxroot /lower || fail "mount the 9p root"
mount -t tmpfs -o mode=0755 vxrw /rw && mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work vxroot /newroot || fail "mount the overlay"
mount -t tmpfs -o mode=0755,nosuid,nodev vxrun /newroot/run
mount -t tmpfs -o mode=1777,nosuid,nodev vxtmp /newroot/tmp
kver="$(uname -r)"
if [ -n "$mods" ]; then
  mkdir -p /newroot/usr/lib/modules && rm -rf "/newroot/usr/lib/modules/$kver"
  ln -s "$mods" "/newroot/usr/lib/modules/$kver"
fi
for s in $shares; do
  tag="${s%%:*}" path="${s#*:}"
  mkdir -p "/newroot$path" && mount -t 9p -o "trans=virtio,version=9p2000.L,cache=none,msize=512000" "$tag" "/newroot$path" \
    || fail "mount the share $tag on $path"
done
echo "$host" > /proc/sys/kernel/hostname
echo "$host" > /newroot/etc/hostname
for d in proc sys dev; do mount --move "/$d" "/newroot/$d"; done
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
[ -n "$chan" ] || fail "no vx.chan= on the kernel command line"
say "root mounted, starting the channel server"
exec switch_root /newroot /bin/sh -c \
  'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1
   "$0" -I -S "$1" serve & wait $!; echo "vxlab-init: the channel server exited"; echo o > /proc/sysrq-trigger' \
  "$python" "$chan"
"""


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, a regular file, a symlink or a character device."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def cpio(entries: list[Entry]) -> bytes:
    """The entries as a cpio "newc" archive, as the kernel unpacks an initramfs."""
    out = bytearray()

    def member(ino: int, e: Entry) -> None:
        name = e.name.encode() + b"\0"
        fields = (ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(name), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(e.data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, e in enumerate(entries, start=1):
        member(ino, e)
    member(0, Entry("TRAILER!!!", 0))
    return bytes(out)


def module_order(modules_dir: Path, wanted: tuple[str, ...] = BOOT_MODULES) -> list[str]:
    """The module files (paths relative to `modules_dir`) that load `wanted`, dependencies
    first, from modules.dep; built-in modules (modules.builtin) need nothing. Raises
    LookupError naming a module that is neither."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_mod_name(p): p for p in deps}
    builtin_file = modules_dir / "modules.builtin"
    builtin = {_mod_name(p) for p in builtin_file.read_text().split()} if builtin_file.exists() else set()
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise LookupError(f"the guest kernel has no module {name!r} (needed to boot a VM host)")
    return order


def _mod_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.replace("-", "_")


def build(modules_dir: Path | None) -> bytes:
    """The initramfs for a kernel whose modules are in `modules_dir` (None: a kernel with
    everything built in)."""
    order = module_order(modules_dir) if modules_dir else []
    entries = [Entry(d, 0o040755) for d in ("bin", "dev", "proc", "sys", "modules")]
    entries.append(Entry("dev/console", 0o020600, rdev=(5, 1)))
    entries.append(Entry("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes()))
    entries.append(Entry("init", 0o100755, INIT.encode()))
    flat = []
    for rel in order:
        flat.append(rel.rsplit("/", 1)[-1])
        assert modules_dir is not None
        entries.append(Entry(f"modules/{flat[-1]}", 0o100644, (modules_dir / rel).read_bytes()))
    entries.append(Entry("modules/order", 0o100644, " ".join(flat).encode()))
    return cpio(entries)


def ensure(modules_dir: Path | None, cache_dir: Path) -> Path:
    """The initramfs for this kernel in `cache_dir`, built once per content (the name holds
    a hash of the init script, busybox and the module list; older ones are left for a
    VM that may be starting from one, 3 MB each)."""
    if not Path(BUSYBOX).is_file():
        raise FileNotFoundError(f"{BUSYBOX} is missing: apt-get install busybox-static (./vx setup --vm)")
    order = module_order(modules_dir) if modules_dir else []
    h = hashlib.sha256(INIT.encode() + " ".join(order).encode())
    for f in [Path(BUSYBOX)] + ([modules_dir / "modules.dep"] if modules_dir else []):
        h.update(str(f.stat().st_mtime_ns).encode())
    path = cache_dir / f"initrd-vxlab-{h.hexdigest()[:12]}.cpio"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        # one temporary file per writer: VMs booting in threads of one process (a lab's,
        # the deploy test's three) may all build it at once; the rename is atomic
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=path.stem + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(build(modules_dir))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path
