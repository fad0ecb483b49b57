"""The lab's processes by role: etcd, the controller, one agent per simulated host.

What each is started with (its flags, certificates, resync period, priority); the
starting itself is the supervisor's (vxlab.lab.supervisor: own session, log in the lab's
directory). Each is recorded in state.json before anything waits on it, so `down` finds
it even after a crash.

Unless the lab is `insecure`, `start_etcd` (the first step of an `up`) makes the lab's
PKI, and everything runs with mutual TLS: etcd with its server certificate and
client-certificate auth, the controller with `--pki`, each agent with its own host
certificate (issued when the agent first starts). The controller's certificate names the
lab's control address too.

Where agents reach the controller is the topology's `control`: `local`, the unix socket
in the lab's directory; `underlay`, the control address on the switch (172.30.0.2:7070),
where the controller also listens (`--listen-netns <switch>=<address>`: the listener is
made in the switch's namespace, the controller process stays in this machine's, next to
etcd on loopback, and keeps its unix socket for the CLI).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vxlab import netns
from vxlab.lab import vmhost
from vxlab.lab.state import LabState
from vxlab.lab.supervisor import Command, Proc, SpawnError, Supervisor
from vxlab.agentconfig import AgentConfig, Launch
from vxlab.layout import LabLayout
from vxlab.tls import Pki, TlsConfig


class LabError(RuntimeError):
    """Something the lab could not do; the message says what and where to look."""


def ensure_pki(state: LabState) -> Pki | None:
    """The lab's PKI, made on first use; None for an insecure lab."""
    from vxlab import pki  # here: the CLI, which finds labs through `Lab`, needs no cryptography

    if state.insecure:
        return None
    if state.pki is None or not state.pki.ca.is_file():
        san = [state.topology.underlay.control_ip] if state.topology else []
        made = pki.init(state.dir / "pki", san=san, force=True)
        state.pki_dir = str(made.dir)
        state.save()
    return state.pki


def host_tls(state: LabState, host: str) -> TlsConfig | None:
    """The host's certificate (issued now if it has none yet); None for an insecure lab."""
    from vxlab import pki

    layout = ensure_pki(state)
    if layout is None:
        return None
    if not layout.pair(f"host:{host}")[0].is_file():
        pki.issue_host(layout.dir, host)
    return layout.host(host)


def start_etcd(state: LabState, *, members: int = 1) -> None:
    """One etcd member, or a static cluster of `members` (each in `etcd/m<i>`, every one
    recorded before anything waits on it; the controller gets every client endpoint)."""
    from vxlab.etcdproc import EtcdCluster, EtcdProcess

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


def agents_controller(state: LabState) -> str:
    """The controller address the lab's agents dial: the control address on the underlay
    (`control: underlay`), else the unix socket."""
    return (state.topology.control_address if state.topology else "") or state.socket


def start_controller(state: LabState, *, lease_ttl: int, switch_ns: str) -> None:
    """The controller on the lab's unix socket, and with `control: underlay` also on the
    control address inside `switch_ns` (whose vxsw holds that address)."""
    sock = Path(state.socket[len("unix:"):])
    sock.unlink(missing_ok=True)
    layout = ensure_pki(state)
    tls = ["--pki", str(layout.dir)] if layout else ["--insecure"]
    control = state.topology.control_address if state.topology else ""
    on_switch = ["--listen-netns", f"{switch_ns}={control}"] if control else []
    sup = Supervisor(state.dir)
    state.controller = sup.start(Command(
        (sys.executable, "-m", "vxlab.cli", "controller", "serve", "--listen", state.socket, *on_switch,
         "--etcd", ",".join(state.etcd_endpoints), "--lease-ttl", str(lease_ttl), *tls),
        log=str(sup.log("controller"))))
    state.save()
    wait_for(lambda: sock.exists() and (not control or listening(switch_ns, control)),
             f"the controller's {'socket' if not control else 'socket and control address ' + control}"
             f" (see {sup.log('controller')})", alive=state.controller)


def listening(ns: str, address: str) -> bool:
    """Something accepts TCP connections on `address` (host:port) inside namespace `ns`."""
    host, _, port = address.rpartition(":")

    def connect() -> bool:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return True
        except OSError:
            return False
    return netns.run_in(ns, connect)


AGENT_NICE = 10  # see start_agents


def resync_for(hosts: int) -> float:
    """The agents' full-resync period: 10 s (the agent's default) up to 20 hosts, then
    half a second per host, at most 60 s. A full pass dumps every entry of the host
    (~10 ms of CPU per 1000 entries, more under load); 100 agents at 10 s kept a whole
    core busy doing nothing but checking for drift."""
    return 10.0 if hosts <= 20 else min(60.0, hosts / 2)


def start_agents(state: LabState, layout: LabLayout, hosts: list[str]) -> None:
    """Start the agents of `hosts` (each in its namespace of `layout`) through one spawner
    process that imports the agent once and forks each (see vxlab.agent.spawner).

    Agents run at nice 10: on real machines every host has CPUs of its own, here 100
    simulated hosts share two cores with the lab's etcd and controller, and at equal
    priority a burst of agent work (first passes, resyncs) starved the controller until
    host leases expired — every peer then purged and re-added those hosts, which fed the
    overload (measured: 100 x 5 converged only after 45 s of such flapping)."""
    if not hosts:
        return
    resync = resync_for(len(state.topology.hosts) if state.topology else 0)
    sup = Supervisor(state.dir)
    vms = vmhost.vm_hosts(state.topology)

    def config(host: str) -> AgentConfig:
        return AgentConfig(controller=[agents_controller(state)], host=host, netns_prefix=layout.agent(host).prefix,
                           resync=resync, status_file=str(agent_status_path(state, host)), tls=host_tls(state, host),
                           dns_forward=False)  # lab traffic stays on the machine

    def launches() -> Iterator[Launch]:
        for host in hosts:
            if host not in vms:
                yield Launch(config(host), netns=layout.host_ns(host), log=str(sup.log(f"agent-{host}")),
                             nice=AGENT_NICE)

    def started(host: str, proc: Proc) -> None:
        state.agents[host] = proc
    try:
        if any(h not in vms for h in hosts):
            sup.start_agents(launches(), started=started)
        for host in (h for h in hosts if h in vms):  # in its guest (a VM host has CPUs of its own)
            # A guest booted again reuses pids: the last agent's status file could pass for the new one's.
            agent_status_path(state, host).unlink(missing_ok=True)
            state.agents[host] = vmhost.start_agent(state.dir, config(host), log=str(sup.log(f"agent-{host}")))
            state.save()
    except (SpawnError, vmhost.VmHostError) as e:
        raise LabError(str(e)) from None
    finally:
        state.save()


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
