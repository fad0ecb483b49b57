"""Bringing a lab up and down: `Lifecycle.up(topology)` and `Lifecycle.down()`.

`up` starts (or keeps) the lab's etcd and controller, the underlay switch and one
namespace per host with its own agent process inside (a VM host is a QEMU guest with
its agent inside instead, lab/vmhost.py), then applies networks and containers through
the controller's API and waits until every agent reports it has programmed the
controller's current revision. On a running lab it applies every difference, or
refuses (`plan`, lab/plan.py). `down` removes everything the lab made, also after a
crash (it works from state.json and from the `vx-<lab>.` name prefix + marker).
`Lab` (lab/lab.py) is the public class; this is the part of it that makes and unmakes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable

from vxlab.client import Client
from vxlab.lab import apply as lab_apply
from vxlab.lab import dockerhost, faults, hostns, neigh, procs, vm, vmhost
from vxlab.lab import plan as lab_plan
from vxlab.lab.handle import LabHandle
from vxlab.lab.plan import Step
from vxlab.lab.state import LabState, lab_dir
from vxlab.lab.topology import Topology
from vxlab.model import Host

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


class Lifecycle(LabHandle):
    """`plan`, `up`, `remove_host` and `down` of a lab."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._boots = vmhost.Boots()  # VM hosts booting during an `up`

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
                hostns.batch(["addr flush dev eth0", f"addr add {h.underlay_ip}/{prefix_len} dev eth0"],
                             ns=self.host_ns(h.name))

    def _underlay(self, topo: Topology, progress: Callable[[str], None]) -> None:
        existing = set(hostns.netns_list())
        mark = self.layout.marker
        if self.switch_ns not in existing:
            progress("creating the underlay switch")
            self.state.intend(self.switch_ns)
            net = topo.underlay.network
            hostns.create_switch(self.switch_ns, mark=mark, mtu=topo.underlay.mtu,
                                 outside=f"{topo.underlay.switch_ip}/{net.prefixlen}",
                                 control=f"{topo.underlay.control_ip}/{net.prefixlen}"
                                 if topo.control == "underlay" else "")
        prefix_len = topo.underlay.subnet.split("/")[1]
        new = [(hostns.SimHost(h.name, self.host_ns(h.name), h.underlay_ip, f"{h.underlay_ip}/{prefix_len}"),
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
            hostns.add_hosts(self.switch_ns, new, mark=mark, mtu=topo.underlay.mtu)

    def _special_containers(self, topo: Topology, *, create: bool = True) -> None:
        """`network_mode: none`: a namespace of the lab's own with only `lo`, nothing the
        agent manages; `host`: the host's namespace itself (nothing to create). Removes
        the lab's namespaces no longer wanted, then (`create`) makes the missing ones."""
        want = {self.container_ns(c.host, c.name) for c in topo.containers if c.network_mode == "none"}
        existing = set(hostns.netns_list())
        for ns in sorted(want - existing) if create else ():
            self.state.intend(ns)
            hostns.create_ns(ns, mark=self.layout.marker)
        for ns in sorted(existing - want):
            if ns in self.state.namespaces and hostns.marker(ns) == self.layout.marker and self.layout.is_container_ns(ns):
                hostns.delete_ns(ns)

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
            procs.host_tls(self.state, host)  # the plugin's certificate for its endpoints (the admin's: networks)
            pki = self.state.pki
            dockerhost.start(self.state.dir, host=host, lab=self.name, netns=self.host_ns(host),
                             pki=pki.dir if pki is not None else None)

    def remove_host(self, host: str) -> None:
        proc = self.state.agents.pop(host, None)
        if dockerhost.host_dir(self.state.dir, host).exists():
            dockerhost.stop(self.state.dir, host)
        if vmhost.run_dir(self.state.dir, host).exists():
            vmhost.remove(self.state.dir, host)  # its agent goes with it
        elif proc:
            proc.stop()
        for ns in hostns.netns_list():
            if ns.startswith(self.layout.agent(host).prefix) or ns == self.host_ns(host):
                hostns.delete_ns(ns)
        if self.running():
            try:
                self.call(lambda c: c.deregister_host(host, force=True))
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.state.save()

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
        for ns in hostns.netns_list():
            if not self.layout.owns(ns):
                continue
            path = f"/run/netns/{ns}"
            if os.path.isfile(path) and not os.path.ismount(path):
                os.unlink(path)  # a stale file, no namespace: an agent killed while creating it
                removed.append(ns)
            elif ns in self.state.namespaces or hostns.marker(ns).startswith("vxlab:"):
                hostns.delete_ns(ns)
                removed.append(ns)
        shutil.rmtree(lab_dir(self.name), ignore_errors=True)
        neigh.release(lab_dir(self.name))
        self.state = LabState(self.name)
        return removed

