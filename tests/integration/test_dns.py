"""The agents' embedded DNS in a real lab (issue 17.1), with real packets: `getent`
inside containers (glibc over UDP to 127.0.0.11, through the resolv.conf that `ip
netns exec` mounts), dnspython over TCP and UDP from sockets made inside a container's
namespace, names, aliases and `<name>.<network>`, NXDOMAIN across networks, REFUSED
for other names in a lab, a re-created container's new address at once, a bridge
network, the listeners after an agent's kill -9, and bad input refused in one line.

One lab for the module (2 hosts, an overlay, an internal overlay and a bridge network).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from vxlab import netns
from vxlab.icmp import socket_in_netns
from vxlab.lab import procs, topology
from vxlab.lab.lab import Lab

pytestmark = pytest.mark.integration

BODY = """
hosts: 2
networks:
  - {name: app, subnet: 10.50.0.0/24}
  - {name: secrets, subnet: 10.60.0.0/24, internal: true}
  - {name: local, driver: bridge, host: h1, subnet: 10.70.0.0/24}
containers:
  - {name: web, host: h1, networks: [app, local]}
  - {name: db, host: h2, networks: [{name: app, ip: 10.50.0.3, aliases: [database, pg]}]}
  - {name: api, host: h2, networks: [app, {name: secrets, aliases: [backend]}]}
  - {name: vault, host: h1, networks: [{name: secrets, aliases: [kms]}]}
  - {name: worker, host: h1, networks: [local]}
  - {name: lonely, host: h2, network_mode: none}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    run = tmp_path_factory.mktemp("dns") / "run"
    old = os.environ.get("VXLAB_RUN")
    os.environ["VXLAB_RUN"] = str(run)
    name = "vxt" + secrets.token_hex(3)
    lab = Lab(name)
    try:
        lab.up(topology.parse(f"name: {name}\n{BODY}"))
        yield lab
    finally:
        lab.down()
        if old is None:
            os.environ.pop("VXLAB_RUN", None)
        else:
            os.environ["VXLAB_RUN"] = old


def getent(lab: Lab, container: str, name: str) -> tuple[int, str]:
    """`getent hosts NAME` in the container: (exit code, the address it printed or "")."""
    p = lab.exec(container, "getent", "hosts", name)
    return p.returncode, p.stdout.split()[0] if p.stdout.strip() else ""


def ask(lab: Lab, container: str, name: str, rdtype: str = "A", *, tcp: bool) -> dns.message.Message:
    """A query to 127.0.0.11 from a socket made inside the container's namespace."""
    q = dns.message.make_query(name, rdtype)
    ns = lab.namespace_of(container)
    if tcp:
        sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM, 0)
        with sock:
            sock.settimeout(5)
            sock.connect(("127.0.0.11", 53))
            return dns.query.tcp(q, "127.0.0.11", timeout=5, sock=sock)
    sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM, 0)
    with sock:
        return dns.query.udp(q, "127.0.0.11", timeout=5, sock=sock)


def addresses(r: dns.message.Message) -> list[str]:
    assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
    return [rd.address for rrset in r.answer for rd in rrset]


def ip_of(lab: Lab, container: str, network: str) -> str:
    return next(e.ip for e in lab.call(lambda c: c.list_endpoints(name=container)) if e.network == network)


def test_getent_resolves_names_aliases_and_name_dot_network(lab: Lab) -> None:
    db = "10.50.0.3"
    assert getent(lab, "web", "db") == (0, db)             # across VXLAN, h1 -> h2
    assert getent(lab, "web", "database") == (0, db)       # an alias
    assert getent(lab, "web", "pg.app") == (0, db)         # <alias>.<network>
    assert getent(lab, "web", "db.app") == (0, db)         # <name>.<network>
    assert getent(lab, "vault", "backend") == (0, ip_of(lab, "api", "secrets"))
    assert getent(lab, "api", "kms.secrets") == (0, ip_of(lab, "vault", "secrets"))
    p = lab.exec("web", "getent", "hosts", db)             # reverse (PTR)
    assert p.returncode == 0 and p.stdout.split() == [db, "db.app"], p.stdout


