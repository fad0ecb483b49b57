"""Whole-lab tests: what a user does with `vxlab up/check/exec/down`, end to end.

Each test runs with its own VXLAB_RUN directory and unique lab names (`vxt…`), and
tears its labs down in a finalizer, also when it fails.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig import QUICK

from vxlab.lab.lab import Lab
from vxlab.lab.state import LabState
from vxlab.lab.trace import _wait_listening  # tcpdump's "listening on": capture started

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    run = tmp_path / "run"
    monkeypatch.setenv("VXLAB_RUN", str(run))
    monkeypatch.delenv("VXLAB_CONTROLLER", raising=False)
    e = {**os.environ, "VXLAB_RUN": str(run)}
    yield e
    for lab in (p.name for p in run.iterdir()) if run.exists() else ():
        Lab(lab).down()


def vx(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def topo(tmp: Path, name: str, body: str) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(f"name: {name}\n{body}")
    return p



def left_behind(lab: str) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    procs = subprocess.run(["pgrep", "-af", f"/{lab}/"], capture_output=True, text=True).stdout
    return [line for line in ns.splitlines() if line.startswith(f"vx-{lab}.")] + \
           [line for line in procs.splitlines() if "pgrep" not in line]


def test_quickstart_up_check_exec_down(env, tmp_path):
    name = "vxt" + secrets.token_hex(3)
    f = topo(tmp_path, name, QUICK)
    up = vx(env, "up", str(f))
    assert up.returncode == 0, up.stderr
    assert "web" in up.stdout and "10.10.0.2" in up.stdout and f"vx-{name}.h1.c-web" in up.stdout
    check = vx(env, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2/2 expectations hold" in check.stderr
    st = json.loads(vx(env, "status", "--json").stdout)
    assert st["converged"] and [h["alive"] for h in st["hosts"]] == [True, True]
    assert st["controller"].startswith("unix:") and st["etcd"]
    tr = vx(env, "trace", "web", "db")
    assert tr.returncode == 0, tr.stdout + tr.stderr
    vni = json.loads(vx(env, "network", "inspect", "blue").stdout)[0]["Options"][
        "com.docker.network.driver.overlay.vxlanid_list"]
    assert f"VXLAN, flags [I] (0x08), vni {vni}" in tr.stdout and "10.10.0.2 > 10.10.0.3: ICMP echo request" in tr.stdout
    assert "vxv-blue" in tr.stdout and "dst 172.30.0.12" in tr.stdout  # the FDB entry used
    traced = json.loads(vx(env, "trace", "web", "db", "--json").stdout)
    assert traced["reached"] and traced["vni"] == int(vni) and len(traced["hops"]) == 10
    assert vx(env, "exec", "web", "--", "sh", "-c", "exit 7").returncode == 7
    assert vx(env, "exec", "--via-agent", "web", "--", "sh", "-c", "exit 7").returncode == 7  # the agent ran it
    kernel = vx(env, "check", "--kernel")
    assert kernel.returncode == 0 and "h1: no drift" in kernel.stderr and "h2: no drift" in kernel.stderr, kernel.stderr
    assert vx(env, "exec", "web", "--", "ping", "-c1", "-W1", "10.10.0.3").returncode == 0
    run = vx(env, "container", "run", "cache", "--host", "h2", "--network", "blue", "--ip", "10.10.0.77")
    assert run.returncode == 0, run.stderr
    inspect = json.loads(vx(env, "container", "inspect", "cache", "--json").stdout)[0]
    key = inspect["NetworkSettings"]["SandboxKey"]
    assert Path(key).exists() and key == f"/run/netns/vx-{name}.h2.c-cache"
    assert vx(env, "check").returncode == 0
    assert vx(env, "container", "rm", "cache").returncode == 0
    assert not Path(key).exists()
    down = vx(env, "down")
    assert down.returncode == 0, down.stderr
    assert left_behind(name) == []
    assert not (Path(env["VXLAB_RUN"]) / name).exists()


def test_up_applies_only_the_difference(env, tmp_path):
    name = "vxt" + secrets.token_hex(3)
    assert vx(env, "up", str(topo(tmp_path, name, QUICK))).returncode == 0
    web_ns = Path(f"/run/netns/vx-{name}.h1.c-web")
    inode = web_ns.stat().st_ino
    bigger = topo(tmp_path, name, """hosts: 3
