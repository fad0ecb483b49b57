"""Lab topology files: parse and validate a YAML description into frozen dataclasses.

A topology names the lab, its underlay (subnet and MTU), the simulated hosts, the
networks to create, the containers to start (with their published ports) and the
services (see examples/quickstart.yaml; ports and services: lab/topology_services.py), and
where its agents reach the controller (`control`): `underlay`, the control address on
the underlay switch (the underlay's second address, `CONTROL_OFFSET`, reserved like the
switch's first: the agents dial it across the underlay, so faults on the underlay cut
control traffic as on real hosts), or `local`, the controller's unix socket (reachable
from every namespace, never cut). A host may be a VM (`vm: true` or `vm: {cpus, memory,
kernel}`, vxlab.lab.vm.parse_spec): a QEMU guest on the switch with a kernel of its own,
whose agent dials the controller across the underlay (so it needs `control: underlay`).
The file is YAML 1.2, not PyYAML's 1.1: `off` is a string, `0o17` octal, and a decimal with a
leading zero (`mtu: 01400`, octal 768 in YAML 1.1) is refused (the rules:
vxlab.lab.yamlfile). Every problem is reported as ONE `TopologyError` whose str() is
"file:line:column: path: reason", the path being the YAML location
(`lab.yaml:14:24: containers[2].host: unknown host 'h9'`); syntax errors have no path
(`lab.yaml:3:7: mapping values are not allowed here`), a missing file no position.
`from_mapping` validates data that was not read from a file: "path: reason".

Names, addresses, subnets, VNIs, MTUs and labels go through `vxlab.validate` with the
YAML path as the field, so the lab accepts exactly what the controller accepts.
`to_dict` gives the canonical form stored with a lab's state; parsing it back yields
an equal `Topology`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vxlab import policy, validate
from vxlab import ports as portspec
from vxlab.layout import LAB_NAME_MAX
from vxlab.errors import InvalidArgument
from vxlab.lab import topology_services
from vxlab.lab.vm import VmSpec, parse_spec
from vxlab.model import Policy, PortMapping, Service
from vxlab.lab.yamlfile import (  # noqa: F401 - TopologyError, one_line: re-exported
    Document, TopologyError, _int, _items, _join, _kind, _labels, _mapping, _opt, _section, _str, one_line, read,
    read_file)

DEFAULT_UNDERLAY = "172.30.0.0/24"
UNDERLAY_PREFIX_MAX = 29     # room for the switch (.1) and a few hosts
UNDERLAY_MTU_MIN, UNDERLAY_MTU_MAX = 1280, 9216
DEFAULT_MTU = 1500
FIRST_HOST_OFFSET = 11       # automatic host addresses: .11, .12, ...
SWITCH_OFFSET = 1            # the switch's own address (the lab's outside): .1
CONTROL_OFFSET = 2           # the controller's control address on the switch: .2
CONTROL_PORT = 7070          # its port there (each lab's switch is a namespace of its own)
CONTROLS = ("underlay", "local")
RESERVED_HOST = "control"    # faults name the control plane so (a partition's side)
DEFAULT_CONTROL = "local"
HOSTS_MAX = 250
ETCD_MEMBERS = (1, 3)
DRIVERS = ("overlay", "bridge")
NETWORK_MODES = ("none", "host")

TOP_KEYS = ("name", "underlay", "hosts", "networks", "containers", "policies", "etcd", "services", "control")
UNDERLAY_KEYS = ("subnet", "mtu")
HOST_KEYS = ("name", "underlay_ip", "vm", "docker")
NETWORK_KEYS = ("name", "subnet", "gateway", "vni", "mtu", "internal", "driver", "host", "labels")
CONTAINER_KEYS = ("name", "host", "networks", "ip", "network_mode", "labels", "ports")
ATTACH_KEYS = ("name", "ip", "aliases")
POLICY_KEYS = ("name", "network", "action", "from", "to", "proto", "ports", "priority")
_POLICY_FIELDS = {"source": "from", "destination": "to", "protocol": "proto"}  # model field -> YAML key


@dataclass(frozen=True)
class UnderlaySpec:
    subnet: str = DEFAULT_UNDERLAY
    mtu: int = DEFAULT_MTU

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def switch_ip(self) -> str:
        """The switch's own address: the lab's outside (`172.30.0.1`)."""
        return str(self.network.network_address + SWITCH_OFFSET)

    @property
    def control_ip(self) -> str:
        """The controller's control address on the switch (`172.30.0.2`)."""
        return str(self.network.network_address + CONTROL_OFFSET)


