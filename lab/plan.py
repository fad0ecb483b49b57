"""What `up` changes: every difference between a topology and a running lab, as steps
in the order `up` carries them out, or the reasons it refuses to (lab/apply.py does the
controller's part of the steps; hosts and network_mode namespaces are the lab's own).

Each step is one thing done to one object: `+` created, `-` deleted, `~` changed in
place (`~ network blue: mtu 1400 -> 1300`). Networks change in place (mtu, gateway,
internal, labels) and so do containers (labels); a container with a new address or
on another host gets its endpoint deleted and created again (`-` then `+`); a network
with another subnet, VNI, driver or (bridge) host is deleted with its endpoints and
policies and created again with them, only with `recreate` (`up --recreate`), and is
otherwise refused. A host with another underlay address keeps its containers: its
agent is restarted on the new address. The underlay and the etcd cluster of a running
lab cannot change at all (`down`, then `up`). A plan with a refusal is not carried out
in any part, and an empty plan writes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from vxlab import policy
from vxlab.client import Client
from vxlab.lab.topology import Attachment, ContainerSpec, NetworkSpec, Topology
from vxlab.model import Endpoint, Network, Policy

# Execution order: the lab's own first (hosts added or readdressed, network_mode
# namespaces removed), then the controller's (deletes before updates before creates,
# so a freed address, subnet or VNI can be taken again), hosts removed once their
# containers are gone, and network_mode namespaces created once agents converged.
LAB_FIRST, POLICY_DEL, ENDPOINT_DEL, NETWORK_DEL, NETWORK_UPD, NETWORK_ADD, ENDPOINT_ADD, ENDPOINT_UPD, \
    POLICY_ADD, HOST_DEL, LAB_LAST = range(11)
CONTROLLER = range(POLICY_DEL, POLICY_ADD + 1)


@dataclass(frozen=True)
class Step:
    """One line of an `up` plan, and what `up` does for it."""

    op: str      # "+" create, "-" delete, "~" change in place
    kind: str    # host, network, container, policy
    name: str
    detail: str = ""
    network: str = ""  # containers: which attachment; policies: their network
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
    nets: dict[str, Network] = field(default_factory=dict)
    eps: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    rules: dict[tuple[str, str], Policy] = field(default_factory=dict)
    underlay: tuple[str, int] | None = None  # (subnet, mtu) it was made with
    etcd_members: int = 0
    modes: dict[str, tuple[str, str]] = field(default_factory=dict)  # network_mode containers: name -> (mode, host)


async def read_live(c: Client, *, agents: set[str], applied: dict[str, Any]) -> Live:
    """The controller's state, for the lab's hosts (`agents`) and with what the last
    `up` applied (`applied`: the stored topology; the controller knows no underlay)."""
    nets, eps, rules, hosts = await asyncio.gather(c.list_networks(), c.list_endpoints(), c.list_policies(),
                                                   c.list_hosts())
    ips = {h["name"]: h.get("underlay_ip", "") for h in applied.get("hosts", [])} | \
        {h.name: h.underlay_ip for h in hosts}
    u = applied.get("underlay")
    return Live({h: ips.get(h, "") for h in agents}, {n.name: n for n in nets}, {(e.network, e.name): e for e in eps},
                {(p.network, p.name): p for p in rules}, (u["subnet"], u["mtu"]) if u else None,
                applied.get("etcd", {}).get("members", 1) if applied else 0,
                {c["name"]: (c["network_mode"], c["host"]) for c in applied.get("containers", [])
                 if c.get("network_mode")})


def plan(topo: Topology, live: Live, *, recreate: bool = False) -> Plan:
    """What `up` would do to make the running lab `live` what `topo` says."""
    steps: list[Step] = []
    refused = _fixed(topo, live)
    steps += _hosts(topo, live)
    recreated = _networks(topo, live, steps, refused, recreate=recreate)
    steps += _containers(topo, live, recreated)
    steps += _policies(topo, live, recreated)
    refused += _clashes(topo, live, steps, recreated)
    return Plan(sorted(steps, key=lambda s: s.phase), refused)


def _fixed(topo: Topology, live: Live) -> list[str]:
    """What a running lab cannot change at all."""
    out = []
    have = [("underlay.subnet", live.underlay[0], topo.underlay.subnet),
            ("underlay.mtu", live.underlay[1], topo.underlay.mtu)] if live.underlay else []
    if live.etcd_members:
        have.append(("etcd.members", live.etcd_members, topo.etcd_members))
    for path, old, new in have:
        if str(old) != str(new):
            out.append(f"{path}: {old} -> {new} cannot change on a running lab; 'vxlab down' it, then 'vxlab up'")
    return out


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
    if value == "":
        return "none"
    return "auto" if value == 0 else str(value)


def wanted_network(n: NetworkSpec) -> Network:
    """The controller's request for a network of the topology."""
    return Network(name=n.name, subnet=n.subnet or "", gateway=n.gateway or "", vni=n.vni or 0, mtu=n.mtu or 0,
                   internal=n.internal, labels=dict(n.labels), driver=n.driver, host=n.host or "")


