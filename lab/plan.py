"""What `up` changes: every difference between a topology and a running lab, as steps
in the order `up` carries them out, or the reasons it refuses to (lab/apply.py does the
controller's part of the steps; hosts and network_mode namespaces are the lab's own).

Each step is one thing done to one object: `+` created, `-` deleted, `~` changed in
place (`~ network blue: mtu 1400 -> 1300`). Networks change in place (mtu, gateway,
internal, labels) and so do containers (labels, aliases, published ports); a service
that changes is deleted and created again (after the containers, its replicas, are
made); a container with a new address or
on another host gets its endpoint deleted and created again (`-` then `+`); a network
with another subnet, VNI, driver or (bridge) host is deleted with its endpoints and
policies and created again with them, only with `recreate` (`up --recreate`), and is
otherwise refused. A host with another underlay address keeps its containers: its
agent is restarted on the new address. The underlay, the etcd cluster and where the
agents reach the controller (`control`) of a running lab cannot change at all (`down`, then `up`). A plan with a refusal is not carried out
in any part, and an empty plan writes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from vxlab import policy
from vxlab import ports as portspec
from vxlab import services as semantics
from vxlab.client import Client
from vxlab.lab.topology import NetworkSpec, Topology
from vxlab.lab.topology_services import publishing_network
from vxlab.lab.vm import VmSpec
from vxlab.model import Endpoint, Network, PortMapping, Service
from vxlab.view import Delta, FieldChange, View

# Execution order: the lab's own first (hosts added or readdressed, network_mode
# namespaces removed), then the controller's (deletes before updates before creates,
# so a freed address, subnet, VNI or alias can be taken again; services after their
# replicas), hosts removed once their containers are gone, and network_mode namespaces
# created once agents converged.
LAB_FIRST, POLICY_DEL, SERVICE_DEL, ENDPOINT_DEL, NETWORK_DEL, NETWORK_UPD, NETWORK_ADD, ENDPOINT_UPD, ENDPOINT_ADD, \
    POLICY_ADD, SERVICE_ADD, HOST_DEL, LAB_LAST = range(13)
CONTROLLER = range(POLICY_DEL, SERVICE_ADD + 1)

# What is compared (the view's diff, in this order) and what a difference means: a
# network changes subnet, VNI, driver or (bridge) host only by being made again; an
# endpoint changes host or address by being deleted and created again.
RECREATE = ("subnet", "vni", "driver", "host")
UPDATE = ("mtu", "gateway", "internal", "labels")
REPLACE = ("host", "ip")
COMPARED = {"networks": RECREATE + UPDATE, "endpoints": REPLACE + ("labels", "aliases", "ports")}  # policies,
# services: the whole spec


@dataclass(frozen=True)
class Step:
    """One line of an `up` plan, and what `up` does for it."""

    op: str      # "+" create, "-" delete, "~" change in place
    kind: str    # host, network, container, policy, service
    name: str
    detail: str = ""
    network: str = ""  # containers: which attachment; policies, services: their network
    phase: int = field(default=LAB_FIRST, compare=False)
    fields: tuple[str, ...] = ()  # "~": what changes (the update's mask)

    def describe(self) -> str:
        return f"{self.op} {self.kind} {self.name}{': ' + self.detail if self.detail else ''}"


@dataclass(frozen=True)
class Plan:
    steps: list[Step]
    refused: list[str] = field(default_factory=list)  # one "path: reason" each

    @property
    def refusal(self) -> str:
        return "; ".join(self.refused)


@dataclass(frozen=True)
class Live:
    """What a running lab holds (empty for a lab that is not running)."""

    hosts: dict[str, str] = field(default_factory=dict)  # name -> underlay address ("": unknown)
    view: View = field(default_factory=View)  # the controller's networks, endpoints, policies and services
    underlay: tuple[str, int] | None = None  # (subnet, mtu) it was made with
    etcd_members: int = 0
    control: str = ""  # `control` it was made with ("": not running)
    vms: dict[str, VmSpec | None] = field(default_factory=dict)  # host -> what it runs as (None: a namespace)
    modes: dict[str, tuple[str, str]] = field(default_factory=dict)  # network_mode containers: name -> (mode, host)


async def read_live(c: Client, *, agents: set[str], applied: Topology | None) -> Live:
    """The controller's state, for the lab's hosts (`agents`) and with what the last
    `up` applied (`applied`: the stored topology; the controller knows no underlay)."""
    nets, eps, rules, hosts, svcs = await asyncio.gather(c.list_networks(), c.list_endpoints(), c.list_policies(),
                                                         c.list_hosts(), c.list_services())
    ips = {h.name: h.underlay_ip for h in (applied.hosts if applied else ())} | {h.name: h.underlay_ip for h in hosts}
    nets = [dataclasses.replace(n, driver=n.driver or "overlay") for n in nets]  # from before drivers: overlays
    return Live({h: ips.get(h, "") for h in agents}, View.of_objects([*nets, *eps, *rules, *svcs]),
                (applied.underlay.subnet, applied.underlay.mtu) if applied else None,
                applied.etcd_members if applied else 0, applied.control if applied else "",
                {h.name: h.vm for h in (applied.hosts if applied else ()) if h.name in agents},
                {c.name: (c.network_mode, c.host) for c in (applied.containers if applied else ()) if c.network_mode})


def plan(topo: Topology, live: Live, *, recreate: bool = False) -> Plan:
    """What `up` would do to make the running lab `live` what `topo` says."""
    want = wanted(topo)
    delta = live.view.diff(_resolved(want, live.view), fields=COMPARED)
    steps: list[Step] = []
    refused = _fixed(topo, live)
    steps += _hosts(topo, live)
    recreated = _networks(topo, live, delta, steps, refused, recreate=recreate)
    steps += _containers(topo, live, want, delta, recreated)
    steps += _policies(want, live, delta, recreated)
    steps += _services(want, live, delta, recreated)
    refused += _clashes(topo, live, steps, recreated)
    return Plan(sorted(steps, key=lambda s: s.phase), refused)


def wanted(topo: Topology) -> View:
    """The topology's networks, endpoints (one per container and network, in file order,
    the ports on the first non-internal one), policies and services as `up` asks the
    controller for them: what the file leaves to the controller (subnet, VNI,
    addresses, VIPs) is empty."""
    nets = {n.name: n for n in topo.networks}
    eps = [Endpoint(name=c.name, network=a.network, host=c.host, ip=a.ip or "", labels=dict(c.labels),
                    aliases=a.aliases, ports=c.ports if a.network == publishing_network(c, nets) else ())
           for c in topo.containers for a in c.networks]
    return View.of_objects([*(_network(n) for n in topo.networks), *eps, *topo.policies, *topo.services])


def _resolved(want: View, live: View) -> View:
    """`want` with what the topology leaves open taken from the running objects: a
    subnet, VNI or address not given is the one allocated; a gateway not given is the
    subnet's first address."""
    nets: dict[str, Network] = {}
    for name, n in want.networks.items():
        cur = live.networks.get(name)
        if cur is not None:
            subnet = n.subnet or cur.subnet
            n = dataclasses.replace(n, subnet=subnet, vni=n.vni or cur.vni, gateway=_gateway(n.gateway, subnet))
        nets[name] = n
    eps: dict[tuple[str, str], Endpoint] = {}
    for key, e in want.endpoints.items():
        cur_ep = live.endpoints.get(key)
        eps[key] = e if cur_ep is None or e.ip else dataclasses.replace(e, ip=cur_ep.ip)
    svcs = {key: s if (cur_s := live.services.get(key)) is None or s.vip else dataclasses.replace(s, vip=cur_s.vip)
            for key, s in want.services.items()}
    return View(networks=nets, endpoints=eps, policies=want.policies, services=svcs)


