"""podman with its CNI backend on one lab host, for test_cni_podman.py: everything of it
under one tmp dir, nothing of the machine's podman configuration used or touched.

- `CONTAINERS_CONF` is a containers.conf of the test's: network_backend "cni", the CNI
  plugin dir (a `vxlab` link to this venv's vxlab-cni: podman needs no other plugin, so
  not containernetworking-plugins), the
  conflist dir, the engine's tmp dir and events log under the tmp dir, cgroupfs, and
  ulimits this machine's hard limits allow (runc cannot raise them);
- storage: `--root`/`--runroot` under the tmp dir (a short one: podman refuses a runroot
  of more than 50 characters), the vfs driver (no overlay mounts);
- the image is imported offline (`podman import` of a busybox-static rootfs tar, as
  bench/docker.py does with `docker import`);
- podman runs in the host's network namespace through `nsenter --net` (not `ip netns
  exec`, whose private mount namespace per call would hide the container namespaces
  podman mounts under /run/netns from the next call).

`close()` removes every container (podman's CNI DEL runs then), the storage, and the
shared-memory lock file and libcni's cache dir (/var/lib/cni, empty once DEL ran) when
this run created them. Skips with the reason without
podman or busybox; VXLAB_CNI_REQUIRED=1 (CI) fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

IMAGE = "localhost/vxt-busybox:1"
PLUGIN = Path(sys.executable).parent / "vxlab-cni"
SHM_LOCK = Path("/dev/shm/libpod_lock")
CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache: podman 4.3 cannot move it


def require() -> None:
    """Skip (or fail with VXLAB_CNI_REQUIRED=1) unless podman and busybox are here."""
    missing = [what for what, ok in (("podman", shutil.which("podman")), ("busybox-static", Path("/bin/busybox").is_file()),
                                     ("vxlab-cni", PLUGIN.is_file())) if not ok]
    if missing:
        reason = f"podman CNI test: missing {', '.join(missing)} (apt-get install podman busybox-static)"
        if os.environ.get("VXLAB_CNI_REQUIRED") == "1":
            pytest.fail(f"{reason} (VXLAB_CNI_REQUIRED=1)")
        pytest.skip(reason)


class Podman:
    def __init__(self, *, netns: str) -> None:
        # podman refuses a runroot longer than 50 characters: not under pytest's tmp_path
        self.dir = tmp = Path(tempfile.mkdtemp(prefix="vxtpod-"))
        self.netns = netns
        self.conf_dir, self.bin_dir = tmp / "cni-conf", tmp / "cni-bin"
        self._shm_existed, self._cache_existed = SHM_LOCK.exists(), CNI_CACHE.exists()
        for d in (self.conf_dir, self.bin_dir, tmp / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        (self.bin_dir / "vxlab").symlink_to(PLUGIN)
        (tmp / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{self.bin_dir}"]\n'
            f'network_config_dir = "{self.conf_dir}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{tmp}/events.log"\n'
            f'tmp_dir = "{tmp}/tmp"\n')

    def network(self, name: str, plugin: dict[str, Any]) -> None:
        """A podman (CNI) network `name` whose only plugin is vxlab's."""
        conflist = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "vxlab", **plugin}]}
        (self.conf_dir / f"{name}.conflist").write_text(json.dumps(conflist, indent=2))

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.dir / "containers.conf")}
        cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "podman", "--root", str(self.dir / "root"),
               "--runroot", str(self.dir / "runroot"), "--storage-driver", "vfs", *args]
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, input=stdin)
        out = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                          done.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()[-2000:]}")
        return out

    def import_busybox(self) -> None:
        root = self.dir / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copy2("/bin/busybox", root / "bin" / "busybox")
        for tool in ("sh", "sleep", "ping", "ip", "cat", "nc", "nslookup"):
            (root / "bin" / tool).symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True).stdout
        self("import", "-", IMAGE, stdin=tar)

    def close(self) -> None:
        try:
            self("rm", "--all", "--force", "--time", "0", check=False)
            self("rmi", "--all", "--force", check=False)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            if not self._shm_existed:
                SHM_LOCK.unlink(missing_ok=True)
            if not self._cache_existed:  # made by this run: removed when DEL left it empty
                for d in (CNI_CACHE / "results", CNI_CACHE):
                    try:
                        d.rmdir()
                    except OSError:
                        pass
