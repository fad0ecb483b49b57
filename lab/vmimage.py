"""Disk images for VMs that run deploy/ for real: Debian 12 with vxlab from this checkout.

The VMs reach no package registry, so everything comes in the image, built on this
machine from Debian packages only (`mmdebstrap`, from the mirrors of this machine's
apt) and from wheels made here:

1. `pip wheel` of a clean copy of the checkout (`git ls-files`: the working tree with
   its uncommitted changes, without what git ignores) and its dependencies.
2. `mmdebstrap --variant=minbase` with what a cloud VM boots with (`BOOT_PACKAGES`)
   and what deploy/vagrant/install.sh installs (its `PACKAGES=(…)` line, read from
   the script), then, in the chroot, deploy/vagrant/install.sh itself with the wheels
   (`pip install --no-index --find-links`): it finds every package there and installs
   no Debian package, the offline path a VM without a mirror takes too. The checkout's
   deploy/ (`BAKED`) lands in /opt/vxlab/src/deploy, where provision.sh and the units
   find it (deploy/README.md); the code comes from the wheels.
3. What Debian's cloud images have and minbase lacks: the en_US.UTF-8 locale (cloud-init
   sets it); an fstab. For the test harness only: vmchan's server as a systemd service
   (the VM's command channel, lab/vmchan.py: `vagrant ssh` without ssh), the getty that
   would take its console port masked.
4. `mke2fs -d` makes an ext4 filesystem image of the tree; the image's kernel and
   initramfs are kept next to it (QEMU boots them directly, no bootloader).

An image is cached under $VXLAB_IMAGE_CACHE (default /var/cache/vxlab/images), keyed
by a hash of the recipe, the content of every wheel (not their zip timestamps) and the
baked files (so editing a test rebuilds nothing); `ensure()` returns the cached one or builds it (~1.2 GB, a minute
or two). Each VM boots a qcow2 `overlay()` of it (its writes survive a kill) and a
NoCloud `seed()` (cloud-image-utils' cloud-localds). Images not used for a day are
removed when another is built, the newest two always kept. Never commit one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

RECIPE = 1  # bump when the steps below change in a way the hash does not see
SUITE = "bookworm"
GUEST_PYTHON = (3, 11)
BOOT_PACKAGES = ("systemd-sysv", "udev", "linux-image-amd64", "initramfs-tools", "cloud-init", "ifupdown",
                 "locales", "python3", "kmod", "procps", "e2fsprogs")
DEFAULT_MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
                   "deb http://deb.debian.org/debian bookworm-updates main",
                   "deb http://deb.debian.org/debian-security bookworm-security main")
BAKED = ("deploy/",)  # prefixes of the checkout's paths
SIZE = "3G"  # sparse; the tree is ~1.2 GB, the rest is room for etcd, logs and the journal
KEEP, UNUSED_S = 2, 86400
TOOLS = (("mmdebstrap", "mmdebstrap"), ("mke2fs", "e2fsprogs"), ("cloud-localds", "cloud-image-utils"),
         ("qemu-img", "qemu-utils"), ("git", "git"))
CHAN_UNIT = """\
# vxlab test images only (lab/vmimage.py): the command channel's server on the virtio
# console port, how the test harness runs commands in the guest (lab/vmchan.py).
[Unit]
Description=vxlab command channel (test images)
DefaultDependencies=no
After=systemd-remount-fs.service
Before=sysinit.target

[Service]
ExecStart=/usr/bin/python3 -I -S /usr/local/lib/vxlab/vmchan.py serve
Restart=always
RestartSec=1

[Install]
WantedBy=sysinit.target
"""


class ImageError(RuntimeError):
    """An image could not be built; the message says which step and where its log is."""


@dataclass(frozen=True)
class Image:
    dir: Path
    root: Path    # raw ext4 filesystem image (the guest's /dev/vda, through an overlay)
    kernel: Path  # the image's vmlinuz
    initrd: Path  # and its initramfs
    key: str
    info: dict    # image.json: what went in, how long each step took


def cache_root() -> Path:
    return Path(os.environ.get("VXLAB_IMAGE_CACHE", "/var/cache/vxlab/images"))


def missing_tools() -> str | None:
    """Why no image can be built or booted here, None if it can."""
    missing = [pkg for tool, pkg in TOOLS if shutil.which(tool) is None]
    return f"deploy images need: apt-get install {' '.join(missing)}" if missing else None


def install_packages(checkout: Path) -> list[str]:
    """The packages deploy/vagrant/install.sh installs (its `PACKAGES=(…)` line)."""
    text = (checkout / "deploy" / "vagrant" / "install.sh").read_text()
    m = re.search(r"^PACKAGES=\(([^)]*)\)", text, re.MULTILINE)
    if not m:
        raise ImageError("deploy/vagrant/install.sh has no PACKAGES=(…) line")
    return m.group(1).split()


def source_files(checkout: Path) -> list[str]:
    """The checkout's files as git sees them: tracked and untracked, not ignored."""
    out = subprocess.run(["git", "-C", str(checkout), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True).stdout
    return sorted(f for f in out.decode().split("\0") if f and (checkout / f).is_file())


def baked_files(checkout: Path) -> list[str]:
    """The checkout's files that go into the image as they are (under /opt/vxlab/src)."""
    return [f for f in source_files(checkout) if f.startswith(BAKED)]


def stage_source(checkout: Path, out: Path, files: list[str]) -> None:
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / rel, dest)


