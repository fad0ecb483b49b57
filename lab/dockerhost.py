"""A lab's Docker hosts (`docker: true`): a dockerd and vxlab's Docker plugin inside the host's namespace.

Per host, everything lives in `<lab dir>/docker/<host>/`: the daemon's data root (`data`,
the vfs storage driver: plain directories, no mounts), exec root (`exec`), pid file,
API socket (`docker.sock`, what `vxlab host exec h1 -- docker …` gets as DOCKER_HOST),
config (`daemon.json`), `etc` (mounted over /etc/docker for this daemon alone: its
key.json, and `plugins/vxlab.spec`, which points it at its own host's plugin socket
`plugin/vxlab.sock`) and the plugin's bindings. The daemon runs with
`--iptables=false --ip6tables=false --ip-masq=false --ip-forward=false --bridge=none`:
it writes no firewall rule and no sysctl, anywhere, and the machine's own namespace is
never touched.

Each dockerd runs in its host's network namespace (nsenter) and in a mount namespace of
its own (unshare, private propagation) where /etc/docker is that host's `etc` and the
machine's /run/docker and /run/containerd are hidden under empty tmpfs mounts. So: it
finds only its own host's plugin (a machine-wide /run/docker/plugins/vxlab.sock would be
found first otherwise), and it starts a containerd of its own under its exec root
(dockerd uses /run/containerd/containerd.sock whenever that exists). A shared containerd
does not work here: the sandbox namespaces a lab dockerd bind-mounts under its exec root
exist only in its mount namespace (a containerd outside it cannot open them), several
dockerds would share containerd's `moby` namespace (each sees the others' containers and
their events), and the machine's containerd is not ours to use. Everything it mounts
(sandbox namespaces, the /etc/docker bind) dies with the mount namespace.

`up` starts the missing hosts' plugin and daemon (both recorded in `procs.json` before
anything waits on them, and naming the lab's directory on their command lines, so `down`
finds them after a kill -9 of `up`), waits for `docker version`, and imports the image
`vxlab/busybox:1` offline (`docker import` of busybox-static with a few applet links).
`stop`/`sweep` remove the containers (`docker rm -f`), then kill what is left: the
containers' processes (the children of the daemon's shims, found by the shims' command
lines), shims, containerd, dockerd, the plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from vxlab.lab.procs import LabError, wait_for
from vxlab.lab.supervisor import Command, Proc, Supervisor, scan
from vxlab.lab.topology import Topology

IMAGE = "vxlab/busybox:1"
APPLETS = ("sh", "sleep", "ping", "ip", "ifconfig", "cat", "nc", "wget", "hostname", "echo", "ls", "true")
NEEDS = ("dockerd", "docker", "containerd", "containerd-shim-runc-v2", "runc", "unshare", "nsenter")
ETC = Path("/etc/docker")
# dockerd in the host's namespace and a mount namespace of its own (see the docstring); $1 the host's directory.
SCRIPT = """set -e
d="$1"; shift
mount --bind "$d/etc" /etc/docker
for m in /run/docker /run/containerd; do [ -d "$m" ] && mount -t tmpfs -o mode=0700 vxlab-hidden "$m"; done
exec dockerd "$@"
"""


def hosts(topo: Topology | None) -> list[str]:
    """The topology's Docker hosts."""
    return [h.name for h in (topo.hosts if topo else ()) if h.docker]


def host_dir(lab_dir: Path, host: str) -> Path:
    return lab_dir / "docker" / host


def socket(lab_dir: Path, host: str) -> str:
    """The DOCKER_HOST of the host's dockerd."""
    return f"unix://{host_dir(lab_dir, host) / 'docker.sock'}"


def missing() -> list[str]:
    """What a Docker host needs and this machine lacks, each with its package."""
    out = [f"{b} (apt-get install docker.io)" for b in NEEDS if shutil.which(b) is None]
    if not ETC.is_dir():
        out.append(f"{ETC} (apt-get install docker.io)")
    if _busybox() is None:
        out.append("busybox (apt-get install busybox-static)")
    return out


def _busybox() -> Path | None:
    found = Path("/bin/busybox") if Path("/bin/busybox").is_file() else shutil.which("busybox")
    return Path(found) if found else None


def _procs(d: Path) -> dict[str, Proc]:
    try:
        return {k: Proc(**v) for k, v in json.loads((d / "procs.json").read_text()).items()}
    except (OSError, ValueError, TypeError):
        return {}


def _record(d: Path, procs: dict[str, Proc]) -> None:
    (d / "procs.json").write_text(json.dumps({k: vars(p) for k, p in procs.items()}))


def running(lab_dir: Path, host: str) -> dict[str, Proc]:
    """The host's `dockerd` and `docker-plugin`, those alive."""
    return {k: p for k, p in _procs(host_dir(lab_dir, host)).items() if p.alive()}


