"""Where vxlab puts things: every namespace name, switch port, marker and label, from a prefix.

One agent (`Layout`): its namespaces are `<prefix>n-<network>` (the network's bridge,
VXLAN device and veth ends) and `<prefix>c-<container>` (one ethN per network). The
prefix is `vx-` on a real host; a lab's host has `vx-<lab>.<host>.`. The agent registers
it as its host's label `vxlab/netns-prefix`, so anyone can find a container's namespace
(`vxlab container inspect`'s SandboxKey) from the host alone (`Layout.of_host`).
Markers, the ifalias of a namespace's `lo`: `vxlab:<host>:net:<network>`,
`vxlab:<host>:ctr:<container>`. An agent only changes a namespace whose marker names its
own host and whose name is the one it gives that object (`owns_ns`), so an agent with
the default prefix on a machine that also runs a lab never takes the lab's namespaces.

Hosts that share one kernel (`LabLayout`: a lab, the test rig): `<prefix><host>` each
host's namespace, whose agent has the prefix `<prefix><host>.`; `<prefix>sw` the underlay
switch; `vxu-<8 hex of sha1(host)>` a host's port on the switch (link names are at most
15 characters; a VM host's tap has that name too); a marker on everything it makes
(`vxlab:lab:<lab>` for a lab). A lab's prefix is `vx-<lab>.`: lab names hold no dot,
so one lab's prefix is never a prefix of another's. Link names inside the agent's
namespaces are vxlab.agent.names.

An endpoint whose container namespace belongs to a runtime (`Endpoint.runtime`:
docker, cni) gets no namespace: the container end of its veth waits in the agent's
own namespace under its handoff name (`handoff_link`: `vxh` + 11 hex digits of the
endpoint's id, 14 characters) until the runtime moves it into the container.

Nothing else formats a namespace name: the agent, the lab, the CLI and the tests ask here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vxlab import validate

if TYPE_CHECKING:
    from vxlab.model import Endpoint, Host

MARK = "vxlab:"  # every ifalias vxlab sets starts with it
DEFAULT_PREFIX = "vx-"
PREFIX_LABEL = "vxlab/netns-prefix"  # the host label carrying its agent's prefix
LAB_NAME_MAX = 11  # a lab's name prefixes namespace names
LAB_MARK = f"{MARK}lab:"


def check_lab_name(name: str, *, field: str = "lab") -> str:
    """A lab name names a directory under the run root and prefixes namespace names:
    the rules of every other name (no '/', '..', spaces, quotes, …), at most 11."""
    return validate.name(name, field=field, max_len=LAB_NAME_MAX)


@dataclass(frozen=True)
class Layout:
    """The namespaces and markers of one host's agent."""

    host: str
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def of_host(cls, host: Host) -> Layout:
        """The layout the host's agent registered with (its prefix label; else the default)."""
        return cls(host.name, host.labels.get(PREFIX_LABEL) or DEFAULT_PREFIX)

    def labels(self) -> dict[str, str]:
        """What the agent registers with its host, so others find its namespaces."""
        return {PREFIX_LABEL: self.prefix}

    def network_ns(self, network: str) -> str:
        return f"{self.prefix}n-{network}"

    def container_ns(self, container: str) -> str:
        return f"{self.prefix}c-{container}"

    def is_network_ns(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}n-")

    @staticmethod
    def handoff_link(endpoint: Endpoint | str) -> str:
        """The name of a runtime endpoint's container end (given the endpoint or its id)
        while it waits in the agent's own namespace for the runtime to take it."""
        endpoint_id = endpoint if isinstance(endpoint, str) else endpoint.id
        return f"vxh{endpoint_id[:11]}"

    def network_marker(self, network: str) -> str:
        return f"{MARK}{self.host}:net:{network}"

    def container_marker(self, container: str) -> str:
        return f"{MARK}{self.host}:ctr:{container}"

    def owns(self, marker: str) -> bool:
        """A namespace marker written by this host's agent."""
        return marker.startswith(f"{MARK}{self.host}:")

    def owns_ns(self, name: str, marker: str) -> bool:
        """A namespace this agent made: its marker names this host, and the name is the
        one this agent gives the object the marker names. An agent with the default
        prefix `vx-` on a machine that also runs a lab with a host of the same name thus
        never takes the lab's `vx-<lab>.<host>.n-…` namespaces for its own."""
        if not self.owns(marker):
            return False
        kind, _, obj = marker[len(f"{MARK}{self.host}:"):].partition(":")
        expected = {"net": self.network_ns, "ctr": self.container_ns}.get(kind)
        return expected is not None and name == expected(obj)


@dataclass(frozen=True)
class LabLayout:
    """Hosts sharing one kernel under one prefix, and the marker of what they make."""

    prefix: str
    marker: str

    @classmethod
    def of_lab(cls, name: str) -> LabLayout:
        return cls(f"vx-{check_lab_name(name)}.", f"{LAB_MARK}{name}")

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}sw"

    def owns(self, ns: str) -> bool:
        """A namespace name under this prefix (whether it is really ours: its marker)."""
        return ns.startswith(self.prefix)

    def host_ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def agent(self, host: str) -> Layout:
        """The layout of the agent of `host`."""
        return Layout(host, f"{self.host_ns(host)}.")

    def network_ns(self, host: str, network: str) -> str:
        return self.agent(host).network_ns(network)

    def container_ns(self, host: str, container: str) -> str:
        return self.agent(host).container_ns(container)

    def is_container_ns(self, ns: str) -> bool:
        """The name of a container's namespace on one of these hosts."""
        return self.owns(ns) and ".c-" in ns

    @staticmethod
    def port(host: str) -> str:
        """The switch-side end of a host's underlay link: short and stable (<= 15 chars)."""
        return f"vxu-{hashlib.sha1(host.encode()).hexdigest()[:8]}"

    @classmethod
    def vm_tap(cls, host: str) -> str:
        """The tap of a VM host (vxlab.lab.vm) on the switch: its switch port, by the
        name a namespace host's veth end has, so what acts on a host's port (link-down,
        loss, the ingress side of rate) acts on a VM host's alike."""
        return cls.port(host)
