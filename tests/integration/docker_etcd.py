"""etcd in Docker containers through testcontainers (issue 8), for test_containers_etcd.py.

No registry is reachable, so nothing is ever pulled: `etcd_image()` writes a tiny rootfs
tar (the etcd binary vxlab runs, `find_etcd()`, with the shared libraries it links) and
`docker import`s it as `vxlab-test/etcd:<version>-<12 hex of the binary>`, once; later
runs reuse it (see DEVELOPERS.md). Ryuk is disabled (it is an image to pull): every
container and network is named `vxt<6 hex>…`, removed by the context manager that made
it also when a test fails, and `engine()` sweeps what a killed run left (> 10 min old).

A member publishes its client port on a fixed 127.0.0.1 port, so a member killed and
started again is reachable where it was; cluster members find their peers by container
name on a network of their own.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"  # before testcontainers reads its config

import docker.errors  # noqa: E402 - after the environment above
from testcontainers.core.config import testcontainers_config  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.docker_client import DockerClient  # noqa: E402
from testcontainers.core.network import Network  # noqa: E402

from vxlab.etcdproc import EtcdBinary, endpoint_healthy, endpoint_is_leader, find_etcd, free_port  # noqa: E402

testcontainers_config.ryuk_disabled = True
IMAGE_REPO = "vxlab-test/etcd"
LABEL = "org.vxlab.test"  # on the image (so on its containers) and on every network made here
STALE = 600.0  # seconds: older leftovers belong to no run going on now


def engine() -> DockerClient:
    """The Docker engine (testcontainers' client), or skip saying why there is none (fail
    instead with VXLAB_DOCKER_REQUIRED=1, as `.ci/run` sets after starting dockerd)."""
    found = _engine()
    if isinstance(found, str):
        if os.environ.get("VXLAB_DOCKER_REQUIRED") == "1":
            pytest.fail(f"{found} (VXLAB_DOCKER_REQUIRED=1)")
        pytest.skip(found)
    return found


@functools.cache
def _engine() -> DockerClient | str:
    """Asked once a session: the client, or why there is none."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = DockerClient()
        client.client.ping()
    except Exception as e:  # noqa: BLE001 - any failure to reach it means "no engine"
        return f"no Docker engine answers at {where}: {str(e).splitlines()[0][:200]}"
    _sweep(client)
    return client


def _sweep(client: DockerClient) -> None:
    """Remove `vxt…` containers and networks that a killed run left behind."""
    now = time.time()
    for c in client.client.api.containers(all=True, filters={"label": LABEL}):
        if any(n.startswith("/vxt") for n in c["Names"]) and now - c["Created"] > STALE:
            with contextlib.suppress(docker.errors.APIError):
                client.client.api.remove_container(c["Id"], force=True, v=True)
    for n in client.client.api.networks(filters={"label": LABEL}):
        created = datetime.fromisoformat(n["Created"][:19]).replace(tzinfo=timezone.utc).timestamp()
        if n["Name"].startswith("vxt") and now - created > STALE:
            with contextlib.suppress(docker.errors.APIError):
                client.client.api.remove_network(n["Id"])


