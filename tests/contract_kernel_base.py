"""Support of the kernel contract suite (tests/contract_kernel.py): `Outside`, what
another program does behind the kernel's back (each test file implements it for its
kernel), the names the tests use, `counting` (the writes made in a block) and `Base`,
the sections' common steps (a network namespace of ours, a container on it)."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from vxlab.agent.kernel import Kernel, Link, Namespace, PolicyTable, Route, Underlay
from vxlab.agent.policy_nft import build
from vxlab.model import Endpoint, Policy, Selector


NET_MARK, CTR_MARK = "vxlab:h1:net:blue", "vxlab:h1:ctr:web"
BR, VX, VE = "vxb-blue", "vxv-blue", "vxe-web"
BR_ALIAS, VX_ALIAS, EP_ALIAS, UP_ALIAS = "vxlab:bridge:blue", "vxlab:vxlan:blue", "vxlab:ep:web", "vxlab:uplink:blue"
MAC, RMAC = "02:42:0a:0a:00:02", "02:42:0a:0a:00:03"
LO = Link("lo", "loopback", mac="00:00:00:00:00:00", mtu=65536, up=True)



class Outside(ABC):
    """Another program on the same machine: makes what the agent would not (unmarked
    namespaces and links, dynamic ARP entries) and reads what its dump leaves out."""

    prefix: str            # every namespace of the test starts with it
    underlay: Underlay     # what `kernel.underlay()` must find in the kernel's own namespace

    def ns(self, name: str) -> str:
        return self.prefix + name

    @abstractmethod
    def netns(self, name: str) -> None:
        """A namespace without a marker (`ip netns add`)."""

    @abstractmethod
    def remove_netns(self, name: str) -> None:
        """`ip netns del`, behind the kernel's back."""

    @abstractmethod
    def link(self, ns: str, name: str, kind: str, *, alias: str = "") -> None:
        """A link of `kind` ("bridge" or "vxlan") in `ns` ("" = the kernel's own
        namespace) without our marker: no ifalias, or someone else's."""

    @abstractmethod
    def move(self, ns: str, name: str, into: str) -> None:
        """Link `name` of `ns` ("" = the kernel's own) moved into namespace `into`, as a
        runtime takes a handoff end (`ip link set NAME netns INTO`)."""

    @abstractmethod
    def aliases(self, ns: str) -> dict[str, str]:
        """Every link of `ns` ("" = the kernel's own) and its ifalias ("" for none)."""

    @abstractmethod
    def arp(self, ns: str, dev: str, ip: str, mac: str) -> None:
        """A dynamic (stale) ARP entry, as traffic would leave it."""

    @abstractmethod
    def neighbours(self, ns: str, dev: str) -> dict[str, tuple[str, bool]]:
        """Every IPv4 neighbour entry on `dev`: IP -> (MAC, permanent)."""

    @abstractmethod
    def route(self, ns: str, dst: str, dev: str) -> None:
        """An on-link route to `dst` through `dev` (`ip route add`)."""

    @abstractmethod
    def sysctl(self, ns: str, key: str) -> str:
        """/proc/sys/`key` in `ns` ("" = the kernel's own namespace); "" when unset."""

    @abstractmethod
    def root_qdisc(self, dev: str) -> None:
        """Someone else's root qdisc (`pfifo`, handle 1:) on `dev` of the kernel's own namespace."""


@contextmanager
def counting(kernel: Kernel) -> Iterator[Counter[str]]:
    """The writes made inside the block, by method."""
    before, out = Counter(kernel.writes), Counter[str]()
    yield out
    out.update(Counter(kernel.writes) - before)


def nomac(link: Link) -> Link:
    """`link` without its MAC, for links whose MAC the kernel picks."""
    return dataclasses.replace(link, mac="")


def empty(name: str, marker: str, **links: Link) -> Namespace:
    """How the dump shows a namespace holding only `links` (and `lo`, marked)."""
    return Namespace(name, marker, {"lo": dataclasses.replace(LO, alias=marker), **links})



def policy(ip: str) -> PolicyTable:
    """A real policy table: only `web` (10.10.0.2) may reach `ip` on TCP 5432."""
    local = Endpoint("db", "blue", "h1", ip=ip, mac=RMAC)
    web = Endpoint("web", "blue", "h2", ip="10.10.0.2", mac=MAC)
    rule = Policy("db-in", "blue", source=Selector(container="web"), destination=Selector(container="db"),
                  action="allow", protocol="tcp", ports=("5432",))
    closed = Policy("db-closed", "blue", destination=Selector(container="db"), action="deny", priority=900)
    table = build("blue", [local], [local, web], [rule, closed])
    assert table is not None
    return table


class Base:
    """The steps the sections share; no tests."""

    def network(self, kernel: Kernel, outside: Outside, *, vxlan: bool = True) -> str:
        """A network namespace of ours: marked, a bridge and (`vxlan`) a VXLAN device."""
        net = outside.ns("n-blue")
        kernel.create_netns(net, marker=NET_MARK)
        kernel.add_bridge(net, BR, mtu=1450, alias=BR_ALIAS)
        if vxlan:
            kernel.add_vxlan(net, VX, vni=4096, local=outside.underlay.ip, port=4789, mtu=1450, alias=VX_ALIAS,
                             master=BR)
        return net

    def container(self, kernel: Kernel, outside: Outside, net: str, *, mtu: int = 1450) -> str:
        """A container namespace of ours on `net`: eth0 (MAC `MAC`), its host end `VE` on the bridge."""
        ctr = outside.ns("c-web")
        kernel.create_netns(ctr, marker=CTR_MARK)
        kernel.add_veth(net, VE, alias=EP_ALIAS, master=BR, mtu=mtu, peer_ns=ctr, peer_name="eth0", peer_mac=MAC,
                        peer_alias=EP_ALIAS)
        return ctr

