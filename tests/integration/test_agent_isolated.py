"""Closer to VMs (issue 8): an agent in mount and PID namespaces of its own, besides its
host's network namespace, needs nothing from the lab runner beyond its flags — it is PID
1 of its PID namespace, sees its own mount table, and still programs the overlay (its
/run/netns mounts reach the host through shared propagation, as on a VM they would stay
on the VM). And with no lab state on the machine, `check`, `trace`, `exec` and `check
--kernel` work through `--controller` and `--pki` alone: the agents do the work (the
ops channel).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
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
    """`vxlab --controller SOCK --pki DIR …` with no lab state visible (VXLAB_RUN is an
    empty directory, no VXLAB_* variable): what a user runs against real hosts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VXLAB_")} | {"VXLAB_RUN": str(run)}
    creds = tls if tls is not None else ["--pki", str(rig.pki.dir)]  # type: ignore[union-attr]
    return subprocess.run([sys.executable, "-m", "vxlab.cli", "--controller", rig.sock, *creds, *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def remote(tmp_path: Path) -> Any:
    """Two isolated agents with mutual TLS, `web`@h1 and `db`@h2; a resync long enough
    that drift made by hand stays until the test has seen it."""
    rig = Rig(tmp_path, hosts=2, tls=True, isolated=True, resync=300)
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
    cut = _cli(rig, run, "check", "--json")
    probes = {p["src"]: p for p in json.loads(cut.stdout)["probes"]}
    assert cut.returncode == 1 and probes["web"]["error"] == "timed out", cut.stdout
    # (killed just now, its stream may still be closing when the probe is routed)
    assert probes["db"]["error"].startswith("host h2: its agent"), probes["db"]