networks:
  - name: blue
    subnet: 10.10.0.0/24
  - name: red
    internal: true
containers:
  - {name: web, host: h1, networks: [blue]}
  - {name: cache, host: h3, networks: [blue, red]}
  - {name: api, host: h2, networks: [red]}
""")
    plan = vx(env, "up", str(bigger), "--dry-run")
    assert plan.returncode == 0
    lines = plan.stdout.splitlines()
    assert "+ host h3: 172.30.0.13" in lines and any(x.startswith("+ network red") for x in lines)
    assert any(x.startswith("- container db") for x in lines) and any(x.startswith("+ container cache") for x in lines)
    assert not any(x.startswith("+ container web") for x in lines)
    assert vx(env, "up", str(bigger)).returncode == 0
    assert web_ns.stat().st_ino == inode, "an unchanged container was not recreated"
    check = vx(env, "check", "--json")
    result = json.loads(check.stdout)
    assert check.returncode == 0 and result["ok"], result
    assert any(p["src"] == "web" and p["network"] == "red" and not p["expect"] for p in result["probes"])
    assert vx(env, "up", str(bigger), "--dry-run").stdout.strip() == "nothing to do"


def test_down_after_kill9_of_every_process(env, tmp_path):
    name = "vxt" + secrets.token_hex(3)
    assert vx(env, "up", str(topo(tmp_path, name, QUICK))).returncode == 0
    st = LabState.load(name)
    assert st is not None
    for p in [*st.agents.values(), st.controller, *st.etcd]:
        assert p is not None
        os.kill(p.pid, signal.SIGKILL)
    # An agent killed while creating a namespace leaves its file under /run/netns, no
    # namespace mounted on it (nothing to mark it as ours but the lab's prefix).
    Path(f"/run/netns/vx-{name}.h1.c-half").touch()
    assert vx(env, "down").returncode == 0
    assert left_behind(name) == []


def test_down_after_up_crashed_halfway(env, tmp_path):
    name = "vxt" + secrets.token_hex(3)
    proc = subprocess.Popen([sys.executable, "-m", "vxlab.cli", "up", str(topo(tmp_path, name, QUICK))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(Path("/run/netns").glob(f"vx-{name}.h*")):
        time.sleep(0.02)
    assert list(Path("/run/netns").glob(f"vx-{name}.h*")), "up made no host namespace: nothing half-made"
    proc.kill()
    proc.wait()
    assert vx(env, "down", "--lab", name).returncode == 0
    assert left_behind(name) == []


def test_two_labs_side_by_side(env, tmp_path):
    a, b = "vxt" + secrets.token_hex(3), "vxt" + secrets.token_hex(3)
    f = topo(tmp_path, "shared", QUICK)  # the same file, two lab names
    assert vx(env, "up", str(f), "--lab", a).returncode == 0
    assert vx(env, "up", str(f), "--lab", b).returncode == 0
    ambiguous = vx(env, "check")  # without --lab: must not guess, must say why and what to do
    assert ambiguous.returncode != 0, ambiguous.stdout
    assert "several labs are running" in ambiguous.stderr and "use --lab" in ambiguous.stderr, ambiguous.stderr
    for lab in (a, b):
        assert vx(env, "--lab", lab, "check").returncode == 0
    assert vx(env, "down", "--lab", a).returncode == 0
    assert left_behind(a) == [] and vx(env, "--lab", b, "check").returncode == 0


@pytest.mark.parametrize("body,error", [
    ("hosts: 2\ncontainers:\n  - {name: web, host: h9, networks: []}\n", "containers[0].host: unknown host 'h9'"),
    ("hosts: two\n", "hosts: expected a count or a list, got str"),
    ("hosts: 2\nnetworks:\n  - {name: blue, subnet: 10.0.0.0/33}\n", "networks[0].subnet:"),
])
def test_bad_topology_is_one_line_and_changes_nothing(env, tmp_path, body, error):
    name = "vxt" + secrets.token_hex(3)
    path = topo(tmp_path, name, body)
    out = vx(env, "up", str(path))
    assert out.returncode == 1 and out.stderr.startswith(f"error: {path}:") and f": {error}" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert left_behind(name) == [] and not (Path(env["VXLAB_RUN"]) / name).exists()


def test_python_api(tmp_path, monkeypatch):
    monkeypatch.setenv("VXLAB_RUN", str(tmp_path / "run"))
    name = "vxt" + secrets.token_hex(3)
    with Lab.from_file(topo(tmp_path, name, QUICK)) as lab:
        assert lab.check().ok
        assert lab.exec("web", "ping", "-c1", "-W1", "10.10.0.3").returncode == 0
        lab.container("extra", host="h1", networks=["blue"])
        assert lab.check().ok
    assert left_behind(name) == []


def test_lab_works_where_docker_set_forward_drop(env, tmp_path):
    """dockerd sets the FORWARD policy to DROP and bridge-nf-call-iptables=1; the lab
    keeps its traffic out of this namespace, so it must not care. Emulated with an nft
    table of our own (a forward hook with policy drop), removed afterwards."""
    import shutil

    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (apt-get install nftables)")
    table = "vxlabtest_" + secrets.token_hex(3)
    sysctl = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    old = sysctl.read_text().strip() if sysctl.exists() else None
    subprocess.run(["nft", "add", "table", "ip", table], check=True)
    try:
        subprocess.run(["nft", "add", "chain", "ip", table, "forward",
                        "{ type filter hook forward priority 0; policy drop; }"], check=True)
        if sysctl.exists():
            sysctl.write_text("1")
        name = "vxt" + secrets.token_hex(3)
        assert vx(env, "up", str(topo(tmp_path, name, QUICK))).returncode == 0
        check = vx(env, "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert vx(env, "down").returncode == 0
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], check=False)
        if old is not None:
            sysctl.write_text(old)


def test_external_access_through_nat_and_internal_networks_cut_off(env, tmp_path):
    """Containers on a normal network reach the lab's outside address (on the underlay
    switch) through their host's NAT; containers on an internal network cannot; and the
    gateways never route between networks."""
    name = "vxt" + secrets.token_hex(3)
    f = topo(tmp_path, name, """hosts: 2
