"""Fixtures for integration tests: a real etcd and real controller processes.

Every process a test starts is stopped in the fixture's teardown, also when the test
fails; etcd runs in a tmp dir on free loopback ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rig import stop_group
from vxlab import netns
from vxlab.etcdproc import EtcdProcess, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    proc = EtcdProcess(tmp_path / "etcd", progress_notify_interval=1.0)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class ControllerProc:
    """A `vxlab controller serve` process on a free port."""

    def __init__(self, etcd_endpoints: list[str], log: Path, *, lease_ttl: int = 5, metrics: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port() if metrics else 0
        args = [sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", self.address,
                "--etcd", ",".join(etcd_endpoints), "--lease-ttl", str(lease_ttl), *extra]
        if metrics:
            args += ["--metrics", f"127.0.0.1:{self.metrics_port}"]
        self.log = log
        self.proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_serving(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"controller exited: {self.log.read_text()[-2000:]}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"controller not serving: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_group(self.proc)


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Callable[..., ControllerProc]]:
    started: list[ControllerProc] = []

    def start(etcd_endpoints: list[str], **kw: object) -> ControllerProc:
        c = ControllerProc(etcd_endpoints, tmp_path / f"controller{len(started)}.log", **kw)  # type: ignore[arg-type]
        started.append(c)
        c.wait_serving()
        return c

    try:
        yield start
    finally:
        for c in started:
            c.stop()


@pytest.fixture(scope="session", autouse=True)
def _sweep_test_namespaces() -> Iterator[None]:
    """Remove `vxt…` namespaces that a killed earlier run left behind (tests name theirs
    so); normal teardown already removes each test's own, also when it fails."""
    def sweep() -> None:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.strip() else ""
            try:
                age = time.time() - os.stat(f"/run/netns/{name}").st_ctime
            except OSError:
                continue
            # Old enough not to belong to a run going on right now.
            if name.startswith("vxt") and name[3:9].isalnum() and age > 600:
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)
                netns.remove_etc(name)
    if os.geteuid() == 0:
        sweep()
    yield
