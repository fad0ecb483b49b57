"""`up` on a running lab applies every difference, in the kernel (issue 13, item 2):
a network's MTU, gateway and internal flag change in place on every host; containers
get new addresses, labels, networks and hosts; a host gets a new underlay address
with its containers kept; a subnet change is refused in one line and writes nothing,
and `--recreate` does it; `--dry-run` prints the steps `up` then takes, and an `up`
with no difference touches nothing.

Each test has its own lab (`vxt<6 hex>`, VXLAB_RUN in a tmp dir), taken down also
when it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig import module_lab

from vxlab.client import Client
from vxlab.errors import PermissionDenied
from vxlab.lab.lab import Lab
from vxlab.lab.procs import host_tls
from vxlab.lab.state import LabState
from vxlab.lab.topology import parse
from vxlab.model import Network

pytestmark = pytest.mark.integration
BODY = """hosts: 2
networks:
  - {name: blue, subnet: 10.10.0.0/24, mtu: 1400}
  - {name: red, subnet: 10.20.0.0/24, internal: true}
containers:
  - {name: web, host: h1, networks: [blue]}
  - {name: db, host: h2, networks: [blue]}
  - {name: cache, host: h2, networks: [blue]}
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with module_lab(tmp_path / "run", BODY) as the_lab:
        yield the_lab


def up(lab: Lab, body: str, **kw: bool) -> list[str]:
    return [s.describe() for s in lab.up(parse(f"name: {lab.name}\n{body}"), **kw)]


def cli(lab: Lab, tmp: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    f = tmp / "topo.yaml"
    f.write_text(f"name: {lab.name}\n{body}")
    return subprocess.run([sys.executable, "-m", "vxlab.cli", "up", str(f), *args], capture_output=True, text=True,
                          env=os.environ, timeout=180)


def sh(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30)


def mtus(ns: str) -> dict[str, int]:
    out = json.loads(subprocess.run(["ip", "-n", ns, "-j", "link"], capture_output=True, text=True, check=True).stdout)
    return {link["ifname"]: link["mtu"] for link in out if link["ifname"] != "lo"}


def addrs(ns: str) -> set[tuple[str, str]]:
    out = json.loads(subprocess.run(["ip", "-n", ns, "-j", "-4", "addr"], capture_output=True, text=True,
                                    check=True).stdout)
    return {(i["ifname"], f"{a['local']}/{a['prefixlen']}") for i in out if i["ifname"] != "lo" for a in i["addr_info"]}


def default_route(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "route", "show", "default"], capture_output=True, text=True).stdout.strip()


def endpoints(lab: Lab) -> dict[tuple[str, str], tuple[str, str, str, str]]:
    return {(e.network, e.name): (e.id, e.mac, e.ip, e.host) for e in lab.call(lambda c: c.list_endpoints())}


def ping(lab: Lab, src: str, ip: str, *, size: int = 56, df: bool = False) -> subprocess.CompletedProcess[str]:
    return sh(lab.namespace_of(src), "ping", "-c1", "-W2", "-s", str(size), *(["-M", "do"] if df else []), ip)


def test_an_mtu_change_reaches_the_kernel_on_every_host(lab: Lab) -> None:
    db_ip = endpoints(lab)["blue", "db"][2]
    assert ping(lab, "web", db_ip, size=1400 - 28, df=True).returncode == 0
    before, inode = endpoints(lab), os.stat(f"/run/netns/{lab.container_ns('h1', 'web')}").st_ino
    assert up(lab, BODY.replace("mtu: 1400", "mtu: 1300")) == ["~ network blue: mtu 1400 -> 1300"]
    for host in ("h1", "h2"):
        net = mtus(lab.network_ns(host, "blue"))
        assert net["vxb-blue"] == net["vxv-blue"] == 1300 and set(net.values()) == {1300}, net  # veths, uplink too
    for host, name in (("h1", "web"), ("h2", "db"), ("h2", "cache")):
        assert mtus(lab.container_ns(host, name)) == {"eth0": 1300}
    assert ping(lab, "web", db_ip, size=1300 - 28, df=True).returncode == 0
    too_big = ping(lab, "web", db_ip, size=1300 - 28 + 1, df=True)
    assert too_big.returncode != 0 and "message too long" in too_big.stdout + too_big.stderr
    assert endpoints(lab) == before  # nobody's endpoint was replaced
    assert os.stat(f"/run/netns/{lab.container_ns('h1', 'web')}").st_ino == inode
    rev = lab.call(lambda c: c.revision())
    assert up(lab, BODY.replace("mtu: 1400", "mtu: 1300")) == []
    assert lab.call(lambda c: c.revision()) == rev  # no difference: nothing written