def _fixed(topo: Topology, live: Live) -> list[str]:
    """What a running lab cannot change at all."""
    out = []
    have = [("underlay.subnet", live.underlay[0], topo.underlay.subnet),
            ("underlay.mtu", live.underlay[1], topo.underlay.mtu)] if live.underlay else []
    if live.etcd_members:
        have.append(("etcd.members", live.etcd_members, topo.etcd_members))
    if live.control:
        have.append(("control", live.control, topo.control))
    for i, h in enumerate(topo.hosts):
        again = f"take host {h.name} out ('vxlab up' without it), then put it back"
        if h.name in live.vms and live.vms[h.name] != h.vm:
            out.append(f"hosts[{i}].vm: {_vm(live.vms[h.name])} -> {_vm(h.vm)} cannot change on a running lab; {again}")
        elif h.vm is not None and live.hosts.get(h.name) not in (None, "", h.underlay_ip):
            out.append(f"hosts[{i}].underlay_ip: {live.hosts[h.name]} -> {h.underlay_ip}: a VM host's address "
                       f"cannot change on a running lab; {again}")
    for path, old, new in have:
        if str(old) != str(new):
            out.append(f"{path}: {old} -> {new} cannot change on a running lab; 'vxlab down' it, then 'vxlab up'")
    return out