def shared_libraries(path: str) -> list[str]:
    """What a dynamically linked binary loads (from ldd); [] for a static one."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    return re.findall(r"(/\S+) \(0x", out)


def rootfs_tar(binary: EtcdBinary) -> bytes:
    """A root file system holding only etcd (at /usr/local/bin/etcd) and its libraries."""
    files = {"usr/local/bin/etcd": binary.path} | {lib.lstrip("/"): lib for lib in shared_libraries(binary.path)}
    dirs = {"tmp", "data", "etc"} | {str(p) for name in files for p in Path(name).parents if str(p) != "."}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for name, source in files.items():
            info = tar.gettarinfo(os.path.realpath(source), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(source, "rb") as f:
                tar.addfile(info, f)
        nss = b"hosts: files dns\n"  # peers are found by container name (Docker's DNS)
        info = tarfile.TarInfo("etc/nsswitch.conf")
        info.size, info.mode = len(nss), 0o644
        tar.addfile(info, io.BytesIO(nss))
    return buf.getvalue()


def etcd_image(client: DockerClient) -> str:
    """The tag of the etcd image, imported from the local binary unless already there."""
    binary = find_etcd()
    digest = hashlib.sha256(Path(binary.path).read_bytes()).hexdigest()[:12]
    repo, tag = IMAGE_REPO, f"{binary.version}-{digest}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.client.images.get(f"{repo}:{tag}")
        return f"{repo}:{tag}"
    answer = client.client.api.import_image_from_data(
        rootfs_tar(binary), repository=repo, tag=tag,
        changes=['ENTRYPOINT ["/usr/local/bin/etcd"]', f"LABEL {LABEL}=etcd"])
    try:
        client.client.images.get(f"{repo}:{tag}")
    except docker.errors.ImageNotFound:
        raise RuntimeError(f"docker import of {repo}:{tag} failed: {answer}") from None
    return f"{repo}:{tag}"


class EtcdMember:
    """One etcd member in a container named `name`, client port on 127.0.0.1:`port`.

    Alone it is a one-member cluster with a short election (a restart serves in a moment);
    with `network` and `initial_cluster` it is a member of a cluster on that network.
    """

    def __init__(self, image: str, name: str, *, network: Network | None = None,
                 initial_cluster: str | None = None, token: str | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        peer = f"http://{name}:2380" if network is not None else "http://127.0.0.1:2380"
        args = ["--name", name, "--data-dir", "/data", "--logger", "zap", "--log-outputs", "stderr",
                "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer if network is None else "http://0.0.0.0:2380",
                "--initial-advertise-peer-urls", peer, "--initial-cluster", initial_cluster or f"{name}={peer}",
                "--initial-cluster-state", "new", "--initial-cluster-token", token or name,
                "--experimental-watch-progress-notify-interval", "1s"]
        if initial_cluster is None:
            args += ["--heartbeat-interval", "50", "--election-timeout", "250"]
        self.container = DockerContainer(image, network=network, network_aliases=[name] if network else None)
        self.container.with_name(name).with_command(args)
        # docker-py takes (address, port): only loopback, never the machine's other addresses
        self.container.ports["2379/tcp"] = ("127.0.0.1", self.port)  # type: ignore[assignment]
        self.running = False  # as far as this object made it so

    def start(self) -> None:
        """Create and start the container (see `wait_healthy`)."""
        self.container.start()
        self.running = True

    def kill(self) -> None:
        """SIGKILL, as a crash would; the container and its data stay."""
        self.container.get_wrapped_container().kill()
        self.running = False

    def resume(self) -> None:
        """Start the killed container again, on the same data and port."""
        self.container.get_wrapped_container().start()
        self.running = True

    def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.container.stop()  # testcontainers' stop removes the container, forced

    def healthy(self) -> bool:
        """etcd's /health: this member serves and sees a leader."""
        return endpoint_healthy(self.endpoint)

    def is_leader(self) -> bool:
        return endpoint_is_leader(self.endpoint)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                logs = b"".join(self.container.get_logs()).decode(errors="replace")
                raise TimeoutError(f"etcd in {self.name} not healthy in {timeout:.0f} s:\n{logs[-3000:]}")
            time.sleep(0.1)


class _NamedNetwork(Network):
    """testcontainers' Network under a name of ours (it picks a bare uuid), with our label."""

    def __init__(self, name: str) -> None:
        super().__init__(docker_network_kw={"labels": {LABEL: "etcd"}})
        self.name = name


class EtcdCluster:
    """`size` members `<prefix>-m<i>` on a Docker network `<prefix>-net`, peers by name."""

    def __init__(self, image: str, prefix: str, size: int = 3) -> None:
        self.network = _NamedNetwork(f"{prefix}-net")
        names = [f"{prefix}-m{i}" for i in range(size)]
        initial = ",".join(f"{n}=http://{n}:2380" for n in names)
        self.members = [EtcdMember(image, n, network=self.network, initial_cluster=initial, token=prefix)
                        for n in names]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def leader(self) -> int | None:
        return next((i for i, m in enumerate(self.members) if m.is_leader()), None)


def new_prefix() -> str:
    return "vxt" + secrets.token_hex(3)


@contextlib.contextmanager
def etcd_member(image: str) -> Iterator[EtcdMember]:
    """A healthy one-member etcd in a container, removed on exit (also on failure)."""
    member = EtcdMember(image, f"{new_prefix()}-etcd")
    try:
        member.start()
        member.wait_healthy()
        yield member
    finally:
        member.remove()


@contextlib.contextmanager
def etcd_cluster(image: str, size: int = 3) -> Iterator[EtcdCluster]:
    """A healthy cluster in containers; containers, then the network, removed on exit."""
    cluster = EtcdCluster(image, new_prefix(), size)
    with contextlib.ExitStack() as cleanup:
        cluster.network.create()
        cleanup.callback(cluster.network.remove)
        for member in cluster.members:
            cleanup.callback(member.remove)  # first: a container created but not started goes too
            member.start()
        for member in cluster.members:
            member.wait_healthy()
        yield cluster
