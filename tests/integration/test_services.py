"""Published ports and service VIPs in a real lab (issue 17.2-17.4), with real packets:
TCP echo servers in the containers that answer with their name and the address they
see; a published port reached from the lab's outside address (the switch), from another
host's namespace, from the host itself (loopback-bound too) and from containers on the
same host (hairpin); 60 connections to a VIP spread over 3 replicas; `affinity:
client-ip`; `check` proving every VIP; the tables repaired after they are deleted by
hand; bad input writing nothing; the real CLI (`service create|ls|inspect|rm`, `container
run -p` for TCP and UDP, `container port`, `container rm` taking the DNAT away, checked
in etcd with `store ls`); and, last, a replica's host crashing: after the lease TTL + 1 s
every connection succeeds again (the dead host's replica is out).

One lab for the module: 3 hosts, one network, a published container and 3 replicas.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from vxlab.errors import AlreadyExists, InvalidArgument, VxError
from vxlab.icmp import socket_in_netns
from vxlab.lab import procs, topology
from vxlab.lab.lab import Lab
from vxlab.model import PortMapping, Service

pytestmark = pytest.mark.integration

BODY = """
hosts: 3
networks:
  - {name: app, subnet: 10.50.0.0/24}
containers:
  - {name: web, host: h1, networks: [app], ports: ["8080:80", "127.0.0.1:9000:9000"]}
  - {name: peer, host: h1, networks: [app]}
  - {name: api1, host: h1, networks: [app], labels: {tier: api}}
  - {name: api2, host: h2, networks: [app], labels: {tier: api}}
  - {name: api3, host: h3, networks: [app], labels: {tier: api}}
  - {name: client, host: h2, networks: [app]}
services:
  - {name: api, network: app, replicas: [api1, api2, api3], ports: [80/tcp]}
"""
H1, H2, H3 = "172.30.0.11", "172.30.0.12", "172.30.0.13"
ECHO = """
import socket, sys
name, bind, port, udp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "udp"
s = socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((bind, port))
udp or s.listen(128)
print("listening", flush=True)
while udp:
    _, peer = s.recvfrom(512); s.sendto(f"{name} {peer[0]}\\n".encode(), peer)
while True:
    c, peer = s.accept()
    c.sendall(f"{name} {peer[0]}\\n".encode()); c.close()
"""


@contextlib.contextmanager
def echo(ns: str, name: str, port: int, *, udp: bool = False, bind: str = "0.0.0.0") -> Iterator[None]:
    """An echo server in namespace `ns` answering "<name> <the peer's address>" to each TCP
    connection (or UDP datagram), listening when this returns; killed on exit."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO, name, bind, str(port),
                          "udp" if udp else "tcp"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "listening"
        yield
    finally:
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    run = tmp_path_factory.mktemp("services") / "run"
    old = os.environ.get("VXLAB_RUN")
    os.environ["VXLAB_RUN"] = str(run)
    name = "vxt" + secrets.token_hex(3)
    lab = Lab(name)
    servers = contextlib.ExitStack()
    try:
        lab.up(topology.parse(f"name: {name}\n{BODY}"))
        for container, port in (("web", 80), ("web", 9000), ("api1", 80), ("api2", 80), ("api3", 80)):
            servers.enter_context(echo(lab.namespace_of(container), container, port))
        yield lab
    finally:
        servers.close()
        lab.down()
        if old is None:
            os.environ.pop("VXLAB_RUN", None)
        else:
            os.environ["VXLAB_RUN"] = old


def connect(ns: str, ip: str, port: int, *, udp: bool = False, timeout: float = 2.0) -> str:
    """One TCP connection (or, `udp`, one datagram and its answer) from namespace `ns`: what
    the echo server said ("name peer"), or "error: …"."""
    sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM, 0)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            if udp:
                sock.send(b"?")
                return sock.recv(512).decode().strip()
            return sock.makefile().readline().strip()
        except OSError as e:
            return f"error: {e.strerror or e}"


def vip(lab: Lab, name: str = "api") -> str:
    return lab.call(lambda c: c.get_service("app", name)).vip


def vx(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", *args, "--lab", lab.name], capture_output=True,
                          text=True)