def _vm(spec: VmSpec | None) -> str:
    return "a namespace" if spec is None else f"a VM ({spec.cpus} CPU, {spec.memory_mb} MiB" + (
        f", kernel {spec.kernel})" if spec.kernel else ")")


def _hosts(topo: Topology, live: Live) -> list[Step]:
    out = []
    for h in topo.hosts:
        old = live.hosts.get(h.name)
        if old is None:
            out.append(Step("+", "host", h.name, h.underlay_ip))
        elif old and old != h.underlay_ip:
            out.append(Step("~", "host", h.name, f"underlay_ip {old} -> {h.underlay_ip} (its agent restarts there;"
                            " its containers stay)", fields=("underlay_ip",)))
    want = {h.name for h in topo.hosts}
    return out + [Step("-", "host", h, phase=HOST_DEL) for h in sorted(set(live.hosts) - want)]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(portspec.describe(v) if isinstance(v, PortMapping) else str(v) for v in value) + "]"
    if value == "":
        return "none"
    return "auto" if value == 0 else str(value)


def _network(n: NetworkSpec) -> Network:
    """The controller's request for a network of the topology."""
    return Network(name=n.name, subnet=n.subnet or "", gateway=n.gateway or "", vni=n.vni or 0, mtu=n.mtu or 0,
                   internal=n.internal, labels=dict(n.labels), driver=n.driver, host=n.host or "")


def _networks(topo: Topology, live: Live, delta: Delta, steps: list[Step], refused: list[str], *,
              recreate: bool) -> set[str]:
    """Network steps (into `steps`, refusals into `refused`); returns the networks recreated."""
    recreated: set[str] = set()
    for i, n in enumerate(topo.networks):
        d = delta.get("networks", n.name)
        if d is None:
            continue
        if d.old is None:
            steps.append(Step("+", "network", n.name, f"subnet {n.subnet}" if n.subnet else "(subnet allocated)",
                              phase=NETWORK_ADD))
        elif fixed := [c for c in d.changes if c.field in RECREATE]:
            rules = [name for (net, name) in sorted(live.view.policies) if net == n.name]
            eps = [name for (net, name) in sorted(live.view.endpoints, key=lambda k: k[1]) if net == n.name]
            deps = " and ".join(x for x in (f"endpoints {', '.join(eps)}" if eps else "",
                                            f"policies {', '.join(rules)}" if rules else "") if x)
            if not recreate:
                (f, old, new), more = fixed[0], fixed[1:]
                also = f" (and {_show_changes(more)})" if more else ""
                refused.append(f"networks[{i}].{f}: {_show(old)} -> {_show(new)}{also} needs network {n.name!r}"
                               f" deleted and created again{' with its ' + deps if deps else ''}; use --recreate")
            steps.append(Step("-", "network", n.name, f"recreated for {_show_changes(fixed)}"
                              + (f" (with its {deps})" if deps else ""), phase=NETWORK_DEL))
            steps.append(Step("+", "network", n.name, f"subnet {n.subnet or '(allocated)'} (recreated)",
                              phase=NETWORK_ADD))
            recreated.add(n.name)
        else:
            steps.append(Step("~", "network", n.name, _show_changes(d.changes), phase=NETWORK_UPD, fields=d.fields))
    steps += [Step("-", "network", name, phase=NETWORK_DEL) for name in sorted(d.key for d in delta.removed("networks"))]
    return recreated


def _show_changes(changes: tuple[FieldChange, ...] | list[FieldChange]) -> str:
    return ", ".join(f"{f} {_show(old)} -> {_show(new)}" for f, old, new in changes)


def _gateway(gateway: str, subnet: str) -> str:
    """The gateway the topology asks for (by default the subnet's first address)."""
    return gateway or str(ipaddress.IPv4Network(subnet).network_address + 1)


def _attach(e: Endpoint, why: str = "") -> Step:
    detail = f"on {e.host}, network {e.network}" + (f" ip {e.ip}" if e.ip else "") + (f" ({why})" if why else "")
    return Step("+", "container", e.name, detail, e.network, phase=ENDPOINT_ADD)