networks:
  - {name: blue, subnet: 10.10.0.0/24}
  - {name: red, subnet: 10.11.0.0/24, internal: true}
containers:
  - {name: web, host: h1, networks: [blue]}
  - {name: db, host: h2, networks: [red]}
  - {name: both, host: h2, networks: [blue, red]}
""")
    assert vx(env, "up", str(f)).returncode == 0
    outside = Lab(name).outside_ip()
    assert outside == "172.30.0.1"
    assert vx(env, "exec", "web", "--", "ping", "-c1", "-W1", outside).returncode == 0
    assert vx(env, "exec", "both", "--", "ping", "-c1", "-W1", outside).returncode == 0
    cut = vx(env, "exec", "db", "--", "ping", "-c1", "-W1", outside)
    assert cut.returncode != 0 and "unreachable" in (cut.stdout + cut.stderr).lower()
    # The outside sees the host's underlay address (NAT), not the container's.
    sw = f"vx-{name}.sw"
    cap = subprocess.Popen(["ip", "netns", "exec", sw, "tcpdump", "-i", "vxsw", "-nn", "-c", "1", "-l", "icmp"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_listening(cap)
    vx(env, "exec", "web", "--", "ping", "-c2", "-W1", outside)
    out, _ = cap.communicate(timeout=10)
    assert "172.30.0.11 > 172.30.0.1" in out, out
    # Isolation holds with gateways in place: web cannot reach db's red address.
    check = json.loads(vx(env, "check", "--json").stdout)
    assert check["ok"], [p for p in check["probes"] if not p["ok"]]


@pytest.mark.vxlab_topology(str(ROOT / "examples" / "quickstart.yaml"), name="vxtfixture")
def test_pytest_fixture_for_users(vxlab_lab, monkeypatch, tmp_path):
    assert vxlab_lab.name == "vxtfixture"
    assert vxlab_lab.exec("web", "ping", "-c1", "-W1", "10.10.0.3").returncode == 0
    assert vxlab_lab.check().ok


def test_bridge_network_lives_on_one_host(env, tmp_path):
    """Docker's user-defined bridge next to an overlay: no VXLAN device, local traffic
    only, still isolated from the overlay, and the controller refuses a foreign host."""
    name = "vxt" + secrets.token_hex(3)
    f = topo(tmp_path, name, """hosts: 2
