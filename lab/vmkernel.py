"""The kernel a VM host boots: Debian 12's kernel package in a cache, or a vmlinuz of yours.

`fetch()` downloads the newest `linux-image-6.1.0-<N>-amd64` with `apt-get download`,
unpacks it with `dpkg -x` into `<cache>/<version>/` (never installed: no
/boot, no initramfs-tools, no bootloader run) and runs `depmod -b` there, so the
cache holds `boot/vmlinuz-<version>` and `lib/modules/<version>/` with a complete
modules.dep. A `vxlab-kernel.json` marker says what the directory is; a fetch that
died half-way leaves only a `.partial` directory, removed by the next fetch.

The guest loads its modules from that directory: the guest's init links
/lib/modules/<version> in its own overlay to it (the guest sees the cache through
its 9p root, see vminitrd). Nothing is copied into this machine's /lib/modules, so
a lab leaves no stray files there.

`boot_image()` is what QEMU loads: the bzImage's payload decompressed once into
`vmlinux-<version>` next to it, when it is an ELF with the PVH entry note (Debian's
kernel is: CONFIG_PVH), so QEMU enters the kernel directly. Under TCG that saves the
guest decompressing 8 MB of xz itself: 1.6 s instead of 4.1–4.6 s until the init runs
(measured here). Otherwise (another compression, no PVH note) the bzImage.

`guest_kernel()` is what a VM uses: `kernel: /path/to/vmlinuz` when given (its version
read from the bzImage header, its modules from `<dir>/../lib/modules/<version>` as
`dpkg -x` lays them out, else this machine's /lib/modules/<version>, else none: then
9p, virtio and overlay must be built in), otherwise the newest cached kernel, fetched
first when the cache is empty. The cache is `$VXLAB_VM_CACHE` or /var/cache/vxlab/kernels.
"""

from __future__ import annotations

import fcntl
import json
import lzma
import os
import re
import shutil
import subprocess
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PACKAGE_RE = re.compile(r"^linux-image-(6\.1\.0-(\d+)-amd64)$")
MARKER = "vxlab-kernel.json"


class KernelError(RuntimeError):
    """No kernel could be had; the message says why and what to do."""


@dataclass(frozen=True)
class GuestKernel:
    version: str
    vmlinuz: Path
    modules: Path | None  # the lib/modules/<version> directory, None when there is none
    home: Path            # where its initramfs is kept (in the cache)


def cache_root() -> Path:
    return Path(os.environ.get("VXLAB_VM_CACHE", "/var/cache/vxlab/kernels"))


def cached() -> list[GuestKernel]:
    """The kernels in the cache, newest (highest ABI number) first."""
    root = cache_root()
    found = []
    for d in root.glob("6.1.0-*-amd64") if root.is_dir() else []:
        if (d / MARKER).is_file() and (d / "boot" / f"vmlinuz-{d.name}").is_file():
            found.append(GuestKernel(d.name, d / "boot" / f"vmlinuz-{d.name}", d / "lib" / "modules" / d.name, d))
    return sorted(found, key=lambda k: _abi(k.version), reverse=True)


def _abi(version: str) -> int:
    m = re.match(r"6\.1\.0-(\d+)-", version)
    return int(m.group(1)) if m else -1


def newest_package() -> str:
    """The newest Debian 12 kernel package apt knows (apt-get update first if none)."""
    proc = subprocess.run(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"],
                          capture_output=True, text=True)
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    names = [n for n in names if PACKAGE_RE.match(n)]
    if not names:
        raise KernelError("apt knows no linux-image-6.1.0-*-amd64 package (run apt-get update; "
                          "this needs Debian 12's package lists)")
    return max(names, key=lambda n: int(PACKAGE_RE.match(n).group(2)))  # type: ignore[union-attr]


