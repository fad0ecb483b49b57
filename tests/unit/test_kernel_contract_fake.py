"""Runs the kernel contract suite (tests/contract_kernel.py) on `FakeKernel`, and checks
that the suite covers every method of the contract."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract_kernel import KernelContract, Outside, uncovered
from vxlab.testing.fakekernel import FakeKernel, _Ns
from vxlab.agent.kernel import Link, Route, Underlay


class FakeOutside(Outside):
    """What another program would do, done to the fake's tables."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.k = kernel
        self.prefix = "vxt000000-"
        self.underlay = Underlay("172.31.12.1", "u0", 1500)

    def _ns(self, ns: str) -> _Ns:
        return self.k.own if not ns else self.k.ns[ns]

    def netns(self, name: str) -> None:
        self.k.ns[name] = _Ns("")

    def remove_netns(self, name: str) -> None:
        del self.k.ns[name]
        for end, other in list(self.k.peers.items()):  # its veths go, and their peers with them
            if end[0] == name:
                self.k.peers.pop(end, None)
                self.k.peers.pop(other, None)
                self.k._drop_link(*other)

    def move(self, ns: str, name: str, into: str) -> None:
        self.k._move((ns, name), into)

    def link(self, ns: str, name: str, kind: str, *, alias: str = "") -> None:
        self._ns(ns).links[name] = Link(name, kind, alias=alias, mtu=1500, vni=7 if kind == "vxlan" else 0)

    def aliases(self, ns: str) -> dict[str, str]:
        return {"lo": self._ns(ns).marker} | {name: link.alias for name, link in self._ns(ns).links.items()}

    def arp(self, ns: str, dev: str, ip: str, mac: str) -> None:
        self._ns(ns).arp[(dev, ip)] = mac

    def neighbours(self, ns: str, dev: str) -> dict[str, tuple[str, bool]]:
        n = self._ns(ns)
        return ({ip: (mac, False) for (d, ip), mac in n.arp.items() if d == dev}
                | {e.ip: (e.mac, True) for e in n.neigh.values() if e.dev == dev})

    def route(self, ns: str, dst: str, dev: str) -> None:
        self._ns(ns).routes.add(Route(dst, "", dev))

    def sysctl(self, ns: str, key: str) -> str:
        return self.k.sysctls.get((ns, key), "")

    def root_qdisc(self, dev: str) -> None:
        self.k.foreign_qdiscs[dev] = "pfifo 1:"


class TestFakeKernelContract(KernelContract):
    @pytest.fixture
    def kernel(self) -> FakeKernel:
        return FakeKernel(Underlay("172.31.12.1", "u0", 1500))

    @pytest.fixture
    def outside(self, kernel: FakeKernel) -> FakeOutside:
        return FakeOutside(kernel)


def test_every_kernel_method_has_contract_tests() -> None:
    """A method added to `Kernel` (agent/kernel.py) gets its tests in
    tests/contract_kernel.py, which then run on both implementations."""
    assert uncovered() == []
