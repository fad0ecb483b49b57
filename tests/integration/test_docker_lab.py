"""Docker hosts in a lab (`docker: true`) and vxlab's Docker plugin, end to end (issue 18).

Two Docker hosts and a plain one; `docker network create -d vxlab …` on each Docker host
names one vxlab network, `docker run` containers on both reach each other and a plain
vxlab container across VXLAN (ping and TCP); `check`, `trace` and `exec` work from them
through their agents (Join recorded their sandboxes); an agent restarted loses no probe between
them; `docker rm` and `docker network rm` leave nothing of theirs in etcd; a kill -9 of
`up` still lets `down` remove everything. The machine's own firewall is the same before
and after (the lab's dockerds run with --iptables=false in the hosts' namespaces).

Marker `docker`: skipped with the reason without docker.io / busybox-static, a failure
instead with VXLAB_DOCKER_REQUIRED=1 (CI).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig import Rig, wait_answers

from vxlab.icmp import Pinger
from vxlab.lab import dockerhost
from vxlab.lab.lab import Lab

pytestmark = [pytest.mark.integration, pytest.mark.docker]
CREATE = ("docker", "network", "create", "-d", "vxlab", "--ipam-driver", "vxlab")
RUN = ("docker", "run", "-d", "--network")
WEB = "10.50.0.10"


def _require_docker() -> None:
    if gaps := dockerhost.missing():
        why = f"docker hosts need {', '.join(gaps)}"
        if os.environ.get("VXLAB_DOCKER_REQUIRED") == "1":
            pytest.fail(f"{why} (VXLAB_DOCKER_REQUIRED=1)")
        pytest.skip(why)


def firewall() -> str:
    """The machine's own ruleset (stateless: no counters)."""
    return subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


def left_behind(lab_dir: Path) -> list[str]:
    procs = subprocess.run(["pgrep", "-af", str(lab_dir)], capture_output=True, text=True).stdout
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(lab_dir) in line]
    return [line for line in procs.splitlines() if "pgrep" not in line] + mounts + \
        [line for line in ns.splitlines() if line.startswith(f"vx-{lab_dir.name}.")] + \
        ([str(lab_dir)] if lab_dir.exists() else [])


def vx(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def on(lab: Lab, env: dict[str, str], host: str, *cmd: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """`vxlab host exec HOST -- CMD` (DOCKER_HOST is the host's dockerd)."""
    r = vx(env, "--lab", lab.name, "host", "exec", host, "--", *cmd)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)} on {host}: {r.stderr}"
    return r


def topology(tmp: Path, name: str, body: str) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(f"name: {name}\n{body}")
    return p


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    _require_docker()
    run = tmp_path_factory.mktemp("docker") / "run"
    with pytest.MonkeyPatch.context() as mp:  # this process's Lab objects look there too
        mp.setenv("VXLAB_RUN", str(run))
        mp.delenv("VXLAB_CONTROLLER", raising=False)
        mp.delenv("VXLAB_LAB", raising=False)
        yield dict(os.environ)


