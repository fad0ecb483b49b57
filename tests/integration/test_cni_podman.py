"""podman (Debian's 4.3, network_backend "cni") on lab host h1 runs a container on the vxlab
network `blue` through vxlab-cni: it reaches the vxlab container `db` on h2 across
VXLAN (ping and TCP), `db` reaches it; the controller holds its endpoint (runtime cni,
the container's id, its namespace); `check` probes from it too, `trace` and `exec` go
through h1's agent into it; `podman rm` removes it (CNI DEL), and nothing is left. Everything
of podman's is under a tmp dir (tests/integration/podman_cni.py); skipped with the
reason without podman (VXLAB_CNI_REQUIRED=1 fails instead)."""

from __future__ import annotations

import secrets
import subprocess

import pytest
from podman_cni import IMAGE, Podman, require
from rig import Rig, module_lab

from vxlab.agent import cni

pytestmark = pytest.mark.integration

TOPO = """hosts: 2
networks:
  - name: blue
    subnet: 10.81.0.0/24
containers:
  - {name: db, host: h2, networks: [blue]}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    require()
    with module_lab(tmp_path_factory.mktemp("run"), TOPO) as the_lab:
        yield the_lab


@pytest.fixture
def podman(lab):
    p = Podman(netns=lab.host_ns("h1"))
    try:
        tls = lab.client_tls()
        p.network("blue", {"network": "blue", "host": "h1", "controller": lab.socket,
                           **({"pki": str(tls.ca.parent)} if tls else {})})
        p.import_busybox()
        yield p
    finally:
        p.close()


def cni_endpoints(lab) -> list:
    return [e for e in lab.call(lambda c: c.list_endpoints(network="blue")) if e.runtime == "cni"]


def test_a_podman_container_on_h1_reaches_a_vxlab_container_on_h2(lab, podman: Podman) -> None:
    name = f"vxt{secrets.token_hex(3)}-p1"
    cid = podman("run", "-d", "--name", name, "--network", "blue", IMAGE, "/bin/sleep", "100000").stdout.strip()
    [ep] = cni_endpoints(lab)
    assert (ep.host, ep.labels[cni.LABEL_CONTAINER], ep.name) == ("h1", cid, cni.endpoint_name(cid, "eth0"))
    db = lab.call(lambda c: c.get_endpoint("blue", "db"))
    inside = podman("exec", name, "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"{ep.ip}/24" in inside
    assert podman("exec", name, "ping", "-c", "3", "-W", "2", db.ip, check=False).returncode == 0
    assert lab.exec("db", "ping", "-c", "1", "-W", "2", ep.ip).returncode == 0
    # TCP: a one-shot echo server in db, busybox nc in the podman container the client
    srv = subprocess.Popen(["ip", "netns", "exec", lab.namespace_of("db"), "python3", "-c",
                            "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                            "s.bind(('0.0.0.0',5002));s.listen();print('listening',flush=True);c,_=s.accept();"
                            "c.sendall(c.recv(64)[::-1]);c.close()"], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "listening"
        out = podman("exec", name, "sh", "-c", f"echo -n olleh | nc -w 5 {db.ip} 5002").stdout
        assert out.strip() == "hello"
    finally:
        srv.kill()
        srv.wait()

    # DNS: podman wrote ADD's `dns` into the container's resolv.conf, and h1's agent answers there
    resolv = podman("exec", name, "cat", "/etc/resolv.conf").stdout
    assert "nameserver 127.0.0.11" in resolv, resolv
    Rig.wait(lambda: db.ip in podman("exec", name, "nslookup", "db", check=False).stdout,
             "db resolved in the podman container by h1's agent")
    # through h1's agent, in the namespace the endpoint records (CNI_NETNS, podman's sandbox)
    sandbox = podman("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name).stdout.strip()
    assert ep.netns == sandbox and sandbox.startswith("/"), (ep.netns, sandbox)
    result = lab.check()
    assert result.ok and not result.skipped, [p for p in result.probes if not p.ok or p.skipped]
    assert {(p.src, p.dst) for p in result.probes} == {(ep.name, "db"), ("db", ep.name)}
    t = lab.trace(ep.name, "db", count=2)
    assert t.reached and t.hops[0].where == f"{ep.netns} (cni's)" and t.hops[0].what == "eth0", t.hops[0]
    assert lab.exec(ep.name, "ip", "-o", "addr", "show", "eth0").stdout.count(f"{ep.ip}/24") == 1

    podman("rm", "--force", "--time", "0", name)
    assert cni_endpoints(lab) == [], "podman rm ran CNI DEL: the endpoint is gone"
    lab.wait_converged()
    assert lab.agent_status("h1").last_pass is not None
