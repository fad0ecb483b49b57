"""Network policy with real packets on a real 2-host lab (issue 7): rules by container,
label and CIDR, TCP with ports and ICMP, first match by priority, default allow, replies
of allowed connections passing, an established connection cut by a new deny, the same
host as well as across VXLAN, and the CLI (`policy add/ls/rm/test`, bad input).

TCP servers and clients are sockets of this test process opened inside the container
namespaces (a socket stays in the namespace it was opened in); all are closed in
finalizers, and every rule a test adds is removed by the `rules` fixture.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from vxlab import netns
from vxlab.lab.lab import Lab
from vxlab.model import Policy, Selector
from rig import module_lab

pytestmark = pytest.mark.integration
TOPO = """hosts: 2
networks:
  - {name: blue, subnet: 10.79.0.0/24}
containers:
  - {name: web, host: h1, networks: [{name: blue, ip: 10.79.0.2}], labels: {tier: front}}
  - {name: tool, host: h1, networks: [{name: blue, ip: 10.79.0.4}]}
  - {name: db, host: h2, networks: [{name: blue, ip: 10.79.0.3}], labels: {tier: data}}
  - {name: cache, host: h2, networks: [{name: blue, ip: 10.79.0.5}]}
"""
IP = {"web": "10.79.0.2", "db": "10.79.0.3", "tool": "10.79.0.4", "cache": "10.79.0.5"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with module_lab(tmp_path_factory.mktemp("run"), TOPO) as the_lab:
        yield the_lab


@pytest.fixture
def rules(lab: Lab) -> Iterator[list[Policy]]:
    """Add rules with `lab.add_policy(...)`, appending them here: they are removed after."""
    added: list[Policy] = []
    yield added
    for p in added:
        try:
            lab.remove_policy(p.network, p.name)
        except Exception:  # noqa: BLE001 - removed by the test itself
            pass


def add(lab: Lab, rules: list[Policy], name: str, action: str, **kw: object) -> Policy:
    p = lab.add_policy(Policy(name=name, network="blue", action=action, **kw))  # type: ignore[arg-type]
    rules.append(p)
    return p


def ping(lab: Lab, src: str, dst: str) -> bool:
    return lab.exec(src, "ping", "-n", "-q", "-c", "1", "-W", "1", IP[dst]).returncode == 0


class Server:
    """A TCP echo server on `port` in a container's namespace, served by a thread here."""

    def __init__(self, ns: str, port: int) -> None:
        def listen() -> socket.socket:
            netns.enter(ns)
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(16)
            return s
        self.sock = netns.in_thread(listen)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        try:
            while data := conn.recv(1024):
                conn.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for s in [self.sock, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    made = [Server(lab.namespace_of(c), port) for c in ("db", "cache", "web") for port in (5432, 8080)]
    yield
    for s in made:
        s.close()


def connect(lab: Lab, src: str, dst: str, port: int, *, timeout: float = 1.0) -> socket.socket | None:
    """A connected TCP socket from container `src` (None when the connection fails)."""
    def go() -> socket.socket | None:
        netns.enter(lab.namespace_of(src))
        try:
            return socket.create_connection((IP[dst], port), timeout=timeout)
        except OSError:
            return None
    return netns.in_thread(go)


def tcp(lab: Lab, src: str, dst: str, port: int) -> bool:
    s = connect(lab, src, dst, port)
    if s is None:
        return False
    try:
        s.sendall(b"hello")
        return s.recv(16) == b"hello"
    except OSError:
        return False
    finally:
        s.close()


def bridge_nf(lab: Lab, host: str) -> str:
    """bridge-nf-call-iptables in the host's namespace of network blue."""
    def read() -> str:
        netns.enter(lab.network_ns(host, "blue"))
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            return f.read().strip()
    return netns.in_thread(read)


def test_default_allow_and_a_table_only_where_rules_apply(lab: Lab, servers: None) -> None:
    assert ping(lab, "tool", "db") and tcp(lab, "tool", "db", 8080) and tcp(lab, "db", "web", 5432)
    for host in ("h1", "h2"):
        tables = subprocess.run(["ip", "netns", "exec", lab.network_ns(host, "blue"), "nft", "list", "tables"],
                                capture_output=True, text=True).stdout
        assert "vxlab_policy" not in tables
        assert bridge_nf(lab, host) == "0"  # bridged frames skip the IP hooks where no rule is


def test_label_port_and_priority_across_hosts_and_on_one(lab: Lab, servers: None, rules: list[Policy]) -> None:
    add(lab, rules, "front-to-db", "allow", source=Selector(label="tier=front"), destination=Selector(container="db"),
        protocol="tcp", ports=("5432",), priority=100)
    add(lab, rules, "db-closed", "deny", destination=Selector(container="db"), priority=200)
    assert tcp(lab, "web", "db", 5432)             # allowed by label and port, across VXLAN
    assert not tcp(lab, "web", "db", 8080)         # another port: the deny below it
    assert not tcp(lab, "tool", "db", 5432)        # no label: denied
    assert not tcp(lab, "cache", "db", 5432)       # same host as db: denied there too
    assert not ping(lab, "web", "db") and not ping(lab, "cache", "db")
    assert ping(lab, "db", "web") and tcp(lab, "db", "cache", 8080)  # db itself is not restricted
    assert ping(lab, "tool", "cache") and tcp(lab, "web", "cache", 5432)
    assert lab.check().ok  # check expects exactly what the rules allow
    assert (bridge_nf(lab, "h1"), bridge_nf(lab, "h2")) == ("0", "1")  # hooks only where a table is


def test_icmp_only_and_cidr(lab: Lab, servers: None, rules: list[Policy]) -> None:
    add(lab, rules, "no-ping", "deny", source=Selector(cidr="10.79.0.4/32"), protocol="icmp")
    assert not ping(lab, "tool", "db") and not ping(lab, "tool", "web")   # remote and local
    assert tcp(lab, "tool", "db", 8080) and ping(lab, "web", "db")


def test_replies_pass_and_a_new_deny_ends_established_connections(lab: Lab, servers: None,
                                                                  rules: list[Policy]) -> None:
    s = connect(lab, "web", "db", 5432)
    assert s is not None
    try:
        s.sendall(b"one")
        assert s.recv(16) == b"one"
        # Nothing may start from db towards web; web's connection to db still gets its replies.
        add(lab, rules, "quiet-db", "deny", source=Selector(container="db"), destination=Selector(container="web"))
        assert not ping(lab, "db", "web") and not tcp(lab, "db", "web", 8080)
        s.sendall(b"two")
        assert s.recv(16) == b"two"
        assert tcp(lab, "web", "db", 5432)
        # Now deny web -> db: the open connection ends too (its conntrack entry is forgotten).
        add(lab, rules, "cut", "deny", source=Selector(container="web"), destination=Selector(container="db"),
            protocol="tcp", priority=10)
        s.settimeout(1.5)
        s.sendall(b"three")
        with pytest.raises(OSError):
            if s.recv(16) == b"":  # an orderly close would be a pass, not a cut
                raise AssertionError("connection closed instead of dropped")
    finally:
        s.close()


def _cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VXLAB_LAB": lab.name}
    return subprocess.run([sys.executable, "-m", "vxlab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_cli_add_ls_test_rm_and_bad_input(lab: Lab, servers: None) -> None:
    rev = lab.call(lambda c: c.revision())
    for bad, field in [(["--action", "block"], "policy.action"), (["--action", "deny", "--from", "10.0.0.1/8"], "policy.source.cidr"),
                       (["--action", "deny", "--proto", "icmp", "--port", "80"], "policy.ports"),
                       (["--action", "deny", "-n", "nope"], "policy.network")]:
        args = ["policy", "add", "x", *(["-n", "blue"] if "-n" not in bad else []), *bad]
        out = _cli(lab, *args)
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and field in out.stderr, (args, out.stderr)
    assert lab.call(lambda c: c.revision()) == rev, "a rejected policy wrote something"
    out = _cli(lab, "policy", "add", "web-no-cache", "-n", "blue", "--action", "deny", "--from", "web", "--to", "cache",
               "--proto", "tcp", "--port", "8080")
    assert out.returncode == 0, out.stderr
    try:
        assert not tcp(lab, "web", "cache", 8080) and tcp(lab, "web", "cache", 5432)  # enforced when add returns
        listed = json.loads(_cli(lab, "policy", "ls", "--json").stdout)
        assert [(p["name"], p["destination"]["container"], p["ports"]) for p in listed] == [("web-no-cache", "cache", ["8080"])]
        denied = _cli(lab, "policy", "test", "web", "cache", "--proto", "tcp", "--port", "8080")
        assert denied.returncode == 1 and "rule 'web-no-cache'" in denied.stdout
        assert _cli(lab, "policy", "test", "web", "cache", "--proto", "tcp", "--port", "5432").returncode == 0
    finally:
        assert _cli(lab, "policy", "rm", "web-no-cache", "-n", "blue").returncode == 0
    assert tcp(lab, "web", "cache", 8080) and bridge_nf(lab, "h2") == "0"