@dataclass(frozen=True)
class HostSpec:
    name: str
    underlay_ip: str
    vm: VmSpec | None = None  # a VM host (lab/vm.py); None: a network namespace here
    docker: bool = False      # a dockerd with vxlab's Docker plugin in the host's namespace (lab/dockerhost.py)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    subnet: str | None = None     # None: allocated by the controller
    gateway: str | None = None
    vni: int | None = None
    mtu: int | None = None
    internal: bool = False
    driver: str = "overlay"
    host: str | None = None       # only for driver "bridge"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Attachment:
    network: str
    ip: str | None = None
    aliases: tuple[str, ...] = ()   # more DNS names of the container on this network


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    host: str
    networks: tuple[Attachment, ...] = ()
    network_mode: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortMapping, ...] = ()   # published, on its first non-internal network


@dataclass(frozen=True)
class Topology:
    name: str
    underlay: UnderlaySpec
    hosts: tuple[HostSpec, ...]
    networks: tuple[NetworkSpec, ...] = ()
    containers: tuple[ContainerSpec, ...] = ()
    etcd_members: int = 1
    policies: tuple[Policy, ...] = ()
    services: tuple[Service, ...] = ()
    control: str = DEFAULT_CONTROL

    @property
    def control_address(self) -> str:
        """Where the agents dial the controller over the underlay ("" for `control: local`)."""
        return f"{self.underlay.control_ip}:{CONTROL_PORT}" if self.control == "underlay" else ""


def load(path: str | Path) -> Topology:
    """Read and parse a topology file."""
    return from_document(read_file(path))


def parse(text: str, *, source: str = "<string>") -> Topology:
    """Parse and validate topology YAML; `source` names the text in errors."""
    return from_document(read(text, source=source))


def from_document(doc: Document) -> Topology:
    """Validate a parsed file; every error carries the position of what it names."""
    if doc.data is None:
        raise TopologyError(doc.source, "empty document")
    if not isinstance(doc.data, dict):
        raise doc.locate(TopologyError("", f"expected a mapping at the top level, got {_kind(doc.data)}"))
    try:
        return from_mapping(doc.data)
    except TopologyError as e:
        raise doc.locate(e) from None


def from_mapping(data: dict[str, Any]) -> Topology:
    """Validate an already-parsed topology (e.g. inline in a scenario file)."""
    try:
        return _topology(data)
    except InvalidArgument as e:
        raise TopologyError(e.field, e.reason) from None


def to_dict(t: Topology) -> dict[str, Any]:
    """The canonical plain form (assigned host addresses made explicit)."""
    def network(n: NetworkSpec) -> dict[str, Any]:
        d: dict[str, Any] = {"name": n.name, "internal": n.internal, "driver": n.driver}
        for key in ("subnet", "gateway", "vni", "mtu", "host"):
            if getattr(n, key) is not None:
                d[key] = getattr(n, key)
        if n.labels:
            d["labels"] = dict(n.labels)
        return d

    def container(c: ContainerSpec) -> dict[str, Any]:
        d: dict[str, Any] = {"name": c.name, "host": c.host}
        if c.networks:
            d["networks"] = [{"name": a.network, **({"ip": a.ip} if a.ip else {}),
                              **({"aliases": list(a.aliases)} if a.aliases else {})} for a in c.networks]
        if c.network_mode is not None:
            d["network_mode"] = c.network_mode
        if c.labels:
            d["labels"] = dict(c.labels)
        if c.ports:
            d["ports"] = [portspec.describe(p) for p in c.ports]
        return d

    return {
        "name": t.name,
        "underlay": {"subnet": t.underlay.subnet, "mtu": t.underlay.mtu},
        "etcd": {"members": t.etcd_members},
        "control": t.control,
        "hosts": [{"name": h.name, "underlay_ip": h.underlay_ip, **({"vm": _vm(h.vm)} if h.vm else {}),
                   **({"docker": True} if h.docker else {})} for h in t.hosts],
        "networks": [network(n) for n in t.networks],
        "containers": [container(c) for c in t.containers],
        **({"policies": [policy.to_plain(p) for p in t.policies]} if t.policies else {}),
        **({"services": [topology_services.to_plain(s) for s in t.services]} if t.services else {}),
    }


