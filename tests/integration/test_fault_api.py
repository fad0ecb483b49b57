"""Faults as desired state through the controller alone (issue 15, tests (b), (d), (e)), on
the rig with mutual TLS: a fault with a duration heals with its lease when every CLI
process is gone, and through the agent's own deadline while the controller is down; an
agent restarted under a fault adopts it with zero writes, and one that was down while
its fault was deleted removes it at its next pass; a host certificate may not create or
delete faults, and bad fault input writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from rig import Rig

from vxlab import faultapi
from vxlab.errors import InvalidArgument
from vxlab.model import Fault

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("faultapi"), hosts=2, tls=True)
    try:
        r.start_pair("10.83.0.0/24")
        yield r
    finally:
        r.close()


@pytest.fixture
def clean(rig: Rig) -> Iterator[Rig]:
    """After the test (also on failure): every fault deleted, every agent and the controller running."""
    try:
        yield rig
    finally:
        if rig.controllers[0] is None or rig.controllers[0].poll() is not None:
            rig.start_controller()
        for host, p in rig.agents.items():
            if p.poll() is not None:
                rig.start_agent(host)
        rig.wait(lambda: all(rig.status(h).registered for h in rig.hosts), "agents registered")
        rig.api(lambda c: faultapi.heal(c, None))
        rig.settle()


def table(rig: Rig, host: str) -> bool:
    """Our fault table is in `host`'s kernel."""
    return "vxlab_fault" in rig.sh(rig.hosts[host].ns, "nft", "list", "tables").stdout


def expires(f: Fault) -> float:
    return dt.datetime.fromisoformat(f.expires_at.replace("Z", "+00:00")).timestamp()


def until(rig: Rig, cond: object, what: str, *, at: float) -> None:
    """`cond` holds by the time `at` (time.time()): the deadline is what is tested."""
    rig.wait(cond, what, timeout=max(0.0, at - time.time()), interval=0.02)


