"""Network policy on the real kernel: our nftables table in a network namespace
(rendered by policy_nft.py) and the conntrack entries a changed policy must forget.

A mixin of `NetlinkKernel`: `nft` runs through `nsenter` into the namespace; conntrack
is read and pruned with pyroute2 from a short-lived thread that entered it.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError
from vxlab.agent import netlink_ns, policy_nft
from vxlab.agent.kernel import KernelError, PolicyTable
from vxlab.agent.netlink_objs import where

# Whether bridged frames go through the IP hooks (and conntrack) of a network namespace
# (br_netfilter; built in here, loaded by Docker elsewhere; its default is on in every
# namespace). Off where no policy is: each bridged frame otherwise pays the hooks and
# conntrack twice per round trip (bench/results/FINDINGS-issue6.md: −12..−17 % overlay
# round-trip cost, +7..+11 % throughput). On where a policy table is: that is where it
# sees the frames, with conntrack (this kernel has no bridge-family conntrack).
BRIDGE_NF_OFF = {"net/bridge/bridge-nf-call-iptables": "0", "net/bridge/bridge-nf-call-ip6tables": "0",
                 "net/bridge/bridge-nf-call-arptables": "0"}
BRIDGE_NF_ON = {"net/bridge/bridge-nf-call-iptables": "1", "net/bridge/bridge-nf-call-ip6tables": "1"}


def _nft(ns: str, *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    enter = ["nsenter", f"--net={netlink_ns.path_of(ns)}"]
    try:
        return subprocess.run([*enter, "nft", *args], input=script, capture_output=True, text=True)
    except OSError as exc:
        raise KernelError(f"nft in {where(ns)}: {exc}") from exc


def read_policy(ns: str) -> PolicyTable | None:
    """Our table in `ns` as far as a dump needs it (its tag); None when missing or not
    in the shape we write."""
    out = _nft(ns, "-j", "list", "table", policy_nft.FAMILY, policy_nft.TABLE)
    return policy_nft.parse(out.stdout) if out.returncode == 0 else None


def forget_connections(ns: str, ips: tuple[str, ...]) -> int:
    """Delete the conntrack entries in `ns` whose original destination is one of `ips`;
    returns how many."""
    wanted = set(ips)

    def run() -> int:
        netlink_ns._enter(netlink_ns.path_of(ns))
        ct = Conntrack()
        try:
            gone = 0
            for entry in list(ct.dump_entries()):
                if entry.tuple_orig.daddr in wanted:
                    try:
                        ct.entry("del", tuple_orig=entry.tuple_orig)
                        gone += 1
                    except NetlinkError:
                        pass  # ended meanwhile
            return gone
        finally:
            ct.close()
    try:
        return int(netlink_ns.in_thread(run))
    except (OSError, NetlinkError) as exc:
        raise KernelError(f"conntrack in {where(ns)}: {exc}") from exc


class PolicyOps:
    """`set_policy` / `delete_policy` of the Kernel contract; the class using it (before
    `Kernel` in its bases) provides `_sysctls` and `writes`."""

    _sysctls: Callable[[str, dict[str, str]], bool]
    writes: Counter[str]

    def set_policy(self, ns: str, table: PolicyTable) -> None:
        self._sysctls(ns, BRIDGE_NF_ON)  # also repairs a table left without its hooks
        if read_policy(ns) == table:
            return
        out = _nft(ns, "-f", "-", script=table.script)
        if out.returncode != 0:
            raise KernelError(f"set_policy in {where(ns)}: nft: {out.stderr.strip() or out.stdout.strip()}")
        self.writes["set_policy"] += 1
        forget_connections(ns, table.local)

    def delete_policy(self, ns: str) -> None:
        if _nft(ns, "list", "table", policy_nft.FAMILY, policy_nft.TABLE).returncode != 0:
            return
        out = _nft(ns, "delete", "table", policy_nft.FAMILY, policy_nft.TABLE)
        if out.returncode != 0:
            raise KernelError(f"delete_policy in {where(ns)}: nft: {out.stderr.strip()}")
        self._sysctls(ns, BRIDGE_NF_OFF)
        self.writes["delete_policy"] += 1
