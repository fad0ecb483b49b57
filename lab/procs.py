"""Starting a lab's processes: etcd, the controller, one agent per simulated host.

Each is started in a session of its own (so the lab outlives the `vxlab up` that
started it and a Ctrl-C in that terminal does not reach it), logs to the lab's
directory, and is recorded in state.json before anything waits on it, so `down`
finds it even after a crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from vxlab.etcdproc import EtcdProcess
from vxlab.lab.state import LabState, Proc


class LabError(RuntimeError):
    """Something the lab could not do; the message says what and where to look."""


def _spawn(args: list[str], log: Path) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    return Proc.of(p.pid)


def start_etcd(state: LabState) -> None:
    etcd = EtcdProcess(state.dir / "etcd", detached=True, progress_notify_interval=2.0)
    etcd.spawn()
    assert etcd.pid is not None
    state.etcd = [Proc.of(etcd.pid)]
    state.etcd_endpoints = etcd.endpoints
    state.save()
    etcd.wait_healthy()


def start_controller(state: LabState, *, lease_ttl: int) -> None:
    sock = Path(state.socket[len("unix:"):])
    sock.unlink(missing_ok=True)
    state.controller = _spawn(
        [sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", state.socket,
         "--etcd", ",".join(state.etcd_endpoints), "--lease-ttl", str(lease_ttl)],
        state.dir / "logs" / "controller.log")
    state.save()
    wait_for(lambda: sock.exists(), f"the controller socket (see {state.dir / 'logs' / 'controller.log'})",
             alive=state.controller)


def start_agent(state: LabState, host: str, *, host_ns: str, prefix: str, resync: float = 10.0) -> None:
    state.agents[host] = _spawn(
        ["nsenter", f"--net=/run/netns/{host_ns}", sys.executable, "-m", "vxlab.cli", "--controller",
         state.socket, "agent", "run", "--host", host, "--netns-prefix", prefix, "--resync", str(resync),
         "--status-file", str(agent_status_path(state, host))],
        state.dir / "logs" / f"agent-{host}.log")
    state.save()


def start_agents(state: LabState, hosts: list[tuple[str, str, str]], *, resync: float = 10.0) -> None:
    """Start several agents (host, host namespace, netns prefix) through one spawner
    process that imports the agent once and forks each (see vxlab.agent.spawner)."""
    if not hosts:
        return
    (state.dir / "logs").mkdir(parents=True, exist_ok=True)
    spawner = subprocess.Popen([sys.executable, "-m", "vxlab.agent.spawner"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=(state.dir / "logs" / "spawner.log").open("ab"),
                               text=True)
    assert spawner.stdin is not None and spawner.stdout is not None
    try:
        for host, ns, prefix in hosts:
            spawner.stdin.write(json.dumps({
                "host": host, "netns": ns, "controller": state.socket, "netns_prefix": prefix, "resync": resync,
                "status_file": str(agent_status_path(state, host)),
                "log": str(state.dir / "logs" / f"agent-{host}.log")}) + "\n")
            spawner.stdin.flush()
            line = spawner.stdout.readline()
            if not line:
                raise LabError(f"the agent spawner died (see {state.dir / 'logs' / 'spawner.log'})")
            state.agents[host] = Proc.of(int(json.loads(line)["pid"]))
            state.save()
    finally:
        spawner.stdin.close()
        spawner.wait(10)


def agent_status_path(state: LabState, host: str) -> Path:
    return state.dir / "agents" / f"{host}.json"


def wait_for(cond, what: str, *, timeout: float = 30.0, alive: Proc | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if alive is not None and not alive.alive():
            raise LabError(f"gave up waiting for {what}: the process exited")
        time.sleep(0.02)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
