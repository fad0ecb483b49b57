"""A small multi-host rig for agent tests: etcd, one controller (or several replicas,
`controllers=N`) on unix sockets, an underlay switch namespace, N host namespaces, one
real agent process in each, given every controller address (comma-separated).

Everything is named `vxt<6 hex>…` and removed in `close()`, which the fixtures call
also when a test fails. With `tls=True` the rig makes a PKI in its tmp dir and runs
every hop with mutual TLS (etcd, controller, each agent with its own host certificate).
With `isolated=True` every agent also runs in mount and PID namespaces of its own
(`unshare`), closer to a VM: it is PID 1 there and shares nothing with the test but
its host's network namespace, the controller's socket and its flags.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vxlab import pki
from vxlab.agentconfig import AgentConfig
from vxlab.agentstatus import AgentStatus
from vxlab.client import Client
from vxlab.etcdproc import EtcdProcess
from vxlab.lab import hostns
from vxlab.lab.probe import Pinger, Sample
from vxlab.layout import LabLayout
from vxlab.model import Endpoint, Network


def lost(samples: list[Sample]) -> int:
    """How many probes got no answer."""
    return sum(1 for s in samples if s.rtt_ms is None)


def answered(p: Pinger) -> int:
    """How many of `p`'s echoes were answered so far."""
    return sum(1 for s in p.samples() if s.rtt_ms is not None)


def wait_answers(p: Pinger, more: int, *, timeout: float = 20.0) -> None:
    """Until `p` got `more` answers beyond those it has now: the data plane carries
    traffic at this point of the test (instead of sleeping and hoping it did)."""
    goal = answered(p) + more
    Rig.wait(lambda: answered(p) >= goal, f"{more} more ping answers", timeout=timeout)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group a test started, SIGKILL it after 5 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def module_lab(run: Path, body: str, *, notices: list[str] | None = None) -> Iterator[Any]:
    """A lab named `vxt<6 hex>` from a topology body (no name), with VXLAB_RUN set to
    `run` while it lives; taken down (and VXLAB_RUN restored) also on failure. What `up`
    says a user should see goes to `notices` when given."""
    from vxlab.lab.lab import Lab
    from vxlab.lab.topology import parse

    old = os.environ.get("VXLAB_RUN")
    os.environ["VXLAB_RUN"] = str(run)
    name = "vxt" + secrets.token_hex(3)
    the_lab = Lab(name)
    try:
        the_lab.up(parse(f"name: {name}\n{body}"), notice=None if notices is None else notices.append)
        yield the_lab
    finally:
        the_lab.down()
        if old is None:
            os.environ.pop("VXLAB_RUN", None)
        else:
            os.environ["VXLAB_RUN"] = old


# Two hosts, one network, a container on each: the body of a lab topology (no name).
QUICK = """hosts: 2
networks:
  - name: blue
    subnet: 10.10.0.0/24
containers:
  - {name: web, host: h1, networks: [blue]}
  - {name: db, host: h2, networks: [blue]}
"""


