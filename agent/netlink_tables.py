"""The nftables side of `NetlinkKernel` (a mixin): our tables read for a dump (the fault
table too; netlink_faults.py writes it), the VTEP allow-list, NAT and published ports
of the agent's namespace, NAT and network policy of a network namespace, services of a
container's, and the conntrack entries a changed policy must forget.

Tables go through the firewall driver (nft.py), rendered and parsed by the pure
modules (vtep.py, nat.py, policy_nft.py, ports_nft.py, services_nft.py, dns_nft.py); every write is ensure-style (read, compare,
replace the whole table atomically only when it differs). Conntrack is read and
pruned with pyroute2 from a short-lived thread inside the namespace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError
from vxlab import netns
from vxlab.agent import dns_nft, fault_nft, nat, policy_nft, ports_nft, services_nft, vtep
from vxlab.agent.kernel import KernelError, Nat, NftTable, PolicyTable, VtepFilter
from vxlab.agent.netlink_ns import ns_ident
from vxlab.agent.nft import Nft, where

# Whether bridged frames go through the IP hooks (and conntrack) of a network namespace
# (br_netfilter; built in here, loaded by Docker elsewhere; its default is on in every
# namespace). Off where no policy is: each bridged frame otherwise pays the hooks and
# conntrack twice per round trip (bench/results/FINDINGS-issue6.md: −12..−17 % overlay
# round-trip cost, +7..+11 % throughput). On where a policy table is: that is where it
# sees the frames, with conntrack (this kernel has no bridge-family conntrack).
BRIDGE_NF_OFF = {"net/bridge/bridge-nf-call-iptables": "0", "net/bridge/bridge-nf-call-ip6tables": "0",
                 "net/bridge/bridge-nf-call-arptables": "0"}
BRIDGE_NF_ON = {"net/bridge/bridge-nf-call-iptables": "1", "net/bridge/bridge-nf-call-ip6tables": "1"}

VTEP = (vtep.FAMILY, vtep.TABLE)
NAT = (nat.FAMILY, nat.TABLE)
POLICY = (policy_nft.FAMILY, policy_nft.TABLE)
PORTS = (ports_nft.FAMILY, ports_nft.TABLE)
SERVICES = (services_nft.FAMILY, services_nft.TABLE)
DNS = (dns_nft.FAMILY, dns_nft.TABLE)
FAULT = (fault_nft.FAMILY, fault_nft.TABLE)


def forget_connections(ns: str, ips: tuple[str, ...]) -> int:
    """Delete the conntrack entries in `ns` whose original destination is one of `ips`;
    returns how many."""
    wanted = set(ips)

    def run() -> int:
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
        return int(netns.run_in(ns, run))
    except (OSError, NetlinkError) as exc:
        raise KernelError(f"conntrack in {where(ns)}: {exc}") from exc


class TableOps:
    """The table methods of the Kernel contract; the class using it (before `Kernel` in
    its bases) provides `_own` (its thread checks), `_sysctls`, `writes` and `_nft`."""

    _own: Callable[[], Any]
    _sysctls: Callable[[str, dict[str, str]], bool]
    writes: Counter[str]
    _nft: Nft

    def network_tables(self, ns: str) -> tuple[PolicyTable | None, Nat | None]:
        """A network namespace's policy and NAT tables, for its dump (one read)."""
        found = self._nft.read(ns, (POLICY, NAT))
        return (policy_nft.parse(found[POLICY]) if POLICY in found else None,
                nat.parse(found[NAT]) if NAT in found else None)

    def own_tables(self) -> tuple[VtepFilter | None, Nat | None, NftTable | None, str | None]:
        """The agent namespace's allow-list, NAT and published-ports tables, and the
        listing of the fault table (agent/fault_nft.py; None when it is missing), in one read."""
        self._own()
        found = self._nft.read("", (VTEP, NAT, PORTS, FAULT))
        return (vtep.parse(found[VTEP]) if VTEP in found else None,
                nat.parse(found[NAT]) if NAT in found else None,
                ports_nft.parse(found[PORTS]) if PORTS in found else None, found.get(FAULT))

    def container_tables(self, ns: str) -> tuple[NftTable | None, NftTable | None]:
        """A container namespace's services and DNS redirect tables, for its dump (one read)."""
        found = self._nft.read(ns, (SERVICES, DNS))
        return (services_nft.parse(found[SERVICES]) if SERVICES in found else None,
                dns_nft.parse(found[DNS]) if DNS in found else None)

    def _replace(self, op: str, ns: str, table: tuple[str, str], render: Callable[[], str]) -> None:
        try:
            body = render()
        except ValueError as exc:
            raise KernelError(f"{op}: {exc}") from exc
        self._nft.replace(ns, table, body)
        self.writes[op] += 1

    def _delete(self, op: str, ns: str, table: tuple[str, str]) -> bool:
        """Delete `table` when it is there (one write); False when it was not."""
        if ns and ns_ident(ns) is None:
            return False  # the namespace is gone, and its tables with it
        if table not in self._nft.read(ns, (table,)):
            return False
        self._nft.delete(ns, table)
        self.writes[op] += 1
        return True

    # --- the rogue-VTEP allow-list (vtep.py) ----------------------------------------------
    def set_vtep_filter(self, want: VtepFilter) -> None:
        if self.own_tables()[0] != want:
            self._replace("set_vtep_filter", "", VTEP, lambda: vtep.render(want))

    def delete_vtep_filter(self) -> None:
        self._own()
        self._delete("delete_vtep_filter", "", VTEP)

    # --- published ports (ports_nft.py), services (services_nft.py), DNS (dns_nft.py) -------
    def set_ports(self, want: NftTable) -> None:
        self._sysctls("", dict(want.sysctls))  # route_localnet on the uplinks of loopback-bound ports
        if self.own_tables()[2] != want:
            self._replace("set_ports", "", PORTS, lambda: want.script)

    def delete_ports(self) -> None:
        self._own()
        self._delete("delete_ports", "", PORTS)

    def set_services(self, ns: str, want: NftTable) -> None:
        self._own()
        if self.container_tables(ns)[0] != want:
            self._replace("set_services", ns, SERVICES, lambda: want.script)

    def delete_services(self, ns: str) -> None:
        self._own()
        self._delete("delete_services", ns, SERVICES)

    def set_dns_redirect(self, ns: str, want: NftTable) -> None:
        self._own()
        if self.container_tables(ns)[1] != want:
            self._replace("set_dns_redirect", ns, DNS, lambda: want.script)

    def delete_dns_redirect(self, ns: str) -> None:
        self._own()
        self._delete("delete_dns_redirect", ns, DNS)

    # --- NAT (nat.py) -----------------------------------------------------------------------
    def set_nat(self, ns: str, want: Nat) -> None:
        self._own()
        found = self._nft.read(ns, (NAT,))
        if (nat.parse(found[NAT]) if NAT in found else None) != want:
            self._replace("set_nat", ns, NAT, lambda: nat.render(want))

    def delete_nat(self, ns: str) -> None:
        self._own()
        self._delete("delete_nat", ns, NAT)

    # --- network policy (policy_nft.py) -----------------------------------------------------
    def set_policy(self, ns: str, table: PolicyTable) -> None:
        self._sysctls(ns, BRIDGE_NF_ON)  # also repairs a table left without its hooks
        if self.network_tables(ns)[0] == table:
            return
        self._replace("set_policy", ns, POLICY, lambda: table.script)
        forget_connections(ns, table.local)

    def delete_policy(self, ns: str) -> None:
        self._own()
        if self._delete("delete_policy", ns, POLICY):
            self._sysctls(ns, BRIDGE_NF_OFF)
