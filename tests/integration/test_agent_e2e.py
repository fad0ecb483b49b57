"""Agents in simulated hosts (namespaces) against a real etcd and controller: real
ping and TCP between containers across VXLAN, MTU, restarts, drift, dead hosts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from rig import Rig, lost, wait_answers

from vxlab.lab.probe import Pinger
from vxlab.lab.trace import _wait_listening  # tcpdump's "listening on": capture started

# A client's connect, retried until the server listens (instead of sleeping for it).
CONNECT = ("import socket,time\n"
           "def connect(ip,port):\n"
           " deadline=time.monotonic()+10\n"
           " while True:\n"
           "  try: return socket.create_connection((ip,port),3)\n"
           "  except ConnectionRefusedError:\n"
           "   if time.monotonic()>deadline: raise\n"
           "   time.sleep(0.05)\n")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    r = Rig(tmp_path_factory.mktemp("rig"), hosts=3)
    try:
        yield r.start_pair("10.77.0.0/24")
    finally:
        r.close()


def test_ping_and_tcp_across_vxlan_with_vni_on_the_wire(rig: Rig):
    web, db = rig.cns("h1", "web"), rig.cns("h2", "db")
    assert rig.ping(web, "10.77.0.3", count=3, interval=0.2).returncode == 0
    # TCP: a one-shot server in db, a client in web.
    srv = subprocess.Popen(["ip", "netns", "exec", db, "python3", "-c",
                            "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                            "s.bind(('0.0.0.0',5001));s.listen();c,_=s.accept();c.sendall(c.recv(64)[::-1]);c.close()"])
    try:  # the client retries its connect until the server listens
        out = rig.sh(web, "python3", "-c", CONNECT + "s=connect('10.77.0.3',5001);s.sendall(b'olleh');"
                     "print(s.recv(64).decode())", check=True)
        assert out.stdout.strip() == "hello"
    finally:
        srv.kill()
        srv.wait()
    # The underlay carries VXLAN with the network's VNI.
    h1 = rig.hosts["h1"].ns
    cap = subprocess.Popen(["ip", "netns", "exec", h1, "tcpdump", "-i", "eth0", "-nn", "-c", "1", "-l",
                            "udp", "port", "4789"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(cap)
        rig.ping(web, "10.77.0.3", count=2, interval=0.2)
        out, _ = cap.communicate(timeout=10)
    finally:
        cap.kill()
    vni = rig.api(lambda c: c.get_network("blue")).vni
    assert f"vni {vni}" in out and "VXLAN" in out, out


def test_mtu_is_underlay_minus_50_proven_with_df_pings(rig: Rig):
    web = rig.cns("h1", "web")
    mtu = int(rig.sh(web, "cat", "/sys/class/net/eth0/mtu").stdout)
    assert mtu == 1450
    biggest = mtu - 28  # IPv4 + ICMP headers
    assert rig.ping(web, "10.77.0.3", size=biggest, df=True).returncode == 0
    too_big = rig.ping(web, "10.77.0.3", size=biggest + 1, df=True)
    assert too_big.returncode != 0 and "message too long" in (too_big.stdout + too_big.stderr).lower()


def test_full_resync_with_nothing_changed_writes_nothing(rig: Rig):
    rig.settle()
    before = rig.status("h1").time
    rig.wait(lambda: rig.status("h1").time > before + rig.resync * 0.5 and rig.status("h1").last_pass.full,
             "a full pass", timeout=3 * rig.resync + 5)
    last = rig.status("h1").last_pass
    assert last is not None and last.actions == 0 and last.writes == 0, last


def test_drift_repaired_by_periodic_resync(rig: Rig):
    nns = rig.nns("h1", "blue")
    db = rig.api(lambda c: c.get_endpoint("blue", "db"))
    subprocess.run(["ip", "netns", "exec", nns, "bridge", "fdb", "del", db.mac, "dev", "vxv-blue", "self"], check=True)
    veth = next(l for l in rig.sh(nns, "ip", "-o", "link").stdout.split("\n") if "vxe-" in l).split(": ")[1].split("@")[0]
    subprocess.run(["ip", "-n", nns, "link", "del", veth], check=True)
    rig.wait(lambda: f"{db.mac} dst" in rig.sh(nns, "bridge", "fdb", "show", "dev", "vxv-blue").stdout, "fdb repaired",
             timeout=3 * rig.resync + 5)
    rig.wait(lambda: rig.ping(rig.cns("h1", "web"), "10.77.0.3").returncode == 0, "reachable again",
             timeout=3 * rig.resync + 5)


def test_agent_kill9_and_restart_loses_no_probe(rig: Rig):
    p = Pinger(rig.cns("h1", "web"), "10.77.0.3", interval=0.05).start()
    try:
        wait_answers(p, 5)
        rig.kill_agent("h1")
        rig.kill_agent("h2")
        wait_answers(p, 10)  # answered with no agent running
        before = {h: rig.status(h).pid for h in ("h1", "h2")}
        rig.start_agent("h1")
        rig.start_agent("h2")
        rig.wait(lambda: all(rig.status(h).pid not in (0, before[h]) for h in before),
                 "the restarted agents' first pass")
        rig.settle()
        wait_answers(p, 10)
    finally:
        samples = p.stop()
    assert samples and lost(samples) == 0, f"{lost(samples)} of {len(samples)} probes lost"
    assert rig.status("h1").last_pass.writes == 0, "the restarted agent adopted what existed"


def test_dead_host_purged_then_restored(rig: Rig):
    rig.container("cache", "h3", "blue")
    rig.settle()
    nns, web = rig.nns("h1", "blue"), rig.cns("h1", "web")
    cache = rig.api(lambda c: c.get_endpoint("blue", "cache"))
    assert rig.ping(web, cache.ip).returncode == 0
    rig.kill_agent("h3", signal.SIGSTOP)  # frozen: no keepalive, lease expires
    try:
        # `self` entries carry "dst"; the bridge's own learned entries for the port do not
        # matter. How soon after the TTL the purge comes is a figure: bench/deadhost.py.
        rig.wait(lambda: f"{cache.mac} dst" not in rig.sh(nns, "bridge", "fdb", "show", "dev", "vxv-blue").stdout,
                 "dead host's fdb entry purged", timeout=rig.lease_ttl + 30)
        assert cache.ip not in rig.sh(nns, "ip", "neigh", "show", "dev", "vxv-blue").stdout
        assert rig.ping(rig.cns("h2", "db"), "10.77.0.2").returncode == 0, "other pairs unaffected"
    finally:
        os.killpg(rig.agents["h3"].pid, signal.SIGCONT)
    rig.wait(lambda: rig.ping(web, cache.ip).returncode == 0, "host back, reachable", timeout=15)


def test_ip_reused_on_another_host_leaves_no_stale_entry(rig: Rig):
    old = rig.container("tmp", "h2", "blue")
    rig.settle()
    rig.api(lambda c: c.delete_endpoint("blue", "tmp"))
    new = rig.container("tmp2", "h3", "blue", ip=old.ip)
    rig.settle()
    fdb = rig.sh(rig.nns("h1", "blue"), "bridge", "fdb", "show", "dev", "vxv-blue").stdout
    assert f"{old.mac} dst" not in fdb and f"{new.mac} dst {rig.hosts['h3'].ip}" in fdb
    neigh = rig.sh(rig.nns("h1", "blue"), "ip", "neigh", "show", old.ip, "dev", "vxv-blue").stdout
    assert new.mac in neigh and old.mac not in neigh
    assert rig.ping(rig.cns("h1", "web"), new.ip).returncode == 0


def test_controller_down_leaves_data_plane_alone_then_resyncs(rig: Rig):
    web = rig.cns("h1", "web")
    p = Pinger(web, "10.77.0.3", interval=0.05).start()
    try:
        wait_answers(p, 5)
        marks = {h: rig.log_size(h) for h in rig.hosts}
        rig.kill_controller()
        for h in rig.hosts:  # every agent lost its watch
            rig.wait_log(h, "reconnecting", since=marks[h])
        wait_answers(p, 10)  # answered with no control plane
        marks = {h: rig.log_size(h) for h in rig.hosts}
        rig.start_controller()
        for h in rig.hosts:  # every agent is back, in its grace period
            rig.wait_log(h, "control plane back", since=marks[h])
        wait_answers(p, 10)
    finally:
        samples = p.stop()
    assert samples and lost(samples) == 0, f"{lost(samples)} of {len(samples)} probes lost"
    back = time.monotonic()
    late = rig.container("late", "h2", "blue")
    rig.settle()
    # Past the grace period too (the behaviour under test: a lease TTL + 1 s after the
    # agents came back), peers that came back stay programmed.
    time.sleep(max(0.0, back + rig.lease_ttl + 1.5 - time.monotonic()))
    rig.wait(lambda: rig.ping(web, late.ip).returncode == 0, "agents resumed after the controller came back",
             timeout=10)
    assert rig.ping(web, "10.77.0.3").returncode == 0


def test_etcd_down_leaves_data_plane_alone_then_resyncs(rig: Rig):
    web = rig.cns("h1", "web")
    p = Pinger(web, "10.77.0.3", interval=0.05).start()
    try:
        wait_answers(p, 5)
        marks = {h: rig.log_size(h) for h in rig.hosts}
        rig.etcd.stop()
        for h in rig.hosts:  # the controller's watch broke, and every agent's with it
            rig.wait_log(h, "reconnecting", since=marks[h])
        wait_answers(p, 10)  # answered with no store
        rig.etcd.restart()
        wait_answers(p, 10)
    finally:
        samples = p.stop()
    assert samples and lost(samples) == 0, f"{lost(samples)} of {len(samples)} probes lost"

    def created() -> bool:
        try:
            rig.container("postetcd", "h2", "blue")
            return True
        except Exception:  # noqa: BLE001 - UNAVAILABLE until the controller reaches etcd again
            return False
    rig.wait(created, "the controller to serve again after etcd came back", timeout=20, interval=0.3)
    rig.settle()
    new = rig.api(lambda c: c.get_endpoint("blue", "postetcd"))
    rig.wait(lambda: rig.ping(web, new.ip).returncode == 0, "agents resynced after etcd came back", timeout=10)


def test_agent_metrics(rig: Rig):
    code = ("import urllib.request;print(urllib.request.urlopen("
            f"'http://127.0.0.1:{rig.METRICS_PORT}/metrics', timeout=5).read().decode())")
    text = rig.sh(rig.hosts["h1"].ns, sys.executable, "-c", code).stdout
    for name in ("vxlab_agent_reconcile_seconds_count", "vxlab_agent_netlink_ops_total{op=\"add_fdb\"}",
                 "vxlab_agent_last_applied_revision", "vxlab_agent_fdb_entries",
                 "vxlab_agent_neigh_entries", "vxlab_agent_programming_latency_seconds_bucket"):
        assert name in text, name
    fdb = next(line for line in text.splitlines() if line.startswith("vxlab_agent_fdb_entries "))
    assert float(fdb.split()[1]) >= 1


def test_multi_homed_container_and_isolation(rig: Rig):
    rig.network("red", subnet="10.78.0.0/24", internal=True)
    rig.container("db", "h2", "red")
    rig.container("api", "h1", "red")
    rig.settle()
    db = rig.cns("h2", "db")
    links = rig.sh(db, "ip", "-o", "-4", "addr").stdout
    assert "eth0" in links and "eth1" in links and "10.78.0." in links
    api = rig.cns("h1", "api")
    assert rig.ping(api, rig.api(lambda c: c.get_endpoint("red", "db")).ip).returncode == 0
    assert rig.ping(api, "10.77.0.2").returncode != 0, "red must not reach blue"
    assert "default" not in rig.sh(api, "ip", "route").stdout, "internal network: no default route"


def test_dry_run_prints_plan_without_writing(rig: Rig):
    h = rig.hosts["h1"]
    rig.kill_agent("h1", signal.SIGSTOP)  # frozen, so only the dry run sees the new container
    try:
        late = rig.container("drydb", "h1", "blue")
        out = subprocess.run(["nsenter", f"--net=/run/netns/{h.ns}", sys.executable, "-m", "vxlab.cli",
                              "--controller", rig.sock, "agent", "run", "--host", "h1", "--netns-prefix",
                              rig.prefix("h1"), "--dry-run"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"+ add netns {rig.cns('h1', 'drydb')}" in out.stdout and "+ add veth" in out.stdout, out.stdout
        assert rig.cns("h1", "drydb") not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    finally:
        os.killpg(rig.agents["h1"].pid, signal.SIGCONT)
    rig.settle()
    assert rig.ping(rig.cns("h1", "web"), late.ip).returncode == 0