def _clean_env() -> dict[str, str]:
    """This process's environment without pip's and Python's settings (they would reach
    into the chroot, or point pip at this machine's indexes)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}


def build_wheels(source: Path, out: Path, *, log: Path) -> None:
    """`pip wheel` of the staged checkout and its dependencies into `out`, by this Python
    (it must be Debian 12's 3.11: the wheels of grpcio, cryptography, … are per version);
    it builds in `source`, a copy."""
    if sys.version_info[:2] != GUEST_PYTHON:
        raise ImageError(f"the wheels must be built by Python {'.'.join(map(str, GUEST_PYTHON))} (Debian 12's), "
                         f"not {sys.version.split()[0]}")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(out), str(source)], log=log,
         what="pip wheel of the checkout", env={**os.environ, "PIP_NO_INPUT": "1"})


def wheels_digest(wheels: Path) -> str:
    """A hash of every wheel's name and members' content (zip timestamps left out)."""
    h = hashlib.sha256()
    for whl in sorted(wheels.glob("*.whl")):
        h.update(whl.name.encode() + b"\0")
        with zipfile.ZipFile(whl) as z:
            for name in sorted(z.namelist()):
                h.update(name.encode() + b"\0" + hashlib.sha256(z.read(name)).digest())
    return h.hexdigest()


def recipe_digest(checkout: Path) -> str:
    h = hashlib.sha256(json.dumps([RECIPE, SUITE, BOOT_PACKAGES, install_packages(checkout), SIZE, CHAN_UNIT,
                                   hooks("$1")]).encode())
    for rel in baked_files(checkout):
        h.update(rel.encode() + b"\0" + hashlib.sha256((checkout / rel).read_bytes()).digest())
    h.update(hashlib.sha256((checkout / "lab" / "vmchan.py").read_bytes()).digest())
    return h.hexdigest()


def hooks(root: str) -> list[str]:
    """mmdebstrap's customize hooks after the staged tree was synced in (pure)."""
    return [
        f'chroot "{root}" /opt/vxlab/src/deploy/vagrant/install.sh /opt/vxlab/src /opt/wheels',
        f'sed -i "s/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/" "{root}/etc/locale.gen" && chroot "{root}" locale-gen',
        f'chroot "{root}" systemctl enable vxlab-vmchan.service',
        f'chroot "{root}" systemctl mask serial-getty@hvc0.service',
        f'echo "/dev/vda / ext4 defaults 0 1" > "{root}/etc/fstab"',
        f'rm -rf "{root}/opt/wheels"',
    ]


def mirrors() -> list[str]:
    """This machine's apt sources when they are Debian 12's, else deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file() and SUITE in sources.read_text():
        return [str(sources)]
    return list(DEFAULT_MIRRORS)


def _run(args: list[str], *, log: Path, what: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> None:
    with log.open("a") as f:
        f.write(f"\n=== {what}: {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if proc.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-8:])
        raise ImageError(f"{what} failed (status {proc.returncode}; log {log}): {tail[-1500:]}")


def _load(d: Path) -> Image | None:
    try:
        info = json.loads((d / "image.json").read_text())
    except (OSError, ValueError):
        return None
    image = Image(d, d / "root.img", d / info["kernel"], d / info["initrd"], info["key"], info)
    return image if all(p.is_file() for p in (image.root, image.kernel, image.initrd)) else None


def ensure(checkout: Path, *, work: Path) -> tuple[Image, dict[str, float]]:
    """The image for this checkout (built if the cache has none) and the seconds each
    step took here (`wheels`, `key`; `build` when it was built). `work` holds the logs."""
    if why := missing_tools():
        raise ImageError(why)
    work.mkdir(parents=True, exist_ok=True)
    log, times = work / "image-build.log", {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vximage-", dir=work) as tmp:
        stage, full = Path(tmp) / "stage", Path(tmp) / "checkout"
        wheels = stage / "opt" / "wheels"
        stage_source(checkout, full, source_files(checkout))
        stage_source(checkout, stage / "opt" / "vxlab" / "src", baked_files(checkout))
        build_wheels(full, wheels, log=log)
        times["wheels"] = round(time.monotonic() - began, 1)
        key = hashlib.sha256((recipe_digest(checkout) + wheels_digest(wheels)).encode()).hexdigest()[:16]
        times["key"] = round(time.monotonic() - began - times["wheels"], 1)
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        with (root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            image = _load(root / key)
            if image is None:
                t = time.monotonic()
                try:
                    image = _build(checkout, stage, key, log=log)
                finally:  # a failed build leaves nothing (the tree is ~1.2 GB)
                    shutil.rmtree(root / f"{key}.partial", ignore_errors=True)
                times["build"] = round(time.monotonic() - t, 1)
                _prune(root, keep=key)
            (image.dir / "used").touch()
    return image, times


def _build(checkout: Path, stage: Path, key: str, *, log: Path) -> Image:
    root = cache_root()
    part = root / f"{key}.partial"
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    (stage / "etc" / "systemd" / "system").mkdir(parents=True)
    (stage / "etc" / "systemd" / "system" / "vxlab-vmchan.service").write_text(CHAN_UNIT)
    (stage / "usr" / "local" / "lib" / "vxlab").mkdir(parents=True)
    shutil.copy2(checkout / "lab" / "vmchan.py", stage / "usr" / "local" / "lib" / "vxlab" / "vmchan.py")
    tree = part / "tree"
    packages = sorted({*BOOT_PACKAGES, *install_packages(checkout)})
    times = {}
    t = time.monotonic()
    _run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory", f"--include={','.join(packages)}",
          f"--customize-hook=sync-in {stage} /", *[f"--customize-hook={h}" for h in hooks('$1')],
          SUITE, str(tree), *mirrors()], log=log, what="mmdebstrap", env=_clean_env())
    times["mmdebstrap"] = round(time.monotonic() - t, 1)
    boot = tree / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise ImageError(f"the image has {len(kernels)} kernels in /boot, expected one")
    version = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[0], part / kernels[0].name)
    shutil.copy2(boot / f"initrd.img-{version}", part / f"initrd.img-{version}")
    t = time.monotonic()
    _run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), "-L", "vxroot", str(part / "root.img"), SIZE],
         log=log, what="mke2fs")
    times["mke2fs"] = round(time.monotonic() - t, 1)
    versions = subprocess.run(["chroot", str(tree), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                               *packages], capture_output=True, text=True).stdout.split("\n")
    shutil.rmtree(tree)
    info = {"key": key, "kernel": kernels[0].name, "initrd": f"initrd.img-{version}", "kernel_version": version,
            "suite": SUITE, "packages": [v for v in versions if v], "built": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime()),
            "seconds": times, "made_by": "vxlab (lab/vmimage.py)"}
    (part / "image.json").write_text(json.dumps(info, indent=1) + "\n")
    final = root / key
    part.rename(final)
    image = _load(final)
    assert image is not None
    return image


def _prune(root: Path, *, keep: str) -> None:
    images = sorted((d for d in root.iterdir() if d.is_dir() and (d / "image.json").is_file() and d.name != keep),
                    key=lambda d: _used(d), reverse=True)
    for d in images[KEEP - 1:]:
        if time.time() - _used(d) > UNUSED_S:
            shutil.rmtree(d, ignore_errors=True)


def _used(d: Path) -> float:
    try:
        return (d / "used").stat().st_mtime
    except OSError:
        return (d / "image.json").stat().st_mtime


def overlay(image: Image, path: Path) -> Path:
    """A qcow2 file whose reads come from the image and whose writes stay in it."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.root), str(path)],
                   check=True, capture_output=True)
    return path


def seed(path: Path, *, user_data: str, meta_data: str, network_config: str) -> Path:
    """A NoCloud seed (a vfat/iso image labelled cidata) made with cloud-localds."""
    work = path.parent / f".{path.name}.d"
    work.mkdir(parents=True, exist_ok=True)
    for name, text in (("user-data", user_data), ("meta-data", meta_data), ("network-config", network_config)):
        (work / name).write_text(text)
    subprocess.run(["cloud-localds", f"--network-config={work / 'network-config'}", str(path),
                    str(work / "user-data"), str(work / "meta-data")], check=True, capture_output=True)
    shutil.rmtree(work)
    return path