def test_a_published_port_is_reached_from_outside_other_hosts_the_host_and_containers(lab: Lab) -> None:
    web = next(e.ip for e in lab.call(lambda c: c.list_endpoints(name="web")))
    # from outside (the switch's 172.30.0.1) and another host: the container sees who connects
    assert connect(lab.switch_ns, H1, 8080) == f"web {lab.outside_ip()}"
    assert connect(lab.host_ns("h2"), H1, 8080) == f"web {H2}"
    assert connect(lab.host_ns("h1"), H1, 8080) == f"web {H1}"           # the host itself
    # hairpin: containers of the same host and network (masqueraded to the uplink's address)
    for container in ("peer", "web"):
        said = connect(lab.namespace_of(container), H1, 8080)
        assert said.startswith("web 169.254."), said
    assert connect(lab.namespace_of("client"), H1, 8080) == f"web {H2}"  # another host's container
    # 127.0.0.1:9000 is the host's loopback only
    assert connect(lab.host_ns("h1"), "127.0.0.1", 9000).startswith("web ")
    assert connect(lab.switch_ns, H1, 9000).startswith("error:")
    assert connect(lab.host_ns("h1"), "127.0.0.1", 8080).startswith("error:")  # 0.0.0.0 is not loopback
    # the route the agent keeps to the subnet: the host reaches the container from its uplink's address
    assert connect(lab.host_ns("h1"), web, 80).startswith("web 169.254.")


def test_inspect_and_port_show_the_published_ports(lab: Lab) -> None:
    p = vx(lab, "container", "port", "web")
    assert p.returncode == 0 and p.stdout.splitlines() == ["80/tcp -> 0.0.0.0:8080", "9000/tcp -> 127.0.0.1:9000"]
    inspect = json.loads(vx(lab, "container", "inspect", "web", "--json").stdout)
    assert inspect[0]["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                                                      "9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}]}


def test_sixty_connections_to_the_vip_reach_every_replica(lab: Lab) -> None:
    address = vip(lab)
    p = lab.exec("client", "getent", "hosts", "api")
    assert p.returncode == 0 and p.stdout.split()[0] == address, p.stdout
    said = [connect(lab.namespace_of("client"), address, 80) for _ in range(60)]
    counts = collections.Counter(s.split()[0] for s in said)
    assert set(counts) == {"api1", "api2", "api3"} and min(counts.values()) >= 6, counts
    assert {s.split()[1] for s in said} == {next(e.ip for e in lab.call(lambda c: c.list_endpoints(name="client")))}
    assert connect(lab.namespace_of("client"), address, 81) == "error: Connection refused"  # not a service port


def test_client_ip_affinity_sends_a_client_to_one_replica(lab: Lab) -> None:
    lab.add_service(Service("sticky", "app", selector={"tier": "api"}, ports=("80",), affinity="client-ip"))
    try:
        address = vip(lab, "sticky")
        for client in ("client", "peer"):
            said = {connect(lab.namespace_of(client), address, 80).split()[0] for _ in range(15)}
            assert len(said) == 1 and said <= {"api1", "api2", "api3"}, said
    finally:
        lab.remove_service("app", "sticky")
    assert connect(lab.namespace_of("client"), address, 80).startswith("error:")  # gone with it


def test_check_proves_the_vip_from_every_container_of_its_network(lab: Lab) -> None:
    result = lab.check()
    assert result.ok, result.failures
    assert {p.src for p in result.probes if p.dst == "api (vip)" and p.reached} == {
        "web", "peer", "api1", "api2", "api3", "client"}


def test_tables_deleted_by_hand_are_reported_and_repaired(lab: Lab) -> None:
    """`check --kernel` names both tables deleted by hand. An agent's periodic full pass
    may repair one first (nothing pauses it), so the deletion and the check are retried
    until one check sees both gone (each try deletes again whatever came back)."""
    client = lab.namespace_of("client")
    seen: list[str] = []

    def both_reported() -> bool:
        for ns, table in ((lab.host_ns("h1"), "vxlab_ports"), (client, "vxlab_svc")):
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True,
                           input=f"add table ip {table}\ndelete table ip {table}\n")  # gone, whether or not it was back
        p = vx(lab, "check", "--kernel")
        seen[:] = [p.stdout]
        return p.returncode == 1 and "ports" in p.stdout and "services" in p.stdout
    procs.wait_for(both_reported, "one check --kernel reporting both tables", timeout=60, interval=0,
                   explain=lambda: seen[0] if seen else "")
    procs.wait_for(lambda: connect(lab.switch_ns, H1, 8080, timeout=0.5).startswith("web ")
                   and connect(client, vip(lab), 80, timeout=0.5).startswith("api"),
                   "both tables back (the agents' next full pass)", timeout=40, interval=0.5)


