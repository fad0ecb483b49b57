"""Lab topology files (vxlab.lab.topology): every validation error, defaults, host
address assignment, the shipped examples and the to_dict round trip. No root needed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from vxlab.lab.topology import (
    DEFAULT_CONTROL,
    Attachment,
    ContainerSpec,
    HostSpec,
    NetworkSpec,
    Topology,
    TopologyError,
    UnderlaySpec,
    load,
    parse,
    to_dict,
)
from vxlab.lab.vm import VmSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = "name: t\nhosts: 2\n"
NETS = BASE + textwrap.dedent("""\
    networks:
      - {name: blue, subnet: 10.10.0.0/24}
      - {name: red}
      - {name: loc, driver: bridge, host: h1, subnet: 10.99.0.0/24}
    """)
BAD_NAME = ("is not a valid name: use lowercase letters, digits and '-', start with a letter,"
            " do not end with '-'")


def _err(text: str) -> str:
    """The error of parsing `text`: "path: reason", or the whole line when it names no path
    (syntax errors). Every error but an empty document's carries a position."""
    with pytest.raises(TopologyError) as info:
        parse(text)
    e = info.value
    if e.reason == "empty document":
        assert e.at is None and str(e) == f"{e.path}: {e.reason}"
        return str(e)
    assert e.at is not None and e.at.source == "<string>", str(e)
    assert str(e) == (f"{e.at}: {e.path}: {e.reason}" if e.path else f"{e.at}: {e.reason}")
    return f"{e.path}: {e.reason}" if e.path else str(e)


