"""Mutual TLS and authorization by identity against real processes.

A PKI in a tmp dir, an etcd with client-certificate auth, a `vxlab controller serve
--pki` process on a unix socket; then clients with no certificate, a foreign CA's, a
host's and the admin's. The agent test runs the multi-host rig with TLS on every hop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vxlab import errors, pki
from vxlab.client import Client
from vxlab.controller.store import StoreUnavailable
from vxlab.controller.store_etcd import EtcdStore
from vxlab.etcdproc import EtcdProcess
from vxlab.model import Endpoint, Host, Network
from vxlab.tls import Pki, TlsConfig

from rig import Rig, stop_group

pytestmark = pytest.mark.integration


class Secured:
    """A PKI, a TLS etcd and a TLS controller process; `call(tls, fn)` runs one client call."""

    def __init__(self, tmp: Path) -> None:
        self.pki = pki.init(tmp / "pki", hosts=["h1"])
        self.foreign = pki.init(tmp / "foreign", hosts=["h1"])
        self.etcd = EtcdProcess(tmp / "etcd", tls=self.pki.etcd_server(), client_tls=self.pki.etcd_client())
        self.sock = f"unix:{tmp}/controller.sock"
        self.log = tmp / "controller.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.etcd.start()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", self.sock,
             "--etcd", ",".join(self.etcd.endpoints), "--pki", str(self.pki.dir)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited: {self.log.read_text()[-2000:]}")
            if Path(self.sock[5:]).exists():
                try:
                    self.call(self.pki.admin(), lambda c: c.list_hosts())
                    return
                except errors.VxError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"controller not serving: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
        self.etcd.stop()

    def call(self, tls: TlsConfig | None, fn: Any) -> Any:
        async def go() -> Any:
            async with Client(self.sock, tls=tls, timeout=5) as c:
                return await fn(c)
        return asyncio.run(go())

    def revision(self) -> int:
        return int(self.call(self.pki.admin(), lambda c: c.revision()))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = Secured(tmp_path_factory.mktemp("tls"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_no_client_certificate_fails_the_handshake(secured: Secured) -> None:
    with pytest.raises(errors.Unauthenticated, match="requires TLS with a client certificate"):
        secured.call(None, lambda c: c.list_networks())


def test_a_foreign_ca_certificate_fails_the_handshake(secured: Secured) -> None:
    cert, key = secured.foreign.pair("admin")  # trusts our CA, presents the foreign one's admin
    with pytest.raises(errors.Unauthenticated, match="refused our TLS handshake"):
        secured.call(TlsConfig(secured.pki.ca, cert, key), lambda c: c.list_networks())


def test_a_controller_of_another_ca_is_not_trusted(secured: Secured) -> None:
    with pytest.raises(errors.Unauthenticated, match="its certificate is not one our CA signed"):
        secured.call(secured.foreign.admin(), lambda c: c.list_networks())


def test_admin_may_do_everything(secured: Secured) -> None:
    admin = secured.pki.admin()
    secured.call(admin, lambda c: c.register_host(Host("h9", underlay_ip="172.31.9.9")))
    net = secured.call(admin, lambda c: c.create_network(Network("adm")))
    ep = secured.call(admin, lambda c: c.create_endpoint(Endpoint("web", "adm", "h9")))
    assert ep.ip and net.subnet
    secured.call(admin, lambda c: c.delete_endpoint("adm", "web"))
    secured.call(admin, lambda c: c.delete_network("adm"))
    secured.call(admin, lambda c: c.deregister_host("h9", force=True))


def test_a_host_acts_only_as_itself(secured: Secured) -> None:
    h1 = secured.pki.host("h1")
    _, lease, _ = secured.call(h1, lambda c: c.register_host(Host("h1", underlay_ip="172.31.0.11")))
    secured.call(h1, lambda c: c.keepalive("h1", lease))
    before = secured.revision()
    with pytest.raises(errors.PermissionDenied) as info:
        secured.call(h1, lambda c: c.register_host(Host("h2", underlay_ip="172.31.0.12")))
    assert info.value.message == "host: certificate is for 'h1', not 'h2'"
    with pytest.raises(errors.PermissionDenied, match="^host: certificate is for 'h1', not 'h2'$"):
        secured.call(h1, lambda c: c.deregister_host("h2", force=True))
    assert secured.revision() == before  # a refused request writes nothing
    assert [h.name for h in secured.call(h1, lambda c: c.list_hosts())] == ["h1"]  # reads are fine
    secured.call(h1, lambda c: c.deregister_host("h1"))


def test_a_host_may_not_create_networks_or_endpoints(secured: Secured) -> None:
    h1 = secured.pki.host("h1")
    before = secured.revision()
    with pytest.raises(errors.PermissionDenied, match=r"^network: host 'h1' may not create networks \(admin only\)$"):
        secured.call(h1, lambda c: c.create_network(Network("evil")))
    with pytest.raises(errors.PermissionDenied, match=r"^endpoint: host 'h1' may create only endpoints of a runtime "
                                                      r"\(docker, cni\) on itself, not a vxlab endpoint"):
        secured.call(h1, lambda c: c.create_endpoint(Endpoint("x", "evil", "h1")))
    assert secured.revision() == before


def test_a_host_makes_and_removes_runtime_endpoints_on_itself_only(secured: Secured) -> None:
    """What its Docker and CNI plugins need, with the host's certificate alone."""
    h1, admin = secured.pki.host("h1"), secured.pki.admin()
    secured.call(admin, lambda c: c.create_network(Network("rt", subnet="10.77.0.0/24")))
    for name in ("h1", "h2"):
        secured.call(admin, lambda c, n=name: c.register_host(Host(n, underlay_ip=f"192.0.2.{n[1]}")))
    web = secured.call(admin, lambda c: c.create_endpoint(Endpoint("web", "rt", "h1")))
    try:
        before = secured.revision()
        with pytest.raises(errors.PermissionDenied, match="not a cni endpoint on host 'h2'$"):
            secured.call(h1, lambda c: c.create_endpoint(Endpoint("pod", "rt", "h2", runtime="cni")))
        for call in (lambda c: c.delete_endpoint("rt", "web"),
                     lambda c: c.update_endpoint(Endpoint("web", "rt", "h1", labels={"k": "v"}))):
            with pytest.raises(errors.PermissionDenied, match="may change only endpoints of a runtime .* not a vxlab "
                                                              "endpoint \\(admin only\\) on host 'h1'$"):
                secured.call(h1, call)
        assert secured.revision() == before  # refused: nothing written
        pod = secured.call(h1, lambda c: c.create_endpoint(Endpoint("pod", "rt", "h1", runtime="cni")))
        assert pod.ip and pod.ip != web.ip and pod.runtime == "cni"
        got = secured.call(h1, lambda c: c.update_endpoint(Endpoint("pod", "rt", "h1", labels={"k": "v"})))
        assert got.labels == {"k": "v"}
        secured.call(h1, lambda c: c.delete_endpoint("rt", "pod"))
        assert [e.name for e in secured.call(h1, lambda c: c.list_endpoints(network="rt"))] == ["web"]
    finally:
        secured.call(admin, lambda c: c.delete_network("rt", force=True))
        for name in ("h1", "h2"):
            secured.call(admin, lambda c, n=name: c.deregister_host(n, force=True))


