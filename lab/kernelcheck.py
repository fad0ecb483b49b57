"""Which kernel features this machine really has: each one tried in a throwaway namespace.

Nothing is guessed from the kernel version or a config file (this kernel has no modules
and no /proc/config.gz): a namespace `vxd<6 hex>` (marker `vxlab:doctor` on its `lo`) is
created, each feature is made in it — a veth pair, a bridge, a VXLAN device, an nftables
table, a tbf and a netem qdisc on `lo`, an ESP xfrm state, a WireGuard link — and the
namespace is deleted again, also when a probe fails. Leftovers of a killed run (older
than ten minutes, with our marker) are removed by the next probe. It takes a few tens of
milliseconds.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from vxlab.lab.sysprobe import Ran, System

MARK = "vxlab:doctor"
PREFIX = "vxd"
STALE_S = 600

NS = "{ns}"  # replaced by the throwaway namespace's name
# feature -> (the tools it needs, the command that makes it, the command that undoes it)
FEATURES: dict[str, tuple[tuple[str, ...], list[str], list[str]]] = {
    "veth": (("ip",), ["ip", "-n", NS, "link", "add", "vxd0", "type", "veth", "peer", "name", "vxd1"], []),
    "bridge": (("ip",), ["ip", "-n", NS, "link", "add", "vxdb", "type", "bridge"], []),
    "vxlan": (("ip",), ["ip", "-n", NS, "link", "add", "vxdv", "type", "vxlan", "id", "42", "dstport", "4789"], []),
    "nftables": (("ip", "nft"), ["ip", "netns", "exec", NS, "nft", "add", "table", "ip", "vxdoctor"], []),
    "sch_tbf": (("tc",), ["tc", "-n", NS, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst",
                          "32kbit", "latency", "100ms"], ["tc", "-n", NS, "qdisc", "del", "dev", "lo", "root"]),
    "sch_netem": (("tc",), ["tc", "-n", NS, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                  ["tc", "-n", NS, "qdisc", "del", "dev", "lo", "root"]),
    "esp4": (("ip",), ["ip", "-n", NS, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto",
                       "esp", "spi", "0x100", "enc", "cbc(aes)", "0x" + "00" * 16, "auth", "hmac(sha1)",
                       "0x" + "00" * 20], []),
    "wireguard": (("ip",), ["ip", "-n", NS, "link", "add", "vxdw", "type", "wireguard"], []),
}
# What the kernel says when it lacks a feature (anything else is an error worth showing).
_ABSENT = re.compile(r"unknown device type|kind is unknown|requested type not found|not supported", re.I)


@dataclass(frozen=True)
class Found:
    """One feature: `ok`, `absent` (the kernel said so), `error` (something else
    failed: `detail`), or `untested` (a prerequisite is missing: `detail`)."""

    state: str
    detail: str = ""


def probe(system: System, features: Iterable[str] | None = None) -> dict[str, Found]:
    """`netns` and each of `features` (default: all of FEATURES)."""
    wanted = list(FEATURES) if features is None else [f for f in features if f != "netns"]
    if system.which("ip") is None:
        return {f: Found("untested", "ip missing") for f in ["netns", *wanted]}
    _sweep(system)
    ns = PREFIX + secrets.token_hex(3)
    made = system.run(["ip", "netns", "add", ns])
    if not made.ok:
        why = made.why()
        return {"netns": Found("absent" if _ABSENT.search(why) else "error", f"ip netns add: {why}"),
                **{f: Found("untested", "no namespace to try it in") for f in wanted}}
    try:
        system.run(["ip", "-n", ns, "link", "set", "lo", "alias", MARK])
        system.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        found = {"netns": Found("ok", "works")}
        for feature in wanted:
            found[feature] = _try(system, ns, feature)
        return found
    finally:
        system.run(["ip", "netns", "delete", ns])


def _try(system: System, ns: str, feature: str) -> Found:
    tools, make, undo = FEATURES[feature]
    lacking = [t for t in tools if system.which(t) is None]
    if lacking:
        return Found("untested", f"{', '.join(lacking)} missing")
    ran: Ran = system.run([ns if a == NS else a for a in make])
    if ran.ok:
        if undo:
            system.run([ns if a == NS else a for a in undo])
        return Found("ok", "works")
    return Found("absent" if _ABSENT.search(ran.why()) else "error", f"{make[0]}: {ran.why()}")


def _sweep(system: System) -> None:
    """Remove throwaway namespaces a killed probe left behind (ours: prefix, marker, age)."""
    listing = system.run(["ip", "netns", "list"])
    for line in listing.out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not (name.startswith(PREFIX) and len(name) == len(PREFIX) + 6):
            continue
        try:
            age = time.time() - os.stat(f"/run/netns/{name}").st_ctime
        except OSError:
            continue
        if age > STALE_S and MARK in system.run(["ip", "-n", name, "-o", "link", "show", "lo"]).out:
            system.run(["ip", "netns", "delete", name])