def docker(lab_dir: Path, host: str, *args: str, timeout: float = 60, check: bool = True,
           stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the docker CLI against the host's dockerd (from this machine: the socket is a file)."""
    p = subprocess.run(["docker", "-H", socket(lab_dir, host), *args], input=stdin, capture_output=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"docker on {host}: docker {' '.join(args[:4])}: {p.stderr.decode(errors='replace').strip()[-300:]}")
    return p


def start(lab_dir: Path, *, host: str, lab: str, netns: str, pki: Path | None = None) -> None:
    """Start the host's plugin and dockerd (those not running), wait for the daemon, import the image.
    With the lab's `pki`, the plugin uses the host's certificate (and the admin's for networks)."""
    if gaps := missing():
        raise LabError(f"docker: host {host} has `docker: true`, but this machine lacks {', '.join(gaps)}")
    d = host_dir(lab_dir, host)
    for sub in ("data", "exec", "etc/plugins", "plugin"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "daemon.json").write_text("{}\n")
    (d / "etc" / "plugins" / "vxlab.spec").write_text(f"unix://{d / 'plugin' / 'vxlab.sock'}\n")
    sup, procs = Supervisor(lab_dir), running(lab_dir, host)
    enter = ("nsenter", f"--net=/run/netns/{netns}")
    if "docker-plugin" not in procs:
        procs["docker-plugin"] = sup.start(Command(
            (*enter, sys.executable, "-m", "vxlab.cli", *(("--pki", str(pki)) if pki else ()),
             "docker-plugin", "--lab", lab, "--host", host,
             "--socket", str(d / "plugin" / "vxlab.sock"), "--docker", socket(lab_dir, host),
             "--state", str(d / "plugin" / "bindings.json")), log=str(sup.log(f"docker-plugin-{host}"))))
        _record(d, procs)
    if "dockerd" not in procs:
        procs["dockerd"] = sup.start(Command(
            (*enter, "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", SCRIPT, "vxlab-dockerd", str(d),
             "--config-file", str(d / "daemon.json"), "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
             "--pidfile", str(d / "docker.pid"), "-H", socket(lab_dir, host), "--bridge=none", "--iptables=false",
             "--ip6tables=false", "--ip-masq=false", "--ip-forward=false", "--userland-proxy=false",
             "--storage-driver=vfs", "--exec-opt", "native.cgroupdriver=cgroupfs"),
            log=str(sup.log(f"dockerd-{host}"))))
        _record(d, procs)
    wait_for(lambda: (d / "plugin" / "vxlab.sock").exists(), f"the docker plugin of {host} "
             f"(see {sup.log(f'docker-plugin-{host}')})", alive=procs["docker-plugin"], timeout=30)
    wait_for(lambda: docker(lab_dir, host, "version", check=False, timeout=10).returncode == 0,
             f"the dockerd of {host} (see {sup.log(f'dockerd-{host}')})", alive=procs["dockerd"], timeout=90,
             interval=0.2)
    if docker(lab_dir, host, "image", "inspect", IMAGE, check=False).returncode != 0:
        docker(lab_dir, host, "import", "-", IMAGE, stdin=_rootfs_tar(lab_dir), timeout=120)


def _rootfs_tar(lab_dir: Path) -> bytes:
    """A tar of a root with busybox-static and a few applet links (the image's whole content)."""
    root = lab_dir / "docker" / "rootfs"
    if not (root / "bin" / "busybox").is_file():
        (root / "bin").mkdir(parents=True, exist_ok=True)
        busybox = _busybox()
        assert busybox is not None
        shutil.copy2(busybox, root / "bin" / "busybox")
        for tool in APPLETS:
            (root / "bin" / tool).symlink_to("busybox")
    return subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True).stdout


def stop(lab_dir: Path, host: str) -> None:
    """The host's containers (`docker rm -f`), then its dockerd and plugin, then what is left."""
    procs = running(lab_dir, host)
    if "dockerd" in procs:
        ids = docker(lab_dir, host, "ps", "-aq", check=False, timeout=30).stdout.decode().split()
        if ids:
            docker(lab_dir, host, "rm", "-f", *ids, check=False, timeout=120)
    for role in ("dockerd", "docker-plugin"):
        if role in procs:
            procs[role].stop(timeout=15)
    _kill_left(str(host_dir(lab_dir, host)))
    shutil.rmtree(host_dir(lab_dir, host), ignore_errors=True)  # its data root, exec root, socket


def made(lab_dir: Path) -> list[str]:
    """The hosts with a Docker directory (started, or half-started by a killed `up`)."""
    root = lab_dir / "docker"
    return sorted(d.name for d in root.iterdir() if d.is_dir() and d.name != "rootfs") if root.is_dir() else []


def sweep(lab_dir: Path) -> None:
    """Every Docker host of the lab (`down`), also what an `up` killed halfway left."""
    for host in made(lab_dir):
        stop(lab_dir, host)


def _kill_left(needle: str) -> None:
    """SIGKILL the containers' processes (children of shims naming `needle`), then every
    process naming it (shims, containerd, dockerd, the plugin)."""
    mark = needle.encode()
    shims = {p.pid for p in scan(lambda argv: b"containerd-shim" in argv[0] and any(mark in a for a in argv))}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and shims:
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in shims:
                _kill(int(entry.name))
    for proc in scan(lambda argv: any(mark in a for a in argv)):
        proc.stop(sig=signal.SIGKILL, timeout=5)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
