"""Closer to VMs (issue 8): an agent in mount and PID namespaces of its own, besides its
host's network namespace, needs nothing from the lab runner beyond its flags — it is PID
1 of its PID namespace, sees its own mount table, and still programs the overlay (its
/run/netns mounts reach the host through shared propagation, as on a VM they would stay
on the VM). And with no lab state on the machine, `check`, `trace`, `exec` and `check
--kernel` work through `--controller` and `--pki` alone: the agents do the work (the
ops channel).

Issue 15 (a): on such agents, every agent-side fault kind through `--controller` and
`--pki` alone (`Rig.vx`): partition, loss, rate, delay (refused with the sch_netem
reason where the kernel lacks it), link-down, and agent-kill and host-crash as on real
hosts (the agent exits with code 75; started again, as systemd's `Restart=always`
would, it does not repeat it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rig import Rig

from vxlab import hostops, ops
from vxlab.client import Client
from vxlab.errors import PermissionDenied

pytestmark = pytest.mark.integration


def _agent_pid(host_prefix: str) -> int:
    """The agent's pid as seen from here: the python process (not `unshare`) whose
    command line names the host's namespace prefix."""
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if cmd and b"vxlab.cli" in cmd and host_prefix.encode() in cmd and not cmd[0].endswith(b"unshare"):
            return int(entry.name)
    raise AssertionError("agent process not found")