def _vm(spec: VmSpec) -> dict[str, Any]:
    return {"cpus": spec.cpus, "memory": spec.memory_mb, **({"kernel": spec.kernel} if spec.kernel else {})}


# --- sections --------------------------------------------------------------------------


def _topology(top: dict[str, Any]) -> Topology:
    _mapping(top, "", TOP_KEYS)
    name = validate.name(_str(top, "name", "", required=True) or "", field="name", max_len=LAB_NAME_MAX)
    underlay = _underlay(_section(top, "underlay", UNDERLAY_KEYS))
    members = _int(_section(top, "etcd", ("members",)), "members", "etcd")
    members = 1 if members is None else members
    if members not in ETCD_MEMBERS:
        raise TopologyError("etcd.members", f"expected 1 or 3, got {members}")
    hosts = _hosts(top.get("hosts"), underlay.network)
    # The default: `underlay` when a host is a VM (its agent cannot reach a unix socket of
    # this machine), else `local` (underlay costs control-plane latency at 50 hosts here:
    # bench/results/control/RESULTS.md).
    control = _str(top, "control", "") or ("underlay" if any(h.vm for h in hosts) else DEFAULT_CONTROL)
    if control not in CONTROLS:
        raise TopologyError("control", f"{control[:20]!r} is not one of {', '.join(CONTROLS)}")
    for i, h in enumerate(hosts):
        if h.vm is not None and control != "underlay":
            raise TopologyError(f"hosts[{i}].vm", "a VM host needs `control: underlay` (its agent reaches the "
                                f"controller across the underlay; the unix socket is on this machine), not {control!r}")
    networks = _networks(_items(top, "networks"), {h.name for h in hosts})
    containers = _containers(_items(top, "containers"), {h.name for h in hosts}, networks,
                             vms={h.name for h in hosts if h.vm is not None})
    policies = _policies(_items(top, "policies"), {n.name for n in networks})
    services = topology_services.services(_items(top, "services"), {n.name: n for n in networks}, list(containers))
    return Topology(name, underlay, hosts, networks, containers, members, policies, services, control)


def _underlay(u: dict[str, Any]) -> UnderlaySpec:
    net = validate.subnet(_str(u, "subnet", "underlay") or DEFAULT_UNDERLAY, field="underlay.subnet")
    if net.prefixlen > UNDERLAY_PREFIX_MAX:
        raise TopologyError("underlay.subnet", f"prefix /{net.prefixlen} is too small: at least"
                            f" /{UNDERLAY_PREFIX_MAX} is needed (the switch and the hosts)")
    mtu = _int(u, "mtu", "underlay")
    mtu = DEFAULT_MTU if mtu is None else mtu
    if not UNDERLAY_MTU_MIN <= mtu <= UNDERLAY_MTU_MAX:
        raise TopologyError("underlay.mtu", f"{mtu} is out of range {UNDERLAY_MTU_MIN}..{UNDERLAY_MTU_MAX}")
    return UnderlaySpec(str(net), mtu)


