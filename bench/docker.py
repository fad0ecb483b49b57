"""The peer: Docker swarm's overlay on the same machine, measured like vxlab.

`Swarm` builds N simulated hosts exactly like a lab's underlay (a switch namespace,
one namespace per host, `eth0` on the switch; names `vxbdk.sw`, `vxbdk.h<i>`), starts
one `dockerd` per host namespace (`nsenter --net=…`, not `ip netns exec`, which
remounts /sys; `--bridge none --iptables=false`, data, exec root, socket, pidfile and
config all under one temporary directory), makes a swarm over the underlay addresses
and an attachable overlay network with MTU = underlay - 50, and imports a tiny busybox
image (`docker import`, offline). Probes use the machine's own iperf3/ping inside the
containers' namespaces (`nsenter --net=/proc/<pid>/ns/net`), the same tools as for
vxlab. `close()` removes everything — containers, dockerds (and what they started),
mounts, directories, namespaces — also after a failure. No dockerd ever runs in the
machine's own namespace (it would set FORWARD DROP there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from vxlab.lab import hostns

PREFIX = "vxbdk"
MARK = "vxlab:bench:docker"
IMAGE = "vxbench/busybox:1"


class DockerUnavailable(RuntimeError):
    """Docker cannot run here; the message says why and what to install."""


def check() -> None:
    """Raise DockerUnavailable unless dockerd, docker, containerd and busybox are here."""
    missing = [b for b in ("dockerd", "docker", "containerd", "runc", "nsenter") if shutil.which(b) is None]
    if not Path("/bin/busybox").is_file() and shutil.which("busybox") is None:
        missing.append("busybox")
    if missing:
        raise DockerUnavailable(f"docker: missing {', '.join(missing)} (apt-get install docker.io busybox-static)")


def _run(cmd: list[str], *, timeout: float = 60, check_: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check_ and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}…: {(p.stderr or p.stdout).strip()[-400:]}")
    return p


class Swarm:
    def __init__(self, hosts: int, *, mtu: int = 1500) -> None:
        self.n, self.mtu = hosts, mtu
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
        self.sw = f"{PREFIX}.sw"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ips = {f"h{i}": f"172.31.0.{10 + i}" for i in range(1, hosts + 1)}
        self.network = "vxbnet"

    # --- names ---------------------------------------------------------------------
    def ns(self, host: str) -> str:
        return f"{PREFIX}.{host}"

    def sock(self, host: str) -> str:
        return f"unix://{self.dir / host / 'docker.sock'}"

    def docker(self, host: str, *args: str, timeout: float = 60, check_: bool = True) -> str:
        return _run(["docker", "-H", self.sock(host), *args], timeout=timeout, check_=check_).stdout.strip()

    # --- up ------------------------------------------------------------------------
    def up(self) -> Swarm:
        check()
        self.cleanup_stale()
        hostns.create_switch(self.sw, mark=MARK, mtu=self.mtu, outside="172.31.0.1/24")
        hostns.add_hosts(self.sw, [(hostns.SimHost(h, self.ns(h), ip, f"{ip}/24"), f"vxbdp{i + 1}")
                                     for i, (h, ip) in enumerate(self.ips.items())], mark=MARK, mtu=self.mtu)
        for h in self.ips:
            self.start_dockerd(h)
        for h in self.ips:
            self.wait_dockerd(h)
        rootfs = self._rootfs()
        first, *rest = list(self.ips)
        self.docker(first, "swarm", "init", "--advertise-addr", self.ips[first], "--listen-addr",
                    f"{self.ips[first]}:2377")
        token = self.docker(first, "swarm", "join-token", "-q", "worker")
        for h in rest:
            self.docker(h, "swarm", "join", "--token", token, "--advertise-addr", self.ips[h],
                        "--listen-addr", f"{self.ips[h]}:2377", f"{self.ips[first]}:2377", timeout=120)
        for h in self.ips:
            _run(["sh", "-c", f"tar -C {rootfs} -c . | docker -H {self.sock(h)} import - {IMAGE}"])
        self.docker(first, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.90.0.0/16",
                    "-o", f"com.docker.network.driver.mtu={self.mtu - 50}", self.network)
        return self

    def start_dockerd(self, host: str) -> None:
        d = self.dir / host
        (d / "data").mkdir(parents=True, exist_ok=True)
        (d / "exec").mkdir(parents=True, exist_ok=True)
        (d / "daemon.json").write_text("{}\n")
        log = (d / "dockerd.log").open("ab")
        self.procs[host] = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns(host)}", "dockerd", "--config-file", str(d / "daemon.json"),
             "--data-root", str(d / "data"), "--exec-root", str(d / "exec"), "-H", self.sock(host),
             "--pidfile", str(d / "docker.pid"), "--bridge", "none", "--iptables=false", "--ip-masq=false",
             "--ip-forward=false", "--storage-driver", "vfs", "--userland-proxy=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_dockerd(self, host: str, *, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[host].poll() is not None:
                raise RuntimeError(f"docker: dockerd of {host} exited; see {self.dir / host / 'dockerd.log'}")
            try:
                if _run(["docker", "-H", self.sock(host), "version"], check_=False, timeout=10).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass  # restoring its state (swarm) after a restart
            time.sleep(0.2)
        raise RuntimeError(f"docker: dockerd of {host} did not answer in {timeout:.0f} s")

    def _rootfs(self) -> Path:
        root = self.dir / "rootfs"
        (root / "bin").mkdir(parents=True, exist_ok=True)
        busybox = Path("/bin/busybox") if Path("/bin/busybox").is_file() else Path(shutil.which("busybox") or "")
        shutil.copy2(busybox, root / "bin" / "busybox")
        for tool in ("sh", "sleep", "ping", "ip", "ifconfig", "cat"):
            (root / "bin" / tool).symlink_to("busybox")
        return root

    # --- containers ------------------------------------------------------------------
    def run(self, host: str, name: str, *, ip: str = "") -> str:
        args = ["run", "-d", "--name", name, "--network", self.network, *(["--ip", ip] if ip else []),
                IMAGE, "/bin/sleep", "100000"]
        return self.docker(host, *args, timeout=120)

    def pid(self, host: str, name: str) -> int:
        return int(self.docker(host, "inspect", "-f", "{{.State.Pid}}", name))

    def ip(self, host: str, name: str) -> str:
        nets = json.loads(self.docker(host, "inspect", "-f", "{{json .NetworkSettings.Networks}}", name))
        return str(nets[self.network]["IPAddress"])

    def netns_path(self, host: str, name: str) -> str:
        return f"/proc/{self.pid(host, name)}/ns/net"

    def prefix(self, host: str, name: str) -> list[str]:
        """Run a machine binary inside the container's network namespace."""
        return ["nsenter", f"--net={self.netns_path(host, name)}"]

    def overlay_namespaces(self, host: str) -> list[str]:
        """The host's overlay sandbox namespaces (`<exec-root>/netns/1-…`)."""
        d = self.dir / host / "exec" / "netns"
        return [str(p) for p in d.glob("1-*")] if d.is_dir() else []

    def vtep_entries(self, host: str) -> dict[str, int]:
        """peer host -> FDB entries pointing at `host`'s VTEP (like observe.vtep_entries)."""
        needle = f" dst {self.ips[host]} "
        counts = {}
        for peer in self.ips:
            if peer == host:
                continue
            counts[peer] = 0
            for ns in self.overlay_namespaces(peer):
                out = _run(["nsenter", f"--net={ns}", "bridge", "fdb", "show"], check_=False).stdout
                counts[peer] += sum(1 for line in out.splitlines() if needle in line + " ")
        return counts

    # --- faults ------------------------------------------------------------------------
    def crash(self, host: str) -> None:
        """host-crash: the host's link down and its dockerd killed (SIGKILL)."""
        hostns.ip("link", "set", "eth0", "down", ns=self.ns(host))
        p = self.procs[host]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def restore(self, host: str) -> None:
        hostns.ip("link", "set", "eth0", "up", ns=self.ns(host))
        self.start_dockerd(host)
        self.wait_dockerd(host)

    # --- teardown --------------------------------------------------------------------------
    def _our_pids(self) -> list[int]:
        """Processes whose command line or root mentions our directory (dockerd, containerd,
        shims) or run inside our containers' namespaces."""
        mine, key = [], str(self.dir)
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) == os.getpid():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if key in cmd:
                mine.append(int(p.name))
        return mine

    def close(self) -> None:
        for h in list(self.procs):
            if self.procs[h].poll() is None:
                ids = self.docker(h, "ps", "-aq", check_=False, timeout=30).split()
                if ids:
                    self.docker(h, "rm", "-f", *ids, check_=False, timeout=60)
        for h in list(self.procs):
            if self.procs[h].poll() is None:
                self.docker(h, "swarm", "leave", "--force", check_=False, timeout=30)
        for h, p in self.procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        for pid in self._our_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        self._unmount()
        shutil.rmtree(self.dir, ignore_errors=True)
        for ns in hostns.netns_list():
            if ns.startswith(f"{PREFIX}.") and hostns.marker(ns) in (MARK, ""):
                hostns.delete_ns(ns)

    def _unmount(self) -> None:
        key = str(self.dir)
        mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()
                  if len(ln.split()) > 1 and ln.split()[1].startswith(key)]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)

    @staticmethod
    def cleanup_stale() -> list[str]:
        """Namespaces of an earlier run that died before its cleanup."""
        gone = []
        for ns in hostns.netns_list():
            if ns.startswith(f"{PREFIX}.") and hostns.marker(ns) in (MARK, ""):
                hostns.delete_ns(ns)
                gone.append(ns)
        return gone

    def __enter__(self) -> Swarm:
        try:
            return self.up()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.close()
