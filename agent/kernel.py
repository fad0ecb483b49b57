"""The kernel contract of the agent: what it reads (a dump of owned namespaces) and
what it writes (ensure-style operations), independent of pyroute2.

Two implementations: `NetlinkKernel` (netlink.py, the only importer of pyroute2) and
`FakeKernel` (vxlab/testing/fakekernel.py, in memory, for reconciler unit tests), held
to this contract by one test suite (tests/contract_kernel.py) that runs on both. Both count their writes in
`writes`, under the name of the method called (add_uplink's host address under
`add_addr`), so a test can assert that a pass with nothing to do wrote nothing.

Ownership: every namespace the agent creates is named with its prefix and carries a
marker (the ifalias of its loopback device); every link carries a marker ifalias
starting with `vxlab:`. `dump(prefix)` returns namespaces with the prefix; the
reconciler only ever changes the marked ones, and the kernel refuses to replace an
object that exists without a marker (`Foreign`, and the object is left as it was; a
veth peer's name taken counts too). One exception, `adopt_link`: this
kernel cannot create a link and set its ifalias in one request (RTM_NEWLINK ignores
IFLA_IFALIAS, measured on 6.18, for the device and for a veth peer), so a pass that
stops between the two leaves an unmarked link; inside a namespace that carries this
host's marker (never the agent's own), the link with the exact name the agent gives
is its own, and is marked again. Nothing the agent makes is ever unmarked in the
agent's own namespace: a VXLAN device is created straight into its network namespace,
and an uplink's host end is made and marked in the network namespace, then moved.

nftables: our tables (the VTEP allow-list, NAT, published ports and host faults of the
agent's namespace, NAT and policy of a network namespace, services of a container's) are
part of the state, read with every dump and planned like links (agent/nft.py is the
driver); so are the agent namespace's routes through our uplinks (to the subnets of
published containers). So is a container namespace's
`/etc/netns/<name>/resolv.conf` (pointing at the agent's embedded DNS, agent/dnsserver.py):
a file, but one that `ip netns exec` mounts into the namespace, written and removed
with it (vxlab.netns).

Host faults (`HostFaults`, agent/hostfaults.py): besides the fault table, root qdiscs
of ours (handle FAULT_HANDLE) on the underlay device and on the IFB device `vxifb0`
that the underlay's ingress is redirected to, and the underlay's own up/down state.

`interrupt` is a test hook (off by default): a method named in it stops right after
creating its object and before marking it, as a killed pass would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from vxlab.layout import MARK  # every ifalias we set starts with it

UPLINK_MARK = f"{MARK}uplink:"  # both ends of a network's uplink: vxlab:uplink:<network>
ENDPOINT_MARK = f"{MARK}ep:"    # both ends of an endpoint's veth: vxlab:ep:<endpoint id>


class KernelError(Exception):
    """A netlink operation failed; the message says which and why."""


class Foreign(KernelError):
    """An object with the name we need exists but is not ours: we never touch it."""


class Unsupported(KernelError):
    """This kernel lacks what the operation needs (a qdisc module); retrying cannot help."""


NETEM_MISSING = ("this kernel has no sch_netem (the netem qdisc), which delay needs: vxlab never fakes a delay; "
                 "use a kernel with CONFIG_NET_SCH_NETEM")


@dataclass(frozen=True)
class Link:
    name: str
    kind: str                # "bridge", "vxlan", "veth", "loopback", … ("" when unknown)
    alias: str = ""          # ifalias: our marker, "" for objects we did not create
    mac: str = ""
    mtu: int = 0
    up: bool = False
    master: str = ""         # the bridge this link is enslaved to, in the same namespace
    vni: int = 0             # vxlan only
    local: str = ""          # vxlan only: local (underlay) address
    port: int = 0            # vxlan only: UDP destination port
    learning: bool = False   # vxlan only
    proxy: bool = False      # vxlan only: ARP proxy from the neighbour table


class Route(NamedTuple):
    dst: str        # "default" or a CIDR
    gateway: str    # "" for an on-link route
    dev: str


class Fdb(NamedTuple):
    dev: str        # the vxlan device
    mac: str
    dst: str        # the remote VTEP


class Neigh(NamedTuple):
    dev: str        # the vxlan device
    ip: str
    mac: str


@dataclass(frozen=True)
class Namespace:
    """One namespace as a dump reads it. Its tables are read only in a network namespace
    (marked, with a bridge): None in every other one."""

    name: str
    marker: str = ""                                     # ifalias of `lo`; "" = not ours
    links: dict[str, Link] = field(default_factory=dict)  # every link, `lo` (alias: the marker) too
    addrs: frozenset[tuple[str, str]] = frozenset()      # (ifname, "ip/prefixlen"), IPv4, not on lo
    routes: frozenset[Route] = frozenset()               # IPv4 main table, static/boot only (no kernel link routes)
    fdb: frozenset[Fdb] = frozenset()                    # static unicast entries with a dst, on vxlan devices
    neigh: frozenset[Neigh] = frozenset()                # permanent entries on vxlan devices
    policy: PolicyTable | None = None                    # network namespaces: our nft policy table
    nat: Nat | None = None                               # network namespaces: our NAT table (uplink)
    resolv: str | None = None                            # container namespaces: our /etc/netns/<name>/resolv.conf
    services: NftTable | None = None                     # container namespaces: our service VIPs (services_nft.py)
    dns: NftTable | None = None                          # container namespaces: our 127.0.0.11:53 redirect (dns_nft.py)


@dataclass(frozen=True)
class Nat:
    """Our NAT table (`ip vxlab`, agent/nat.py) of a namespace: IPv4 from `source` (a
    CIDR) leaving through an interface that matches `oif` (a name or `vxg-*`), or with
    `oif_negated` through any other, is masqueraded. A network namespace: its subnet
    out through its uplink; the agent's namespace: every uplink's 169.254.0.0/16 out
    through anything but an uplink."""

    source: str
    oif: str
    oif_negated: bool = False


FAULT_IFB = "vxifb0"          # the IFB device the underlay's ingress is redirected to (ingress rate/delay)
FAULT_IFB_MARK = f"{MARK}fault:ifb"
FAULT_HANDLE = 0x7678         # the major handle of our root qdiscs ("vx"); also the pref of our ingress filter


@dataclass(frozen=True)
class FaultTable:
    """Our host-fault table (`inet vxlab_fault`, agent/fault_nft.py), compared by `tag`
    (`vxlab:<digest of the rules>:<rule count>`, what a dump reads back)."""

    tag: str
    script: str = field(default="", compare=False)
    rules: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Qdisc:
    """A root qdisc of ours: tbf at `rate` bytes/s, or netem with a delay and jitter."""

    kind: str                 # "tbf" or "netem"
    rate: int = 0             # tbf: bytes per second
    delay_us: int = 0         # netem
    jitter_us: int = 0        # netem

    def describe(self) -> str:
        if self.kind == "tbf":
            return f"tbf {self.rate * 8 / 1e6:g} Mbit/s"
        return f"netem {self.delay_us / 1000:g} ms ±{self.jitter_us / 1000:g}"


@dataclass(frozen=True)
class HostFaults:
    """Host faults as the kernel holds them (a dump) or should (desired). `qdiscs`: device
    -> our root qdisc there; `ingress`: the underlay's ingress redirected to vxifb0 (which
    exists, ours, up); `down`: the underlay held down (desired: None leaves its state
    alone, False brings it up again: we took it down); `routes`: dumped, the IPv4 routes
    through the underlay (a link-down loses them: they are noted and put back);
    desired, the ones to put back. `sources` (desired only): object -> the faults it
    stands for (`table`, `qdisc:<dev>`, `ingress`, `link`), for reasons and statuses."""

    table: FaultTable | None = None
    qdiscs: dict[str, Qdisc] = field(default_factory=dict)
    ingress: bool = False
    down: bool | None = None
    routes: tuple[Route, ...] = ()
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class AgentNs:
    """What the agent keeps in its own namespace, as the kernel holds it: our nftables
    tables (None where one is missing or not in the shape we write: a rewrite repairs
    it) and our links there, the uplinks' host ends (alias `vxlab:uplink:…`), with
    their IPv4 addresses, the published ports' table (ports_nft.py), the routes
    through the uplinks (main table, not the kernel's link routes) and the handoff
    ends of runtime endpoints not taken yet (add_handoff)."""

    vteps: VtepFilter | None = None
    nat: Nat | None = None
    uplinks: dict[str, frozenset[str]] = field(default_factory=dict)   # link -> {"ip/prefixlen"}
    ports: NftTable | None = None
    routes: frozenset[Route] = frozenset()
    faults: HostFaults = field(default_factory=HostFaults)             # read with the underlay's name
    # Runtime endpoints' container ends waiting for their runtime (alias vxlab:ep:…): name ->
    # the link. Desired: the ones that may be there (an end its runtime took is not missing).
    handoffs: dict[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class NftTable:
    """A table of ours compared by its tag alone (`vxlab:<digest>:<rules>`, what a dump
    reads back: agent/nfttag.py): the published ports of the agent's namespace, the
    services of a container's. `script` writes it, `summary` says for plans what it
    holds, `sysctls` (key, value) are set in its namespace before it is written."""

    tag: str
    script: str = field(default="", compare=False)
    summary: str = field(default="", compare=False)
    sysctls: tuple[tuple[str, str], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class PolicyTable:
    """The network-policy table of a network namespace (agent/policy_nft.py). Compared
    by `tag` alone (`vxlab:<digest of the rules>:<rule count>`, what a dump can read
    back); the script and the local addresses are only there to write it."""

    tag: str
    script: str = field(default="", compare=False)
    local: tuple[str, ...] = field(default=(), compare=False)   # the local endpoints' IPs
    rules: int = field(default=0, compare=False)


@dataclass(frozen=True)
class VtepFilter:
    """The rogue-VTEP allow-list of the agent's own namespace (the role of Calico's
    ipset of known hosts): UDP to `port` (the VXLAN port) is dropped on input unless
    its source is one of `vteps`, the underlay addresses of the known hosts."""

    port: int
    vteps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Underlay:
    ip: str
    dev: str
    mtu: int


class Kernel(ABC):
    """Reads and writes of the agent. Every write method is idempotent where it can be:
    adding what exists identically writes nothing and succeeds. An add needs its
    namespace and device (KernelError otherwise); a delete of something missing, or in
    a namespace or on a device that is gone, is no error and no write."""

    def __init__(self) -> None:
        self.writes: Counter[str] = Counter()
        self.interrupt: set[str] = set()  # test hook: stop these methods between create and mark

    def _interrupted(self, op: str, what: str) -> None:
        if op in self.interrupt:
            raise KernelError(f"{op}: interrupted after creating {what}, before marking it (fault point)")

    # --- reads ------------------------------------------------------------------
    @abstractmethod
    def dump(self, prefix: str) -> dict[str, Namespace]:
        """Every network namespace whose name starts with `prefix`, with its state."""

    @abstractmethod
    def underlay(self, *, ip: str = "", dev: str = "", towards: Sequence[str] = ()) -> Underlay:
        """The underlay of the agent's own namespace: the given IP or device, else the
        device of the route towards the controller IPs `towards`, else of the default
        route (or the only global IPv4 address); its MTU. Rules: agent/underlay.py."""

    @abstractmethod
    def agent_ns(self, *, underlay: str = "") -> AgentNs:
        """What the agent keeps in its own namespace: its tables and marked links, and,
        given the `underlay` device's name, the host faults (HostFaults) on it."""

    def vtep_filter(self) -> VtepFilter | None:
        """The allow-list of the agent's own namespace as the kernel holds it; None
        when our table is missing or not in the shape we write (a rewrite repairs it)."""
        return self.agent_ns().vteps

    # --- the rogue-VTEP allow-list (agent's own namespace) ------------------------
    @abstractmethod
    def set_vtep_filter(self, want: VtepFilter) -> None:
        """Make the allow-list exactly `want`, in one atomic transaction (nftables
        table `inet vxlab_vtep`, ours alone); nothing is written when it already is."""

    @abstractmethod
    def delete_vtep_filter(self) -> None:
        """Remove our allow-list table; a missing one is no error."""

    # --- NAT (a network namespace's, or the agent's own with ns "") -----------------------
    @abstractmethod
    def set_nat(self, ns: str, want: Nat) -> None:
        """Make our NAT table in `ns` ("" = the agent's namespace) exactly `want`, in one
        atomic transaction; nothing is written when it already is."""

    @abstractmethod
    def delete_nat(self, ns: str) -> None:
        """Remove our NAT table from `ns` ("" = the agent's namespace); a missing one is
        no error."""

    # --- published ports (the agent's own namespace) -------------------------------------
    @abstractmethod
    def set_ports(self, want: NftTable) -> None:
        """Make our published-ports table (`ip vxlab_ports`) of the agent's namespace
        `want`, atomically, after setting its sysctls (route_localnet on the uplinks of
        loopback-bound ports); nothing is written when its tag is right already."""

    @abstractmethod
    def delete_ports(self) -> None:
        """Remove our published-ports table; a missing one is no error."""

    # --- services (in a container namespace) --------------------------------------------
    @abstractmethod
    def set_services(self, ns: str, want: NftTable) -> None:
        """Make our services table (`ip vxlab_svc`) in the container namespace `ns` `want`,
        atomically; nothing is written when its tag is right already."""

    @abstractmethod
    def delete_services(self, ns: str) -> None:
        """Remove our services table from `ns`; a missing one (or namespace) is no error."""

    @abstractmethod
    def set_dns_redirect(self, ns: str, want: NftTable) -> None:
        """Make our DNS redirect table (`ip vxlab_dns`) in the container namespace `ns`
        `want`, atomically; nothing is written when its tag is right already."""

    @abstractmethod
    def delete_dns_redirect(self, ns: str) -> None:
        """Remove our DNS redirect table from `ns`; a missing one (or namespace) is no error."""

    # --- network policy (in a network namespace) ---------------------------------------
    @abstractmethod
    def set_policy(self, ns: str, table: PolicyTable) -> None:
        """Replace our policy table in `ns` with `table`, atomically (bridged IPv4 and
        IPv6 handed to the IP hooks there), then forget the connections towards the
        local endpoints (`table.local`): conntrack picks the allowed ones up again at
        their next packet, under the new rules; the denied ones end."""

    @abstractmethod
    def delete_policy(self, ns: str) -> None:
        """Remove our policy table from `ns`; a missing one is no error."""

    # --- host faults (the agent's own namespace) -----------------------------------------
    @abstractmethod
    def set_fault_table(self, table: FaultTable) -> None:
        """Make our fault table exactly `table` (by tag), atomically; nothing when it is."""

    @abstractmethod
    def delete_fault_table(self) -> None:
        """Remove our fault table; a missing one is no error."""

    @abstractmethod
    def set_fault_qdisc(self, dev: str, want: Qdisc) -> None:
        """Make the root qdisc of `dev` ours (handle FAULT_HANDLE) and exactly `want`;
        `Foreign` when a root qdisc of someone else's is there (not the kernel's default);
        `Unsupported` when this kernel lacks the qdisc (no sch_netem)."""

    @abstractmethod
    def delete_fault_qdisc(self, dev: str) -> None:
        """Remove our root qdisc from `dev` (the kernel's default comes back); none, or a
        missing device, is no error."""

    @abstractmethod
    def set_fault_ingress(self, dev: str) -> None:
        """vxifb0 (created, marked, up) and `dev`'s ingress redirected to it (an ingress
        qdisc with our u32 filter: this kernel has no matchall)."""

    @abstractmethod
    def delete_fault_ingress(self, dev: str) -> None:
        """The redirect off `dev` first (a redirect to a missing device drops), then vxifb0."""

    @abstractmethod
    def set_underlay_state(self, dev: str, *, up: bool, routes: tuple[Route, ...] = ()) -> None:
        """The underlay device (not ours: only a fault takes it down) down, or up again
        with `routes` put back (the kernel dropped them when it went down)."""

    # --- namespaces ---------------------------------------------------------------
    @abstractmethod
    def create_netns(self, name: str, *, marker: str) -> None:
        """Create the namespace, bring `lo` up and set its ifalias to `marker`; IPv4
        forwarding off in it (a new namespace inherits the host's value, and a
        multi-homed container must never route between its networks). One that exists
        with another marker, or none, is `Foreign`."""

    @abstractmethod
    def delete_netns(self, name: str) -> None:
        """Remove the namespace, and the resolv.conf we wrote for it; the peers of its veths,
        in other namespaces, go at once."""

    @abstractmethod
    def set_resolv(self, ns: str, text: str) -> None:
        """Make /etc/netns/`ns`/resolv.conf `text` (what `ip netns exec` mounts over
        /etc/resolv.conf); nothing is written when it already is."""

    @abstractmethod
    def delete_resolv(self, ns: str) -> None:
        """Remove the resolv.conf we wrote for `ns`; a missing one is no error."""

    # --- links (in namespace `ns`) -----------------------------------------------
    @abstractmethod
    def add_bridge(self, ns: str, name: str, *, mtu: int, alias: str) -> None:
        """A bridge, up, with the MTU, no STP, MAC learning on its ports as default. A
        link of ours with the name is fixed in place (MTU, up, alias), or replaced when it
        is of another kind; so with add_vxlan (replaced also for another VNI, local or
        port) and add_veth (also fixed: its peer, when marked). Their `master` must exist."""

    @abstractmethod
    def add_vxlan(self, ns: str, name: str, *, vni: int, local: str, port: int, mtu: int,
                  alias: str, master: str) -> None:
        """A VXLAN device created in the agent's own namespace (so its UDP socket binds to
        the underlay there), then moved into `ns`, enslaved to `master`, up; learning
        off, ARP proxy on, no default destination (no flooding over the underlay)."""

    @abstractmethod
    def add_veth(self, ns: str, name: str, *, alias: str, master: str, mtu: int,
                 peer_ns: str, peer_name: str, peer_mac: str, peer_alias: str) -> None:
        """A veth pair: `name` in `ns` on bridge `master`, up; its peer `peer_name` in
        `peer_ns` with the MAC, up. Both ends get the MTU. A link of ours named
        `peer_name` in `peer_ns` (its host end gone or another) is replaced."""

    @abstractmethod
    def add_handoff(self, ns: str, name: str, *, alias: str, master: str, mtu: int, handoff: str, mac: str) -> None:
        """The veth of an endpoint whose container namespace belongs to a runtime (Docker,
        CNI): `name` in `ns` on bridge `master`, up; its other end `handoff` in the agent's
        own namespace with the MAC, the MTU and `alias` (down: the runtime moves it into
        its container, renames and configures it). Made and marked in `ns` and the
        handoff end then moved out, as add_uplink does, so nothing unmarked is ever left
        in the agent's namespace; a handoff end still in `ns` is moved out. When `name`
        exists (ours) it is fixed in place, and its handoff end too where it is still in
        the agent's namespace; one the runtime took is none of ours any more. A handoff
        end of ours in the agent's namespace without its bridge end is replaced."""

    @abstractmethod
    def add_uplink(self, ns: str, name: str, *, alias: str, mtu: int, host_name: str, host_cidr: str) -> None:
        """The way out of a network namespace (the role of Docker's docker_gwbridge): a veth
        pair, `host_name` in the agent's own namespace with `host_cidr`, `name` in `ns`
        (its address and default route are ordinary addr/route entries); IPv4 forwarding
        on in both namespaces. The pair is made and marked in `ns` and its host end then
        moved out, so a pass stopped halfway leaves nothing unmarked in the agent's
        namespace; a host end still in `ns` (marked) is moved out. NAT is `set_nat`."""

    @abstractmethod
    def adopt_link(self, ns: str, name: str, *, alias: str, ns_marker: str) -> None:
        """Mark link `name` in `ns`, which exists without a marker (a pass stopped between
        creating and marking it), with `alias`: only in a namespace other than the
        agent's own whose marker is exactly `ns_marker`; `Foreign` otherwise. A link
        that is marked already, or gone (its veth peer was replaced), is left alone."""

    @abstractmethod
    def delete_link(self, ns: str, name: str) -> None:
        """Delete a link (a veth takes its peer with it); a missing link is no error."""

    @abstractmethod
    def set_link(self, ns: str, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        """Set what is given and differs; KernelError when the link is missing."""

    # --- addresses, routes, fdb, neighbours ----------------------------------------
    @abstractmethod
    def add_addr(self, ns: str, dev: str, cidr: str) -> None: ...

    @abstractmethod
    def del_addr(self, ns: str, dev: str, cidr: str) -> None: ...

    @abstractmethod
    def add_route(self, ns: str, route: Route) -> None: ...

    @abstractmethod
    def del_route(self, ns: str, route: Route) -> None: ...

    @abstractmethod
    def add_fdb(self, ns: str, entry: Fdb) -> None:
        """`bridge fdb replace MAC dev DEV dst DST self permanent`: keyed by (DEV, MAC),
        another DST replaces the entry. A multicast or zero MAC is refused (the kernel's
        replace cannot add one)."""

    @abstractmethod
    def del_fdb(self, ns: str, entry: Fdb) -> None:
        """Delete the entry when it still points to `entry.dst` (else nothing is written)."""

    @abstractmethod
    def add_neigh(self, ns: str, entry: Neigh) -> None:
        """`ip neigh replace IP lladdr MAC dev DEV nud permanent`: keyed by (DEV, IP),
        another MAC replaces the entry (a dynamic one too)."""

    @abstractmethod
    def del_neigh(self, ns: str, entry: Neigh) -> None:
        """Delete the entry when it still names `entry.mac` (else nothing is written)."""

    @abstractmethod
    def forget_stale_neigh(self, ns: str, dev: str, *, entries: tuple[tuple[str, str], ...]) -> None:
        """In a container's namespace: for each (IP, MAC), delete the *dynamic* ARP entry
        for IP on DEV if it names another MAC (a reused IP's old owner), counted as
        `forget_neigh`. Permanent entries and entries already right are left alone."""

    @abstractmethod
    def apply_entries(self, ns: str, *, add: list[Fdb | Neigh], delete: list[Fdb | Neigh]) -> None:
        """Many FDB/neighbour writes in `ns` at once (the reconciler's bulk path; NetlinkKernel
        batches them in a few system calls), without reading first: the caller sends only
        differences. Every add is a replace, sent and counted (as add_fdb / add_neigh)
        even where the entry is right already; then the deletes: an FDB entry goes only
        where it still points to the dst given (NetlinkKernel counts the request either
        way: the kernel acknowledges it), a neighbour entry by its IP whatever its MAC;
        a missing one is no error and no write. An add on a device that does not exist
        fails the call before anything is sent; any other failure does not stop the
        rest: one KernelError at the end says how many of how many failed, and which."""

    def close(self) -> None:
        """Release sockets and helper processes."""