def test_gateway_and_internal_move_addresses_and_routes(lab: Lab) -> None:
    outside = lab.outside_ip()
    moved = BODY.replace("mtu: 1400}", "mtu: 1400, gateway: 10.10.0.254}")
    assert up(lab, moved) == ["~ network blue: gateway 10.10.0.1 -> 10.10.0.254"]
    for host in ("h1", "h2"):
        bridge = {a for dev, a in addrs(lab.network_ns(host, "blue")) if dev == "vxb-blue"}
        assert bridge == {"10.10.0.254/24"}
    assert default_route(lab.container_ns("h1", "web")).startswith("default via 10.10.0.254 dev eth0")
    assert default_route(lab.container_ns("h2", "db")).startswith("default via 10.10.0.254 dev eth0")
    assert ping(lab, "web", outside).returncode == 0
    internal = moved.replace("gateway: 10.10.0.254}", "gateway: 10.10.0.254, internal: true}")
    assert up(lab, internal) == ["~ network blue: internal false -> true"]
    net = lab.network_ns("h1", "blue")
    assert "vxgw0" not in mtus(net) and default_route(net) == "" and default_route(lab.container_ns("h1", "web")) == ""
    cut = ping(lab, "web", outside)
    assert cut.returncode != 0 and "unreachable" in (cut.stdout + cut.stderr).lower()
    assert up(lab, moved) == ["~ network blue: internal true -> false"]
    assert "vxgw0" in mtus(net) and ping(lab, "web", outside).returncode == 0


def test_container_address_labels_and_networks(lab: Lab) -> None:
    before = endpoints(lab)
    body = BODY.replace("{name: db, host: h2, networks: [blue]}",
                        "{name: db, host: h2, networks: [{name: blue, ip: 10.10.0.77}, red], labels: {tier: db}}")
    steps = up(lab, body)
    assert steps == ["- container db: network blue (replaced: ip 10.10.0.3 -> 10.10.0.77)",
                     "+ container db: on h2, network blue ip 10.10.0.77 (replaced: ip 10.10.0.3 -> 10.10.0.77)",
                     "+ container db: on h2, network red"], steps
    now = endpoints(lab)
    assert now["blue", "db"][2] == "10.10.0.77" and now["red", "db"][2] == "10.20.0.2"
    assert {k: v for k, v in now.items() if k[1] != "db"} == {k: v for k, v in before.items() if k[1] != "db"}
    db_ns = lab.container_ns("h2", "db")
    assert {a for _, a in addrs(db_ns)} == {"10.10.0.77/24", "10.20.0.2/24"}
    assert ping(lab, "web", "10.10.0.77").returncode == 0 and ping(lab, "web", "10.10.0.3").returncode != 0
    assert {e.network: e.labels for e in lab.call(lambda c: c.list_endpoints(name="db"))} == {
        "blue": {"tier": "db"}, "red": {"tier": "db"}}
    relabel = body.replace("labels: {tier: db}", "labels: {tier: data}")
    assert up(lab, relabel) == ["~ container db: network blue labels {tier=db} -> {tier=data}",
                                "~ container db: network red labels {tier=db} -> {tier=data}"]
    assert endpoints(lab) == now  # labels changed in place: same ids and MACs
    detached = relabel.replace("{name: blue, ip: 10.10.0.77}, red]", "{name: blue, ip: 10.10.0.77}]")
    assert up(lab, detached) == ["- container db: network red"]
    assert {a for _, a in addrs(db_ns)} == {"10.10.0.77/24"} and ("red", "db") not in endpoints(lab)


def test_a_container_moves_and_a_host_gets_a_new_underlay_address(lab: Lab) -> None:
    cache_ns = lab.container_ns("h2", "cache")
    inode, cache = os.stat(f"/run/netns/{cache_ns}").st_ino, endpoints(lab)["blue", "cache"]
    body = BODY.replace("hosts: 2", "hosts: [h1, {name: h2, underlay_ip: 172.30.0.42}]").replace(
        "{name: db, host: h2", "{name: db, host: h1")
    assert up(lab, body) == [
        "~ host h2: underlay_ip 172.30.0.12 -> 172.30.0.42 (its agent restarts there; its containers stay)",
        "- container db: network blue (replaced: host h2 -> h1)",
        "+ container db: on h1, network blue (replaced: host h2 -> h1)"]
    assert Path(f"/run/netns/{lab.container_ns('h1', 'db')}").exists()
    assert not Path(f"/run/netns/{lab.container_ns('h2', 'db')}").exists()
    assert os.stat(f"/run/netns/{cache_ns}").st_ino == inode and endpoints(lab)["blue", "cache"] == cache
    assert ("eth0", "172.30.0.42/24") in addrs(lab.host_ns("h2"))
    assert {h.name: h.underlay_ip for h in lab.call(lambda c: c.list_hosts())}["h2"] == "172.30.0.42"
    fdb = subprocess.run(["bridge", "-n", lab.network_ns("h1", "blue"), "fdb", "show", "dev", "vxv-blue"],
                         capture_output=True, text=True).stdout
    assert f"{cache[1]} dst 172.30.0.42" in fdb, fdb
    assert ping(lab, "web", cache[2]).returncode == 0 and ping(lab, "db", cache[2]).returncode == 0
    assert lab.check().ok
    assert up(lab, body) == []