def _hosts(raw: Any, net: ipaddress.IPv4Network) -> tuple[HostSpec, ...]:
    if raw is None:
        raise TopologyError("hosts", "required")
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= HOSTS_MAX:
            raise TopologyError("hosts", f"{raw} is out of range 1..{HOSTS_MAX}")
        raw = [f"h{i}" for i in range(1, raw + 1)]
    if not isinstance(raw, list):
        raise TopologyError("hosts", f"expected a count or a list, got {_kind(raw)}")
    if not 1 <= len(raw) <= HOSTS_MAX:
        raise TopologyError("hosts", f"expected 1..{HOSTS_MAX} hosts, got {len(raw)}")
    entries: list[tuple[str, ipaddress.IPv4Address | None, VmSpec | None, bool]] = []
    names: set[str] = set()
    used: dict[ipaddress.IPv4Address, str] = {}
    for i, item in enumerate(raw):
        path = f"hosts[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        elif not isinstance(item, dict):
            raise TopologyError(path, f"expected a name or a mapping, got {_kind(item)}")
        _mapping(item, path, HOST_KEYS)
        name = validate.name(_str(item, "name", path, required=True) or "",
                             field=f"{path}.name", max_len=validate.HOST_NAME_MAX)
        if name == RESERVED_HOST:
            raise TopologyError(f"{path}.name", f"{name!r} is reserved: a partition's side naming the control plane")
        if name in names:
            raise TopologyError(path, f"duplicate host {name!r}")
        names.add(name)
        addr = None
        text = _str(item, "underlay_ip", path)
        if text is not None:
            field_ = f"{path}.underlay_ip"
            addr = validate.ipv4(text, field=field_)
            validate.host_in(addr, net, field=field_)
            if addr == net.network_address + SWITCH_OFFSET:
                raise TopologyError(field_, f"{addr} is reserved for the switch")
            if addr == net.network_address + CONTROL_OFFSET:
                raise TopologyError(field_, f"{addr} is reserved for the controller's control address")
            if addr in used:
                raise TopologyError(field_, f"{addr} is already used by host {used[addr]!r}")
            used[addr] = name
        docker = _opt(item, "docker", path, bool, "true or false") or False
        vm_spec = parse_spec(item.get("vm"), f"{path}.vm")
        if docker and vm_spec is not None:
            raise TopologyError(f"{path}.docker", "not on a VM host: the lab runs a Docker host's dockerd in the "
                                "host's namespace on this machine")
        entries.append((name, addr, vm_spec, docker))
    hosts = []
    candidate = net.network_address + FIRST_HOST_OFFSET
    for name, addr, vm, docker in entries:
        if addr is None:
            while candidate in used:
                candidate += 1
            if candidate >= net.broadcast_address:
                raise TopologyError("underlay.subnet", f"{net} is too small for {len(entries)} hosts"
                                    f" (automatic addresses start at {net.network_address + FIRST_HOST_OFFSET})")
            addr = candidate
            used[addr] = name
        hosts.append(HostSpec(name, str(addr), vm, docker))
    return tuple(hosts)


def _networks(raw: list[Any], hosts: set[str]) -> tuple[NetworkSpec, ...]:
    out: list[NetworkSpec] = []
    vnis: dict[int, str] = {}
    subnets: list[tuple[str, ipaddress.IPv4Network]] = []
    for i, item in enumerate(raw):
        path = f"networks[{i}]"
        n = _mapping(item, path, NETWORK_KEYS)
        name = validate.name(_str(n, "name", path, required=True) or "",
                             field=f"{path}.name", max_len=validate.NETWORK_NAME_MAX)
        if any(o.name == name for o in out):
            raise TopologyError(path, f"duplicate network {name!r}")
        subnet = None
        if (text := _str(n, "subnet", path)) is not None:
            subnet = validate.subnet(text, field=f"{path}.subnet")
            for other, o_net in subnets:
                if subnet.overlaps(o_net):
                    raise TopologyError(f"{path}.subnet", f"{subnet} overlaps network {other!r} ({o_net})")
            subnets.append((name, subnet))
        gateway = None
        if (text := _str(n, "gateway", path)) is not None:
            gateway = validate.ipv4(text, field=f"{path}.gateway")
            if subnet is None:
                raise TopologyError(f"{path}.gateway", "needs an explicit subnet")
            validate.host_in(gateway, subnet, field=f"{path}.gateway")
        vni = validate.vni(_int(n, "vni", path) or 0, field=f"{path}.vni") or None
        mtu = validate.mtu(_int(n, "mtu", path) or 0, field=f"{path}.mtu") or None
        internal = _opt(n, "internal", path, bool, "true or false") or False
        driver = _str(n, "driver", path) or "overlay"
        if driver not in DRIVERS:
            raise TopologyError(f"{path}.driver", f"{driver[:20]!r} is not one of {', '.join(DRIVERS)}")
        host = _str(n, "host", path)
        if driver == "bridge":
            if host is None:
                raise TopologyError(f"{path}.host", "required for driver: bridge")
            if host not in hosts:
                raise TopologyError(f"{path}.host", f"unknown host {host!r}")
            if vni is not None:
                raise TopologyError(f"{path}.vni", "only for driver: overlay")
        elif host is not None:
            raise TopologyError(f"{path}.host", "only for driver: bridge")
        if vni is not None:
            if vni in vnis:
                raise TopologyError(f"{path}.vni", f"{vni} is already used by network {vnis[vni]!r}")
            vnis[vni] = name
        out.append(NetworkSpec(name, str(subnet) if subnet else None, str(gateway) if gateway else None,
                               vni, mtu, internal, driver, host, _labels(n, path)))
    return tuple(out)