ERRORS = [
    # document and top level
    ("", "<string>: empty document"),
    ("- a\n", "<string>:1:1: expected a mapping at the top level, got list"),
    ("name: t\n  hosts: 2\n", "<string>:2:8: mapping values are not allowed here"),
    ("name: [t\n", "<string>:2:1: expected ',' or ']', but got '<stream end>'"),
    ("name: t\nname: u\nhosts: 1\n", "name: duplicate key"),
    (BASE + "foo: 1\n", "foo: unknown key"),
    ("hosts: 1\n", "name: required"),
    ("name: 3\nhosts: 1\n", "name: expected a string, got int"),
    ("name: Demo\nhosts: 1\n", f"name: 'Demo' {BAD_NAME}"),
    ("name: abcdefghijkl\nhosts: 1\n", "name: 'abcdefghijkl' is longer than 11 characters"),
    # underlay
    (BASE + "underlay: 1\n", "underlay: expected a mapping, got int"),
    (BASE + "underlay: {colour: x}\n", "underlay.colour: unknown key"),
    (BASE + "underlay: {subnet: 172.30.0.0}\n",
     "underlay.subnet: '172.30.0.0' is not a CIDR (expected e.g. 10.10.0.0/24)"),
    (BASE + "underlay: {subnet: 172.30.0.1/24}\n",
     "underlay.subnet: 172.30.0.1/24 has host bits set; did you mean 172.30.0.0/24?"),
    (BASE + "underlay: {subnet: 172.30.0.0/30}\n",
     "underlay.subnet: prefix /30 is too small: at least /29 is needed (the switch and the hosts)"),
    (BASE + "underlay: {subnet: 10.0.0.0/7}\n", "underlay.subnet: prefix /7 is too large: at most /8"),
    (BASE + "underlay: {subnet: 'fd00::/64'}\n", "underlay.subnet: IPv6 is not supported yet"),
    (BASE + "underlay: {mtu: 1279}\n", "underlay.mtu: 1279 is out of range 1280..9216"),
    (BASE + "underlay: {mtu: 9217}\n", "underlay.mtu: 9217 is out of range 1280..9216"),
    (BASE + "underlay: {mtu: '1500'}\n", "underlay.mtu: expected an integer, got str"),
    (BASE + "underlay: {mtu: true}\n", "underlay.mtu: expected an integer, got bool"),
    # etcd
    (BASE + "etcd: {members: 2}\n", "etcd.members: expected 1 or 3, got 2"),
    (BASE + "etcd: {members: 0}\n", "etcd.members: expected 1 or 3, got 0"),
    (BASE + "etcd: {size: 3}\n", "etcd.size: unknown key"),
    # hosts
    ("name: t\n", "hosts: required"),
    ("name: t\nhosts: three\n", "hosts: expected a count or a list, got str"),
    ("name: t\nhosts: true\n", "hosts: expected a count or a list, got bool"),
    ("name: t\nhosts: 0\n", "hosts: 0 is out of range 1..250"),
    ("name: t\nhosts: 251\n", "hosts: 251 is out of range 1..250"),
    ("name: t\nhosts: []\n", "hosts: expected 1..250 hosts, got 0"),
    ("name: t\nhosts: [h1, 7]\n", "hosts[1]: expected a name or a mapping, got int"),
    ("name: t\nhosts: [h1, h2, h3, h2]\n", "hosts[3]: duplicate host 'h2'"),
    ("name: t\nhosts: [H1]\n", f"hosts[0].name: 'H1' {BAD_NAME}"),
    ("name: t\nhosts: [" + "a" * 33 + "]\n", "hosts[0].name: '" + "a" * 33 + "' is longer than 32 characters"),
    ("name: t\nhosts: [{underlay_ip: 172.30.0.20}]\n", "hosts[0].name: required"),
    ("name: t\nhosts: [{name: h1, ip: 172.30.0.20}]\n", "hosts[0].ip: unknown key"),
    ("name: t\nhosts: [{name: h1, underlay_ip: 172.30.0.300}]\n",
     "hosts[0].underlay_ip: '172.30.0.300' is not a valid IPv4 address"),
    ("name: t\nhosts: [{name: h1, underlay_ip: 10.0.0.5}]\n",
     "hosts[0].underlay_ip: 10.0.0.5 is outside subnet 172.30.0.0/24"),
    ("name: t\nhosts: [{name: h1, underlay_ip: 172.30.0.255}]\n",
     "hosts[0].underlay_ip: 172.30.0.255 is the broadcast address of 172.30.0.0/24"),
    ("name: t\nhosts: [{name: h1, underlay_ip: 172.30.0.1}]\n",
     "hosts[0].underlay_ip: 172.30.0.1 is reserved for the switch"),
    ("name: t\nhosts: [h1, {name: h2, underlay_ip: 10.9.0.2}]\nunderlay: {subnet: 10.9.0.0/16}\n",
     "hosts[1].underlay_ip: 10.9.0.2 is reserved for the controller's control address"),
    ("name: t\nhosts: [h1, control]\n", "hosts[1].name: 'control' is reserved: a partition's side naming the"
     " control plane"),
    (BASE + "control: remote\n", "control: 'remote' is not one of underlay, local"),
    (BASE + "control: true\n", "control: expected a string, got bool"),
    ("name: t\nhosts: [{name: h1, underlay_ip: 172.30.0.20}, {name: h2, underlay_ip: 172.30.0.20}]\n",
     "hosts[1].underlay_ip: 172.30.0.20 is already used by host 'h1'"),
    ("name: t\nhosts: 5\nunderlay: {subnet: 172.30.0.0/28}\n",
     "underlay.subnet: 172.30.0.0/28 is too small for 5 hosts (automatic addresses start at 172.30.0.11)"),
    ("name: t\nhosts: 250\n",
     "underlay.subnet: 172.30.0.0/24 is too small for 250 hosts (automatic addresses start at 172.30.0.11)"),
    # networks
    (BASE + "networks: blue\n", "networks: expected a list, got str"),
    (BASE + "networks: [blue]\n", "networks[0]: expected a mapping, got str"),
    (BASE + "networks: [{subnet: 10.0.0.0/24}]\n", "networks[0].name: required"),
    (BASE + "networks: [{name: blue, colour: x}]\n", "networks[0].colour: unknown key"),
    (BASE + "networks: [{name: abcdefghijkl}]\n", "networks[0].name: 'abcdefghijkl' is longer than 11 characters"),
    (BASE + "networks: [{name: blue}, {name: red}, {name: blue}]\n", "networks[2]: duplicate network 'blue'"),
    (BASE + "networks: [{name: blue, subnet: 10.0.0.0/31}]\n",
     "networks[0].subnet: prefix /31 is too small: at least /30 is needed (a gateway and one endpoint)"),
    (BASE + "networks: [{name: blue, subnet: 10.0.0.0/24}, {name: red, subnet: 10.0.0.128/25}]\n",
     "networks[1].subnet: 10.0.0.128/25 overlaps network 'blue' (10.0.0.0/24)"),
    (BASE + "networks: [{name: blue, gateway: 10.0.0.1}]\n", "networks[0].gateway: needs an explicit subnet"),
    (BASE + "networks: [{name: blue, subnet: 10.0.0.0/24, gateway: 10.0.1.1}]\n",
     "networks[0].gateway: 10.0.1.1 is outside subnet 10.0.0.0/24"),
    (BASE + "networks: [{name: blue, subnet: 10.0.0.0/24, gateway: 10.0.0.0}]\n",
     "networks[0].gateway: 10.0.0.0 is the network address of 10.0.0.0/24"),
    (BASE + "networks: [{name: blue, vni: 16777216}]\n", "networks[0].vni: 16777216 is out of range 1..16777215"),
    (BASE + "networks: [{name: blue, vni: x}]\n", "networks[0].vni: expected an integer, got str"),
    (BASE + "networks: [{name: blue, vni: 4100}, {name: red, vni: 4100}]\n",
     "networks[1].vni: 4100 is already used by network 'blue'"),
    (BASE + "networks: [{name: blue, mtu: 100}]\n", "networks[0].mtu: 100 is out of range 576..9216 (0 = automatic)"),
    (BASE + "networks: [{name: blue, internal: 'yes'}]\n", "networks[0].internal: expected true or false, got str"),
    (BASE + "networks: [{name: blue, internal: yes}]\n", "networks[0].internal: expected true or false, got str"),
    (BASE + "networks: [{name: blue, driver: macvlan}]\n", "networks[0].driver: 'macvlan' is not one of overlay, bridge"),
    (BASE + "networks: [{name: blue, driver: bridge}]\n", "networks[0].host: required for driver: bridge"),
    (BASE + "networks: [{name: blue, driver: bridge, host: h9}]\n", "networks[0].host: unknown host 'h9'"),
    (BASE + "networks: [{name: blue, driver: bridge, host: h1, vni: 5}]\n", "networks[0].vni: only for driver: overlay"),
    (BASE + "networks: [{name: blue, host: h1}]\n", "networks[0].host: only for driver: bridge"),
    (BASE + "networks: [{name: blue, labels: [a]}]\n", "networks[0].labels: expected a mapping, got list"),
    (BASE + "networks: [{name: blue, labels: {tier: 1}}]\n", "networks[0].labels.tier: expected a string, got int"),
    (BASE + "networks: [{name: blue, labels: {'b@d': x}}]\n",
     "networks[0].labels.b@d: label keys are 1-63 of [A-Za-z0-9._/-] (name or prefix/name, no '..')"),
    # containers
    (NETS + "containers: {web: 1}\n", "containers: expected a list, got mapping"),
    (NETS + "containers: [{host: h1}]\n", "containers[0].name: required"),
    (NETS + "containers: [{name: web}]\n", "containers[0].host: required"),
    (NETS + "containers: [{name: web, host: h1, image: nginx}]\n", "containers[0].image: unknown key"),
    (NETS + "containers: [{name: a, host: h1}, {name: b, host: h2}, {name: c, host: h9}]\n",
     "containers[2].host: unknown host 'h9'"),
    (NETS + "containers: [{name: web, host: h1}, {name: web, host: h2}]\n", "containers[1]: duplicate container 'web'"),
    (NETS + "containers: [{name: web, host: h1, networks: blue}]\n", "containers[0].networks: expected a list, got str"),
    (NETS + "containers: [{name: web, host: h1, networks: [blue, x]}]\n",
     "containers[0].networks[1]: unknown network 'x'"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: x}]}]\n",
     "containers[0].networks[0].name: unknown network 'x'"),
    (NETS + "containers: [{name: web, host: h1, networks: [3]}]\n",
     "containers[0].networks[0]: expected a network name or a mapping, got int"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: blue, mac: x}]}]\n",
     "containers[0].networks[0].mac: unknown key"),
    (NETS + "containers: [{name: web, host: h1, networks: [blue, red, blue]}]\n",
     "containers[0].networks[2]: already attached to network 'blue'"),
    (NETS + "containers: [{name: web, host: h2, networks: [loc]}]\n",
     "containers[0].networks[0]: network 'loc' is a bridge on host 'h1', the container is on 'h2'"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: blue, ip: 10.10.1.5}]}]\n",
     "containers[0].networks[0].ip: 10.10.1.5 is outside subnet 10.10.0.0/24"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: blue, ip: 10.10.0.0}]}]\n",
     "containers[0].networks[0].ip: 10.10.0.0 is the network address of 10.10.0.0/24"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: blue, ip: 10.10.0.255}]}]\n",
     "containers[0].networks[0].ip: 10.10.0.255 is the broadcast address of 10.10.0.0/24"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: blue, ip: 10.10.0.1}]}]\n",
     "containers[0].networks[0].ip: 10.10.0.1 is the gateway of network 'blue'"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: blue, ip: nope}]}]\n",
     "containers[0].networks[0].ip: 'nope' is not a valid IPv4 address"),
    (NETS + "containers: [{name: web, host: h1, networks: [red], ip: {red: 10.0.0.5}}]\n",
     "containers[0].ip.red: network 'red' has no explicit subnet"),
    (NETS + "containers: [{name: web, host: h1, networks: [blue], ip: {red: 10.0.0.5}}]\n",
     "containers[0].ip.red: network 'red' is not in the container's networks"),
    (NETS + "containers: [{name: web, host: h1, networks: [{name: blue, ip: 10.10.0.5}], ip: {blue: 10.10.0.6}}]\n",
     "containers[0].ip.blue: ip already given in containers[0].networks[0].ip"),
    (NETS + "containers: [{name: web, host: h1, networks: [blue], ip: {blue: 5}}]\n",
     "containers[0].ip.blue: expected a string, got int"),
    (NETS + "containers: [{name: web, host: h1, networks: [blue], ip: [10.10.0.5]}]\n",
     "containers[0].ip: expected a mapping, got list"),
    (NETS + "containers: [{name: a, host: h1, ip: {blue: 10.10.0.5}, networks: [blue]},"
     " {name: b, host: h2, networks: [{name: blue, ip: 10.10.0.5}]}]\n",
     "containers[1].networks[0].ip: 10.10.0.5 is already used by container 'a'"),
    (NETS + "containers: [{name: web, host: h1, network_mode: host, networks: [blue]}]\n",
     "containers[0].network_mode: excludes networks"),
    (NETS + "containers: [{name: web, host: h1, network_mode: bridge}]\n",
     "containers[0].network_mode: 'bridge' is not one of none, host"),
    (NETS + "containers: [{name: web, host: h1, labels: {a: [1]}}]\n",
     "containers[0].labels.a: expected a string, got list"),
    (NETS + "policies: [{name: p, network: green, action: deny}]\n", "policies[0].network: unknown network 'green'"),
    (NETS + "policies: [{name: p, network: blue}]\n", "policies[0].action: required"),
    (NETS + "policies: [{name: p, network: blue, action: block}]\n",
     "policies[0].action: 'block' is not one of allow, deny"),
    (NETS + "policies: [{name: p, network: blue, action: deny, from: 10.0.0.1/8}]\n",
     "policies[0].from.cidr: '10.0.0.1/8' is not an IPv4 CIDR with host bits zero (e.g. 10.10.0.0/24)"),
    (NETS + "policies: [{name: p, network: blue, action: deny, proto: icmp, ports: [80]}]\n",
     "policies[0].ports: ports need protocol tcp or udp, not icmp"),
    (NETS + "policies: [{name: p, network: blue, action: deny, proto: tcp, ports: {a: 1}}]\n",
     "policies[0].ports: expected a port, a range 'N-M', or a list of them"),
    (NETS + "policies: [{name: p, network: blue, action: deny}, {name: p, network: blue, action: allow}]\n",
     "policies[1].name: duplicate policy 'p' on network 'blue'"),
    (NETS + "policies: [{name: p, network: blue, action: deny, colour: red}]\n", "policies[0].colour: unknown key"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS, ids=[e for _, e in ERRORS])
