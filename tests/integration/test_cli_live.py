"""The CLI against a live controller and etcd: what a user types, what they see."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def vx(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", "--controller", address, *args],
                          capture_output=True, text=True, timeout=30)


def test_network_lifecycle_from_the_cli(etcd, controllers):
    c = controllers(etcd.endpoints)
    out = vx(c.address, "network", "create", "blue", "--subnet", "10.10.0.0/24", "--vni", "7000", "--mtu", "1400")
    assert out.returncode == 0, out.stderr
    assert vx(c.address, "network", "create", "red", "--internal").returncode == 0
    listed = json.loads(vx(c.address, "network", "ls", "--json").stdout)
    assert {(n["name"], n["subnet"], n["vni"]) for n in listed} == {("blue", "10.10.0.0/24", 7000),
                                                                     ("red", "10.0.0.0/24", 4096)}
    table = vx(c.address, "network", "ls").stdout
    assert "blue" in table and "10.10.0.0/24" in table and "7000" in table
    inspect = json.loads(vx(c.address, "network", "inspect", "blue").stdout)[0]
    assert inspect["Driver"] == "overlay" and inspect["IPAM"]["Config"] == [{"Subnet": "10.10.0.0/24",
                                                                              "Gateway": "10.10.0.1"}]
    assert inspect["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "7000"
    assert vx(c.address, "network", "rm", "blue").returncode == 0
    assert [n["name"] for n in json.loads(vx(c.address, "network", "ls", "--json").stdout)] == ["red"]


@pytest.mark.parametrize("args,line", [
    (["network", "create", "bad", "--subnet", "10.0.0.0/33"], "error: network.subnet: '10.0.0.0/33' is not a valid IPv4 CIDR"),
    (["network", "create", "Bad"], "error: network.name: 'Bad' is not a valid name"),
    (["network", "create", "v", "--vni", "16777216"], "error: network.vni: 16777216 is out of range 1..16777215"),
    (["network", "create", "v6", "--subnet", "fd00::/64"], "error: network.subnet: IPv6 is not supported yet"),
    (["network", "inspect", "nope"], "error: network: no network named 'nope'"),
    (["network", "rm", "nope"], "error: network: no network named 'nope'"),
])
def test_bad_input_one_line_nonzero_exit(etcd, controllers, args, line):
    c = controllers(etcd.endpoints)
    out = vx(c.address, *args)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [line] or out.stderr.strip().startswith(line), out.stderr


def test_unreachable_controller_is_one_line(tmp_path):
    out = vx("127.0.0.1:1", "network", "ls")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "controller" in out.stderr


@pytest.fixture
def two_labs(tmp_path, monkeypatch):
    """Two real one-host labs (mutual TLS, as by default) in a VXLAB_RUN of their own;
    both are brought down in the finalizer, also when the test fails."""
    import os
    import secrets

    from vxlab.lab.lab import Lab
    from vxlab.lab.topology import parse

    if os.geteuid() != 0:
        pytest.skip("the lab needs root (namespaces)")
    run = tmp_path / "run"
    monkeypatch.setenv("VXLAB_RUN", str(run))
    monkeypatch.delenv("VXLAB_CONTROLLER", raising=False)
    monkeypatch.delenv("VXLAB_LAB", raising=False)
    names = sorted("vxt" + secrets.token_hex(3) for _ in range(2))
    try:
        for name in names:
            Lab(name).up(parse(f"name: {name}\nhosts: 1\nnetworks: [{{name: blue, subnet: 10.10.0.0/24}}]\n"))
        yield names, {**os.environ, "VXLAB_RUN": str(run)}
    finally:
        for name in names:
            Lab(name).down()


def vxlab(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_several_labs_and_lab_after_the_verb(two_labs):
    (a, b), env = two_labs
    out = vxlab(env, "container", "run", "c1", "--host", "h1", "--network", "blue")
    assert (out.returncode, out.stderr) == (1, f"error: lab: several labs are running ({a}, {b}); use --lab NAME\n")
    out = vxlab(env, "network", "ls")
    assert out.returncode == 1 and out.stderr.startswith("error: lab: several labs are running")
    out = vxlab(env, "container", "run", "c1", "--host", "h1", "--network", "blue", "--lab", a)  # waits until programmed
    assert out.returncode == 0, out.stderr
    assert [e["name"] for e in json.loads(vxlab(env, "container", "ls", "--json", "--lab", a).stdout)] == ["c1"]
    assert json.loads(vxlab(env, "container", "ls", "--json", "--lab", b).stdout) == []  # the other lab's controller
    assert [n["name"] for n in json.loads(vxlab(env, "--lab", b, "network", "ls", "--json").stdout)] == ["blue"]
    assert [h["name"] for h in json.loads(vxlab(env, "host", "ls", "--json", "--lab", b).stdout)] == ["h1"]
    out = vxlab(env, "exec", "--lab", a, "c1", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert out.returncode == 0 and "10.10.0.2/24" in out.stdout, out.stderr
    out = vxlab(env, "container", "rm", "c1", "--lab", a)
    assert out.returncode == 0 and "removed c1 (1 endpoints)" in out.stderr