@contextmanager
def _locked() -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def fetch(package: str | None = None) -> GuestKernel:
    """Download and unpack `package` (default: the newest) into the cache; a kernel already
    there is kept as it is."""
    package = package or newest_package()
    m = PACKAGE_RE.match(package)
    if not m:
        raise KernelError(f"{package!r} is not a linux-image-6.1.0-<N>-amd64 package")
    version = m.group(1)
    for tool in ("apt-get", "dpkg", "depmod"):
        if shutil.which(tool) is None:
            raise KernelError(f"{tool} is missing (depmod: apt-get install kmod; or ./vx setup --vm)")
    with _locked():
        done = [k for k in cached() if k.version == version]
        if done:
            return done[0]
        root = cache_root()
        for stale in root.glob("*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        part = root / f"{version}.partial"
        part.mkdir()
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as dl:
            os.chmod(dl, 0o755)  # apt downloads as _apt where it can
            _must(["apt-get", "download", "-q", package], cwd=dl, what=f"apt-get download {package}")
            debs = list(Path(dl).glob("*.deb"))
            if len(debs) != 1:
                raise KernelError(f"apt-get download {package} left {len(debs)} .deb files")
            _must(["dpkg", "-x", str(debs[0]), str(part)], what="dpkg -x")
        _must(["depmod", "-b", str(part), version], what="depmod")
        (part / MARKER).write_text(json.dumps({"package": package, "version": version,
                                               "made_by": "vxlab (lab/vmkernel.py)"}) + "\n")
        part.rename(root / version)
    return next(k for k in cached() if k.version == version)


def _must(args: list[str], *, what: str, cwd: str | None = None) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise KernelError(f"{what} failed: {' / '.join(tail)}")


def bzimage_version(path: Path) -> str:
    """The kernel release a bzImage carries (its setup header's version string)."""
    try:
        with path.open("rb") as f:
            head = f.read(0x10000)
    except OSError as e:
        raise KernelError(f"{path}: {e.strerror}") from None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise KernelError(f"{path}: not a bzImage (no HdrS setup header)")
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    version = head[offset:offset + 256].split(b"\0", 1)[0].split(b" ", 1)[0].decode(errors="replace")
    if not version:
        raise KernelError(f"{path}: no version string in the setup header")
    return version


def from_path(vmlinuz: Path) -> GuestKernel:
    """A kernel of yours, with its modules where `dpkg -x` or an install puts them."""
    version = bzimage_version(vmlinuz)
    home = cache_root() / "custom" / version
    for mods in (vmlinuz.resolve().parent.parent / "lib" / "modules" / version, Path("/lib/modules") / version):
        if (mods / "modules.dep").is_file():
            cached_home = mods.parents[2]
            return GuestKernel(version, vmlinuz, mods, cached_home if (cached_home / MARKER).is_file() else home)
    return GuestKernel(version, vmlinuz, None, home)


XZ_MAGIC, GZIP_MAGIC = b"\xfd7zXZ\x00", b"\x1f\x8b\x08"
PVH_NOTE = 18  # XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit entry QEMU uses to boot an ELF kernel


def boot_image(kernel: GuestKernel) -> Path:
    """The uncompressed PVH vmlinux of `kernel` (made once in its home), else its bzImage."""
    out = kernel.home / f"vmlinux-{kernel.version}"
    src = kernel.vmlinuz.stat()
    if out.is_file() and out.stat().st_mtime_ns == src.st_mtime_ns:  # made from this very bzImage
        return out
    elf = _payload(kernel.vmlinuz.read_bytes())
    if elf is None or not has_pvh_note(elf):
        return kernel.vmlinuz
    kernel.home.mkdir(parents=True, exist_ok=True)
    # one temporary file per writer: VMs booting in threads of one process (the deploy
    # test's three) may all make it at once; the rename is atomic
    fd, tmp = tempfile.mkstemp(dir=kernel.home, prefix=out.name + ".", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(elf)
    os.chmod(tmp, 0o644)
    os.utime(tmp, ns=(src.st_atime_ns, src.st_mtime_ns))
    os.replace(tmp, out)
    return out


def _payload(image: bytes) -> bytes | None:
    """The ELF kernel a bzImage carries compressed with xz or gzip, None otherwise."""
    for magic, decompressor in ((XZ_MAGIC, lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
                                (GZIP_MAGIC, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))):
        at = image.find(magic)
        if at < 0:
            continue
        try:
            data = decompressor().decompress(image[at:])
        except (lzma.LZMAError, zlib.error):
            continue
        if data[:4] == b"\x7fELF":
            return data
    return None


def has_pvh_note(elf: bytes) -> bool:
    """Whether a 64-bit ELF has a Xen PHYS32_ENTRY note in a PT_NOTE segment."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        pos, end = p_offset, p_offset + p_filesz
        while p_type == 4 and pos + 12 <= end:  # PT_NOTE
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12: pos + 12 + namesz]
            if name == b"Xen\0" and n_type == PVH_NOTE:
                return True
            pos += 12 + (namesz + 3 & ~3) + (descsz + 3 & ~3)
    return False


def guest_kernel(path: str | None = None, *, fetch_missing: bool = True) -> GuestKernel:
    """The kernel for a VM: `path` when given, else the newest cached (fetched if none)."""
    if path:
        return from_path(Path(path))
    have = cached()
    if have:
        return have[0]
    if not fetch_missing:
        raise KernelError(f"no guest kernel in {cache_root()} (./vx setup --vm fetches one)")
    return fetch()


if __name__ == "__main__":  # `python -m vxlab.lab.vmkernel ensure|fetch` (./vx setup --vm)
    import sys

    if sys.argv[1:] not in (["ensure"], ["fetch"]):
        sys.exit("usage: python -m vxlab.lab.vmkernel ensure|fetch   (ensure: the newest cached, "
                 "fetched if none; fetch: the newest Debian 12 kernel package)")
    try:
        k = guest_kernel() if sys.argv[1] == "ensure" else fetch()
    except KernelError as e:
        sys.exit(f"error: {e}")
    print(f"{k.version} {k.vmlinuz}")
