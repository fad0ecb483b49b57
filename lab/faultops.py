"""Applying and healing faults on a lab's own objects (see vxlab.lab.faults).

`apply` returns what `heal` needs to restore exactly what was there (a table name, the
command line of a killed process, …). Network faults: nftables tables in the underlay
switch's namespace (bridge family: the switch sees every frame between hosts, and the
machine's own firewall never sees them), tc qdiscs on the two ends of a host's link.
Process faults: SIGKILL (SIGTERM for etcd-stop); heal restarts the same command line.
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
from vxlab.lab.faultspec import CONTROL, FaultError, sides
from vxlab.lab.state import LabState
from vxlab.lab.supervisor import Command, Proc, Supervisor
from vxlab.layout import LabLayout

if TYPE_CHECKING:
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


def _run(cmd: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise FaultError(f"{' '.join(cmd[:6])}…: {out.stderr.strip() or out.stdout.strip()}")
    return out


def _ips(lab: Lab, hosts: list[str]) -> str:
    topo = lab.state.topology
    by_name = {h.name: h.underlay_ip for h in (topo.hosts if topo else ())}
    if topo is not None:
        by_name[CONTROL] = topo.underlay.control_ip  # the controller's control address, on the switch itself
    return ", ".join(by_name[h] for h in hosts)


def _table(fault_id: str) -> str:
    return f"vxf_{fault_id}"


def _nft(lab: Lab, fault_id: str, chains: dict[str, list[str]]) -> dict[str, Any]:
    """One table per fault in the switch's namespace: `bridge vxf_<id>`."""
    hooks = {"forward": "forward", "input": "input", "output": "output"}
    body = "".join(f"  chain {c} {{ type filter hook {hooks[c]} priority -10; policy accept;\n"
                   + "".join(f"    {r}\n" for r in rules) + "  }\n" for c, rules in chains.items() if rules)
    _run(["ip", "netns", "exec", lab.layout.switch_ns, "nft", "-f", "-"],
         stdin=f"table bridge {_table(fault_id)} {{\n  comment \"vxlab fault {fault_id}\"\n{body}}}\n")
    return {"nft_table": _table(fault_id)}


def _port(lab: Lab, host: str) -> tuple[str, str]:
    """(namespace, device) of each end of a host's underlay link, host side first."""
    return lab.layout.host_ns(host), lab.layout.port(host)


def _qdisc(lab: Lab, host: str, side: str, spec: list[str]) -> list[str]:
    ns, dev = (lab.layout.host_ns(host), "eth0") if side == "egress" else (lab.layout.switch_ns, _port(lab, host)[1])
    out = _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", *spec], check=False)
    if out.returncode != 0:
        err = out.stderr.strip()
        if spec[0] == "netem" and ("unknown" in err.lower() or "no such file" in err.lower()):
            raise FaultError("delay: this kernel has no netem qdisc (sch_netem), which delay injection needs; "
                             "vxlab will not fake a delay — use a kernel with CONFIG_NET_SCH_NETEM")
        raise FaultError(f"{spec[0]} on {host} ({side}): tc: {err}")
    return [ns, dev]


def apply(lab: Lab, fault_id: str, kind: str, p: dict[str, Any]) -> dict[str, Any]:
    if kind == "partition":
        a, b = _ips(lab, p["hosts"]), _ips(lab, p["from"])
        rules = [f"ip saddr {{ {a} }} ip daddr {{ {b} }} drop"]
        if not p["oneway"]:
            rules.append(f"ip saddr {{ {b} }} ip daddr {{ {a} }} drop")
        # The control address is the switch's own: its traffic is input and output, not forwarded.
        chains = ("forward", "input", "output") if CONTROL in p["hosts"] + p["from"] else ("forward",)
        return _nft(lab, fault_id, dict.fromkeys(chains, rules))
    if kind == "loss":
        port = _port(lab, p["host"])[1]
        chance = f"numgen random mod 10000 < {round(p['percent'] * 100)} drop"
        egress = [f'iifname "{port}" {chance}'] if "egress" in sides(p["direction"]) else []
        ingress = [f'oifname "{port}" {chance}'] if "ingress" in sides(p["direction"]) else []
        return _nft(lab, fault_id, {"forward": egress + ingress, "input": egress, "output": ingress})
    if kind in ("rate", "delay"):
        if kind == "rate":
            burst = max(16 * 1024, int(p["mbit"] * 1e6 / 8 / 100))  # 10 ms worth of bytes, >= 16 KiB
            spec = ["tbf", "rate", f"{p['mbit']}mbit", "burst", str(burst), "latency", "100ms"]
        else:
            spec = ["netem", "delay", f"{p['ms']}ms"] + ([f"{p['jitter_ms']}ms"] if p["jitter_ms"] else [])
        done: list[list[str]] = []
        try:
            for side in sides(p["direction"]):
                done.append(_qdisc(lab, p["host"], side, spec))
        except FaultError:
            _del_qdiscs(done)  # the other side went on already: take it off again
            raise
        return {"qdiscs": done}
    if kind == "link-down":
        return _link(lab, p["host"], up=False)
    if kind == "agent-kill":
        return _kill_agent(lab, p["host"])
    if kind == "host-crash":
        if p["host"] in vmhost.vm_hosts(lab.state.topology):
            return _crash_vm(lab, p["host"])
        return _kill_agent(lab, p["host"]) | _link(lab, p["host"], up=False)
    if kind == "etcd-stop":
        stopped = [_command(lab, proc) for proc in lab.state.etcd if proc.alive()]
        for proc in lab.state.etcd:
            proc.stop(sig=signal.SIGTERM)
        return {"procs": stopped}
    if kind == "etcd-member-kill":
        proc = lab.state.etcd[p["member"] - 1]
        if not proc.alive():
            raise FaultError(f"member: etcd member {p['member']} is not running")
        cmd = _command(lab, proc)
        proc.stop(sig=signal.SIGKILL)  # a crash: no leadership hand-over
        _settle(lab)
        return {"procs": [cmd]}
    if kind == "controller-kill":
        if lab.state.controller is None or not lab.state.controller.alive():
            raise FaultError("controller-kill: the controller is not running")
        cmd = _command(lab, lab.state.controller)
        lab.state.controller.stop(sig=signal.SIGKILL)
        return {"procs": [cmd]}
    raise FaultError(f"kind: unknown fault kind {kind!r}")


def heal(lab: Lab, fault_id: str, kind: str, p: dict[str, Any], undo: dict[str, Any]) -> None:
    if "nft_table" in undo:
        _run(["ip", "netns", "exec", lab.layout.switch_ns, "nft", "delete", "table", "bridge", undo["nft_table"]], check=False)
    _del_qdiscs(undo.get("qdiscs", []))
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


def _del_qdiscs(done: list[list[str]]) -> None:
    for ns, dev in done:
        _run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)


def _link(lab: Lab, host: str, *, up: bool) -> dict[str, Any]:
    _run(["ip", "-n", lab.layout.switch_ns, "link", "set", _port(lab, host)[1], "up" if up else "down"])
    return {"link_down": True}


def _crash_vm(lab: Lab, host: str) -> dict[str, Any]:
    """host-crash of a VM host: SIGKILL its QEMU (its agent dies with the guest; the tap
    stays, without carrier); the heal boots it again and starts its agent."""
    try:
        vmhost.crash(lab.state.dir, host)
    except vmhost.VmHostError as e:
        raise FaultError(str(e)) from None
    return {"vm_crashed": True, "agent": 0}


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
