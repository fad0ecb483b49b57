"""VM hosts in a lab (issue 16): two namespace hosts and one VM host (a QEMU guest with
a kernel of its own) on one underlay switch, the VM's agent dialing the controller
across the underlay.

- the full check matrix holds (probes sent by the agents, the guest's one included);
- `vxlab exec` on a container of the VM host runs in the guest: `uname -r` is the
  guest's kernel, not this machine's;
- a 50 ms `delay` fault on the VM host through the fault API, applied by the agent in
  the guest (netem: this machine's kernel has none, the guest's has): RTT >= 50 ms on
  the pairs through it, not on the others; the same fault on a namespace host refused
  with the reason;
- host-crash of the VM kills QEMU: its peers purge it; the heal boots it again and
  reachability returns;
- `down` leaves nothing behind, also after a kill -9 of an `up` that was booting a VM.

One VM for the module (booted by the fixture, again by the host-crash heal), at nice 19
under TCG here; the lab is a `vxt<6 hex>` lab in a tmp VXLAB_RUN. Without QEMU or a guest
kernel every test skips with the reason (VXLAB_VM_REQUIRED=1 fails instead).
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import module_lab
from test_vm import guest_kernel
from vxlab.lab import vm, vmhost
from vxlab.lab.faultspec import FaultError
from vxlab.lab.lab import Lab
from vxlab.lab.observe import time_until, vtep_entries
from vxlab.lab.supervisor import scan

pytestmark = [pytest.mark.integration, pytest.mark.vm, pytest.mark.timeout(900)]
TOPO = """hosts:
  - h1
  - h2
  - {name: h3, vm: {cpus: 1, memory: 768M}}
networks:
  - name: blue
    subnet: 10.79.0.0/24
containers:
  - {name: c1, host: h1, networks: [{name: blue, ip: 10.79.0.11}]}
  - {name: c2, host: h2, networks: [{name: blue, ip: 10.79.0.12}]}
  - {name: c3, host: h3, networks: [{name: blue, ip: 10.79.0.13}]}
"""
IP = {"c1": "10.79.0.11", "c2": "10.79.0.12", "c3": "10.79.0.13"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    guest_kernel()  # or skip, saying what is missing
    with module_lab(tmp_path_factory.mktemp("run"), TOPO, notices=NOTICES) as the_lab:
        yield the_lab


NOTICES: list[str] = []  # what the fixture's `up` told its user


def vxlab(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", "--lab", lab.name, *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "VXLAB_RUN": str(lab.state.dir.parent)})


def rtts(lab: Lab, src: str, dst: str, count: int = 5) -> list[float]:
    out = lab.exec(src, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "5", IP[dst]).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def test_the_check_matrix_holds(lab: Lab) -> None:
    result = lab.check()
    assert result.ok, result.failures
    assert len(result.probes) == 6
    h3 = next(h for h in lab.status()["hosts"] if h["name"] == "h3")
    assert h3["agent_running"] and h3["converged"] and h3["vm"]["accel"] in ("kvm", "tcg") and h3["vm"]["why"]
    assert lab.processes()["agent/h3"].vm  # its agent runs in the guest
    status = vxlab(lab, "status")
    assert status.returncode == 0 and re.search(r"h3 +vm \((kvm|tcg)\)", status.stdout), status.stdout


def test_up_says_kvm_or_tcg_and_why(lab: Lab) -> None:
    """`up` names each VM host's accelerator and the reason, and the guest kernel."""
    kernel = guest_kernel().version
    said = [n for n in NOTICES if n.startswith("VM host h3: ")]
    assert len(said) == 1 and re.match(rf"VM host h3: (KVM|TCG) \(.+\), kernel {re.escape(kernel)}, booted in [\d.]+s$",
                                        said[0]), NOTICES


def test_trace_through_the_vm_host(lab: Lab) -> None:
    """`trace` from a namespace host's container to the VM host's: the path reaches it,
    the VM host is named as a guest, and the live capture decodes VXLAN frames."""
    t = lab.trace("c1", "c3")
    assert t.reached, t
    assert any(h.where == "VM host h3 (its guest)" for h in t.hops), t.hops
    assert any("VXLAN, flags [I]" in line for line in t.capture), t.capture
    assert any("10.79.0.11 > 10.79.0.13: ICMP echo request" in line for line in t.capture), t.capture
    out = vxlab(lab, "trace", "c3", "c1")
    assert out.returncode == 0 and "VM host h3 (its guest)" in out.stdout, out.stdout + out.stderr


def test_an_experiment_on_the_vm_host(lab: Lab, tmp_path: Path) -> None:
    """A scenario run on the running lab (its topology file names it, so it is reused and
    left up): 50 ms of delay on the VM host for 3 s, applied in the guest; the summary has
    RTTs of >= 50 ms on the pair through h3 only, and no probe lost but the one netem may
    hold when the heal removes it."""
    topo = tmp_path / "topology.yaml"
    topo.write_text(f"name: {lab.name}\n{TOPO}")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("name: vm-delay\nlab: topology.yaml\nduration: 7s\nprobes:\n"
                        "  - {src: c1, dst: c3, interval: 100ms}\n  - {src: c1, dst: c2, interval: 100ms}\n"
                        "timeline:\n  - at: 2s\n    fault: {kind: delay, host: h3, ms: 50}\n    for: 3s\n")
    run = vxlab(lab, "experiment", "run", str(scenario), "-o", str(tmp_path / "out"))
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    pairs = {p["pair"]: p for p in summary["pairs"]}
    assert pairs["c1->c3"]["rtt_p99_ms"] >= 50.0 and pairs["c1->c3"]["rtt_p50_ms"] < 50.0, pairs["c1->c3"]
    assert pairs["c1->c2"]["rtt_p99_ms"] < 50.0, pairs["c1->c2"]
    # Removing the netem qdisc drops what it holds: at most the one reply in its 50 ms
    # queue (one probe per 100 ms) is lost, at the heal (t = 5 s); nothing else.
    c13 = pairs["c1->c3"]
    assert c13["lost"] <= 1 and all(a >= 4.9 for a, _ in c13["outages"]), c13
    assert pairs["c1->c2"]["lost"] == 0, pairs["c1->c2"]
    assert lab.running() and not [f for f in lab.faults() if f.kind == "delay"]