def test_bad_input_writes_nothing_and_names_the_field(lab: Lab) -> None:
    rev = lab.call(lambda c: c.revision())
    p = vx(lab, "container", "run", "w2", "--host", "h1", "--network", "app", "-p", "70000:80")
    assert p.returncode == 1 and p.stderr.strip() == "error: publish[0].host_port: 70000 is out of range 1..65535"
    p = vx(lab, "container", "run", "w2", "--host", "h1", "--network", "app", "-p", "8080:81")
    assert p.returncode == 1 and p.stderr.strip() == (
        "error: endpoint.ports[0].host_port: tcp 8080 on host 'h1' is already published by container 'web'"
        " (network 'app')"), p.stderr
    with pytest.raises(AlreadyExists):
        lab.container("w2", host="h1", networks=["app"], ports=(PortMapping(8080, 81),))
    p = vx(lab, "service", "create", "bad", "-n", "app", "--port", "80", "--replica", "api1", "--replica", "api9")
    assert p.returncode == 1 and p.stderr.strip() == "error: service.replicas[1]: no container 'api9' on network 'app'"
    p = vx(lab, "service", "create", "bad", "-n", "app", "--port", "80", "--replica", "api1", "--vip", "10.9.0.1")
    assert p.returncode == 1 and p.stderr.strip() == "error: service.vip: 10.9.0.1 is outside subnet 10.50.0.0/24"
    with pytest.raises(InvalidArgument):
        lab.add_service(Service("bad", "app", replicas=("api1",), ports=("70000",)))
    assert lab.call(lambda c: c.revision()) == rev


def etcd_keys(lab: Lab, mentioning: str) -> list[str]:
    """The keys of the lab's etcd (`vxlab store ls`) whose key or value names `mentioning`."""
    p = vx(lab, "store", "ls", "--json")
    assert p.returncode == 0, p.stderr
    return [r["key"] for r in json.loads(p.stdout) if mentioning in r["key"] or mentioning in json.dumps(r["value"])]


def test_service_create_ls_inspect_rm_through_the_cli(lab: Lab) -> None:
    client = lab.namespace_of("client")
    ips = {e.name: e.ip for e in lab.call(lambda c: c.list_endpoints(network="app"))}
    try:
        p = vx(lab, "service", "create", "front", "-n", "app", "--port", "80", "--replica", "api1", "--replica", "api2")
        assert p.returncode == 0, p.stderr
        p = vx(lab, "service", "create", "tiered", "-n", "app", "--port", "80/tcp", "--selector", "tier=api")
        assert p.returncode == 0, p.stderr
        front, tiered = vip(lab, "front"), vip(lab, "tiered")
        p = vx(lab, "service", "ls")
        rows = [line.split() for line in p.stdout.splitlines()]
        assert p.returncode == 0 and rows[0] == ["NETWORK", "NAME", "VIP", "PORTS", "REPLICAS", "AFFINITY"]
        assert ["app", "front", front, "80/tcp", "api1,api2", "none"] in rows[1:], p.stdout
        assert ["app", "tiered", tiered, "80/tcp", "tier=api", "none"] in rows[1:], p.stdout
        p = vx(lab, "service", "inspect", "front", "-n", "app")
        assert p.returncode == 0, p.stderr
        shown = json.loads(p.stdout)
        assert len(shown.pop("id")) == 64 and shown.pop("created").endswith("Z"), shown
        assert shown == {
            "name": "front", "network": "app", "vip": front, "replicas": ["api1", "api2"], "selector": {},
            "ports": ["80/tcp"], "affinity": "none",
            "endpoints": [{"name": "api1", "host": "h1", "ip": ips["api1"]},
                          {"name": "api2", "host": "h2", "ip": ips["api2"]}]}
        shown = json.loads(vx(lab, "service", "inspect", "tiered", "-n", "app").stdout)
        assert shown["selector"] == {"tier": "api"} and shown["replicas"] == []
        assert [(e["name"], e["host"]) for e in shown["endpoints"]] == [("api1", "h1"), ("api2", "h2"), ("api3", "h3")]
        # real connections to both VIPs (and the names resolve to them)
        assert lab.exec("client", "getent", "hosts", "front").stdout.split()[0] == front
        assert {connect(client, front, 80).split()[0] for _ in range(20)} == {"api1", "api2"}
        assert {connect(client, tiered, 80).split()[0] for _ in range(30)} == {"api1", "api2", "api3"}
        p = vx(lab, "service", "rm", "front", "tiered", "-n", "app")
        assert p.returncode == 0 and p.stdout.splitlines() == ["front", "tiered"], p.stderr
        listed = vx(lab, "service", "ls").stdout
        assert "front" not in listed and "tiered" not in listed and " api " in listed
        assert connect(client, front, 80).startswith("error:") and connect(client, tiered, 80).startswith("error:")
        assert etcd_keys(lab, "front") == [] and etcd_keys(lab, "tiered") == []
        assert etcd_keys(lab, front) == [] and etcd_keys(lab, tiered) == []  # the VIPs are free again
        p = vx(lab, "service", "rm", "nosuch", "-n", "app")
        assert p.returncode == 1 and p.stderr.strip() == "error: service: no service 'nosuch' on network 'app'", (
            p.stderr)
    finally:
        for name in ("front", "tiered"):
            vx(lab, "service", "rm", name, "-n", "app")


