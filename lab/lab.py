"""The lab: bring a topology up on this machine, change it, look at it, tear it down.

`Lab.up(topology)` starts (or keeps) the lab's etcd and controller, the underlay
switch and one namespace per host with its own agent process inside (a VM host is a
QEMU guest with its agent inside instead, lab/vmhost.py), then applies
networks and containers through the controller's API and waits until every agent
reports it has programmed the controller's current revision. On a running lab it
applies every difference, or refuses (lab/plan.py). `Lab.down()` removes everything
the lab made, also after a crash (it works from state.json and from the `vx-<lab>.`
name prefix + marker).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from vxlab import containers
from vxlab.agentstatus import AgentStatus
from vxlab.client import Client
from vxlab.errors import VxError
from vxlab.errors import InvalidArgument
from vxlab.lab import apply as lab_apply
from vxlab.lab import plan as lab_plan
from vxlab.lab import converge, dockerhost, faults, neigh, procs, underlay, vmhost
from vxlab.lab.plan import Step
from vxlab.lab import check as lab_check
from vxlab.lab.check import CheckResult, Probe
from vxlab.lab.faults import Fault
from vxlab.lab.state import LabState, lab_dir, list_labs  # noqa: F401 - list_labs: for the CLI
from vxlab.lab.supervisor import Proc, Supervisor
from vxlab.lab import vm
from vxlab.lab.topology import Topology, UnderlaySpec, load
from vxlab.model import Endpoint, Host, Network, Policy, PortMapping, Service
from vxlab.layout import LabLayout, check_lab_name
from vxlab.tls import TlsConfig

T = TypeVar("T")
LEASE_TTL = 5
PREREGISTER_TTL = 120  # until each host's own agent registers (and replaces this lease)


def vm_budget(topo: Topology) -> float:
    """More time for `up`'s waits when VM hosts boot: under TCG their agents start slowly
    (Python imports ~3 s in the guest, bench/results/vm.json); nothing for namespace hosts."""
    return vm.BOOT_TIMEOUT if vmhost.vm_hosts(topo) else 0.0


def lease_ttl_for(hosts: int) -> int:
    """The host lease TTL of a lab's controller: 5 s (the default), longer for big labs.
    On 2 cores, 50+ agents programming hundreds of entries at once can delay a keepalive
    past 5 s; every such expiry makes every peer purge and re-add that host's entries,
    which feeds the overload (measured: 50 hosts x 5 containers took 50 s with 5 s)."""
    return max(LEASE_TTL, -(-hosts // 5))


class Lab:
    def __init__(self, name: str) -> None:
        try:
            check_lab_name(name)  # it names a directory and prefixes namespaces
        except InvalidArgument as e:
            raise procs.LabError(e.message) from None
        self.name = name
        self.state = LabState.load(name) or LabState(name)
        self.layout = LabLayout.of_lab(name)
        self.supervisor = Supervisor(lab_dir(name))
        self.topology: Topology | None = None  # the file of `from_file`, then what `up` was given
        self._boots = vmhost.Boots()  # VM hosts booting during an `up`

    # --- names -----------------------------------------------------------------
    @property
    def socket(self) -> str:
        return self.state.socket

    def host_ns(self, host: str) -> str:
        return self.layout.host_ns(host)

    def agent_prefix(self, host: str) -> str:
        return self.layout.agent(host).prefix

    def network_ns(self, host: str, network: str) -> str:
        return self.layout.network_ns(host, network)

    def container_ns(self, host: str, container: str) -> str:
        return self.layout.container_ns(host, container)

    @property
    def switch_ns(self) -> str:
        return self.layout.switch_ns

    def outside_ip(self) -> str:
        """The lab's outside address (the underlay's first address, on the switch)."""
        return (self.state.topology.underlay if self.state.topology else UnderlaySpec()).switch_ip

    # --- what the lab is (the CLI and bench use these, never `state`) --------------
    @property
    def exists(self) -> bool:
        """The lab has a state on this machine (it was brought up and not taken down)."""
        return (lab_dir(self.name) / "state.json").is_file()

    @property
    def applied(self) -> Topology | None:
        """The topology the last `up` applied (None: never up, or down)."""
        return self.state.topology

    @property
    def insecure(self) -> bool:
        """Plaintext everywhere (`up --insecure`) rather than mutual TLS."""
        return self.state.insecure

    @insecure.setter
    def insecure(self, value: bool) -> None:
        """For the next `up`; a running lab keeps what it runs with (a LabError)."""
        if self.running() and value != self.state.insecure:
            raise procs.LabError(f"insecure: lab {self.name} runs {'without' if self.state.insecure else 'with'} TLS;"
                                 " 'down' it first to change that")
        self.state.insecure = value

    @property
    def lease_ttl(self) -> int:
        """The controller's host lease TTL: peers purge a dead host after it."""
        return self.state.lease_ttl

    @property
    def etcd_endpoints(self) -> list[str]:
        return list(self.state.etcd_endpoints)

    def client_tls(self) -> TlsConfig | None:
        """The admin certificate for the lab's controller; None for a plaintext lab."""
        return self.state.client_tls()

    def etcd_tls(self) -> TlsConfig | None:
        """The client certificate for the lab's etcd; None for a plaintext lab."""
        return self.state.etcd_tls()

    def client(self, *, timeout: float = 15.0) -> Client:
        """A new client of the lab's controller, as admin (the caller closes it)."""
        return Client(self.socket, timeout=timeout, tls=self.state.client_tls())

    def log(self, name: str) -> Path:
        """A log file of the lab: `controller`, `agent-<host>`, `spawner`, `faults`."""
        return self.supervisor.log(name)

    def processes(self) -> dict[str, Proc]:
        """The lab's processes by role: `etcd/<member>` (1, 2, …), `controller`,
        `agent/<host>` (a VM host's runs in its guest: `Proc.vm`), `vm/<host>` (QEMU),
        `dockerd/<host>` and `docker-plugin/<host>` (Docker hosts)."""
        st = self.state
        qemu = {f"vm/{h}": Proc.of(pid) for h in sorted(vmhost.vm_hosts(st.topology))
                for pid in vmhost.machine(st.dir, h).pids()[:1]}
        dockers = {f"{role}/{h}": p for h in dockerhost.hosts(st.topology)
                   for role, p in dockerhost.running(st.dir, h).items()}
        return {**dockers, **{f"etcd/{i}": p for i, p in enumerate(st.etcd, 1)},
                **({"controller": st.controller} if st.controller else {}),
                **{f"agent/{h}": p for h, p in sorted(st.agents.items())}, **qemu}

    # --- API access --------------------------------------------------------------
    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        async def go() -> T:
            async with self.client() as c:
                return await fn(c)
        return asyncio.run(go())

    def running(self) -> bool:
        return self.state.controller is not None and self.state.controller.alive()

    # --- plan ----------------------------------------------------------------------
    def plan(self, topo: Topology, *, recreate: bool = False) -> lab_plan.Plan:
        """What `up` would do, by comparing the topology with the running lab: its steps,
        or why it refuses (`recreate`: networks may be deleted and created again)."""
        live = self.call(lambda c: lab_plan.read_live(c, agents=set(self.state.agents),
                                                      applied=self.state.topology)) if self.running() \
            else lab_plan.Live()
        return lab_plan.plan(topo, live, recreate=recreate)

    # --- up --------------------------------------------------------------------------
    def up(self, topo: Topology, *, recreate: bool = False, planned: lab_plan.Plan | None = None,
           progress: Callable[[str], None] = lambda s: None,
           notice: Callable[[str], None] | None = None) -> list[Step]:
        """Make the lab what `topo` says: the steps of `plan` (or `planned`, its result
        just taken); a refused plan is a LabError and changes nothing. `progress` hears
        each step, `notice` (default: `progress`) what a user should keep seeing (a
        machine-wide setting changed, the hosts whose agents cannot converge)."""
        from vxlab.lab import doctor  # here: the CLI finds its lab through `Lab`; only `up` needs the doctor

        doctor.preflight()  # before anything is made: one line naming all that is missing
        planned = planned or self.plan(topo, recreate=recreate)
        if planned.refused:
            raise procs.LabError(planned.refusal)
        steps = planned.steps
        self.topology = topo
        self.state.topology = topo
        self.state.save()
        raised = neigh.hold(lab_dir(self.name))
        if raised:
            (notice or progress)(raised)
        if not any(p.alive() for p in self.state.etcd):  # a cluster with a member down still runs
            progress("starting etcd" + (f" ({topo.etcd_members} members)" if topo.etcd_members > 1 else ""))
            procs.start_etcd(self.state, members=topo.etcd_members)
        self._readdress(topo, steps)
        self._underlay(topo, progress)  # before the controller: with `control: underlay` it listens on the switch
        if not self.running():
            progress("starting the controller" + (f" (agents reach it at {topo.control_address} on the underlay)"
                                                  if topo.control_address else ""))
            self.state.lease_ttl = lease_ttl_for(len(topo.hosts))
            procs.start_controller(self.state, lease_ttl=self.state.lease_ttl, switch_ns=self.switch_ns)
        # New hosts are registered before their agents start, and the containers created
        # before too: each new agent then starts from one snapshot holding everything and
        # programs it in one pass, instead of every agent replaying every create.
        self._preregister(topo)
        self._special_containers(topo, create=False)  # before an agent wants the name
        progress("applying networks and containers")
        self._apply(topo, steps)
        self._hosts(topo, progress, notice or progress)
        self._dockers(topo, progress)
        progress("waiting for agents to converge")
        self.wait_converged(timeout=60 + 2 * len(topo.hosts) + vm_budget(topo), tell=notice or progress)
        self._special_containers(topo)  # after: an agent may just have removed its own by that name
        return steps

    def _readdress(self, topo: Topology, steps: list[Step]) -> None:
        """Hosts with a new underlay address: their agent stops, `eth0` gets the address,
        and the agent starts again with it (in `_hosts`); containers are not touched."""
        prefix_len = topo.underlay.subnet.split("/")[1]
        for h in topo.hosts:
            if any(s.kind == "host" and s.op == "~" and s.name == h.name for s in steps):
                proc = self.state.agents.pop(h.name, None)  # `_hosts` starts it again
                if proc:
                    proc.stop()
                self.state.save()
                underlay.batch(["addr flush dev eth0", f"addr add {h.underlay_ip}/{prefix_len} dev eth0"],
                               ns=self.host_ns(h.name))

    def _underlay(self, topo: Topology, progress: Callable[[str], None]) -> None:
        existing = set(underlay.netns_list())
        mark = self.layout.marker
        if self.switch_ns not in existing:
            progress("creating the underlay switch")
            self.state.intend(self.switch_ns)
            net = topo.underlay.network
            underlay.create_switch(self.switch_ns, mark=mark, mtu=topo.underlay.mtu,
                                   outside=f"{topo.underlay.switch_ip}/{net.prefixlen}",
                                   control=f"{topo.underlay.control_ip}/{net.prefixlen}"
                                   if topo.control == "underlay" else "")
        prefix_len = topo.underlay.subnet.split("/")[1]
        new = [(underlay.SimHost(h.name, self.host_ns(h.name), h.underlay_ip, f"{h.underlay_ip}/{prefix_len}"),
                self.layout.port(h.name)) for h in topo.hosts if self.host_ns(h.name) not in existing and h.vm is None]
        booting = [h for h in vmhost.vm_hosts(topo).values() if not vmhost.machine(self.state.dir, h.name).alive()]
        if booting:  # in threads: they boot while the controller starts and the state is written
            progress(f"booting {len(booting)} VM hosts")
            for h in booting:
                self._boots.start(self.state.dir, h.name, vmhost.config(self.state.dir, self.layout, topo, h))
        if new:
            progress(f"creating {len(new)} hosts")
            self.state.namespaces += [h.ns for h, _ in new if h.ns not in self.state.namespaces]
            self.state.save()  # recorded before they exist: `down` finds half-made ones
            underlay.add_hosts(self.switch_ns, new, mark=mark, mtu=topo.underlay.mtu)

    def _special_containers(self, topo: Topology, *, create: bool = True) -> None:
        """`network_mode: none`: a namespace of the lab's own with only `lo`, nothing the
        agent manages; `host`: the host's namespace itself (nothing to create). Removes
        the lab's namespaces no longer wanted, then (`create`) makes the missing ones."""
        want = {self.container_ns(c.host, c.name) for c in topo.containers if c.network_mode == "none"}
        existing = set(underlay.netns_list())
        for ns in sorted(want - existing) if create else ():
            self.state.intend(ns)
            underlay.create_ns(ns, mark=self.layout.marker)
        for ns in sorted(existing - want):
            if ns in self.state.namespaces and underlay.marker(ns) == self.layout.marker and self.layout.is_container_ns(ns):
                underlay.delete_ns(ns)

    def network_modes(self) -> dict[str, tuple[str, str]]:
        """Containers with a network_mode: name -> (mode, host), from the applied topology
        (the controller knows only containers with endpoints)."""
        return self._modes()

    def _modes(self) -> dict[str, tuple[str, str]]:
        """Containers with a network_mode: name -> (mode, host), from the applied topology."""
        topo = self.state.topology
        return {c.name: (c.network_mode, c.host) for c in (topo.containers if topo else ()) if c.network_mode}

    def _preregister(self, topo: Topology) -> None:
        """Register hosts whose agents are not running yet, with a first lease long enough
        for their agents to start and register themselves (which replaces it), so no host
        flaps dead meanwhile and containers can be created before any agent watches."""
        new = [h for h in topo.hosts if (p := self.state.agents.get(h.name)) is None or not p.alive()]
        if new:
            async def go(c: Client) -> None:
                await asyncio.gather(*(c.register_host(Host(name=h.name, underlay_ip=h.underlay_ip,
                                                            underlay_mtu=topo.underlay.mtu, lease_ttl=PREREGISTER_TTL))
                                       for h in new))
            self.call(go)

    def _hosts(self, topo: Topology, progress: Callable[[str], None], notice: Callable[[str], None]) -> None:
        want = {h.name for h in topo.hosts}
        for gone in sorted(set(self.state.agents) - want):
            progress(f"removing host {gone}")
            self.remove_host(gone)
        if self._boots.threads:
            progress("waiting for the VM hosts to boot")
            try:
                booted = self._boots.wait()
            except vmhost.VmHostError as e:
                raise procs.LabError(str(e)) from None
            for name, boot in sorted(booted.items()):
                notice(f"VM host {name}: {boot.accel.name.upper()} ({boot.accel.reason}), kernel {boot.kernel}, "
                       f"booted in {boot.seconds:.1f}s")
        todo = [h.name for h in topo.hosts if (p := self.state.agents.get(h.name)) is None or not p.alive()]
        if todo:
            progress(f"starting {len(todo)} agents")
            procs.start_agents(self.state, self.layout, todo)
        progress("waiting for agents to register")

        def registered() -> bool:  # each agent's status file says so (no RPC per poll)
            if dead := sorted(h for h in want if not self.state.agents[h].alive()):
                raise procs.LabError(f"the agent of {', '.join(dead)} exited before registering "
                                     f"(see {self.state.dir / 'logs'}/agent-{dead[0]}.log)")
            return all((a := self.agent_status(h)).registered and a.pid == self.state.agents[h].pid for h in want)
        procs.wait_for(registered, "every agent to register (see the agent logs in "
                       f"{self.state.dir / 'logs'})", timeout=60 + len(want) + vm_budget(topo), interval=0.1)

    def _dockers(self, topo: Topology, progress: Callable[[str], None]) -> None:
        """Docker hosts (lab/dockerhost.py): start the missing dockerds and plugins, stop
        those of hosts that are no longer Docker hosts."""
        want = dockerhost.hosts(topo)
        for host in sorted(set(dockerhost.made(self.state.dir)) - set(want)):
            dockerhost.stop(self.state.dir, host)
        todo = [h for h in want if len(dockerhost.running(self.state.dir, h)) < 2]
        if todo:
            progress(f"starting dockerd on {len(todo)} hosts")
        for host in todo:
            dockerhost.start(self.state.dir, host=host, lab=self.name, netns=self.host_ns(host))

    def host_command(self, host: str, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
        """(argv, environment) running `cmd` in the namespace of `host` (`vxlab host exec`),
        with DOCKER_HOST set to its dockerd on a Docker host."""
        topo = self.state.topology
        spec = next((h for h in (topo.hosts if topo else ()) if h.name == host), None)
        if spec is None:
            raise procs.LabError(f"host: no host named {host!r} in lab {self.name!r}")
        if spec.vm is not None:
            raise procs.LabError(f"host: {host} is a VM host: its namespace is in its guest")
        env = {**os.environ, **({"DOCKER_HOST": dockerhost.socket(self.state.dir, host)} if spec.docker else {})}
        return ["nsenter", f"--net=/run/netns/{self.host_ns(host)}", *cmd], env

    def _apply(self, topo: Topology, steps: list[Step]) -> None:
        gone = {s.name for s in steps if s.kind == "network" and s.op == "-"}
        if not gone & {s.name for s in steps if s.kind == "network" and s.op == "+"}:
            self.call(lambda c: lab_apply.apply(c, topo, steps))
            return
        # A network recreated: the agents take the old one down entirely (namespaces, NAT,
        # policy tables) before the new one, by the same name, is created.
        first = range(lab_plan.CONTROLLER.start, lab_plan.NETWORK_DEL + 1)
        self.call(lambda c: lab_apply.apply(c, topo, steps, phases=first))
        self.wait_converged(timeout=60 + 2 * len(topo.hosts) + vm_budget(topo))
        self.call(lambda c: lab_apply.apply(c, topo, steps, phases=range(first.stop, lab_plan.CONTROLLER.stop)))

    def remove_host(self, host: str) -> None:
        proc = self.state.agents.pop(host, None)
        if dockerhost.host_dir(self.state.dir, host).exists():
            dockerhost.stop(self.state.dir, host)
        if vmhost.run_dir(self.state.dir, host).exists():
            vmhost.remove(self.state.dir, host)  # its agent goes with it
        elif proc:
            proc.stop()
        for ns in underlay.netns_list():
            if ns.startswith(self.layout.agent(host).prefix) or ns == self.host_ns(host):
                underlay.delete_ns(ns)
        if self.running():
            try:
                self.call(lambda c: c.deregister_host(host, force=True))
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.state.save()

    def agent_status(self, host: str) -> AgentStatus:
        """What the agent of `host` last wrote (`AgentStatus()` before it wrote anything)."""
        return AgentStatus.read(procs.agent_status_path(self.state, host))

    def wait_converged(self, *, timeout: float = 60.0, tell: Callable[[str], None] | None = None) -> int:
        """Wait until every agent has programmed the controller's current revision. Gives
        up at once when every agent's full pass fails; on giving up, `tell` hears one line
        per host that is not done (its first error, or why it is behind)."""
        rev = self.call(lambda c: c.revision())
        converge.wait(self.state.agents, self.agent_status, revision=rev, timeout=timeout,
                      logs=str(self.state.dir / "logs"), tell=tell)
        return rev

    # --- looking -----------------------------------------------------------------------
    def containers(self) -> list[dict[str, Any]]:
        eps = self.call(lambda c: c.list_endpoints())
        rows = [{"container": e.name, "host": e.host, "network": e.network, "ip": e.ip, "mac": e.mac,
                 "namespace": self.container_ns(e.host, e.name)} for e in eps]
        rows += [{"container": name, "host": host, "network": f"({mode})", "ip": "", "mac": "",
                  "namespace": self.namespace_of(name)} for name, (mode, host) in self._modes().items()]
        return sorted(rows, key=lambda r: (r["container"], r["network"]))

    def namespace_of(self, container: str) -> str:
        mode = self._modes().get(container)
        if mode is not None:
            kind, host = mode
            return self.host_ns(host) if kind == "host" else self.container_ns(host, container)
        topo = self.state.topology
        ns = self.container_ns(next((c.host for c in (topo.containers if topo else ()) if c.name == container), ""),
                               container)
        if ns in underlay.netns_list():  # from the topology file: no control plane needed
            return ns
        try:
            eps = self.call(lambda c: c.list_endpoints(name=container))
        except VxError as e:
            raise procs.LabError(f"container: cannot look {container!r} up: {e}") from None
        if not eps:
            raise procs.LabError(f"container: no container named {container!r} in lab {self.name!r}")
        return self.container_ns(eps[0].host, container)

    def status(self, *, brief: bool = False) -> dict[str, Any]:
        self.state = LabState.load(self.name) or self.state  # a fault's heal may have restarted processes
        st: dict[str, Any] = {"name": self.name, "controller": self.socket, "controller_up": self.running(),
                              "agents_controller": procs.agents_controller(self.state),
                              "etcd": self.state.etcd_endpoints,
                              "etcd_up": bool(self.state.etcd) and all(p.alive() for p in self.state.etcd),
                              "hosts": sorted(self.state.agents)}
        if brief:
            return st
        hosts: dict[str, Host] = {}
        st["revision"] = 0
        if self.running():
            try:
                hosts = {h.name: h for h in self.call(lambda c: c.list_hosts())}
                st["revision"] = self.call(lambda c: c.revision())
            except Exception:  # noqa: BLE001 - etcd down: report what we know
                st["controller_up"] = False
        rows = []
        vms = vmhost.vm_hosts(self.state.topology)
        for name, proc in sorted(self.state.agents.items()):
            a = self.agent_status(name)
            h = hosts.get(name)
            rows.append({"name": name, "underlay_ip": h.underlay_ip if h else a.underlay_ip,
                         "alive": bool(h and h.alive), "agent_running": proc.alive(),
                         "applied_revision": a.applied_revision, "converged": a.programmed(st["revision"]),
                         **({"vm": vmhost.accel(self.state.dir, name)} if name in vms else {})})
        st["hosts"] = rows
        st["converged"] = all(r["converged"] for r in rows)
        st["lease_ttl"] = self.state.lease_ttl
        st["faults"] = [f.describe() + f" [{f.id}]" for f in self.faults()]
        return st

    def check(self, **kw: Any) -> CheckResult:
        """Every expectation, probed by the agents (lab/check.py); and, from this machine,
        that a `network_mode: none` container (no agent manages it) reaches nobody."""
        eps, rules, vips = self.call(lambda c: asyncio.gather(c.list_endpoints(), c.list_policies(),
                                                              c.list_services()))
        result = self.call(lambda c: lab_check.run(c, eps, policies=rules, vips=vips, **kw))
        isolated = [n for n, (mode, _) in self._modes().items() if mode == "none"]
        extra = lab_check.run_local([Probe(n, e.name, e.network, e.ip, expect=False) for n in isolated for e in eps],
                                    self.namespace_of, timeout=0.5)
        return CheckResult(result.probes + extra.probes)

    def trace(self, src: str, dst: str, *, network: str = "", count: int = 3) -> Any:
        """The path from container `src` to `dst` (on their shared network, or `network`),
        with a live underlay capture decoded as VXLAN, through the agents (lab/trace.py)."""
        from vxlab.lab import trace

        vms = vmhost.vm_hosts(self.state.topology)
        places = trace.Places(host=lambda h: f"VM host {h} (its guest)" if h in vms else self.host_ns(h),
                              underlay=("underlay switch", "vxsw", "bridged to the destination host's port"))
        try:
            return self.call(lambda c: trace.trace(c, src, dst, network=network, count=count, places=places))
        except InvalidArgument as e:
            raise procs.LabError(e.message) from None

    def exec(self, container: str, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command inside a container's namespace (Python API); on a VM host, its
        agent runs it in the guest (the ops channel: no stdin, output capped)."""
        ns = self.namespace_of(container)
        if not self.on_vm(container):
            return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check)
        from vxlab import hostops

        async def go(c: Client) -> Any:
            return await hostops.exec_(c, await hostops.host_of(c, container), container, list(cmd))
        r = self.call(go)
        done = subprocess.CompletedProcess(["ip", "netns", "exec", ns, *cmd], r.exit_code,
                                           r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
        if check:
            done.check_returncode()
        return done

    def vm_hosts(self) -> dict[str, str]:
        """The lab's VM hosts and how each runs: "kvm", "tcg" ("" before its first boot)."""
        return {h: vmhost.accel(self.state.dir, h).get("accel", "") for h in vmhost.vm_hosts(self.state.topology)}

    def on_vm(self, container: str) -> bool:
        """The container is on a VM host (its namespace is in that host's guest)."""
        vms = vmhost.vm_hosts(self.state.topology)
        if not vms:
            return False
        host = next((c.host for c in (self.state.topology.containers if self.state.topology else ())
                     if c.name == container), None)
        if host is None:
            eps = self.call(lambda c: c.list_endpoints(name=container))
            host = eps[0].host if eps else None
        return host in vms

    def container(self, name: str, *, host: str, networks: list[str], ip: str = "",
                  aliases: tuple[str, ...] = (), ports: tuple[PortMapping, ...] = ()) -> list[Endpoint]:
        """Attach a new container (`container run`; `aliases` on each of its networks,
        `ports` published) and wait until every agent programmed it."""
        eps = self.call(lambda c: containers.run(c, name, host=host, networks=networks, ip=ip, aliases=aliases,
                                                 ports=ports))
        self.wait_converged()
        return eps

    def remove_container(self, name: str) -> int:
        """Remove a container, all its endpoints (`container rm`; none: NotFound), and wait
        until every agent removed it."""
        n = self.call(lambda c: containers.remove(c, name))
        self.wait_converged()
        return n

    # --- network policy (see vxlab.policy) -------------------------------------------------
    def add_policy(self, rule: Policy) -> Policy:
        """Add a policy rule (`policy add`) and wait until every agent enforces it."""
        created = self.call(lambda c: c.create_policy(rule))
        self.wait_converged()
        return created

    def remove_policy(self, network: str, name: str) -> None:
        self.call(lambda c: c.delete_policy(network, name))
        self.wait_converged()

    def policies(self, *, network: str = "") -> list[Policy]:
        return self.call(lambda c: c.list_policies(network=network))

    # --- services (see vxlab.services) -----------------------------------------------------
    def add_service(self, service: Service) -> Service:
        """Create a service (`service create`) and wait until every agent balances it."""
        created = self.call(lambda c: c.create_service(service))
        self.wait_converged()
        return created

    def remove_service(self, network: str, name: str) -> None:
        self.call(lambda c: c.delete_service(network, name))
        self.wait_converged()

    # --- faults (see vxlab.lab.faults) -----------------------------------------------------
    def add_fault(self, kind: str, *, duration: float | None = None, **params: Any) -> Fault:
        """Inject a fault (`partition`, `loss`, `host-crash`, …); returns its record."""
        return faults.add(self, kind, duration=duration, **params)

    def heal(self, fault_id: str | None = None) -> list[Fault]:
        """Heal one fault, or every active fault when `fault_id` is None."""
        return faults.heal_all(self) if fault_id is None else [faults.heal(self, fault_id)]

    def faults(self) -> list[Fault]:
        return faults.listing(self)

    @contextmanager
    def fault(self, kind: str, **params: Any) -> Iterator[Fault]:
        """`with lab.fault("partition", hosts=["h1"], from_=["h2"]):` — healed on exit."""
        f = self.add_fault(kind, **params)
        try:
            yield f
        finally:
            self.heal(f.id)

    # --- down ------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every process and remove every namespace of the lab; then its directory."""
        faults.stop_timers(self)
        self.state = LabState.load(self.name) or self.state  # a heal may have restarted processes
        removed = []
        dockerhost.sweep(self.state.dir)  # first: `docker rm` asks the plugin, which asks the controller
        for host, proc in self.state.agents.items():
            if not proc.vm:  # a VM host's agent goes with its VM (below)
                proc.stop()
        if self.state.controller:
            self.state.controller.stop()
        for proc in self.state.etcd:
            proc.stop()
        vmhost.sweep(self.state.dir)  # QEMU, taps, run directories: also of an `up` killed while booting
        for proc in self.supervisor.orphans():  # started by an `up` that crashed before saving
            proc.stop()
        for ns in underlay.netns_list():
            if not self.layout.owns(ns):
                continue
            path = f"/run/netns/{ns}"
            if os.path.isfile(path) and not os.path.ismount(path):
                os.unlink(path)  # a stale file, no namespace: an agent killed while creating it
                removed.append(ns)
            elif ns in self.state.namespaces or underlay.marker(ns).startswith("vxlab:"):
                underlay.delete_ns(ns)
                removed.append(ns)
        shutil.rmtree(lab_dir(self.name), ignore_errors=True)
        neigh.release(lab_dir(self.name))
        self.state = LabState(self.name)
        return removed

    # --- context manager (Python API) ---------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, *, name: str | None = None) -> Lab:
        topo = load(path)
        lab = cls(name or topo.name)
        lab.topology = topo
        return lab

    def __enter__(self) -> Lab:
        if self.topology is None:
            raise procs.LabError("no topology: use Lab.from_file(path)")
        self.up(self.topology)
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