def test_a_subnet_change_is_refused_and_writes_nothing_then_recreate_does_it(lab: Lab, tmp_path: Path) -> None:
    rev, applied = lab.call(lambda c: c.revision()), LabState.load(lab.name).topology  # type: ignore[union-attr]
    old_id = lab.call(lambda c: c.get_network("blue")).id
    body = BODY.replace("10.10.0.0/24", "10.30.0.0/24") + """policies:
  - {name: nodb, network: blue, action: deny, from: web, to: db, proto: icmp}
"""
    for args in ((), ("--dry-run",)):
        out = cli(lab, tmp_path, body, *args)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr == ("error: networks[0].subnet: 10.10.0.0/24 -> 10.30.0.0/24 needs network 'blue' deleted"
                              " and created again with its endpoints cache, db, web; use --recreate\n")
    fixed = cli(lab, tmp_path, BODY.replace("hosts: 2", "hosts: 2\nunderlay: {mtu: 9000}"))
    assert fixed.returncode == 1 and fixed.stderr == (
        "error: underlay.mtu: 1500 -> 9000 cannot change on a running lab; 'vxlab down' it, then 'vxlab up'\n")
    assert lab.call(lambda c: c.revision()) == rev  # refused: nothing written, not even partly
    assert LabState.load(lab.name).topology == applied  # type: ignore[union-attr]
    assert ("vxb-blue", "10.10.0.1/24") in addrs(lab.network_ns("h1", "blue"))
    plan = cli(lab, tmp_path, body, "--dry-run", "--recreate")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        "- network blue: recreated for subnet 10.10.0.0/24 -> 10.30.0.0/24 (with its endpoints cache, db, web)",
        "+ network blue: subnet 10.30.0.0/24 (recreated)",
        "+ container web: on h1, network blue (network recreated)",
        "+ container db: on h2, network blue (network recreated)",
        "+ container cache: on h2, network blue (network recreated)",
        "+ policy nodb: network blue: deny icmp web -> db (priority 1000)"]
    done = cli(lab, tmp_path, body, "--recreate")
    assert done.returncode == 0, done.stderr
    eps = endpoints(lab)
    assert {k: v[2] for k, v in eps.items()} == {("blue", "web"): "10.30.0.2", ("blue", "db"): "10.30.0.3",
                                                 ("blue", "cache"): "10.30.0.4"}
    assert lab.call(lambda c: c.get_network("blue")).id != old_id
    for host in ("h1", "h2"):
        assert ("vxb-blue", "10.30.0.1/24") in addrs(lab.network_ns(host, "blue"))
    result = lab.check()
    assert result.ok and any(p.src == "web" and p.dst == "db" and not p.reached and p.rule for p in result.probes)
    assert ping(lab, "cache", lab.outside_ip()).returncode == 0  # the network's NAT is for the new subnet
    assert cli(lab, tmp_path, body, "--dry-run").stdout == "nothing to do\n"
    tcp = body.replace("proto: icmp}", "proto: tcp, ports: 5432}")
    assert up(lab, tcp) == ["- policy nodb: network blue (changed)",
                            "+ policy nodb: network blue: deny tcp web -> db :5432 (priority 1000) (changed)"]
    result = lab.check()  # ICMP from web to db is allowed again
    assert result.ok and any(p.src == "web" and p.dst == "db" and p.reached for p in result.probes)


def test_network_update_is_for_the_admin_and_up_sees_it_as_a_difference(lab: Lab) -> None:
    async def as_host() -> None:
        async with Client(lab.socket, tls=host_tls(lab.state, "h1")) as c:
            await c.update_network(Network(name="blue", mtu=1300), fields=["mtu"])
    with pytest.raises(PermissionDenied, match=r"^network: host 'h1' may not update networks \(admin only\)$"):
        asyncio.run(as_host())
    out = subprocess.run([sys.executable, "-m", "vxlab.cli", "--lab", lab.name, "network", "update", "blue",
                          "--mtu", "1300"], capture_output=True, text=True, env=os.environ, timeout=60)
    assert out.returncode == 0, out.stderr
    lab.wait_converged()
    assert mtus(lab.container_ns("h1", "web")) == {"eth0": 1300}
    assert up(lab, BODY) == ["~ network blue: mtu 1300 -> 1400"]  # the file says 1400
    assert mtus(lab.container_ns("h1", "web")) == {"eth0": 1400}