def test_container_run_publishes_a_port_until_rm(lab: Lab) -> None:
    """`container run -p 8080:80` on h2 (h1's 8080 is web's): reached from the outside
    address and the other hosts' namespaces; `container rm` takes the DNAT away."""
    try:
        p = vx(lab, "container", "run", "pub", "--host", "h2", "--network", "app", "-p", "8080:80")
        assert p.returncode == 0, p.stderr
        with echo(lab.namespace_of("pub"), "pub", 80):
            assert connect(lab.switch_ns, H2, 8080) == f"pub {lab.outside_ip()}"
            assert connect(lab.host_ns("h1"), H2, 8080) == f"pub {H1}"
            assert connect(lab.host_ns("h3"), H2, 8080) == f"pub {H3}"
            assert connect(lab.switch_ns, H1, 8080) == f"web {lab.outside_ip()}"  # h1's own 8080 is still web's
            p = vx(lab, "container", "port", "pub")
            assert p.returncode == 0 and p.stdout.splitlines() == ["80/tcp -> 0.0.0.0:8080"], p.stdout
            p = vx(lab, "container", "rm", "pub")
            assert p.returncode == 0 and p.stderr.strip() == "removed pub (1 endpoints)", p.stderr
            for ns in (lab.switch_ns, lab.host_ns("h1")):  # h2 itself answers now: nothing listens there
                assert connect(ns, H2, 8080) == "error: Connection refused"
        assert etcd_keys(lab, "alloc/port/h2/") == []
    finally:
        vx(lab, "container", "rm", "pub")


def test_a_udp_port_published_by_the_cli_answers_datagrams(lab: Lab) -> None:
    """`-p 5353:53/udp`: datagrams from another host's namespace and the outside address
    reach a UDP echo in the container bound to 0.0.0.0:53, as a real DNS server binds
    (the agent's resolver listens on 127.0.0.11:10053 there: agent/dns_nft.py)."""
    rev = lab.call(lambda c: c.revision())
    for spec, line in (("5353:53/sctp", "publish[0].protocol: 'sctp' is not one of tcp, udp"),
                       ("5353:53/UDP", "publish[0]: '5353:53/UDP' is not [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"),
                       ("5353:0/udp", "publish[0].container_port: 0 is out of range 1..65535"),
                       ("53/udp", "publish[0]: '53/udp' is not [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp] (a"
                                  " container port alone, for a random host port, is not supported: give"
                                  " HOST_PORT:CONTAINER_PORT)")):
        p = vx(lab, "container", "run", "u1", "--host", "h3", "--network", "app", "-p", spec)
        assert p.returncode == 1 and p.stderr.strip() == f"error: {line}", p.stderr
    p = vx(lab, "container", "run", "u1", "--host", "h3", "--network", "app", "-p", "5353:53/udp", "-p", "5353:54/udp")
    assert p.returncode == 1 and p.stderr.strip() == (
        "error: publish[1].host_port: udp 5353 is published twice (also publish[0])"), p.stderr
    assert lab.call(lambda c: c.revision()) == rev
    try:
        p = vx(lab, "container", "run", "u1", "--host", "h3", "--network", "app", "-p", "5353:53/udp")
        assert p.returncode == 0, p.stderr
        with echo(lab.namespace_of("u1"), "u1", 53, udp=True):
            assert connect(lab.host_ns("h1"), H3, 5353, udp=True) == f"u1 {H1}"
            assert connect(lab.host_ns("h2"), H3, 5353, udp=True) == f"u1 {H2}"
            assert connect(lab.switch_ns, H3, 5353, udp=True) == f"u1 {lab.outside_ip()}"
            assert connect(lab.host_ns("h1"), H3, 5353) == "error: Connection refused"  # udp only, not tcp
            p = vx(lab, "container", "port", "u1")
            assert p.returncode == 0 and p.stdout.splitlines() == ["53/udp -> 0.0.0.0:5353"], p.stdout
            p = vx(lab, "container", "run", "u2", "--host", "h3", "--network", "app", "-p", "5353:53/udp")
            assert p.returncode == 1 and p.stderr.strip() == (
                "error: endpoint.ports[0].host_port: udp 5353 on host 'h3' is already published by container 'u1'"
                " (network 'app')"), p.stderr
    finally:
        vx(lab, "container", "rm", "u1")


def test_after_a_replicas_host_crashes_every_connection_succeeds_again_after_ttl(lab: Lab) -> None:
    """Last: h3 stays crashed until the module's lab goes down."""
    address, client = vip(lab), lab.namespace_of("client")
    lab.add_fault("host-crash", host="h3")
    time.sleep(lab.lease_ttl + 1)  # the behaviour under test: the lease TTL elapsing
    said = [connect(client, address, 80) for _ in range(30)]
    assert all(s.split()[0] in ("api1", "api2") for s in said), collections.Counter(said)
    try:
        lab.heal()
    except VxError:
        pass