def test_exec_on_the_vm_host_runs_in_the_guest(lab: Lab) -> None:
    guest = vxlab(lab, "exec", "c3", "--", "uname", "-r")
    assert guest.returncode == 0, guest.stderr
    assert guest.stdout.strip() == guest_kernel().version != platform.release()
    here = vxlab(lab, "exec", "c1", "--", "uname", "-r")
    assert here.stdout.strip() == platform.release()
    failing = vxlab(lab, "exec", "c3", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert (failing.returncode, failing.stderr.strip()) == (3, "oops")


def test_a_delay_in_the_guest_kernel(lab: Lab) -> None:
    """The lab's `delay` fault on the VM host, through the fault API: the agent in the
    guest applies netem on its own eth0 (this machine's kernel has no sch_netem, the
    guest's has). RTT >= 50 ms on the pairs through h3, unchanged on the others; healed,
    the delay is gone."""
    fault = lab.add_fault("delay", host="h3", ms=50)
    try:
        assert fault.id.startswith("f"), fault  # an API fault, carried out by h3's agent
        through = rtts(lab, "c1", "c3") + rtts(lab, "c2", "c3")
        others = rtts(lab, "c1", "c2")
        assert len(through) == 10 and min(through) >= 50.0, through
        assert len(others) == 5 and max(others) < 50.0, others
    finally:
        lab.heal(fault.id)
    assert max(rtts(lab, "c1", "c3")) < 50.0


def test_a_delay_on_a_namespace_host_is_refused_with_the_reason(lab: Lab) -> None:
    """The same fault on a namespace host (this machine's kernel, no sch_netem): refused,
    naming the host and why; nothing is left applied."""
    with pytest.raises(FaultError, match=r"h1.*sch_netem"):
        lab.add_fault("delay", host="h1", ms=50)
    assert not [f for f in lab.faults() if f.kind == "delay"]


def test_host_crash_of_the_vm_and_back(lab: Lab) -> None:
    ttl = lab.lease_ttl
    qemu = vmhost.machine(lab.state.dir, "h3").pids()
    assert qemu and all(vtep_entries(lab, "h3").values())
    f = lab.add_fault("host-crash", host="h3")
    try:
        assert not vmhost.machine(lab.state.dir, "h3").alive()  # QEMU is gone
        purged = time_until(lambda: not any(vtep_entries(lab, "h3").values()), timeout=ttl + 30)
        assert purged is not None, f"peers kept h3's entries {ttl + 30}s after its VM was killed"
    finally:
        lab.heal(f.id)  # boots the VM again and starts its agent
    assert vmhost.machine(lab.state.dir, "h3").pids() != qemu
    back = time_until(lambda: all(vtep_entries(lab, "h3").values()), timeout=vm.BOOT_TIMEOUT)
    assert back is not None, "h3 not back on its peers after the heal"
    lab.wait_converged(timeout=vm.BOOT_TIMEOUT)
    assert time_until(lambda: lab.check().ok, timeout=60, interval=0.5) is not None, lab.check().failures


def _leftovers(lab: Lab) -> list[str]:
    """What of the lab is still on this machine: processes naming its directory (QEMU
    included), its namespaces, its VM taps (in its switch), its directory."""
    found = [f"process {p.pid}" for p in scan(lambda argv: any(str(lab.state.dir).encode() in a for a in argv))]
    found += [f"namespace {ns}" for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                         text=True).stdout.split() if ns.startswith(lab.layout.prefix)]
    found += [f"directory {lab.state.dir}"] if lab.state.dir.exists() else []
    return found


def test_down_leaves_nothing_also_after_kill_9_of_up(lab: Lab, tmp_path: Path) -> None:
    """An `up` adding a second VM host is killed (-9) while that VM boots: `down` still
    removes every process, tap, namespace and file of the lab."""
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(f"name: {lab.name}\n" + TOPO.replace("\nnetworks:", "\n  - {name: h4, vm: true}\nnetworks:", 1))
    up = subprocess.Popen([sys.executable, "-m", "vxlab.cli", "up", str(bigger)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env={**os.environ, "VXLAB_RUN": str(lab.state.dir.parent)})
    try:
        booting = time_until(lambda: bool(vmhost.machine(lab.state.dir, "h4").pids()) or up.poll() is not None,
                             timeout=120, interval=0.05)
        assert booting is not None and up.poll() is None, f"the second VM's QEMU never started: {up.stderr.read()}"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    tap = lab.layout.vm_tap("h4")
    assert subprocess.run(["ip", "-n", lab.switch_ns, "link", "show", tap], capture_output=True).returncode == 0
    down = vxlab(lab, "down")
    assert down.returncode == 0, down.stderr
    assert _leftovers(lab) == []
    assert not vm.find_qemu(vmhost.run_dir(lab.state.dir, "h3"))
    assert not vm.find_qemu(vmhost.run_dir(lab.state.dir, "h4"))
    assert subprocess.run(["ip", "link", "show", tap], capture_output=True).returncode != 0  # not moved here either