def _attachments(c: dict[str, Any], path: str, owner: str) -> list[tuple[str, str, str | None, str, tuple[str, ...]]]:
    """(network, path of the name, ip, path of the ip, aliases) for each entry of `networks`."""
    raw = c.get("networks") or []
    if not isinstance(raw, list):
        raise TopologyError(f"{path}.networks", f"expected a list, got {_kind(raw)}")
    found: list[tuple[str, str, str | None, str, tuple[str, ...]]] = []
    for j, item in enumerate(raw):
        item_path = f"{path}.networks[{j}]"
        if isinstance(item, str):
            found.append((item, item_path, None, "", ()))
        elif isinstance(item, dict):
            _mapping(item, item_path, ATTACH_KEYS)
            name = _str(item, "name", item_path, required=True) or ""
            aliases = _opt(item, "aliases", item_path, list, "a list of names") or []
            for k, alias in enumerate(aliases):
                if not isinstance(alias, str):
                    raise TopologyError(f"{item_path}.aliases[{k}]", f"expected a name, got {_kind(alias)}")
            found.append((name, f"{item_path}.name", _str(item, "ip", item_path), f"{item_path}.ip",
                          validate.aliases(aliases, owner=owner, field=f"{item_path}.aliases")))
        else:
            raise TopologyError(item_path, f"expected a network name or a mapping, got {_kind(item)}")
    for net, ip in (_opt(c, "ip", path, dict, "a mapping") or {}).items():
        ip_path = f"{path}.ip.{net}"
        hits = [k for k, entry in enumerate(found) if entry[0] == net]
        if not hits:
            raise TopologyError(ip_path, f"network {net!r} is not in the container's networks")
        if found[hits[0]][2] is not None:
            raise TopologyError(ip_path, f"ip already given in {found[hits[0]][3]}")
        if not isinstance(ip, str):
            raise TopologyError(ip_path, f"expected a string, got {_kind(ip)}")
        found[hits[0]] = (net, found[hits[0]][1], ip, ip_path, found[hits[0]][4])
    return found


