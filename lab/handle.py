"""A lab by name: its state on disk, names, processes and API access (lab/lab.py's base).

`LabHandle(name)` is what every part of the lab works from: the state (state.json, the
applied topology typed), the layout of its names (vxlab.layout.LabLayout), its
processes (lab/supervisor.py), a client of its controller (`call`), and what its agents
last said (`agent_status`, `wait_converged`). It changes nothing on its own: bringing
the lab up and down is lab/lifecycle.py's, looking at it and changing it in place is
`Lab`'s (lab/lab.py), the one public class; the CLI and the benchmarks use only that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from vxlab.agentstatus import AgentStatus
from vxlab.client import Client
from vxlab.errors import InvalidArgument
from vxlab.lab import converge, dockerhost, procs, vmhost
from vxlab.lab.state import LabState, lab_dir
from vxlab.lab.supervisor import Proc, Supervisor
from vxlab.lab.topology import Topology, UnderlaySpec
from vxlab.layout import LabLayout, check_lab_name
from vxlab.tls import TlsConfig

T = TypeVar("T")


class LabHandle:
    """A lab by name (it need not exist): state, names, processes, API access, agents' status."""

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
        dockers = {f"{role}/{h}": p for h in dockerhost.hosts(st.topology)
                   for role, p in dockerhost.running(st.dir, h).items()}
        qemu = {f"vm/{h}": Proc.of(pid) for h in sorted(vmhost.vm_hosts(st.topology))
                for pid in vmhost.machine(st.dir, h).pids()[:1]}
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


    # --- the agents ---------------------------------------------------------------
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

