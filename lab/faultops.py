"""Applying and healing the faults a lab runner carries out on the lab's own objects
(see vxlab.lab.faults; the host-side network faults are the agents', through the
controller).

`apply` returns what `heal` needs to restore exactly what was there (the command line of
a killed process, a switch port taken down). Process faults: SIGKILL (SIGTERM for
etcd-stop); heal restarts the same command line. host-crash also takes the host's port
on the underlay switch down (its `eth0` loses carrier), and heal brings it up.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from vxlab.lab import procs, vmhost
from vxlab.lab.faultspec import FaultError
from vxlab.lab.state import LabState
from vxlab.lab.supervisor import Command, Proc, Supervisor
from vxlab.layout import LabLayout

if TYPE_CHECKING:
    from vxlab.agentstatus import AgentStatus
    from vxlab.client import Client

T = TypeVar("T")


class Lab(Protocol):
    """What faults act on: a lab's state, processes and names (vxlab.lab.lab.Lab is one)."""

    name: str
    state: LabState
    supervisor: Supervisor

    layout: LabLayout

    @property
    def socket(self) -> str: ...

    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T: ...

    def agent_status(self, host: str) -> AgentStatus: ...


def _run(cmd: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise FaultError(f"{' '.join(cmd[:6])}…: {out.stderr.strip() or out.stdout.strip()}")
    return out


def _port(lab: Lab, host: str) -> str:
    """The switch-side end of a host's underlay link."""
    return lab.layout.port(host)


def _agent_kill(lab: Lab, p: dict[str, Any]) -> dict[str, Any]:
    return _kill_agent(lab, p["host"])


def _host_crash(lab: Lab, p: dict[str, Any]) -> dict[str, Any]:
    if p["host"] in vmhost.vm_hosts(lab.state.topology):
        return _crash_vm(lab, p["host"])
    return _kill_agent(lab, p["host"]) | _link(lab, p["host"], up=False)


def _crash_vm(lab: Lab, host: str) -> dict[str, Any]:
    """host-crash of a VM host: SIGKILL its QEMU (its agent dies with the guest; the tap
    stays, without carrier); the heal boots it again and starts its agent."""
    try:
        vmhost.crash(lab.state.dir, host)
    except vmhost.VmHostError as e:
        raise FaultError(str(e)) from None
    return {"vm_crashed": True, "agent": 0}


def _etcd_stop(lab: Lab, p: dict[str, Any]) -> dict[str, Any]:
    stopped = [_command(lab, proc) for proc in lab.state.etcd if proc.alive()]
    for proc in lab.state.etcd:
        proc.stop(sig=signal.SIGTERM)
    return {"procs": stopped}


def _etcd_member_kill(lab: Lab, p: dict[str, Any]) -> dict[str, Any]:
    proc = lab.state.etcd[p["member"] - 1]
    if not proc.alive():
        raise FaultError(f"member: etcd member {p['member']} is not running")
    cmd = _command(lab, proc)
    proc.stop(sig=signal.SIGKILL)  # a crash: no leadership hand-over
    _settle(lab)
    return {"procs": [cmd]}


def _controller_kill(lab: Lab, p: dict[str, Any]) -> dict[str, Any]:
    if lab.state.controller is None or not lab.state.controller.alive():
        raise FaultError("controller-kill: the controller is not running")
    cmd = _command(lab, lab.state.controller)
    lab.state.controller.stop(sig=signal.SIGKILL)
    return {"procs": [cmd]}


# The kinds a lab runner carries out (vxlab.faultkinds: LAB, and HOST in a lab).
APPLY: dict[str, Callable[[Lab, dict[str, Any]], dict[str, Any]]] = {
    "agent-kill": _agent_kill, "host-crash": _host_crash, "etcd-stop": _etcd_stop,
    "etcd-member-kill": _etcd_member_kill, "controller-kill": _controller_kill}


def apply(lab: Lab, fault_id: str, kind: str, p: dict[str, Any]) -> dict[str, Any]:
    if kind not in APPLY:
        raise FaultError(f"kind: {kind} is not a fault the lab runner carries out (the agents do)")
    return APPLY[kind](lab, p)


def heal(lab: Lab, fault_id: str, kind: str, p: dict[str, Any], undo: dict[str, Any]) -> None:
    if undo.get("vm_crashed"):  # boot it again first: its agent starts in the new guest
        try:
            vmhost.boot_again(lab.state.dir, p["host"])
        except vmhost.VmHostError as e:
            raise FaultError(str(e)) from None
    if undo.get("link_down"):
        _link(lab, p["host"], up=True)
    if "agent" in undo:
        procs.start_agents(lab.state, lab.layout, [p["host"]])
    if kind == "etcd-stop":
        lab.state.etcd = [_respawn(lab, c) for c in undo["procs"]]
        lab.state.save()
        for endpoint in lab.state.etcd_endpoints:
            _wait_port(endpoint, what="etcd")
    if kind == "etcd-member-kill":  # the others may still lack a quorum: wait for the port only
        i = p["member"] - 1
        lab.state.etcd[i] = _respawn(lab, undo["procs"][0])
        lab.state.save()
        _wait_port(lab.state.etcd_endpoints[i], what=f"etcd member {p['member']}")
        _settle(lab)
    if kind == "controller-kill":
        Path(lab.socket.removeprefix("unix:")).unlink(missing_ok=True)
        lab.state.controller = _respawn(lab, undo["procs"][0])
        lab.state.save()
        procs.wait_for(lambda: Path(lab.socket.removeprefix("unix:")).exists(), "the controller socket",
                       alive=lab.state.controller)
    if kind in ("etcd-stop", "controller-kill"):  # healed = the control plane answers again
        procs.wait_for(lambda: _answers(lab), "the controller to answer through etcd", timeout=30)


def _settle(lab: Lab) -> None:
    """With a quorum of etcd members alive, wait until the controller answers through
    them (a killed leader means an election first): the fault's effect is then the
    steady one, not the election's."""
    if 2 * sum(proc.alive() for proc in lab.state.etcd) > len(lab.state.etcd):
        procs.wait_for(lambda: _answers(lab), "the controller to answer through etcd", timeout=30)


def _answers(lab: Lab) -> bool:
    try:
        lab.call(lambda c: c.revision())
        return True
    except Exception:  # noqa: BLE001 - still reconnecting
        time.sleep(0.05)
        return False


def _link(lab: Lab, host: str, *, up: bool) -> dict[str, Any]:
    _run(["ip", "-n", lab.layout.switch_ns, "link", "set", _port(lab, host), "up" if up else "down"])
    return {"link_down": True}


def _kill_agent(lab: Lab, host: str) -> dict[str, Any]:
    proc = lab.state.agents.get(host)
    if proc is None or not proc.alive():
        raise FaultError(f"host: the agent of {host!r} is not running")
    proc.stop(sig=signal.SIGKILL)
    return {"agent": proc.pid}


def _command(lab: Lab, proc: Proc) -> dict[str, Any]:
    """What it takes to start a process again (kept in faults.json until the heal)."""
    return lab.supervisor.command(proc).to_json()


def _respawn(lab: Lab, cmd: dict[str, Any]) -> Proc:
    return lab.supervisor.start(Command.from_json(cmd))


def _wait_port(endpoint: str, *, what: str, timeout: float = 20.0) -> None:
    host, _, port = endpoint.split("://")[-1].rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise FaultError(f"{what}: not listening on {endpoint} {timeout:g}s after the restart")
