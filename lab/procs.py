"""Starting a lab's processes: etcd, the controller, one agent per simulated host.

Each is started in a session of its own (so the lab outlives the `vxlab up` that
started it and a Ctrl-C in that terminal does not reach it), logs to the lab's
directory, and is recorded in state.json before anything waits on it, so `down`
finds it even after a crash.

Unless the lab is `insecure`, `start_etcd` (the first step of an `up`) makes the lab's
PKI, and everything runs with mutual TLS: etcd with its server certificate and
client-certificate auth, the controller with `--pki`, each agent with its own host
certificate (issued when the agent first starts).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from vxlab import pki
from vxlab.etcdproc import EtcdProcess
from vxlab.lab.state import LabState, Proc
from vxlab.tls import Pki, TlsConfig


class LabError(RuntimeError):
    """Something the lab could not do; the message says what and where to look."""


def _spawn(args: list[str], log: Path) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    return Proc.of(p.pid)


def ensure_pki(state: LabState) -> Pki | None:
    """The lab's PKI, made on first use; None for an insecure lab."""
    if state.insecure:
        return None
    if state.pki is None or not state.pki.ca.is_file():
        made = pki.init(state.dir / "pki", force=True)
        state.pki_dir = str(made.dir)
        state.save()
    return state.pki


def host_tls(state: LabState, host: str) -> TlsConfig | None:
    """The host's certificate (issued now if it has none yet); None for an insecure lab."""
    layout = ensure_pki(state)
    if layout is None:
        return None
    if not layout.pair(f"host:{host}")[0].is_file():
        pki.issue_host(layout.dir, host)
    return layout.host(host)


def start_etcd(state: LabState) -> None:
    layout = ensure_pki(state)
    etcd = EtcdProcess(state.dir / "etcd", detached=True, progress_notify_interval=2.0,
                       tls=layout.etcd_server() if layout else None, client_tls=layout.etcd_client() if layout else None)
    etcd.spawn()
    assert etcd.pid is not None
    state.etcd = [Proc.of(etcd.pid)]
    state.etcd_endpoints = etcd.endpoints
    state.save()
    etcd.wait_healthy()


def start_controller(state: LabState, *, lease_ttl: int) -> None:
    sock = Path(state.socket[len("unix:"):])
    sock.unlink(missing_ok=True)
    layout = ensure_pki(state)
    tls = ["--pki", str(layout.dir)] if layout else ["--insecure"]
    state.controller = _spawn(
        [sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", state.socket,
         "--etcd", ",".join(state.etcd_endpoints), "--lease-ttl", str(lease_ttl), *tls],
        state.dir / "logs" / "controller.log")
    state.save()
    wait_for(lambda: sock.exists(), f"the controller socket (see {state.dir / 'logs' / 'controller.log'})",
             alive=state.controller)


def start_agent(state: LabState, host: str, *, host_ns: str, prefix: str, resync: float = 10.0) -> None:
    tls = ["--pki", state.pki_dir] if host_tls(state, host) else ["--insecure"]
    state.agents[host] = _spawn(
        ["nsenter", f"--net=/run/netns/{host_ns}", sys.executable, "-m", "vxlab.cli", "--controller",
         state.socket, *tls, "agent", "run", "--host", host, "--netns-prefix", prefix, "--resync", str(resync),
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
            tls = host_tls(state, host)
            spawner.stdin.write(json.dumps({
                "host": host, "netns": ns, "controller": state.socket, "netns_prefix": prefix, "resync": resync,
                "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)} if tls else None,
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
