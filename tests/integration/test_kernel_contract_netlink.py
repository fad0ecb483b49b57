"""Runs the kernel contract suite (tests/contract_kernel.py) on `NetlinkKernel` and the
real kernel (root).

Each test gets a fresh prefix `vxt<6 hex>-` and a throwaway namespace `<prefix>h` as
the kernel's own (the agent's), with an underlay device `u0` (172.31.12.1/24, a veth
to `u1`). The kernel is created and called in one worker thread that entered it
(`OneThread`: pyroute2 keeps its sockets per thread, and setns changes only the
calling thread), so the pytest process never changes namespace. Everything with the
prefix is removed afterwards, also when the test fails. `Outside` uses `ip`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract_kernel import KernelContract, Outside  # noqa: E402
from vxlab import netns  # noqa: E402
from vxlab.agent.kernel import Underlay  # noqa: E402
from vxlab.agent.netlink import NetlinkKernel  # noqa: E402

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20).stdout


class OneThread:
    """A NetlinkKernel made and called in one worker thread inside namespace `host`:
    every method call runs there; attributes (`writes`, `interrupt`) are the kernel's."""

    def __init__(self, host: str) -> None:
        pool = ThreadPoolExecutor(max_workers=1, initializer=netns.enter, initargs=(host,))
        object.__setattr__(self, "_pool", pool)
        object.__setattr__(self, "_kernel", pool.submit(NetlinkKernel).result(timeout=60))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._kernel, name)
        if not callable(attr):
            return attr
        return lambda *args, **kw: self._pool.submit(attr, *args, **kw).result(timeout=60)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._kernel, name, value)

    def shutdown(self) -> None:
        try:
            self._pool.submit(self._kernel.close).result(timeout=60)
        finally:
            self._pool.shutdown()


class IpOutside(Outside):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.host = prefix + "h"
        self.underlay = Underlay("172.31.12.1", "u0", 1500)

    def _n(self, ns: str) -> list[str]:
        return ["-n", ns or self.host]

    def netns(self, name: str) -> None:
        ip("netns", "add", name)

    def remove_netns(self, name: str) -> None:
        ip("netns", "del", name)

    def link(self, ns: str, name: str, kind: str, *, alias: str = "") -> None:
        extra = ["id", "7", "dstport", "4789"] if kind == "vxlan" else []
        ip(*self._n(ns), "link", "add", name, "type", kind, *extra)
        if alias:
            ip(*self._n(ns), "link", "set", name, "alias", alias)

    def move(self, ns: str, name: str, into: str) -> None:
        ip(*self._n(ns), "link", "set", name, "netns", into)

    def aliases(self, ns: str) -> dict[str, str]:
        return {link["ifname"]: link.get("ifalias", "") for link in json.loads(ip(*self._n(ns), "-j", "link", "show"))}

    def arp(self, ns: str, dev: str, ip_: str, mac: str) -> None:
        ip(*self._n(ns), "neigh", "replace", ip_, "lladdr", mac, "dev", dev, "nud", "stale")

    def neighbours(self, ns: str, dev: str) -> dict[str, tuple[str, bool]]:
        found = json.loads(ip(*self._n(ns), "-4", "-j", "neigh", "show", "dev", dev))
        return {e["dst"]: (e.get("lladdr", ""), "PERMANENT" in e.get("state", [])) for e in found}

    def route(self, ns: str, dst: str, dev: str) -> None:
        ip(*self._n(ns), "route", "add", dst, "dev", dev)

    def sysctl(self, ns: str, key: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", ns or self.host, "sysctl", "-n", key.replace("/", ".")],
                              capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""


    def root_qdisc(self, dev: str) -> None:
        subprocess.run(["tc", "-n", self.host, "qdisc", "add", "dev", dev, "root", "handle", "1:", "pfifo"], check=True,
                       capture_output=True, timeout=20)


def _cleanup(prefix: str) -> None:
    for name in ip("netns", "list").split():
        if name.startswith(prefix):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


class TestNetlinkKernelContract(KernelContract):
    @pytest.fixture
    def outside(self) -> Iterator[IpOutside]:
        outside = IpOutside(f"vxt{secrets.token_hex(3)}-")
        try:
            ip("netns", "add", outside.host)
            for cmd in ("link set lo up", "link add u0 type veth peer name u1", "addr add 172.31.12.1/24 dev u0",
                        "link set u0 up", "link set u1 up"):
                ip("-n", outside.host, *cmd.split())
            yield outside
        finally:
            _cleanup(outside.prefix)
        assert not [n for n in ip("netns", "list").split() if n.startswith(outside.prefix)]

    @pytest.fixture
    def kernel(self, outside: IpOutside) -> Iterator[OneThread]:
        kernel = OneThread(outside.host)
        try:
            yield kernel
        finally:
            kernel.shutdown()