networks:
  - {name: blue, subnet: 10.10.0.0/24}
  - {name: loc, subnet: 10.12.0.0/24, driver: bridge, host: h1}
containers:
  - {name: a, host: h1, networks: [loc]}
  - {name: b, host: h1, networks: [loc, blue]}
  - {name: c, host: h2, networks: [blue]}
""")
    up = vx(env, "up", str(f))
    assert up.returncode == 0, up.stderr
    check = json.loads(vx(env, "check", "--json").stdout)
    assert check["ok"], [p for p in check["probes"] if not p["ok"]]
    links = subprocess.run(["ip", "-n", f"vx-{name}.h1.n-loc", "-o", "link"], capture_output=True, text=True).stdout
    assert "vxb-loc" in links and "vxv-" not in links, "a bridge network has no VXLAN device"
    tr = vx(env, "trace", "a", "b")
    assert tr.returncode == 0 and "same host, no VXLAN" in tr.stdout
    inspect = json.loads(vx(env, "network", "inspect", "loc").stdout)[0]
    assert inspect["Driver"] == "bridge" and inspect["Scope"] == "local"
    refused = vx(env, "container", "run", "d", "--host", "h2", "--network", "loc")
    assert refused.returncode == 1 and "bridge network on host 'h1'" in refused.stderr


def test_network_modes_none_and_host(env, tmp_path):
    name = "vxt" + secrets.token_hex(3)
    f = topo(tmp_path, name, """hosts: 2
networks:
  - {name: blue, subnet: 10.10.0.0/24}
containers:
  - {name: web, host: h1, networks: [blue]}
  - {name: lonely, host: h2, network_mode: none}
  - {name: hostnet, host: h2, network_mode: host}
""")
    assert vx(env, "up", str(f)).returncode == 0
    links = vx(env, "exec", "lonely", "--", "ip", "-o", "link").stdout
    assert [line.split(": ")[1] for line in links.splitlines()] == ["lo"]
    assert "172.30.0.12" in vx(env, "exec", "hostnet", "--", "ip", "-o", "-4", "addr").stdout
    check = json.loads(vx(env, "check", "--json").stdout)
    assert check["ok"] and any(p["src"] == "lonely" and not p["expect"] for p in check["probes"])
    listed = vx(env, "container", "ls").stdout
    assert "lonely" in listed and "(none)" in listed and "hostnet" in listed and "(host)" in listed
    assert vx(env, "down").returncode == 0 and left_behind(name) == []


def test_check_over_fifty_containers_fits_the_machines_neighbour_table(env, tmp_path):
    """One IPv4 neighbour table serves every namespace: `check` over 50 containers needs
    ~2 450 entries, past the kernel's default cap of 1024 (265 of 2 450 probes failed
    with it). `up` raises the cap while labs run; `down` puts back what it found."""
    from vxlab.lab import neigh

    before = neigh.read()
    name = "vxt" + secrets.token_hex(3)
    body = "hosts: 10\nnetworks: [{name: blue, subnet: 10.91.0.0/24}]\ncontainers:\n" + "".join(
        f"  - {{name: c{i}, host: h{i % 10 + 1}, networks: [blue]}}\n" for i in range(50))
    assert vx(env, "up", str(topo(tmp_path, name, body))).returncode == 0
    try:
        assert neigh.read()[2] >= neigh.LAB_VALUES[2]
        out = vx(env, "check", "--lab", name)
        assert out.returncode == 0, out.stderr[-500:]
        assert "2450/2450 expectations hold" in out.stderr
    finally:
        assert vx(env, "down", "--lab", name).returncode == 0
    assert left_behind(name) == []
    if neigh.holders():  # another lab on this machine (a concurrent run) still needs the raise
        assert neigh.read()[2] >= neigh.LAB_VALUES[2]
    else:
        assert neigh.read() == before