def test_names_on_networks_not_shared_are_nxdomain(lab: Lab) -> None:
    for name in ("vault", "kms", "vault.secrets", "db.secrets", "worker.app"):
        assert getent(lab, "web", name)[0] == 2, name       # "not found"
        assert ask(lab, "web", name, tcp=False).rcode() == dns.rcode.NXDOMAIN, name
    assert getent(lab, "vault", "db")[0] == 2 and getent(lab, "vault", "web")[0] == 2


def test_bridge_network_resolves(lab: Lab) -> None:
    assert getent(lab, "web", "worker") == (0, ip_of(lab, "worker", "local"))
    assert getent(lab, "worker", "web") == (0, ip_of(lab, "web", "local"))  # web's address on local
    assert getent(lab, "worker", "db")[0] == 2


def test_tcp_and_udp_answers_and_other_names_refused_in_a_lab(lab: Lab) -> None:
    for tcp in (False, True):
        assert addresses(ask(lab, "api", "pg", tcp=tcp)) == ["10.50.0.3"]
        r = ask(lab, "api", "db", "AAAA", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer  # a known name, no IPv6: empty, at once
        assert ask(lab, "api", "example.com", tcp=tcp).rcode() == dns.rcode.REFUSED  # a lab forwards nothing


def test_resolv_conf_only_where_the_agent_manages_the_namespace(lab: Lab) -> None:
    web = Path(netns.resolv_path(lab.namespace_of("web"))).read_text()
    assert "nameserver 127.0.0.11\n" in web and "options ndots:0" in web and web.startswith(netns.RESOLV_HEAD)
    assert not Path(netns.resolv_path(lab.namespace_of("lonely"))).exists()  # network_mode: none
    p = subprocess.run(["ip", "netns", "exec", lab.namespace_of("web"), "cat", "/etc/resolv.conf"],
                       capture_output=True, text=True)
    assert p.stdout == web


def test_recreated_container_resolves_to_its_new_address(lab: Lab) -> None:
    """db moves to h1 with another address (its endpoint deleted and created again): web
    (on h1) and api (on h2) resolve it to the new address as soon as `up` converged."""
    text = BODY.replace("{name: db, host: h2, networks: [{name: app, ip: 10.50.0.3,",
                        "{name: db, host: h1, networks: [{name: app, ip: 10.50.0.30,")
    try:
        steps = lab.up(topology.parse(f"name: {lab.name}\n{text}"))
        assert [s.describe() for s in steps if s.kind == "container"][0].startswith("- container db")
        assert getent(lab, "web", "db") == (0, "10.50.0.30")
        assert getent(lab, "api", "database") == (0, "10.50.0.30")
        assert getent(lab, "db", "web") == (0, ip_of(lab, "web", "app"))  # db's own resolver, now on h1
        assert not Path(netns.resolv_path(lab.container_ns("h2", "db"))).exists()  # went with h2's namespace
    finally:
        lab.up(topology.parse(f"name: {lab.name}\n{BODY}"))
    assert getent(lab, "web", "db") == (0, "10.50.0.3")


# A UDP echo on 0.0.0.0:PORT: "<peer address>" back to each datagram; "listening" once bound.
UDP_ECHO = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53));"
            " print('listening', flush=True)\nwhile True: d, a = s.recvfrom(512); s.sendto(a[0].encode(), a)")


def test_a_server_in_the_container_binds_port_53_and_the_resolver_still_answers(lab: Lab) -> None:
    """db runs its own server on 0.0.0.0:53/udp (the agent's listeners are on
    127.0.0.11:10053, `ip vxlab_dns` DNATs 127.0.0.11:53 there): web on h1 reaches it at
    db's address across VXLAN, and glibc in db still resolves through 127.0.0.11. The
    redirect deleted by hand is put back by the agent."""
    ns = lab.namespace_of("db")
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", UDP_ECHO], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "listening"  # no EADDRINUSE
        with socket_in_netns(lab.namespace_of("web"), socket.AF_INET, socket.SOCK_DGRAM, 0) as s:
            s.settimeout(5)
            s.connect(("10.50.0.3", 53))
            s.send(b"?")
            assert s.recv(512).decode() == ip_of(lab, "web", "app")
        assert getent(lab, "db", "web") == (0, ip_of(lab, "web", "app"))
        assert addresses(ask(lab, "db", "api", tcp=True)) == [ip_of(lab, "api", "app")]
    finally:
        p.kill()
        p.wait()
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "vxlab_dns"], check=True)
    procs.wait_for(lambda: getent(lab, "db", "web")[0] == 0, "the redirect back (h2's next full pass)",
                   timeout=40, interval=0.5)