def test_agent_in_its_own_mount_and_pid_namespaces(tmp_path: Path) -> None:
    rig = Rig(tmp_path, hosts=2)
    try:
        rig.start()
        rig.kill_agent("h2")
        h = rig.hosts["h2"]
        log = (tmp_path / "agent-h2-isolated.log").open("ab")
        rig.agents["h2"] = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "unchanged",
             "nsenter", f"--net=/run/netns/{h.ns}", sys.executable, "-m", "vxlab.cli", "--controller", rig.sock,
             "agent", "run", "--host", "h2", "--netns-prefix", rig.prefix("h2"), "--resync", str(rig.resync),
             "--status-file", str(rig.status_path("h2"))],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        rig.wait(lambda: rig.status("h2").registered, "the isolated agent registered")
        rig.wait(lambda: rig.status("h1").registered, "h1's agent registered")  # slow under load: CI
        assert rig.status("h2").pid == 1  # PID 1 of a PID namespace of its own
        pid = _agent_pid(rig.prefix("h2"))
        for ns in ("mnt", "pid", "net"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
        rig.network("blue", subnet="10.79.0.0/24")
        web = rig.container("web", "h1", "blue")
        db = rig.container("db", "h2", "blue")
        rig.settle()
        assert rig.ping(rig.cns("h1", "web"), db.ip).returncode == 0
        assert rig.ping(rig.cns("h2", "db"), web.ip).returncode == 0
    finally:
        rig.close()


def _cli(rig: Rig, run: Path, *args: str, tls: list[str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`vxlab --controller SOCK --pki DIR …` with no lab state visible (`Rig.vx`)."""
    return rig.vx(*args, tls=tls, run=run, timeout=timeout)


@pytest.fixture
def remote(tmp_path: Path) -> Any:
    """Two isolated agents with mutual TLS, `web`@h1 and `db`@h2; a resync long enough
    that drift made by hand stays until the test has seen it, and a lease long enough that
    a keepalive late on a loaded machine does not purge db's entries from h1 under the
    trace (CI: the 4 s lease expired once between `check` and `trace`)."""
    rig = Rig(tmp_path, hosts=2, tls=True, isolated=True, resync=300, lease_ttl=12)
    try:
        rig.start_pair("10.81.0.0/24")
        yield rig
    finally:
        rig.close()


def test_check_trace_exec_and_drift_through_the_agents_with_no_lab_state(remote: Rig, tmp_path: Path) -> None:
    rig, run = remote, tmp_path / "no-lab-here"
    run.mkdir()
    assert _cli(rig, run, "lab", "ls", "--json").stdout.strip() == "[]"
    eps = {e.name: e for e in rig.api(lambda c: c.list_endpoints())}

    check = _cli(rig, run, "check", "--json")
    result = json.loads(check.stdout)
    assert check.returncode == 0 and result["ok"] and len(result["probes"]) == 2, check.stdout + check.stderr

    tr = _cli(rig, run, "trace", "web", "db")
    assert tr.returncode == 0, tr.stdout + tr.stderr
    assert "VXLAN, flags [I] (0x08), vni" in tr.stdout and f"{eps['web'].ip} > {eps['db'].ip}: ICMP echo request" in tr.stdout
    assert f"{eps['db'].mac} dst 172.31.0.12 self permanent" in tr.stdout  # h1's FDB entry, from its agent's view
    assert rig.prefix("h2") + "c-db" in tr.stdout and "reached: yes" in tr.stdout

    ex = _cli(rig, run, "exec", "web", "--", "sh", "-c", "ip -o -4 addr show dev eth0; echo oops >&2; exit 5")
    assert ex.returncode == 5 and eps["web"].ip in ex.stdout and "oops" in ex.stderr, ex.stderr
    assert "is not a container of host" not in ex.stderr

    got = rig.api(lambda c: hostops.iperf(c, src_host="h1", src="web", dst_host="h2", dst="db", ip=eps["db"].ip,
                                          seconds=1, interval=0.5))
    assert got["end"]["sum_received"]["bits_per_second"] > 0 and len(got["intervals"]) >= 2

    def capturing() -> list[str]:  # the agent's tcpdump (its PID namespace is visible from here)
        return subprocess.run(["pgrep", "-f", "tcpdump -i eth0 -nn -l -c 997"], capture_output=True,
                              text=True).stdout.split()

    async def leave_a_capture(c: Any) -> None:
        events = hostops.stream(c, "h1", ops.Capture(filter=("udp", "port", "4789"), count=997, seconds=60))
        await hostops.until_ready(events)
        assert capturing()
        await events.aclose()  # type: ignore[attr-defined]  # the caller goes: the controller cancels the op
    rig.api(leave_a_capture)
    Rig.wait(lambda: not capturing(), "the capture to end with its caller")

    clean = _cli(rig, run, "check", "--kernel")
    assert clean.returncode == 0 and "h1: no drift" in clean.stderr and "h2: no drift" in clean.stderr, clean.stderr

    # Behind the agents' backs (their resync is 300 s away): h1 loses its entry towards
    # db, h2 gets a stale peer entry (moby#52661's case).
    rig.sh(rig.nns("h1", "blue"), "bridge", "fdb", "del", eps["db"].mac, "dev", "vxv-blue", "dst", "172.31.0.12",
           "self", check=True)
    rig.sh(rig.nns("h2", "blue"), "bridge", "fdb", "add", "02:00:00:00:00:99", "dev", "vxv-blue", "dst",
           "172.31.0.99", "self", "permanent", check=True)
    drifted = _cli(rig, run, "check", "--kernel", "--json")
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    hosts = {h["host"]: h for h in json.loads(drifted.stdout)["hosts"]}
    assert [(e["state"], e["kind"]) for e in hosts["h1"]["entries"]] == [("missing", "fdb")], hosts["h1"]
    assert eps["db"].mac in hosts["h1"]["entries"][0]["target"]
    assert [(e["state"], e["kind"]) for e in hosts["h2"]["entries"]] == [("stale", "fdb")], hosts["h2"]
    assert "02:00:00:00:00:99" in hosts["h2"]["entries"][0]["target"]
    table = _cli(rig, run, "check", "--kernel")
    assert table.returncode == 1 and "h1: 1 entry drifted" in table.stderr and "stale" in table.stdout

    h1 = rig.pki.host("h1")  # type: ignore[union-attr]
    as_host = _cli(rig, run, "check", tls=["--tls-ca", str(h1.ca), "--tls-cert", str(h1.cert), "--tls-key", str(h1.key)])
    assert as_host.returncode == 1 and as_host.stderr == "error: op: host 'h1' may not run operations on hosts (admin only)\n"

    async def impostor() -> None:  # h1's certificate, a Hello for h2: refused on that first message
        async def nothing() -> Any:
            await asyncio.Event().wait()
            yield
        async with Client(rig.sock, tls=rig.pki.host("h1")) as c, asyncio.timeout(20):  # type: ignore[union-attr]
            async for _ in c.connect_ops(rig.socks[0], host="h2", version="x", events=nothing()):
                pass
    with pytest.raises(PermissionDenied, match="host: certificate is for 'h1', not 'h2'"):
        asyncio.run(impostor())

    rig.kill_agent("h2")  # the probes from db fail with the reason; web's still run (and time out: no FDB entry)
    rig.wait(lambda: not {h.name: h.alive for h in rig.api(lambda c: c.list_hosts())}["h2"], "h2's lease expired",
             timeout=30, interval=0.5)
    rig.settle()  # h1 purged db's entries
    cut = _cli(rig, run, "check", "--json")
    probes = {p["src"]: p for p in json.loads(cut.stdout)["probes"]}
    assert cut.returncode == 1 and probes["web"]["error"] == "timed out", cut.stdout
    # (killed just now, its stream may still be closing when the probe is routed)
    assert probes["db"]["error"].startswith("host h2: its agent"), probes["db"]


# --- (issue 15, test (a)) every agent-side fault kind through --controller and --pki alone ----------
@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Two hosts whose agents are isolated (mount, PID and network namespaces of their own),
    mutual TLS, `web` on h1 and `db` on h2; the CLI gets `--controller` and `--pki` only."""
    rig = Rig(tmp_path_factory.mktemp("isolated"), hosts=2, tls=True, isolated=True)
    try:
        rig.start_pair("10.85.0.0/24")
        yield rig
    finally:
        rig.close()


@pytest.fixture
def faults(isolated: Rig) -> Iterator[Rig]:
    """Before: web and db reach each other; after (also on failure): no fault, every agent up."""
    rig = isolated
    assert _reach(rig), "web and db did not reach each other before the test"
    try:
        yield rig
    finally:
        for host, p in rig.agents.items():
            if p.poll() is not None:
                rig.start_agent(host)
        rig.vx("fault", "heal", "--all")
        rig.wait(lambda: rig.vx("fault", "ls", "--json").stdout.strip() == "[]", "no fault left", timeout=30)
        rig.wait(lambda: _reach(rig), "web and db reach each other again", timeout=30)


def _ips(rig: Rig) -> dict[str, str]:
    return {e.name: e.ip for e in rig.api(lambda c: c.list_endpoints())}


def _reach(rig: Rig) -> bool:
    ips = _ips(rig)
    return rig.ping(rig.cns("h1", "web"), ips["db"], wait=0.5).returncode == 0


def _add(rig: Rig, *args: str) -> str:
    out = rig.vx("fault", "add", *args)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    return out.stdout.strip()


def _states(rig: Rig, fid: str) -> dict[str, str]:
    out = rig.vx("fault", "inspect", fid)
    assert out.returncode == 0, out.stderr
    return {s["host"]: s["state"] for s in json.loads(out.stdout)["status"]}


def _tc(rig: Rig, host: str, dev: str) -> str:
    return rig.sh(rig.hosts[host].ns, "tc", "qdisc", "show", "dev", dev).stdout


def test_partition_and_its_status_per_host(faults: Rig) -> None:
    rig = faults
    fid = _add(rig, "partition", "--hosts", "h1", "--from", "h2")
    assert _states(rig, fid) == {"h1": "applied", "h2": "applied"} and not _reach(rig)
    listed = rig.vx("fault", "ls")
    assert fid in listed.stdout and "h1 applied, h2 applied" in listed.stdout
    assert rig.vx("fault", "heal", fid).returncode == 0
    rig.wait(lambda: _reach(rig), "the partition healed")


def test_loss_with_a_duration(faults: Rig) -> None:
    rig = faults
    fid = _add(rig, "loss", "--host", "h1", "--percent", "100", "--for", "60s")
    assert _states(rig, fid) == {"h1": "applied"} and not _reach(rig)


def test_rate_on_the_underlay_and_its_ingress(faults: Rig) -> None:
    rig = faults
    fid = _add(rig, "rate", "--host", "h1", "--mbit", "5")
    assert _states(rig, fid) == {"h1": "applied"}
    assert "tbf 7678:" in _tc(rig, "h1", "eth0") and "tbf 7678:" in _tc(rig, "h1", "vxifb0")
    assert rig.vx("fault", "heal", fid).returncode == 0
    rig.wait(lambda: "tbf" not in _tc(rig, "h1", "eth0"), "the rate healed")


def test_delay_is_refused_where_the_kernel_has_no_netem(faults: Rig) -> None:
    rig = faults
    probe = rig.sh(rig.hosts["h1"].ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
    if probe.returncode == 0:
        rig.sh(rig.hosts["h1"].ns, "tc", "qdisc", "del", "dev", "lo", "root")
        assert _states(rig, _add(rig, "delay", "--host", "h1", "--ms", "10")) == {"h1": "applied"}
        return
    out = rig.vx("fault", "add", "delay", "--host", "h1", "--ms", "10")
    assert out.returncode == 1 and out.stderr.startswith("error: delay: h1: this kernel has no sch_netem"), out.stderr
    assert rig.vx("fault", "ls", "--json").stdout.strip() == "[]" and "netem" not in _tc(rig, "h1", "eth0")


def test_link_down(faults: Rig) -> None:
    rig = faults
    fid = _add(rig, "link-down", "--host", "h2", "--for", "60s")
    assert _states(rig, fid) == {"h2": "applied"} and not _reach(rig)
    assert "state DOWN" in rig.sh(rig.hosts["h2"].ns, "ip", "link", "show", "eth0").stdout


def test_agent_kill_exits_75_and_a_restart_does_not_repeat_it(faults: Rig) -> None:
    rig = faults
    fid = _add(rig, "agent-kill", "--host", "h2")
    assert rig.agents["h2"].wait(timeout=20) == 75  # systemd's Restart=always would start it again
    assert _states(rig, fid) == {"h2": "applied"} and _reach(rig)  # the data plane stays
    since = time.time()
    rig.start_agent("h2")  # what systemd does (an isolated agent is PID 1 every time: told apart by its status' time)
    rig.wait(lambda: rig.status("h2").time > since and rig.status("h2").registered and rig.status("h2").converged,
             "the agent back")
    assert rig.agents["h2"].poll() is None  # it noted the kill in its journal: not again


def test_host_crash_exits_75_and_the_restarted_agent_heals_the_link_by_itself(faults: Rig) -> None:
    rig = faults
    fid = _add(rig, "host-crash", "--host", "h2", "--for", "4s")
    [f] = [x for x in rig.api(lambda c: c.list_faults()) if x.id == fid]
    assert rig.agents["h2"].wait(timeout=20) == 75
    assert "state DOWN" in rig.sh(rig.hosts["h2"].ns, "ip", "link", "show", "eth0").stdout and not _reach(rig)
    rig.start_agent("h2")  # systemd: the journal keeps the link down until the fault's end, then brings it up
    rig.wait(lambda: rig.status("h2").registered, "the agent back")
    end = datetime.fromisoformat(f.expires_at.replace("Z", "+00:00")).timestamp()
    if time.time() < end - 0.5:  # restarted well before the end: the link is still held down
        assert "state DOWN" in rig.sh(rig.hosts["h2"].ns, "ip", "link", "show", "eth0").stdout
    rig.wait(lambda: _reach(rig), "the link up again and the overlay back", timeout=30)
    assert rig.agents["h2"].poll() is None


# --- (issue 15, test (a)) a short experiment through --controller and --pki alone ---------------
RIG_SCENARIO = """name: rig-partition
duration: 4s
probes:
  - all
  - {src: db, dst: web, interval: 50ms}
timeline:
  - at: 1s
    fault: {kind: partition, hosts: [h1], from: [h2]}
    for: 1.5s
"""


def test_experiment_through_the_fault_api_and_the_agents(faults: Rig, tmp_path: Path) -> None:
    """No lab: the scenario names the deployment's containers; the partition goes through
    the fault API (its `for:` the lease, the heal a delete), the agents send the probes."""
    rig = faults
    (tmp_path / "s.yaml").write_text(RIG_SCENARIO)
    out = rig.vx("experiment", "run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out"), timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["where"] == f"controller {rig.sock}" and summary["lab"] is None
    [cut] = summary["faults"]
    assert (cut["kind"], cut["via"], cut["lease"], cut["healed_by"], cut["error"]) == ("partition", "api", 1.5,
                                                                                       "delete", "")
    assert cut["id"].startswith("f") and cut["lease_expired"] == {}  # the rig's agents dial a unix socket
    assert cut["converged_after"] is not None  # every agent's drift check came back empty after the heal
    pairs = {p["pair"]: p for p in summary["pairs"]}
    assert set(pairs) == {"db->web"}  # `all` adds none: db-web is named already
    assert pairs["db->web"]["lost"] > 0 and cut["id"] in pairs["db->web"]["recovered_after_heal_s"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| partition h1 <-> h2 | fault API, lease 1.5 s |" in report and "| db->web | blue |" in report
    assert f"{cut['id']}: partition h1 <-> h2: no target's lease expired" in out.stderr
    assert rig.vx("fault", "ls", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize("change, error", [
    (("dst: web", "dst: nosuch"), "s.yaml:5:20: probes[1].dst: no container 'nosuch' in this deployment"),
    (("hosts: [h1]", "hosts: [h9]"), "s.yaml:8:37: timeline[0].fault.hosts: no host 'h9' in this deployment"),
    (("{kind: partition, hosts: [h1], from: [h2]}", "{kind: controller-kill}"),
     "s.yaml:8:19: timeline[0].fault.kind: controller-kill acts on a lab's own processes: it runs only in a lab"),
])
def test_experiment_refuses_what_the_deployment_lacks(isolated: Rig, tmp_path: Path, change: tuple[str, str],
                                                      error: str) -> None:
    (tmp_path / "s.yaml").write_text(RIG_SCENARIO.replace(*change))
    out = isolated.vx("experiment", "run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out"))
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert error in out.stderr, out.stderr
    assert not (tmp_path / "out").exists() and isolated.vx("fault", "ls", "--json").stdout.strip() == "[]"