class Rig:
    METRICS_PORT = 9464  # each agent listens in its own host namespace

    def __init__(self, tmp: Path, *, hosts: int = 2, lease_ttl: int = 4, resync: float = 2.0,
                 tls: bool = False, controllers: int = 1, isolated: bool = False) -> None:
        self.tmp = tmp
        self.id = "vxt" + secrets.token_hex(3)
        self.lease_ttl = lease_ttl
        self.resync = resync
        self.socks = [f"unix:{tmp}/controller{'' if i == 0 else i}.sock" for i in range(controllers)]
        self.sock = ",".join(self.socks)  # what agents and `api()` are given: failover in this order
        self.pki = pki.init(tmp / "pki", hosts=[f"h{i}" for i in range(1, hosts + 1)]) if tls else None
        self.etcd = EtcdProcess(tmp / "etcd", progress_notify_interval=1.0,
                                tls=self.pki.etcd_server() if self.pki else None,
                                client_tls=self.pki.etcd_client() if self.pki else None)
        self.controllers: list[subprocess.Popen[bytes] | None] = [None] * controllers
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.layout = LabLayout(f"{self.id}-", f"vxlab:test:{self.id}")  # vxt<hex>-h1, vxt<hex>-h1.c-web, …
        self.hosts = {f"h{i}": hostns.SimHost(f"h{i}", self.layout.host_ns(f"h{i}"), f"172.31.0.{10 + i}",
                                                f"172.31.0.{10 + i}/24") for i in range(1, hosts + 1)}
        self.switch = self.layout.switch_ns
        self.isolated = isolated

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> Rig:
        self.etcd.start()
        for i in range(len(self.socks)):
            self.start_controller(i)
        hostns.create_switch(self.switch, mark=self.layout.marker)
        hostns.add_hosts(self.switch, [(h, self.layout.port(h.name)) for h in self.hosts.values()],
                           mark=self.layout.marker)
        for name in self.hosts:
            self.start_agent(name)
        return self

    def start_pair(self, subnet: str) -> Rig:
        """start(), then network `blue` (subnet) with `web` on h1 and `db` on h2, programmed."""
        self.start()
        self.wait(lambda: all(self.status(h).registered for h in self.hosts), "agents registered")
        self.network("blue", subnet=subnet)
        self.container("web", "h1", "blue")
        self.container("db", "h2", "blue")
        self.settle()
        return self

    def start_controller(self, i: int = 0) -> None:
        sock = self.socks[i]
        log = (self.tmp / f"controller{i}.log").open("ab")
        self.controllers[i] = subprocess.Popen(
            [sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", sock,
             "--etcd", ",".join(self.etcd.endpoints), "--lease-ttl", str(self.lease_ttl), *self._pki_args()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait(lambda: Path(sock[5:]).exists(), "controller socket")

    def _pki_args(self) -> list[str]:
        return ["--pki", str(self.pki.dir)] if self.pki else []

    def kill_controller(self, i: int = 0) -> None:
        proc = self.controllers[i]
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        Path(self.socks[i][5:]).unlink(missing_ok=True)

    def prefix(self, host: str) -> str:
        return self.layout.agent(host).prefix

    def status_path(self, host: str) -> Path:
        return self.tmp / f"agent-{host}.json"

    def agent_config(self, host: str) -> AgentConfig:
        """What `host`'s agent runs with (its own certificate with `tls=True`)."""
        return AgentConfig(controller=self.socks, host=host, netns_prefix=self.prefix(host), resync=self.resync,
                           status_file=str(self.status_path(host)), metrics=f"127.0.0.1:{self.METRICS_PORT}",
                           tls=self.pki.host(host) if self.pki else None)

    def start_agent(self, host: str) -> None:
        h = self.hosts[host]
        log = (self.tmp / f"agent-{host}.log").open("ab")
        unshare = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "unchanged"]
        self.agents[host] = subprocess.Popen(
            [*(unshare if self.isolated else []),
             "nsenter", f"--net=/run/netns/{h.ns}", sys.executable, "-m", "vxlab.cli", *self.agent_config(host).argv()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill_agent(self, host: str, sig: int = signal.SIGKILL) -> None:
        p = self.agents.get(host)
        if p and p.poll() is None:
            os.killpg(p.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                p.wait()

    def close(self) -> None:
        for host in list(self.agents):
            self.kill_agent(host)
        for i in range(len(self.socks)):
            self.kill_controller(i)
        self.etcd.stop()
        for ns in hostns.netns_list():
            if ns.startswith(self.id):
                hostns.delete_ns(ns)

    # --- helpers --------------------------------------------------------------------
    @staticmethod
    def wait(cond: Any, what: str, timeout: float = 20.0, interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {what}")

    def log_size(self, host: str) -> int:
        """Where `host`'s agent log ends now: `wait_log(since=…)` reads what comes after."""
        path = self.tmp / f"agent-{host}.log"
        return path.stat().st_size if path.exists() else 0

    def wait_log(self, host: str, text: str, *, since: int, timeout: float = 20.0) -> None:
        """Until `host`'s agent logs `text` after offset `since` (it noticed something)."""
        def logged() -> bool:
            with (self.tmp / f"agent-{host}.log").open("rb") as f:
                f.seek(since)
                return text.encode() in f.read()
        self.wait(logged, f"agent {host} to log {text!r}", timeout=timeout)

    def status(self, host: str) -> AgentStatus:
        return AgentStatus.read(self.status_path(host))

    def converged(self, revision: int = 0) -> None:
        """Wait until every running agent has applied at least `revision` and converged."""
        def ok() -> bool:
            return all(self.status(h).programmed(revision) for h, p in self.agents.items() if p.poll() is None)
        self.wait(ok, f"agents converged at revision >= {revision}")

    def vx(self, *args: str, cert: str = "admin", tls: list[str] | None = None, run: Path | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`vxlab --controller SOCK --pki DIR …` with no lab state visible (VXLAB_RUN is an
        empty directory, no other VXLAB_* variable): what a user runs against real hosts.
        `cert`: admin, or a host's name for that host's certificate; `tls`: other flags."""
        run = run or self.tmp / "no-lab-here"
        run.mkdir(exist_ok=True)
        if tls is None and self.pki is not None:
            mine = self.pki.host(cert)
            tls = ["--pki", str(self.pki.dir)] if cert == "admin" else [
                "--tls-ca", str(mine.ca), "--tls-cert", str(mine.cert), "--tls-key", str(mine.key)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VXLAB_")} | {"VXLAB_RUN": str(run)}
        return subprocess.run([sys.executable, "-m", "vxlab.cli", "--controller", self.sock, *(tls or []), *args],
                              capture_output=True, text=True, env=env, timeout=timeout)

    def api(self, coro_fn: Any) -> Any:
        async def go() -> Any:
            async with Client(self.sock, tls=self.pki.admin() if self.pki else None) as c:
                return await coro_fn(c)
        return asyncio.run(go())

    def network(self, name: str, **kw: Any) -> Network:
        return self.api(lambda c: c.create_network(Network(name=name, **kw)))

    def container(self, name: str, host: str, network: str, **kw: Any) -> Endpoint:
        return self.api(lambda c: c.create_endpoint(Endpoint(name=name, network=network, host=host, **kw)))

    def revision(self) -> int:
        """The store's current revision (what a converged agent has applied)."""
        from vxlab.controller.store_etcd import EtcdStore

        async def go() -> int:
            store = EtcdStore(self.etcd.endpoints, tls=self.pki.etcd_client() if self.pki else None)
            try:
                return await store.revision()
            finally:
                await store.close()
        return asyncio.run(go())

    def settle(self) -> None:
        """Wait until every running agent has programmed everything written so far."""
        self.converged(self.revision())

    def cns(self, host: str, container: str) -> str:
        return self.layout.container_ns(host, container)

    def nns(self, host: str, network: str) -> str:
        return self.layout.network_ns(host, network)

    def sh(self, ns: str, *cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check,
                              timeout=timeout)

    def ping(self, ns: str, ip: str, *, count: int = 1, size: int | None = None, df: bool = False,
             wait: float = 1.0, interval: float | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["ping", "-n", "-c", str(count), "-W", str(wait)]
        if size is not None:
            cmd += ["-s", str(size)]
        if df:
            cmd += ["-M", "do"]
        if interval is not None:
            cmd += ["-i", str(interval)]
        return self.sh(ns, *cmd, ip)

