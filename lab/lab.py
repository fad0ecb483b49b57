"""The lab: bring a topology up on this machine, change it, look at it, tear it down.

`Lab.up(topology)` starts (or keeps) the lab's etcd and controller, the underlay
switch and one namespace per host with its own agent process inside, then applies
networks and containers through the controller's API and waits until every agent
reports it has programmed the controller's current revision. On a running lab it
applies every difference, or refuses (lab/plan.py). `Lab.down()` removes everything
the lab made, also after a crash (it works from state.json and from the `vx-<lab>.`
name prefix + marker).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from vxlab.client import Client
from vxlab.errors import VxError
from vxlab.errors import InvalidArgument
from vxlab.lab import apply as lab_apply
from vxlab.lab import plan as lab_plan
from vxlab.lab import converge, doctor, neigh, procs, underlay
from vxlab.lab.plan import Step
from vxlab.lab import check as lab_check
from vxlab.lab.check import CheckResult, Probe
from vxlab.lab.state import LabState, Proc, check_lab_name, lab_dir, lab_marker, ns_prefix
from vxlab.lab.topology import Topology, load, to_dict
from vxlab.model import Endpoint, Host, Network, Policy

T = TypeVar("T")
LEASE_TTL = 5
PREREGISTER_TTL = 120  # until each host's own agent registers (and replaces this lease)


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
        self.topology: Topology | None = None

    # --- names -----------------------------------------------------------------
    @property
    def socket(self) -> str:
        return self.state.socket

    def host_ns(self, host: str) -> str:
        return f"{ns_prefix(self.name)}{host}"

    def agent_prefix(self, host: str) -> str:
        return f"{ns_prefix(self.name)}{host}."

    def container_ns(self, host: str, container: str) -> str:
        return f"{self.agent_prefix(host)}c-{container}"

    @property
    def switch_ns(self) -> str:
        return f"{ns_prefix(self.name)}sw"

    def outside_ip(self) -> str:
        """The lab's outside address (the underlay's first address, on the switch)."""
        import ipaddress

        subnet = self.state.topology.get("underlay", {}).get("subnet", "172.30.0.0/24")
        return str(ipaddress.IPv4Network(subnet).network_address + 1)

    # --- API access --------------------------------------------------------------
    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        async def go() -> T:
            async with Client(self.socket, timeout=15, tls=self.state.client_tls()) as c:
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
        doctor.preflight()  # before anything is made: one line naming all that is missing
        planned = planned or self.plan(topo, recreate=recreate)
        if planned.refused:
            raise procs.LabError(planned.refusal)
        steps = planned.steps
        self.topology = topo
        self.state.topology = to_dict(topo)
        self.state.save()
        raised = neigh.hold(lab_dir(self.name))
        if raised:
            (notice or progress)(raised)
        if not any(p.alive() for p in self.state.etcd):  # a cluster with a member down still runs
            progress("starting etcd" + (f" ({topo.etcd_members} members)" if topo.etcd_members > 1 else ""))
            procs.start_etcd(self.state, members=topo.etcd_members)
        if not self.running():
            progress("starting the controller")
            self.state.lease_ttl = lease_ttl_for(len(topo.hosts))
            procs.start_controller(self.state, lease_ttl=self.state.lease_ttl)
        self._readdress(topo, steps)
        self._underlay(topo, progress)
        # New hosts are registered before their agents start, and the containers created
        # before too: each new agent then starts from one snapshot holding everything and
        # programs it in one pass, instead of every agent replaying every create.
        self._preregister(topo)
        self._special_containers(topo, create=False)  # before an agent wants the name
        progress("applying networks and containers")
        self._apply(topo, steps)
        self._hosts(topo, progress)
        progress("waiting for agents to converge")
        self.wait_converged(timeout=60 + 2 * len(topo.hosts), tell=notice or progress)
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
        mark = lab_marker(self.name)
        if self.switch_ns not in existing:
            progress("creating the underlay switch")
            self.state.intend(self.switch_ns)
            net = topo.underlay.network
            underlay.create_switch(self.switch_ns, mark=mark, mtu=topo.underlay.mtu,
                                   outside=f"{net.network_address + 1}/{net.prefixlen}")
        prefix_len = topo.underlay.subnet.split("/")[1]
        new = [(underlay.SimHost(h.name, self.host_ns(h.name), h.underlay_ip, f"{h.underlay_ip}/{prefix_len}"),
                f"vxu-{_port_id(h.name)}") for h in topo.hosts if self.host_ns(h.name) not in existing]
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
            underlay.create_ns(ns, mark=lab_marker(self.name))
        for ns in sorted(existing - want):
            if ns in self.state.namespaces and underlay.marker(ns) == lab_marker(self.name) and ".c-" in ns:
                underlay.delete_ns(ns)

    def network_modes(self) -> dict[str, tuple[str, str]]:
        """Containers with a network_mode: name -> (mode, host), from the applied topology
        (the controller knows only containers with endpoints)."""
        return self._modes()

    def _modes(self) -> dict[str, tuple[str, str]]:
        """Containers with a network_mode: name -> (mode, host), from the applied topology."""
        return {c["name"]: (c["network_mode"], c["host"]) for c in self.state.topology.get("containers", [])
                if c.get("network_mode")}

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

    def _hosts(self, topo: Topology, progress: Callable[[str], None]) -> None:
        want = {h.name for h in topo.hosts}
        for gone in sorted(set(self.state.agents) - want):
            progress(f"removing host {gone}")
            self.remove_host(gone)
        todo = [(h.name, self.host_ns(h.name), self.agent_prefix(h.name)) for h in topo.hosts
                if (p := self.state.agents.get(h.name)) is None or not p.alive()]
        if todo:
            progress(f"starting {len(todo)} agents")
            procs.start_agents(self.state, todo)
        progress("waiting for agents to register")

        def registered() -> bool:  # each agent's status file says so (no RPC per poll)
            if dead := sorted(h for h in want if not self.state.agents[h].alive()):
                raise procs.LabError(f"the agent of {', '.join(dead)} exited before registering "
                                     f"(see {self.state.dir / 'logs'}/agent-{dead[0]}.log)")
            return all((a := self.agent_status(h)).get("registered") and a.get("pid") == self.state.agents[h].pid
                       for h in want)
        procs.wait_for(registered, "every agent to register (see the agent logs in "
                       f"{self.state.dir / 'logs'})", timeout=60 + len(want), interval=0.1)

    def _apply(self, topo: Topology, steps: list[Step]) -> None:
        gone = {s.name for s in steps if s.kind == "network" and s.op == "-"}
        if not gone & {s.name for s in steps if s.kind == "network" and s.op == "+"}:
            self.call(lambda c: lab_apply.apply(c, topo, steps))
            return
        # A network recreated: the agents take the old one down entirely (namespaces, NAT,
        # policy tables) before the new one, by the same name, is created.
        first = range(lab_plan.CONTROLLER.start, lab_plan.NETWORK_DEL + 1)
        self.call(lambda c: lab_apply.apply(c, topo, steps, phases=first))
        self.wait_converged(timeout=60 + 2 * len(topo.hosts))
        self.call(lambda c: lab_apply.apply(c, topo, steps, phases=range(first.stop, lab_plan.CONTROLLER.stop)))

    def remove_host(self, host: str) -> None:
        proc = self.state.agents.pop(host, None)
        if proc:
            proc.stop()
        for ns in underlay.netns_list():
            if ns.startswith(self.agent_prefix(host)) or ns == self.host_ns(host):
                underlay.delete_ns(ns)
        if self.running():
            try:
                self.call(lambda c: c.deregister_host(host, force=True))
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.state.save()

    def agent_status(self, host: str) -> dict[str, Any]:
        try:
            return json.loads(procs.agent_status_path(self.state, host).read_text())
        except (OSError, ValueError):
            return {}

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
        ns = self.container_ns(next((c["host"] for c in self.state.topology.get("containers", [])
                                     if c["name"] == container), ""), container)
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
        for name, proc in sorted(self.state.agents.items()):
            a = self.agent_status(name)
            h = hosts.get(name)
            rows.append({"name": name, "underlay_ip": h.underlay_ip if h else a.get("underlay_ip", ""),
                         "alive": bool(h and h.alive), "agent_running": proc.alive(),
                         "applied_revision": a.get("applied_revision", 0),
                         "converged": bool(a.get("converged")) and a.get("applied_revision", 0) >= st["revision"]})
        st["hosts"] = rows
        st["converged"] = all(r["converged"] for r in rows)
        st["lease_ttl"] = self.state.lease_ttl
        st["faults"] = [f.describe() + f" [{f.id}]" for f in self.faults()]
        return st

    def check(self, **kw: Any) -> CheckResult:
        """Every expectation, probed by the agents (lab/check.py); and, from this machine,
        that a `network_mode: none` container (no agent manages it) reaches nobody."""
        eps, rules = self.call(lambda c: asyncio.gather(c.list_endpoints(), c.list_policies()))
        result = self.call(lambda c: lab_check.run(c, eps, policies=rules, **kw))
        isolated = [n for n, (mode, _) in self._modes().items() if mode == "none"]
        extra = lab_check.run_local([Probe(n, e.name, e.network, e.ip, expect=False) for n in isolated for e in eps],
                                    self.namespace_of, timeout=0.5)
        return CheckResult(result.probes + extra.probes)

    def trace(self, src: str, dst: str, *, network: str = "", count: int = 3) -> Any:
        """The path from container `src` to `dst` (on their shared network, or `network`),
        with a live underlay capture decoded as VXLAN, through the agents (lab/trace.py)."""
        from vxlab.lab import trace

        places = trace.Places(host=self.host_ns,
                              underlay=("underlay switch", "vxsw", "bridged to the destination host's port"))
        try:
            return self.call(lambda c: trace.trace(c, src, dst, network=network, count=count, places=places))
        except InvalidArgument as e:
            raise procs.LabError(e.message) from None

    def exec(self, container: str, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command inside a container's namespace (Python API)."""
        return subprocess.run(["ip", "netns", "exec", self.namespace_of(container), *cmd],
                              capture_output=True, text=True, check=check)

    def container(self, name: str, *, host: str, networks: list[str], ip: str = "") -> list[Endpoint]:
        """Attach a new container (`container run`) and wait until every agent programmed it."""
        async def go(c: Client) -> list[Endpoint]:
            return list(await asyncio.gather(*(c.create_endpoint(Endpoint(name=name, network=n, host=host,
                                                                            ip=ip if i == 0 else ""))
                                               for i, n in enumerate(networks))))
        eps = self.call(go)
        self.wait_converged()
        return eps

    def remove_container(self, name: str) -> int:
        async def go(c: Client) -> int:
            eps = await c.list_endpoints(name=name)
            if not eps:
                raise procs.LabError(f"container: no container named {name!r}")
            await asyncio.gather(*(c.delete_endpoint(e.network, name) for e in eps))
            return len(eps)
        n = self.call(go)
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

    # --- faults (see vxlab.lab.faults) -----------------------------------------------------
    def add_fault(self, kind: str, *, duration: float | None = None, **params: Any) -> Any:
        """Inject a fault (`partition`, `loss`, `host-crash`, …); returns its record."""
        from vxlab.lab import faults

        return faults.add(self, kind, duration=duration, **params)

    def heal(self, fault_id: str | None = None) -> list[Any]:
        """Heal one fault, or every active fault when `fault_id` is None."""
        from vxlab.lab import faults

        return faults.heal_all(self) if fault_id is None else [faults.heal(self, fault_id)]

    def faults(self) -> list[Any]:
        from vxlab.lab import faults

        return faults.listing(self)

    @contextmanager
    def fault(self, kind: str, **params: Any) -> Iterator[Any]:
        """`with lab.fault("partition", hosts=["h1"], from_=["h2"]):` — healed on exit."""
        f = self.add_fault(kind, **params)
        try:
            yield f
        finally:
            self.heal(f.id)

    # --- down ------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every process and remove every namespace of the lab; then its directory."""
        from vxlab.lab import faults

        faults.stop_timers(self)
        self.state = LabState.load(self.name) or self.state  # a heal may have restarted processes
        removed = []
        for host, proc in self.state.agents.items():
            proc.stop()
        if self.state.controller:
            self.state.controller.stop()
        for proc in self.state.etcd:
            proc.stop()
        for proc in _orphans(lab_dir(self.name)):  # started by an `up` that crashed before saving
            proc.stop()
        for ns in underlay.netns_list():
            if not ns.startswith(ns_prefix(self.name)):
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


def _orphans(directory: Path) -> list[Proc]:
    """Processes whose command line names the lab's directory (its sockets, data, status)."""
    needle = str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(Proc.of(int(entry.name)))
            except OSError:
                continue
    return found


def _port_id(host: str) -> str:
    """A short, stable switch-port suffix for a host (port names are <= 15 chars)."""
    import hashlib

    return hashlib.sha1(host.encode()).hexdigest()[:8]