def test_listeners_come_back_after_an_agent_kill(lab: Lab) -> None:
    """kill -9 of h1's agent: its sockets die with it; the restarted agent adopts the
    namespaces (resolv.conf unchanged) and listens again before it reports converged."""
    with lab.fault("agent-kill", host="h1"):
        assert getent(lab, "web", "db")[0] != 0  # nobody listens
    lab.wait_converged()
    assert getent(lab, "web", "db") == (0, "10.50.0.3")
    assert getent(lab, "vault", "kms") == (0, ip_of(lab, "vault", "secrets"))


def test_bad_aliases_write_nothing_and_name_the_field(lab: Lab, tmp_path: Path) -> None:
    rev = lab.call(lambda c: c.revision())
    cases = {
        "aliases: [kms, api]": "containers[3].networks[0].aliases[1]: 'api' is already the name of container"
                               " 'api' on network 'secrets'",
        "aliases: [Kms]": "containers[3].networks[0].aliases[0]: 'Kms' is not a valid name",
    }
    for change, message in cases.items():
        f = tmp_path / "bad.yaml"
        f.write_text(f"name: {lab.name}\n" + BODY.replace("aliases: [kms]", change))
        p = subprocess.run([sys.executable, "-m", "vxlab.cli", "up", str(f)], capture_output=True, text=True)
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and message in p.stderr, p.stderr
    f.write_text(f"name: {lab.name}\n" + BODY.replace("aliases: [backend]", "aliases: [kms]"))
    p = subprocess.run([sys.executable, "-m", "vxlab.cli", "up", str(f)], capture_output=True, text=True)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "containers[3].networks[0].aliases[0]: 'kms' is already an alias of container 'api' on network" \
        " 'secrets'" in p.stderr
    assert lab.call(lambda c: c.revision()) == rev


def test_changed_aliases_resolve_at_once(lab: Lab) -> None:
    """`up` with db's aliases changed is an update in place (`~ container db`), and the
    agents answer from their caches: the new alias resolves, the old one is gone."""
    text = BODY.replace("aliases: [database, pg]", "aliases: [primary]")
    try:
        steps = lab.up(topology.parse(f"name: {lab.name}\n{text}"))
        assert [s.describe() for s in steps] == ["~ container db: network app aliases [database, pg] -> [primary]"]
        assert getent(lab, "web", "primary") == (0, "10.50.0.3")
        assert getent(lab, "web", "database")[0] == 2
    finally:
        lab.up(topology.parse(f"name: {lab.name}\n{BODY}"))
    assert getent(lab, "web", "database") == (0, "10.50.0.3")


def test_container_run_alias_and_inspect(lab: Lab) -> None:
    """`container run --alias`: resolves at once (run waits for convergence); a taken or
    bad alias is one line naming the field, exit 1, and nothing written."""
    def vx(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vxlab.cli", *args, "--lab", lab.name], capture_output=True,
                              text=True)
    rev = lab.call(lambda c: c.revision())
    for alias, message in (("pg", "error: endpoint.aliases[0]: 'pg' is already an alias of container 'db' on"
                                  " network 'app'"),
                           ("web", "error: endpoint.aliases[0]: 'web' is already the name of container 'web' on"
                                   " network 'app'"),
                           ("Bad_Name", "error: endpoint.aliases[0]: 'Bad_Name' is not a valid name")):
        p = vx("container", "run", "cache", "--host", "h2", "--network", "app", "--alias", alias)
        assert p.returncode == 1 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
        assert p.stderr.startswith(message), p.stderr
    assert lab.call(lambda c: c.revision()) == rev
    p = vx("container", "run", "cache", "--host", "h2", "--network", "app", "--alias", "redis")
    try:
        assert p.returncode == 0, p.stderr
        assert getent(lab, "web", "redis") == (0, ip_of(lab, "cache", "app"))
        inspect = json.loads(vx("container", "inspect", "cache", "--json").stdout)
        assert inspect[0]["NetworkSettings"]["Networks"]["app"]["Aliases"] == ["redis"]
    finally:
        assert vx("container", "rm", "cache").returncode == 0
    assert getent(lab, "web", "redis")[0] == 2