@pytest.fixture(scope="module")
def lab(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    name = f"vxt{secrets.token_hex(3)}"
    before = firewall()
    path = topology(tmp_path_factory.mktemp("topo"), name, f"""hosts:
  - {{name: h1, docker: true}}
  - {{name: h2, docker: true}}
  - h3
networks:
  - {{name: blue, subnet: 10.50.0.0/24}}
containers:
  - {{name: web, host: h3, networks: [{{name: blue, ip: {WEB}}}]}}
""")
    up = vx(env, "up", str(path), timeout=300)  # with TLS: the plugins call with their hosts' certificates
    the_lab = Lab(name)
    try:
        assert up.returncode == 0, up.stderr
        for host in ("h1", "h2"):
            on(the_lab, env, host, *CREATE, "--subnet", "10.50.0.0/24", "blue")
            on(the_lab, env, host, *RUN, "blue", "--name", f"d{host[1]}", dockerhost.IMAGE, "sleep", "1d")
        yield the_lab
    finally:
        lab_dir = the_lab.state.dir
        the_lab.down()
        assert left_behind(lab_dir) == []
        assert firewall() == before, "the machine's firewall changed"


def ip_of(lab: Lab, env: dict[str, str], host: str, ctr: str) -> str:
    return on(lab, env, host, "docker", "inspect", "-f", "{{.NetworkSettings.Networks.blue.IPAddress}}",
              ctr).stdout.strip()


def netns_of(lab: Lab, env: dict[str, str], host: str, ctr: str) -> str:
    return f"/proc/{on(lab, env, host, 'docker', 'inspect', '-f', '{{.State.Pid}}', ctr).stdout.strip()}/ns/net"


def test_docker_containers_reach_each_other_and_a_vxlab_container(lab: Lab, env: dict[str, str]) -> None:
    d1, d2 = ip_of(lab, env, "h1", "d1"), ip_of(lab, env, "h2", "d2")
    eps = {e.ip: e for e in lab.call(lambda c: c.list_endpoints(network="blue"))}
    assert eps[d1].host == "h1" and eps[d2].host == "h2" and eps[d1].runtime == eps[d2].runtime == "docker"
    assert on(lab, env, "h1", "docker", "exec", "d1", "ping", "-c", "2", "-W", "5", d2).returncode == 0
    assert on(lab, env, "h2", "docker", "exec", "d2", "ping", "-c", "2", "-W", "5", WEB).returncode == 0
    assert lab.exec("web", "ping", "-c", "2", "-W", "5", d1).returncode == 0
    mac = on(lab, env, "h1", "docker", "exec", "d1", "cat", "/sys/class/net/eth0/address").stdout.strip()
    assert mac == eps[d1].mac  # the controller's MAC, which every peer's neighbour entry has
    # TCP across VXLAN: a listener in d2, a client in d1 retried until it listens.
    on(lab, env, "h2", "docker", "exec", "-d", "d2", "nc", "-l", "-p", "8080", "-e", "echo", "over-vxlan")
    Rig.wait(lambda: "over-vxlan" in on(lab, env, "h1", "docker", "exec", "d1", "sh", "-c",
                                        f"echo | nc -w 2 {d2} 8080", ok=False).stdout, "d1 -> d2:8080 over TCP")
    inspect = on(lab, env, "h1", "docker", "network", "inspect", "-f", "{{json .IPAM.Config}}", "blue").stdout
    assert "10.50.0.0/24" in inspect


def test_the_plugins_use_their_hosts_certificates(lab: Lab) -> None:
    """Each host's plugin makes its endpoints with that host's certificate (a host may make
    runtime endpoints on itself) and only networks with the admin's (controller/authz.py)."""
    pki = lab.state.dir / "pki"
    for host in ("h1", "h2"):
        first = (lab.state.dir / "logs" / f"docker-plugin-{host}.log").read_text()
        assert f"certificate {pki}/hosts/{host}.crt; networks: {pki}/admin.crt" in first, first[-500:]


def test_check_probes_from_docker_containers_too(lab: Lab, env: dict[str, str]) -> None:
    """Join recorded each sandbox (through /proc/<dockerd>/root: a lab's dockerd mounts them
    in a mount namespace of its own) and `check` probes from the Docker containers like
    from any other: their agents enter the namespace once it holds the endpoint."""
    docker = {e.name: e for e in lab.call(lambda c: c.list_endpoints(network="blue")) if e.runtime}
    assert len(docker) == 2
    for e in docker.values():
        pid = (lab.state.dir / "docker" / e.host / "docker.pid").read_text().strip()
        assert e.netns.startswith(f"/proc/{pid}/root{lab.state.dir}/docker/{e.host}/exec/netns/"), e.netns
    out = vx(env, "--lab", lab.name, "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "6/6 expectations hold" in out.stderr and "not probed" not in out.stderr, out.stderr
    result = lab.check()
    assert result.ok and not result.skipped and {p.src for p in result.probes} == {"web", *docker}
    assert all(p.reached for p in result.probes)


def test_trace_and_exec_from_a_docker_container_through_its_agent(lab: Lab, env: dict[str, str]) -> None:
    """`trace` from d1 to web shows d1's namespace (Docker's, by its path) as the first hop;
    `vxlab exec` runs in d1's network namespace through h1's agent; an endpoint whose
    recorded namespace does not hold it is refused, naming it."""
    d1 = next(e for e in lab.call(lambda c: c.list_endpoints(network="blue")) if e.host == "h1" and e.runtime)
    out = vx(env, "--lab", lab.name, "trace", d1.name, "web", "--json")
    assert out.returncode == 0, out.stderr
    t = json.loads(out.stdout)
    assert t["reached"] and t["capture"], t
    first = t["hops"][0]
    assert first["where"] == f"{d1.netns} (docker's)" and first["what"] == "eth0" and d1.ip in first["detail"], first
    assert t["hops"][-1]["where"] == lab.container_ns("h3", "web")
    r = vx(env, "--lab", lab.name, "exec", d1.name, "--", "ip", "-o", "addr", "show", "eth0")
    assert r.returncode == 0 and f"{d1.ip}/24" in r.stdout, r.stdout + r.stderr
    assert lab.exec(d1.name, "ping", "-c", "1", "-W", "5", WEB).returncode == 0


def test_an_agent_restart_loses_no_probe(lab: Lab, env: dict[str, str]) -> None:
    d2 = ip_of(lab, env, "h2", "d2")
    probe = Pinger(netns_of(lab, env, "h1", "d1"), d2, interval=0.05).start()
    try:
        wait_answers(probe, 10)
        with lab.fault("agent-kill", host="h1"):
            wait_answers(probe, 10)
        lab.wait_converged()
        wait_answers(probe, 10)  # answered by the restarted agent's data plane, adopted as it was
    finally:
        samples = probe.stop()
    lost = [s for s in samples if s.rtt_ms is None]
    assert samples and not lost, f"{len(lost)} of {len(samples)} probes lost"


def test_options_and_subnets_refused_clearly(lab: Lab, env: dict[str, str]) -> None:
    r = on(lab, env, "h1", *CREATE, "--subnet", "10.51.0.0/24", "-o", "vxlab.color=red", "red", ok=False)
    assert r.returncode != 0 and "-o vxlab.color: unknown option" in r.stderr
    r = on(lab, env, "h1", *CREATE, "--subnet", "10.50.0.0/16", "wide", ok=False)
    assert r.returncode != 0 and "overlaps vxlab network 'blue' (10.50.0.0/24)" in r.stderr
    r = on(lab, env, "h1", *CREATE, "wide", ok=False)
    assert r.returncode != 0 and "--subnet: required" in r.stderr
    assert [n.name for n in lab.call(lambda c: c.list_networks())] == ["blue"]


def test_docker_rm_and_network_rm_leave_nothing_in_etcd(lab: Lab, env: dict[str, str]) -> None:
    for host in ("h1", "h2"):
        on(lab, env, host, *CREATE, "--subnet", "10.52.0.0/24", "-o", "vxlab.vni=5200", "green")
        on(lab, env, host, *RUN, "green", "--name", f"g{host[1]}", dockerhost.IMAGE, "sleep", "1d")
    net = lab.call(lambda c: c.get_network("green"))
    assert (net.subnet, net.vni) == ("10.52.0.0/24", 5200)
    assert len(lab.call(lambda c: c.list_endpoints(network="green"))) == 2
    for host in ("h1", "h2"):
        on(lab, env, host, "docker", "rm", "-f", f"g{host[1]}")
        on(lab, env, host, "docker", "network", "rm", "green")
    assert "green" not in {n.name for n in lab.call(lambda c: c.list_networks())}
    keys = vx(env, "--lab", lab.name, "store", "ls", "--json")
    assert keys.returncode == 0 and "green" not in keys.stdout
    lab.wait_converged()
    links = subprocess.run(["ip", "-n", lab.host_ns("h1"), "-o", "link"], capture_output=True, text=True).stdout
    assert sum("vxh" in line for line in links.splitlines()) == 0  # no handoff end left (d1's was taken)


def test_down_cleans_after_up_was_killed(env: dict[str, str], tmp_path: Path) -> None:
    name = f"vxt{secrets.token_hex(3)}"
    path = topology(tmp_path, name, "hosts:\n  - {name: h1, docker: true}\n  - h2\n")
    lab_dir = Path(env["VXLAB_RUN"]) / name
    up = subprocess.Popen([sys.executable, "-m", "vxlab.cli", "up", str(path), "--insecure"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = lab_dir / "docker" / "h1" / "docker.sock"
        Rig.wait(lambda: sock.exists() or up.poll() is not None, "h1's dockerd socket", timeout=120)
        up.send_signal(signal.SIGKILL)
        up.wait()
        assert subprocess.run(["pgrep", "-f", str(lab_dir / "docker" / "h1")]).returncode == 0  # it runs on
    finally:
        if up.poll() is None:
            up.kill()
        down = vx(env, "--lab", name, "down")
    assert down.returncode == 0, down.stderr
    try:  # a SIGKILLed process is gone from /proc once reaped: a moment after down returned
        Rig.wait(lambda: not left_behind(lab_dir), "nothing of the lab left", timeout=10)
    finally:
        assert left_behind(lab_dir) == []
