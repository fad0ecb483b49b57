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
from collections.abc import Callable
from pathlib import Path

from vxlab import pki
from vxlab.etcdproc import EtcdCluster, EtcdProcess
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


def start_etcd(state: LabState, *, members: int = 1) -> None:
    """One etcd member, or a static cluster of `members` (each in `etcd/m<i>`, every one
    recorded before anything waits on it; the controller gets every client endpoint)."""
    layout = ensure_pki(state)
    tls = {"tls": layout.etcd_server() if layout else None, "client_tls": layout.etcd_client() if layout else None}
    procs: list[EtcdProcess]
    if members == 1:
        procs = [EtcdProcess(state.dir / "etcd", detached=True, progress_notify_interval=2.0, **tls)]
    else:
        procs = EtcdCluster(members, state.dir / "etcd", detached=True, progress_notify_interval=2.0, **tls).members
    for member in procs:
        member.spawn()
    state.etcd = [Proc.of(member.pid or 0) for member in procs]
    state.etcd_endpoints = [member.endpoints[0] for member in procs]
    state.save()
    for member in procs:
        member.wait_healthy()


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


AGENT_NICE = 10  # see start_agents


def resync_for(hosts: int) -> float:
    """The agents' full-resync period: 10 s (the agent's default) up to 20 hosts, then
    half a second per host, at most 60 s. A full pass dumps every entry of the host
    (~10 ms of CPU per 1000 entries, more under load); 100 agents at 10 s kept a whole
    core busy doing nothing but checking for drift."""
    return 10.0 if hosts <= 20 else min(60.0, hosts / 2)


def start_agents(state: LabState, hosts: list[tuple[str, str, str]]) -> None:
    """Start several agents (host, host namespace, netns prefix) through one spawner
    process that imports the agent once and forks each (see vxlab.agent.spawner).

    Agents run at nice 10: on real machines every host has CPUs of its own, here 100
    simulated hosts share two cores with the lab's etcd and controller, and at equal
    priority a burst of agent work (first passes, resyncs) starved the controller until
    host leases expired — every peer then purged and re-added those hosts, which fed the
    overload (measured: 100 x 5 converged only after 45 s of such flapping)."""
    if not hosts:
        return
    resync = resync_for(len(state.topology.get("hosts", [])))
    (state.dir / "logs").mkdir(parents=True, exist_ok=True)
    # The lab's directory on the spawner's command line (which its forked agents share):
    # `down` finds agents by it even if this process dies before state.json names them.
    spawner = subprocess.Popen([sys.executable, "-m", "vxlab.agent.spawner", "--for", str(state.dir)],
                               stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=(state.dir / "logs" / "spawner.log").open("ab"),
                               text=True)
    assert spawner.stdin is not None and spawner.stdout is not None
    try:
        for host, ns, prefix in hosts:
            tls = host_tls(state, host)
            spawner.stdin.write(json.dumps({
                "host": host, "netns": ns, "controller": state.socket, "netns_prefix": prefix, "resync": resync,
                "nice": AGENT_NICE, "dns_forward": False,  # lab traffic never leaves the machine
                "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)} if tls else None,
                "status_file": str(agent_status_path(state, host)),
                "log": str(state.dir / "logs" / f"agent-{host}.log")}) + "\n")
            spawner.stdin.flush()
            line = spawner.stdout.readline()
            if not line:
                raise LabError(f"the agent spawner died (see {state.dir / 'logs' / 'spawner.log'})")
            state.agents[host] = Proc.of(int(json.loads(line)["pid"]))
    finally:
        state.save()
        spawner.stdin.close()
        spawner.wait(10)


def agent_status_path(state: LabState, host: str) -> Path:
    return state.dir / "agents" / f"{host}.json"


def wait_for(cond, what: str, *, timeout: float = 30.0, alive: Proc | None = None,  # type: ignore[no-untyped-def]
             interval: float = 0.02, explain: Callable[[], str] | None = None) -> None:
    """Poll `cond()` until it is true. `cond` may raise to give up early (a LabError that
    says why); `explain()` adds what is still missing to the timeout's message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if alive is not None and not alive.alive():
            raise LabError(f"gave up waiting for {what}: the process exited")
        time.sleep(interval)
    why = explain() if explain is not None else ""
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {why}" if why else ""))