def _containers(topo: Topology, live: Live, want: View, delta: Delta, recreated: set[str]) -> list[Step]:
    out: list[Step] = []
    for (net, name), e in want.endpoints.items():
        d = delta.get("endpoints", (net, name))
        if net in recreated:
            out.append(_attach(e, "network recreated"))
        elif d is None:
            continue
        elif d.old is None:
            out.append(_attach(e))
        elif moved := [c for c in d.changes if c.field in REPLACE]:
            why = f"{moved[0].field} {moved[0].old} -> {moved[0].new}"
            out.append(Step("-", "container", name, f"network {net} (replaced: {why})", net, phase=ENDPOINT_DEL))
            out.append(_attach(e, f"replaced: {why}"))
        else:
            out.append(Step("~", "container", name, f"network {net} {_show_changes(d.changes)}", net,
                            phase=ENDPOINT_UPD, fields=d.fields))
    out += [Step("-", "container", name, f"network {net}", net, phase=ENDPOINT_DEL)
            for (net, name) in sorted((d.key for d in delta.removed("endpoints")), key=lambda k: (k[1], k[0]))]
    modes = {c.name: (c.network_mode, c.host) for c in topo.containers if c.network_mode}
    out += [Step("-", "container", name, f"network_mode {mode} on {host}", phase=LAB_FIRST)
            for name, (mode, host) in sorted(live.modes.items()) if modes.get(name) != (mode, host)]
    out += [Step("+", "container", name, f"network_mode {mode} on {host}", phase=LAB_LAST)
            for name, (mode, host) in modes.items() if live.modes.get(name) != (mode, host)]
    return out


def _policies(want: View, live: Live, delta: Delta, recreated: set[str]) -> list[Step]:
    out: list[Step] = []
    for key, p in want.policies.items():
        cur = live.view.policies.get(key)
        if p.network in recreated or delta.get("policies", key) is not None:
            why = " (network recreated)" if p.network in recreated and cur is not None else ""
            if p.network not in recreated and cur is not None:
                out.append(Step("-", "policy", p.name, f"network {p.network} (changed)", p.network, phase=POLICY_DEL))
                why = " (changed)"
            out.append(Step("+", "policy", p.name, f"network {p.network}: {policy.describe(p)}{why}", p.network,
                            phase=POLICY_ADD))
    return out + [Step("-", "policy", name, f"network {net}", net, phase=POLICY_DEL)
                  for (net, name) in sorted(d.key for d in delta.removed("policies"))]


def _services(want: View, live: Live, delta: Delta, recreated: set[str]) -> list[Step]:
    """A service added, changed (deleted and created again: services change no other
    way) or removed; with a recreated network, made again."""
    out: list[Step] = []
    for key, s in want.services.items():
        cur = live.view.services.get(key)
        if s.network in recreated or delta.get("services", key) is not None:
            again = s.network not in recreated and cur is not None
            if again:
                out.append(Step("-", "service", s.name, f"network {s.network} (changed)", s.network,
                                phase=SERVICE_DEL))
            why = " (changed)" if again else " (network recreated)" if cur is not None else ""
            out.append(Step("+", "service", s.name, f"network {s.network}: {semantics.describe(s)}{why}", s.network,
                            phase=SERVICE_ADD))
    return out + [Step("-", "service", name, f"network {net}", net, phase=SERVICE_DEL)
                  for (net, name) in sorted(d.key for d in delta.removed("services"))]


def _clashes(topo: Topology, live: Live, steps: list[Step], recreated: set[str]) -> list[str]:
    """Addresses the controller would refuse halfway through: a new gateway or a given
    address that a container keeps (one neither removed nor readdressed by the plan)."""
    gone = {(s.network, s.name) for s in steps if s.kind == "container" and s.op == "-"}
    held = {(net, e.ip): name for (net, name), e in live.view.endpoints.items()
            if (net, name) not in gone and net not in recreated}
    out = []
    for i, n in enumerate(topo.networks):
        moved = any(s.kind == "network" and s.name == n.name and "gateway" in s.fields for s in steps)
        gateway = _gateway(n.gateway or "", n.subnet or live.view.networks[n.name].subnet) if moved else ""
        if moved and (n.name, gateway) in held:
            out.append(f"networks[{i}].gateway: {gateway} is the address of container {held[n.name, gateway]!r},"
                       " which keeps it")
    for i, c in enumerate(topo.containers):
        for j, a in enumerate(c.networks):
            other = held.get((a.network, a.ip or ""))
            if other is not None and other != c.name:
                out.append(f"containers[{i}].networks[{j}].ip: {a.ip} is the address of container {other!r}"
                           f" on network {a.network!r}, which keeps it")
    return out