def _networks(topo: Topology, live: Live, steps: list[Step], refused: list[str], *, recreate: bool) -> set[str]:
    """Network steps (into `steps`, refusals into `refused`); returns the networks recreated."""
    recreated: set[str] = set()
    for i, n in enumerate(topo.networks):
        cur = live.nets.get(n.name)
        if cur is None:
            steps.append(Step("+", "network", n.name, f"subnet {n.subnet}" if n.subnet else "(subnet allocated)",
                              phase=NETWORK_ADD))
        elif fixed := _changes(("subnet", cur.subnet, n.subnet or cur.subnet), ("vni", cur.vni, n.vni or cur.vni),
                               ("driver", cur.driver or "overlay", n.driver), ("host", cur.host, n.host or "")):
            rules = [name for (net, name) in sorted(live.rules) if net == n.name]
            eps = [name for (net, name) in sorted(live.eps, key=lambda k: k[1]) if net == n.name]
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
        elif changed := _changes(("mtu", cur.mtu, n.mtu or 0), ("gateway", cur.gateway, _gateway(n, cur)),
                                 ("internal", cur.internal, n.internal), ("labels", dict(cur.labels), dict(n.labels))):
            steps.append(Step("~", "network", n.name, _show_changes(changed), phase=NETWORK_UPD,
                              fields=tuple(f for f, _, _ in changed)))
    steps += [Step("-", "network", n, phase=NETWORK_DEL) for n in sorted(set(live.nets) - {n.name for n in topo.networks})]
    return recreated


def _changes(*fields: tuple[str, Any, Any]) -> list[tuple[str, Any, Any]]:
    """The (field, old, new) that differ."""
    return [(f, old, new) for f, old, new in fields if old != new]


def _show_changes(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{f} {_show(old)} -> {_show(new)}" for f, old, new in changes)


def _gateway(n: NetworkSpec, cur: Network) -> str:
    """The gateway the topology asks for (by default the subnet's first address)."""
    return n.gateway or str(ipaddress.IPv4Network(n.subnet or cur.subnet).network_address + 1)


def _attach(c: ContainerSpec, a: Attachment, why: str = "") -> Step:
    detail = f"on {c.host}, network {a.network}" + (f" ip {a.ip}" if a.ip else "") + (f" ({why})" if why else "")
    return Step("+", "container", c.name, detail, a.network, phase=ENDPOINT_ADD)


def _containers(topo: Topology, live: Live, recreated: set[str]) -> list[Step]:
    out: list[Step] = []
    want = {(a.network, c.name): (c, a) for c in topo.containers for a in c.networks}
    for (net, name), (c, a) in want.items():
        cur = live.eps.get((net, name))
        if net in recreated:
            out.append(_attach(c, a, "network recreated"))
        elif cur is None:
            out.append(_attach(c, a))
        elif cur.host != c.host or (a.ip and a.ip != cur.ip):
            why = f"host {cur.host} -> {c.host}" if cur.host != c.host else f"ip {cur.ip} -> {a.ip}"
            out.append(Step("-", "container", name, f"network {net} (replaced: {why})", net, phase=ENDPOINT_DEL))
            out.append(_attach(c, a, f"replaced: {why}"))
        elif dict(cur.labels) != dict(c.labels):
            out.append(Step("~", "container", name, f"network {net} labels {_show(dict(cur.labels))} ->"
                            f" {_show(dict(c.labels))}", net, phase=ENDPOINT_UPD, fields=("labels",)))
    out += [Step("-", "container", name, f"network {net}", net, phase=ENDPOINT_DEL)
            for (net, name) in sorted(live.eps, key=lambda k: (k[1], k[0])) if (net, name) not in want]
    modes = {c.name: (c.network_mode, c.host) for c in topo.containers if c.network_mode}
    out += [Step("-", "container", name, f"network_mode {mode} on {host}", phase=LAB_FIRST)
            for name, (mode, host) in sorted(live.modes.items()) if modes.get(name) != (mode, host)]
    out += [Step("+", "container", name, f"network_mode {mode} on {host}", phase=LAB_LAST)
            for name, (mode, host) in modes.items() if live.modes.get(name) != (mode, host)]
    return out


def _policies(topo: Topology, live: Live, recreated: set[str]) -> list[Step]:
    out: list[Step] = []
    wanted = {(p.network, p.name): p for p in topo.policies}
    for key, p in wanted.items():
        cur = live.rules.get(key)
        if p.network in recreated or cur is None or not policy.same_rule(cur, p):
            why = " (network recreated)" if p.network in recreated and cur is not None else ""
            if p.network not in recreated and cur is not None:
                out.append(Step("-", "policy", p.name, f"network {p.network} (changed)", p.network, phase=POLICY_DEL))
                why = " (changed)"
            out.append(Step("+", "policy", p.name, f"network {p.network}: {policy.describe(p)}{why}", p.network,
                            phase=POLICY_ADD))
    return out + [Step("-", "policy", name, f"network {net}", net, phase=POLICY_DEL)
                  for (net, name) in sorted(live.rules) if (net, name) not in wanted]


def _clashes(topo: Topology, live: Live, steps: list[Step], recreated: set[str]) -> list[str]:
    """Addresses the controller would refuse halfway through: a new gateway or a given
    address that a container keeps (one neither removed nor readdressed by the plan)."""
    gone = {(s.network, s.name) for s in steps if s.kind == "container" and s.op == "-"}
    held = {(net, e.ip): name for (net, name), e in live.eps.items()
            if (net, name) not in gone and net not in recreated}
    out = []
    for i, n in enumerate(topo.networks):
        moved = any(s.kind == "network" and s.name == n.name and "gateway" in s.fields for s in steps)
        gateway = _gateway(n, live.nets[n.name]) if moved else ""
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