def _containers(raw: list[Any], hosts: set[str], networks: tuple[NetworkSpec, ...], *,
                vms: frozenset[str] | set[str] = frozenset()) -> tuple[ContainerSpec, ...]:
    by_name = {n.name: n for n in networks}
    out: list[ContainerSpec] = []
    taken: dict[tuple[str, ipaddress.IPv4Address], str] = {}   # (network, ip) -> container
    for i, item in enumerate(raw):
        path = f"containers[{i}]"
        c = _mapping(item, path, CONTAINER_KEYS)
        name = validate.name(_str(c, "name", path, required=True) or "",
                             field=f"{path}.name", max_len=validate.CONTAINER_NAME_MAX)
        if any(o.name == name for o in out):
            raise TopologyError(path, f"duplicate container {name!r}")
        host = _str(c, "host", path, required=True) or ""
        if host not in hosts:
            raise TopologyError(f"{path}.host", f"unknown host {host!r}")
        mode = _str(c, "network_mode", path)
        if mode is not None:
            if mode not in NETWORK_MODES:
                raise TopologyError(f"{path}.network_mode", f"{mode[:20]!r} is not one of {', '.join(NETWORK_MODES)}")
            if c.get("networks") or c.get("ip") or c.get("ports"):
                raise TopologyError(f"{path}.network_mode", "excludes networks" if c.get("networks") or c.get("ip")
                                    else "excludes ports (no network to publish on)")
            if host in vms:
                raise TopologyError(f"{path}.network_mode", f"not on a VM host ({host}): the lab makes such a "
                                    "container's namespace on this machine")
        attachments: list[Attachment] = []
        for net_name, net_path, ip_text, ip_path, aliases in _attachments(c, path, name):
            net = by_name.get(net_name)
            if net is None:
                raise TopologyError(net_path, f"unknown network {net_name!r}")
            if any(a.network == net_name for a in attachments):
                raise TopologyError(net_path, f"already attached to network {net_name!r}")
            if net.driver == "bridge" and net.host != host:
                raise TopologyError(net_path, f"network {net_name!r} is a bridge on host {net.host!r},"
                                    f" the container is on {host!r}")
            ip = None
            if ip_text is not None:
                ip = validate.ipv4(ip_text, field=ip_path)
                if net.subnet is None:
                    raise TopologyError(ip_path, f"network {net_name!r} has no explicit subnet")
                subnet = ipaddress.IPv4Network(net.subnet)
                validate.host_in(ip, subnet, field=ip_path)
                gateway = ipaddress.IPv4Address(net.gateway) if net.gateway else subnet.network_address + 1
                if ip == gateway:
                    raise TopologyError(ip_path, f"{ip} is the gateway of network {net_name!r}")
                if (net_name, ip) in taken:
                    raise TopologyError(ip_path, f"{ip} is already used by container {taken[net_name, ip]!r}")
                taken[net_name, ip] = name
            attachments.append(Attachment(net_name, str(ip) if ip else None, aliases))
        out.append(ContainerSpec(name, host, tuple(attachments), mode, _labels(c, path),
                                 topology_services.container_ports(c, path)))
    _unique_names(out)
    topology_services.check_ports(out, by_name)
    return tuple(out)


def _unique_names(containers: list[ContainerSpec]) -> None:
    """An alias is unique on its network among the names and aliases of its containers
    (what the controller enforces), so `up` never fails halfway on one."""
    taken: dict[tuple[str, str], str] = {(a.network, c.name): c.name for c in containers for a in c.networks}
    for i, c in enumerate(containers):
        for j, a in enumerate(c.networks):
            for k, alias in enumerate(a.aliases):
                other = taken.get((a.network, alias))
                if other is not None:
                    what = f"the name of container {other!r}" if other == alias else f"an alias of container {other!r}"
                    raise TopologyError(f"containers[{i}].networks[{j}].aliases[{k}]",
                                        f"{alias!r} is already {what} on network {a.network!r}")
                taken[a.network, alias] = c.name


def _policies(raw: list[Any], networks: set[str]) -> tuple[Policy, ...]:
    """The `policies:` section, with exactly the rules of `vxlab policy add`."""
    out: list[Policy] = []
    for i, item in enumerate(raw):
        path = f"policies[{i}]"
        m = _mapping(item, path, POLICY_KEYS)
        net = _str(m, "network", path, required=True) or ""
        if net not in networks:
            raise TopologyError(f"{path}.network", f"unknown network {net!r}")
        ports = m.get("ports")
        ports = [] if ports is None else [ports] if isinstance(ports, (int, str)) else ports
        if not isinstance(ports, list) or any(isinstance(x, bool) or not isinstance(x, (int, str)) for x in ports):
            raise TopologyError(f"{path}.ports", "expected a port, a range 'N-M', or a list of them")
        try:
            p = policy.check(Policy(
                name=_str(m, "name", path, required=True) or "", network=net,
                action=_str(m, "action", path, required=True) or "",
                source=policy.parse_selector(_str(m, "from", path) or "", field="policy.source"),
                destination=policy.parse_selector(_str(m, "to", path) or "", field="policy.destination"),
                protocol=_str(m, "proto", path) or "any", ports=tuple(str(x) for x in ports),
                priority=_int(m, "priority", path) or 0))
        except InvalidArgument as e:
            head, _, rest = e.field.removeprefix("policy.").partition(".")
            raise TopologyError(_join(f"{path}.{_POLICY_FIELDS.get(head, head)}", rest) if rest else
                                f"{path}.{_POLICY_FIELDS.get(head, head)}", e.reason) from None
        if any((o.network, o.name) == (net, p.name) for o in out):
            raise TopologyError(f"{path}.name", f"duplicate policy {p.name!r} on network {net!r}")
        out.append(p)
    return tuple(out)
