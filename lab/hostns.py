"""The lab's host namespaces and their switch: one namespace per simulated host on a bridge.

The switch is a bridge inside its own namespace, so the machine's firewall (Docker's
FORWARD DROP, bridge-nf-call-iptables=1) never sees lab traffic. Each simulated host
is a namespace with `eth0` (a veth to the switch) holding its underlay address.
Namespaces carry a marker (ifalias of `lo`) so cleanup only touches lab objects.

Uses iproute2 (`ip`) rather than netlink: the lab runner is not the data plane, and
the agent's netlink module stays the one importer of pyroute2.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from vxlab import netns


class HostNsError(RuntimeError):
    pass


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HostNsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


def netns_list() -> list[str]:
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def marker(ns: str) -> str:
    """The ifalias of `lo` in `ns` ("" when unset or the namespace is gone)."""
    proc = ip("-o", "link", "show", "lo", ns=ns, check=False)
    if proc.returncode != 0 or " alias " not in proc.stdout:
        return ""
    return proc.stdout.split(" alias ", 1)[1].split()[0]


def create_ns(name: str, *, mark: str) -> None:
    ip("netns", "add", name)
    batch(["link set lo up", f"link set lo alias {mark}"], ns=name)
    _no_ipv6(name)


def delete_ns(name: str) -> None:
    """`ip netns delete`, and the resolv.conf an agent wrote for it (which iproute2 leaves)."""
    ip("netns", "delete", name, check=False)
    netns.remove_etc(name)


@dataclass(frozen=True)
class SimHost:
    name: str
    ns: str
    ip: str       # underlay address
    cidr: str     # with prefix length


def create_switch(ns: str, *, mark: str, mtu: int = 1500, outside: str = "", control: str = "") -> None:
    """The underlay switch. `outside` (e.g. 172.30.0.1/24) is an address on the switch
    itself: the lab's "outside world", what containers reach through their host's NAT.
    `control` (e.g. 172.30.0.2/24), also on the switch: where the controller listens for
    the agents with `control: underlay`."""
    create_ns(ns, mark=mark)
    ip("link", "add", "vxsw", "mtu", str(mtu), "type", "bridge", "stp_state", "0", "forward_delay", "0", ns=ns)
    ip("link", "set", "vxsw", "alias", mark, "up", ns=ns)
    for address in (outside, control):
        if address:
            ip("addr", "add", address, "dev", "vxsw", ns=ns)


def batch(lines: list[str], *, ns: str | None = None) -> None:
    """Many `ip` commands in one process (`ip -batch -`); the first failure raises."""
    if not lines:
        return
    cmd = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    proc = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise HostNsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")


def add_hosts(switch_ns: str, hosts: list[tuple[SimHost, str]], *, mark: str, mtu: int = 1500) -> None:
    """Create host namespaces and wire each one's eth0 to the switch ((host, switch-side
    port name) pairs). Batched: one `ip` process for all namespaces, one for all switch
    ports, one per host for its inside — not nine processes per host."""
    batch([f"netns add {h.ns}" for h, _ in hosts])
    batch([line for h, port in hosts for line in (
        f"link add {port} mtu {mtu} type veth peer name eth0 netns {h.ns} mtu {mtu}",
        f"link set {port} alias {mark} master vxsw up")], ns=switch_ns)
    for h, _ in hosts:
        batch(["link set lo up", f"link set lo alias {mark}", f"link set eth0 alias {mark} up",
               f"addr add {h.cidr} dev eth0"], ns=h.ns)
        _no_ipv6(h.ns)


def _no_ipv6(ns: str) -> None:
    """net.ipv6.conf.all.disable_ipv6=1 inside `ns`, without a process: /proc/sys/net
    belongs to the namespace of the thread that opens it."""
    def write() -> None:
        netns.enter(ns)
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as f:
            f.write("1")
    try:
        netns.in_thread(write)
    except OSError:
        pass  # no IPv6 in this kernel: nothing to disable