# (b) a duration is a lease: nothing of the CLI is needed for the heal
def test_a_fault_heals_when_every_cli_process_is_gone(clean: Rig) -> None:
    rig = clean
    run = rig.tmp / "no-lab-here"
    run.mkdir(exist_ok=True)
    cli = [sys.executable, "-m", "vxlab.cli", "--controller", rig.sock, "--pki", str(rig.pki.dir)]  # type: ignore[union-attr]
    env = {**os.environ, "VXLAB_RUN": str(run)}
    procs = [subprocess.Popen([*cli, "fault", "add", "loss", "--host", "h1", "--percent", "100", "--for", "4s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True),
             subprocess.Popen([*cli, "fault", "ls"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)]
    rig.wait(lambda: table(rig, "h1"), "the loss in h1's kernel")
    [f] = rig.api(lambda c: c.list_faults())
    for p in procs:  # every vxlab CLI process at once
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    until(rig, lambda: not table(rig, "h1"), "the loss healed", at=expires(f) + 1.0)
    until(rig, lambda: rig.api(lambda c: c.list_faults()) == [], "its lease expired", at=expires(f) + 3.0)


def test_a_fault_heals_through_the_agents_deadline_while_the_controller_is_down(clean: Rig) -> None:
    rig = clean
    made = rig.api(lambda c: faultapi.inject(c, "loss", {"host": "h1", "percent": 100}, duration=4))
    assert made.pending == () and table(rig, "h1")
    rig.kill_controller()  # nobody can tell the agent its lease expired
    until(rig, lambda: not table(rig, "h1"), "the loss healed by h1's own deadline", at=expires(made.fault) + 1.0)
    rig.wait(lambda: rig.status("h1").faults.get(made.fault.id) == "healed", "h1 to say so (its status file)")


# (d) adopted after a restart; removed at the next pass when deleted meanwhile
def test_a_restarted_agent_adopts_an_applied_fault_with_zero_writes(clean: Rig) -> None:
    rig = clean
    made = rig.api(lambda c: faultapi.inject(c, "partition", {"hosts": "h1", "from": "h2"}))
    assert {s.state for s in made.fault.status} == {"applied"} and table(rig, "h1")
    rig.kill_agent("h1")
    old = rig.status("h1").pid
    rig.start_agent("h1")
    rig.wait(lambda: rig.status("h1").pid != old and rig.status("h1").converged, "the restarted agent converged")
    last = rig.status("h1").last_pass
    assert last is not None and last.full and last.writes == 0 and table(rig, "h1")
    rig.kill_agent("h1")
    rig.api(lambda c: c.delete_fault(made.fault.id))
    rig.wait(lambda: not table(rig, "h2"), "h2 healed at once")
    assert table(rig, "h1")  # its agent is down: nothing touched its kernel
    rig.start_agent("h1")
    rig.wait(lambda: not table(rig, "h1"), "h1's agent removed it at its next pass")


def test_dry_run_shows_the_fault_and_a_full_pass_repairs_it(clean: Rig) -> None:
    """Planned with a reason like everything else: drift shows in `--dry-run` and is repaired."""
    rig = clean
    made = rig.api(lambda c: faultapi.inject(c, "loss", {"host": "h1", "percent": 5}))
    ns = rig.hosts["h1"].ns
    assert rig.sh(ns, "nft", "delete", "table", "inet", "vxlab_fault").returncode == 0  # by hand
    out = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m", "vxlab.cli", "--controller",
                          rig.sock, "--pki", str(rig.pki.dir), "agent", "run", "--host", "h1",  # type: ignore[union-attr]
                          "--netns-prefix", rig.prefix("h1"), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"+ add fault-table inet vxlab_fault in (agent namespace): {made.fault.id}: create "
                                  "(2 rules)"), out.stdout
    rig.wait(lambda: table(rig, "h1"), "the next full pass repaired it", timeout=rig.resync * 3 + 5)


# (e) who may, and what bad input does
def test_a_host_certificate_may_not_create_or_delete_a_fault(clean: Rig) -> None:
    rig = clean
    before = rig.revision()
    out = rig.vx("fault", "add", "loss", "--host", "h1", "--percent", "5", cert="h1")
    assert out.returncode == 1 and out.stderr == "error: fault: host 'h1' may not create faults (admin only)\n"
    assert rig.revision() == before
    fid = rig.vx("fault", "add", "loss", "--host", "h2", "--percent", "5").stdout.strip()
    out = rig.vx("fault", "heal", fid, cert="h1")
    assert out.returncode == 1 and out.stderr == "error: fault: host 'h1' may not delete faults (admin only)\n"
    listed = rig.vx("fault", "ls", "--json", cert="h1")  # a host may read them
    assert listed.returncode == 0 and [f["id"] for f in json.loads(listed.stdout)] == [fid]


@pytest.mark.parametrize("args, error", [
    (["loss", "--host", "h1", "--percent", "130"], "error: fault.params.percent: must be > 0 and <= 100, not '130'"),
    (["loss", "--host", "h9", "--percent", "5"], "error: fault.params.host: unknown host 'h9' (hosts: h1, h2)"),
    (["link-down", "--host", "h1"], "error: fault.duration: a link-down can cut an agent from the control plane"),
    (["wobble"], "error: kind: unknown fault kind 'wobble'"),
    (["etcd-stop"], "error: kind: etcd-stop acts on a lab's own processes: no lab is selected"),
    (["rate", "--host", "h1", "--mbit", "5", "--for", "soon"], "error: for: not a duration"),
])
def test_bad_fault_input_writes_nothing(clean: Rig, args: list[str], error: str) -> None:
    rig = clean
    before = rig.revision()
    out = rig.vx("fault", "add", *args)
    assert out.returncode == 1 and out.stderr.startswith(error) and len(out.stderr.splitlines()) == 1, out.stderr
    assert rig.revision() == before


def test_bad_input_past_the_cli_writes_nothing_either(clean: Rig) -> None:
    """The controller checks what a client did not (a client of another version, say)."""
    rig = clean
    before = rig.revision()
    with pytest.raises(InvalidArgument, match="^fault.params.percent: must be > 0 and <= 100, not '130'$"):
        rig.api(lambda c: c.create_fault("loss", {"host": "h1", "percent": "130"}))
    with pytest.raises(InvalidArgument, match="^fault.duration: "):
        rig.api(lambda c: c.create_fault("partition", {"hosts": "h1", "from": "control"}))
    assert rig.revision() == before
