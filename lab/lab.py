"""The lab: bring a topology up on this machine, change it, look at it, tear it down.

`Lab` is the lab's public API (`from vxlab import Lab`; the CLI and the benchmarks use
nothing else). It is built in three parts: lab/handle.py (`LabHandle`: state, names,
processes, the controller's client, the agents' status), lab/lifecycle.py
(`Lifecycle`: `plan`, `up`, `down`, what they make and unmake) and this module: looking
at a running lab (containers, status, check, trace, exec), changing it in place
(containers, policies, services, faults) and the context manager of the Python API.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vxlab import containers
from vxlab.client import Client
from vxlab.errors import InvalidArgument, VxError
from vxlab.lab import check as lab_check
from vxlab.lab import dockerhost, faults, hostns, procs, vmhost
from vxlab.lab.check import CheckResult, Expectation
from vxlab.lab.faults import Fault
from vxlab.lab.lifecycle import Lifecycle
from vxlab.lab.state import LabState, list_labs  # noqa: F401 - list_labs: for the CLI
from vxlab.lab.topology import load
from vxlab.model import Endpoint, Host, Policy, PortMapping, Service


class Lab(Lifecycle):
    """A lab on this machine by name; `Lab.from_file(path)` for a topology file's."""

    def network_modes(self) -> dict[str, tuple[str, str]]:
        """Containers with a network_mode: name -> (mode, host), from the applied topology
        (the controller knows only containers with endpoints)."""
        return self._modes()

    def _modes(self) -> dict[str, tuple[str, str]]:
        """Containers with a network_mode: name -> (mode, host), from the applied topology."""
        topo = self.state.topology
        return {c.name: (c.network_mode, c.host) for c in (topo.containers if topo else ()) if c.network_mode}

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
        if ns in hostns.netns_list():  # from the topology file: no control plane needed
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
        alone = [Expectation(n, e.name, e.network, e.ip, expect=False) for n in isolated for e in eps]
        extra = lab_check.run_local(alone, self.namespace_of, timeout=0.5)
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
        """Run a command inside a container's namespace (Python API); on a VM host or in a
        runtime's container, its agent runs it (the ops channel: no stdin, output capped)."""
        if not self.by_agent(container):
            ns = self.namespace_of(container)
            return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check)
        ns = container
        from vxlab import hostops

        async def go(c: Client) -> Any:
            return await hostops.exec_(c, await hostops.host_of(c, container), container, list(cmd))
        r = self.call(go)
        done = subprocess.CompletedProcess(["ip", "netns", "exec", ns, *cmd], r.exit_code,
                                           r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
        if check:
            done.check_returncode()
        return done

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

    def vm_hosts(self) -> dict[str, str]:
        """The lab's VM hosts and how each runs: "kvm", "tcg" ("" before its first boot)."""
        return {h: vmhost.accel(self.state.dir, h).get("accel", "") for h in vmhost.vm_hosts(self.state.topology)}

    def by_agent(self, container: str) -> bool:
        """Its agent runs commands in it (the ops channel): a VM host's container (its
        namespace is in the guest) or a runtime's (Docker, CNI: the namespace its endpoint
        records, which the agent opens)."""
        topo = self.state.topology
        vms = vmhost.vm_hosts(topo)
        host = next((c.host for c in (topo.containers if topo else ()) if c.name == container), None)
        if host is not None:  # one of the topology's: vxlab's own
            return host in vms
        eps = self.call(lambda c: c.list_endpoints(name=container))
        return bool(eps) and (eps[0].host in vms or any(e.runtime for e in eps))

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
