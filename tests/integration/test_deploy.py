"""deploy/ for real, on one machine: the three etcd env files (with the etcd unit's TLS
settings) start a 3-member cluster, the example controller.toml a controller on it, the
example agent.toml an agent in a throwaway network namespace set up like vm1 (its
private network on `eth1`, MTU 9000), and the agent registers with the underlay it found
through the route towards the controllers. Every hop is mutual TLS, with a PKI made by
`vxlab pki init` as deploy/README.md says. The same files on three real VMs:
tests/integration/test_deploy_vms.py.

Adjustments, all through flags (which override the files) or the env, none in the files:
etcd's 192.168.56.1x become loopback addresses 127.0.0.1x (same ports, data in tmp) and
the unit's credentials directory (%d) a tmp copy of the test's PKI; the controller
listens on a unix socket (the namespace reaches it without IP plumbing) and gets those
etcd URLs and `--pki`; the agent gets `--pki` and `--controller
192.168.56.12:7070,unix:SOCK`, so the underlay is detected from the first (routed over
eth1, nobody answers there) and the agent fails over to the second.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vxlab import netns
from vxlab import pki as pki_lib
from vxlab.client import Client
from vxlab.etcdproc import find_etcd, free_port
from vxlab.tls import Pki

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def wait(cond: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def unit_tls_env(pki: Path, creds: Path) -> dict[str, str]:
    """The etcd unit's Environment= lines, its %d (the credentials directory) made in
    `creds` from its LoadCredential= lines, with /etc/vxlab/pki being `pki`."""
    unit = (DEPLOY / "systemd" / "vxlab-etcd@.service").read_text()
    creds.mkdir(exist_ok=True)
    for name, path in re.findall(r"^LoadCredential=([^:\s]+):(\S+)$", unit, re.MULTILINE):
        shutil.copy(pki / Path(path).relative_to("/etc/vxlab/pki"), creds / name)
    env = {}
    for line in re.findall(r"^Environment=(.*)$", unit, re.MULTILINE):
        for item in line.split():
            key, value = item.split("=", 1)
            env[key] = value.replace("%d", str(creds))
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    return env


def member_env(name: str, data: Path) -> dict[str, str]:
    """deploy/etcd/<name>.env on loopback: 192.168.56.1x -> 127.0.0.1x, data dir in tmp."""
    env = {}
    for line in (DEPLOY / "etcd" / f"{name}.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value.replace("192.168.56.1", "127.0.0.1")
    env["ETCD_LISTEN_CLIENT_URLS"] = ",".join(u for u in env["ETCD_LISTEN_CLIENT_URLS"].split(",")
                                              if u != "https://127.0.0.1:2379")  # not a shared port
    env["ETCD_DATA_DIR"] = str(data / name)
    return env


def healthy(url: str, tls: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1, context=tls) as r:
            return b'"health":"true"' in r.read()
    except OSError:
        return False


class Procs:
    """Processes in sessions of their own, killed (whole groups) on close."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for p in reversed(self.procs.values()):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def vm1() -> Iterator[str]:
    """A namespace like vm1: eth1 = the private network (a veth to nowhere: nobody answers), MTU 9000."""
    ns = f"vxt{secrets.token_hex(3)}-vm1"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "eth1", "mtu", "9000", "type", "veth", "peer", "name", "eth1p"],
                    ["link", "set", "eth1p", "up"],
                    ["addr", "add", "192.168.56.11/24", "dev", "eth1"], ["link", "set", "eth1", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        yield ns
    finally:
        gone = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        for name in gone:
            if name.startswith(ns):
                subprocess.run(["ip", "netns", "delete", name], check=False)
                netns.remove_etc(name)  # the resolv.conf the agent wrote for a container namespace


def test_deploy_files_run_a_cluster_a_controller_and_an_agent(tmp_path: Path, procs: Procs, vm1: str) -> None:
    etcd = find_etcd()
    if etcd.version.startswith("3.5.") and "3.5.3" > etcd.version:
        pytest.skip(f"etcd {etcd.version} (the wheel's); the units run the distribution's /usr/bin/etcd")
    pki = tmp_path / "pki"  # deploy/README.md step 0, with the loopback addresses
    pki_lib.init(pki, hosts=["vm1"], san=["127.0.0.11", "127.0.0.12", "127.0.0.13"])
    tls_env = unit_tls_env(pki, tmp_path / "credentials")
    urls = []
    for name in ("vm1", "vm2", "vm3"):
        env = member_env(name, tmp_path / "etcd")
        procs.start(f"etcd-{name}", [etcd.path], env={"PATH": os.environ["PATH"], **env, **tls_env})
        urls.append(env["ETCD_ADVERTISE_CLIENT_URLS"])
    assert all(u.startswith("https://") for u in urls)
    client_tls = ssl.create_default_context(cafile=str(Pki(pki).etcd_ca))
    client_tls.load_cert_chain(*Pki(pki).pair("etcd-client"))
    wait(lambda: all(healthy(u, client_tls) for u in urls), "the 3-member cluster from deploy/etcd/*.env")
    for name in ("vm1", "vm2", "vm3"):
        assert "unrecognized environment variable" not in procs.log(f"etcd-{name}"), procs.log(f"etcd-{name}")

    sock = tmp_path / "controller.sock"
    controller = procs.start("controller", [
        sys.executable, "-m", "vxlab.cli", "controller", "serve", "--config", str(DEPLOY / "config" / "controller.toml"),
        "--listen", f"unix:{sock}", "--etcd", ",".join(urls), "--metrics", f"127.0.0.1:{free_port()}",
        "--pki", str(pki)])
    wait(lambda: sock.exists() or controller.poll() is not None, "the controller socket")
    assert controller.poll() is None, procs.log("controller")

    status = tmp_path / "agent-status.json"
    agent = procs.start("agent", [
        # nsenter, not `ip netns exec`: that one runs in a mount namespace of its own, which
        # would keep the agent's /run/netns mounts from the host (as systemd's ProtectSystem would)
        "nsenter", f"--net=/run/netns/{vm1}", sys.executable, "-m", "vxlab.cli", "--pki", str(pki), "--controller",
        f"192.168.56.12:7070,unix:{sock}", "agent", "run", "--config", str(DEPLOY / "config" / "agent.toml"),
        "--netns-prefix", f"{vm1}-", "--status-file", str(status)])

    async def hosts() -> list:  # type: ignore[type-arg]
        async with Client(f"unix:{sock}", tls=Pki(pki).admin()) as c:
            return await c.list_hosts()

    wait(lambda: agent.poll() is not None or any(h.alive for h in asyncio.run(hosts())), "the agent registered")
    assert agent.poll() is None, procs.log("agent")
    (host,) = asyncio.run(hosts())
    assert (host.name, host.underlay_ip, host.underlay_mtu) == ("vm1", "192.168.56.11", 9000), procs.log("agent")
    assert host.labels["site"] == "vagrant" and host.labels["vxlab/netns-prefix"] == f"{vm1}-"
    assert "underlay 192.168.56.11 on eth1 (mtu 9000)" in procs.log("agent")

    # A container the way deploy/README.md makes one on real hosts (no lab: the controller).
    def vxlab(*args: str) -> None:
        env = {**os.environ, "VXLAB_RUN": str(tmp_path / "run")}  # never another lab running here
        out = subprocess.run([sys.executable, "-m", "vxlab.cli", "--pki", str(pki), "--controller", f"unix:{sock}", *args],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
    vxlab("network", "create", "blue", "--subnet", "10.99.0.0/24")
    vxlab("container", "run", "web", "--host", "vm1", "--network", "blue")
    ns = f"{vm1}-c-web"
    wait(lambda: "10.99.0.2/24" in subprocess.run(["ip", "-n", ns, "-o", "addr"], capture_output=True,
                                                  text=True).stdout, "the agent made the container")
    mtu = subprocess.run(["ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/mtu"], capture_output=True,
                         text=True).stdout
    assert int(mtu) == 9000 - 50