def test_the_cli_uses_pki_and_says_why_without(secured: Secured) -> None:
    base = [sys.executable, "-m", "vxlab.cli", "--controller", secured.sock]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VXLAB_")}
    ok = subprocess.run([*base, "--pki", str(secured.pki.dir), "network", "ls"], capture_output=True, text=True,
                        env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*base, "network", "ls"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: controller: ") and "requires TLS" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1, bad.stderr  # one line, no gRPC core log
    agent = Pki(secured.pki.dir).host("h1")
    denied = subprocess.run([*base, "--tls-ca", str(agent.ca), "--tls-cert", str(agent.cert), "--tls-key",
                             str(agent.key), "network", "create", "evil"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert (denied.returncode, denied.stderr) == (1, "error: network: host 'h1' may not create networks (admin only)\n")


def test_etcd_takes_only_client_certificates_of_its_own_ca(secured: Secured) -> None:
    """The controller reads and writes etcd over TLS (the tests above); a plain
    connection and a certificate of the API CA (an agent's) are refused."""
    plain = secured.etcd.endpoints[0].replace("https://", "http://")

    async def revision(endpoints: list[str], tls: TlsConfig | None) -> int:
        store = EtcdStore(endpoints, timeout=2, tls=tls)
        try:
            return await store.revision()
        finally:
            await store.close()
    assert asyncio.run(revision(secured.etcd.endpoints, secured.pki.etcd_client())) > 0
    with pytest.raises(StoreUnavailable):
        asyncio.run(revision([plain], None))
    agent_cert, agent_key = secured.pki.pair("host:h1")
    with pytest.raises(StoreUnavailable):
        asyncio.run(revision(secured.etcd.endpoints, TlsConfig(secured.pki.etcd_ca, agent_cert, agent_key)))


@pytest.fixture
def tls_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, hosts=2, tls=True)
    try:
        yield r.start()
    finally:
        r.close()


def test_agents_converge_over_mutual_tls(tls_rig: Rig) -> None:
    tls_rig.wait(lambda: all(tls_rig.status(h).registered for h in tls_rig.hosts), "agents registered")
    tls_rig.network("blue", subnet="10.77.0.0/24")
    tls_rig.container("web", "h1", "blue")
    db = tls_rig.container("db", "h2", "blue")
    tls_rig.settle()
    assert tls_rig.ping(tls_rig.cns("h1", "web"), db.ip).returncode == 0
    hosts = tls_rig.api(lambda c: c.list_hosts())
    assert sorted(h.name for h in hosts if h.alive) == ["h1", "h2"]