def test_error(text: str, expected: str) -> None:
    assert _err(text) == expected


def test_error_attributes() -> None:
    with pytest.raises(TopologyError) as info:
        parse(NETS + "containers: [{name: a, host: h1}, {name: b, host: h2}, {name: c, host: h9}]\n")
    assert (info.value.path, info.value.reason) == ("containers[2].host", "unknown host 'h9'")
    assert isinstance(info.value, Exception)


def test_syntax_error_names_the_source() -> None:
    assert _syntax("name: t\n  hosts: 2\n", "lab.yaml") == "lab.yaml:2:8: mapping values are not allowed here"


def _syntax(text: str, source: str) -> str:
    with pytest.raises(TopologyError) as info:
        parse(text, source=source)
    return str(info.value)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(TopologyError) as info:
        load(path)
    assert str(info.value) == f"{path}: no such file"


def test_load_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nhosts: [h1\n")
    with pytest.raises(TopologyError) as info:
        load(str(path))
    assert str(info.value).startswith(f"{path}:3:1: ")


def test_defaults() -> None:
    t = parse("name: demo\nhosts: 1\n")
    assert t == Topology(
        name="demo", underlay=UnderlaySpec("172.30.0.0/24", 1500),
        hosts=(HostSpec("h1", "172.30.0.11"),), networks=(), containers=(), etcd_members=1,
    )
    n = parse(BASE + "networks: [{name: blue}]\n").networks[0]
    assert n == NetworkSpec("blue", None, None, None, None, False, "overlay", None, {})


def test_full_network_and_container() -> None:
    t = parse(BASE + textwrap.dedent("""\
        etcd: {members: 3}
        underlay: {subnet: 192.168.50.0/24, mtu: 9000}
        networks:
          - {name: blue, subnet: 10.10.0.0/24, gateway: 10.10.0.254, vni: 4100, mtu: 1400,
             internal: true, labels: {team: a}}
          - {name: loc, driver: bridge, host: h2}
        containers:
          - {name: web, host: h2, networks: [blue, loc], ip: {blue: 10.10.0.1}, labels: {app: web}}
          - {name: mon, host: h1, network_mode: host}
          - {name: off, host: h1, network_mode: none}
        """))
    assert t.etcd_members == 3
    assert t.underlay == UnderlaySpec("192.168.50.0/24", 9000)
    assert t.hosts == (HostSpec("h1", "192.168.50.11"), HostSpec("h2", "192.168.50.12"))
    assert t.networks[0] == NetworkSpec("blue", "10.10.0.0/24", "10.10.0.254", 4100, 1400, True, "overlay",
                                        None, {"team": "a"})
    assert t.networks[1] == NetworkSpec("loc", driver="bridge", host="h2")
    assert t.containers[0] == ContainerSpec("web", "h2", (Attachment("blue", "10.10.0.1"), Attachment("loc")),
                                            None, {"app": "web"})
    assert t.containers[1] == ContainerSpec("mon", "h1", (), "host")
    assert t.containers[2].network_mode == "none"
    assert t.containers[2].name == "off"  # only true/false are booleans (YAML 1.2)


def test_zero_vni_and_mtu_mean_automatic() -> None:
    n = parse(BASE + "networks: [{name: a, vni: 0, mtu: 0}, {name: b, vni: 0}]\n").networks
    assert (n[0].vni, n[0].mtu, n[1].vni) == (None, None, None)


def test_host_forms_and_address_assignment() -> None:
    t = parse("name: t\nhosts: [alpha, {name: beta, underlay_ip: 172.30.0.12}, {name: gamma}, delta]\n")
    assert [(h.name, h.underlay_ip) for h in t.hosts] == [
        ("alpha", "172.30.0.11"), ("beta", "172.30.0.12"), ("gamma", "172.30.0.13"), ("delta", "172.30.0.14")]
    t = parse("name: t\nhosts: 3\nunderlay: {subnet: 10.1.0.0/16}\n")
    assert [h.underlay_ip for h in t.hosts] == ["10.1.0.11", "10.1.0.12", "10.1.0.13"]
    t = parse("name: t\nhosts: 250\nunderlay: {subnet: 10.1.0.0/23}\n")
    assert (t.hosts[-1].name, t.hosts[-1].underlay_ip) == ("h250", "10.1.1.4")
    # a /29 only fits explicit addresses; a /28 fits .11 to .14
    t = parse("name: t\nhosts: [{name: a, underlay_ip: 10.0.0.3}]\nunderlay: {subnet: 10.0.0.0/29}\n")
    assert t.hosts[0].underlay_ip == "10.0.0.3"
    assert parse("name: t\nhosts: 4\nunderlay: {subnet: 10.0.0.0/28}\n").hosts[-1].underlay_ip == "10.0.0.14"


def test_vm_hosts() -> None:
    t = parse("name: t\nhosts: [h1, {name: h2, vm: true}, {name: h3, vm: {cpus: 2, memory: 1G}}]\n")
    assert [h.vm for h in t.hosts] == [None, VmSpec(), VmSpec(cpus=2, memory_mb=1024)]
    assert t.control == "underlay"  # the default with a VM host (local without)
    assert parse(BASE).control == DEFAULT_CONTROL == "local"
    assert to_dict(t)["hosts"][2] == {"name": "h3", "underlay_ip": "172.30.0.13", "vm": {"cpus": 2, "memory": 1024}}
    assert parse(yaml.safe_dump(to_dict(t))) == t
    assert _err("name: t\nhosts: [{name: h1, vm: true}]\ncontrol: local\n") == (
        "hosts[0].vm: a VM host needs `control: underlay` (its agent reaches the controller across the underlay;"
        " the unix socket is on this machine), not 'local'")
    assert _err("name: t\ncontrol: underlay\nhosts: [{name: h1, vm: {memory: 12}}]\n") == (
        "hosts[0].vm.memory: 12 MiB is out of range 256..65536")
    assert _err("name: t\ncontrol: underlay\nhosts: [{name: h1, vm: true}]\ncontainers: [{name: c, host: h1,"
                " network_mode: none}]\n") == ("containers[0].network_mode: not on a VM host (h1): the lab makes"
                                                " such a container's namespace on this machine")


def test_docker_hosts() -> None:
    t = parse("name: t\nhosts: [h1, {name: h2, docker: true}, {name: h3, docker: false}]\n")
    assert [h.docker for h in t.hosts] == [False, True, False]
    assert to_dict(t)["hosts"][1] == {"name": "h2", "underlay_ip": "172.30.0.12", "docker": True}
    assert "docker" not in to_dict(t)["hosts"][2]
    assert parse(yaml.safe_dump(to_dict(t))) == t
    assert _err("name: t\nhosts: [{name: h1, docker: yes}]\n") == "hosts[0].docker: expected true or false, got str"
    assert _err("name: t\ncontrol: underlay\nhosts: [{name: h1, docker: true, vm: true}]\n") == (
        "hosts[0].docker: not on a VM host: the lab runs a Docker host's dockerd in the host's namespace on this machine")


def test_control_address() -> None:
    t = parse(BASE + "control: underlay\nunderlay: {subnet: 10.5.0.0/16}\n")
    assert (t.control, t.underlay.switch_ip, t.underlay.control_ip, t.control_address) == (
        "underlay", "10.5.0.1", "10.5.0.2", "10.5.0.2:7070")
    assert parse(BASE + "control: local\n").control_address == ""


def test_examples_load() -> None:
    quick = load(EXAMPLES / "quickstart.yaml")
    assert quick.name == "quickstart" and [h.name for h in quick.hosts] == ["h1", "h2"]
    assert quick.networks == (NetworkSpec("blue", "10.10.0.0/24"),)
    assert [(c.name, c.host, c.networks) for c in quick.containers] == [
        ("web", "h1", (Attachment("blue"),)), ("db", "h2", (Attachment("blue"),))]

    multi = load(EXAMPLES / "three-networks.yaml")
    assert multi.name == "multi" and len(multi.hosts) == 3
    assert [(n.name, n.subnet, n.internal) for n in multi.networks] == [
        ("front", "10.20.0.0/24", False), ("back", "10.21.0.0/24", False), ("admin", None, True)]
    assert {c.name: (c.host, [a.network for a in c.networks]) for c in multi.containers} == {
        "web": ("h1", ["front"]), "api": ("h2", ["front", "back"]), "db": ("h3", ["back"]),
        "ops": ("h3", ["admin"]), "jump": ("h1", ["admin", "front"])}

    big = load(EXAMPLES / "twenty-hosts.yaml")
    assert big.name == "big" and len(big.hosts) == 20 and big.networks == (NetworkSpec("blue", "10.30.0.0/16"),)
    assert [(c.name, c.host) for c in big.containers] == [(f"c{i}", f"h{i}") for i in range(1, 21)]
    assert all(c.networks == (Attachment("blue"),) for c in big.containers)


@pytest.mark.parametrize("name", ["quickstart.yaml", "three-networks.yaml", "twenty-hosts.yaml", "policy.yaml", None])
def test_round_trip(name: str | None) -> None:
    if name is None:
        t = parse(BASE + textwrap.dedent("""\
            etcd: {members: 3}
            control: underlay
            underlay: {subnet: 10.5.0.0/16, mtu: 9000}
            networks:
              - {name: blue, subnet: 10.10.0.0/24, gateway: 10.10.0.9, vni: 7, mtu: 1400, internal: true,
                 labels: {a: 'yes', b: '1'}}
              - {name: loc, driver: bridge, host: h1}
            containers:
              - {name: web, host: h1, networks: [{name: blue, ip: 10.10.0.50}, loc], labels: {x: y}}
              - {name: mon, host: h2, network_mode: host}
            policies:
              - {name: p1, network: blue, action: allow, from: x=y, to: web, proto: tcp, ports: [80, 8000-8099]}
              - {name: p2, network: loc, action: deny, from: 10.10.0.0/28, priority: 7}
            """))
    else:
        t = load(EXAMPLES / name)
    d = to_dict(t)
    assert parse(yaml.safe_dump(d)) == t
    assert parse(yaml.safe_dump(d, sort_keys=False)) == t
    assert to_dict(parse(yaml.safe_dump(d))) == d
