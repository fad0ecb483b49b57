"""What `up` changes: the difference between a topology and a running lab as steps
(hosts, networks, containers, policies), and the controller's part of carrying them
out (networks, containers, policies; hosts and agents are the lab's own work)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from vxlab import policy
from vxlab.client import Client
from vxlab.lab.topology import Topology
from vxlab.model import Endpoint, Network, Policy


@dataclass(frozen=True)
class Step:
    """One line of an `up` plan."""

    op: str      # "+" add, "-" remove, "~" replace
    kind: str    # host, network, container, policy
    name: str
    detail: str = ""
    network: str = ""  # containers: which attachment; policies: their network

    def describe(self) -> str:
        return f"{self.op} {self.kind} {self.name}{'  ' + self.detail if self.detail else ''}"


@dataclass(frozen=True)
class Live:
    """What a running lab holds (empty for a lab that is not running)."""

    hosts: set[str] = field(default_factory=set)
    nets: dict[str, Network] = field(default_factory=dict)
    eps: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    rules: dict[tuple[str, str], Policy] = field(default_factory=dict)


async def read_live(c: Client, hosts: set[str]) -> Live:
    nets, eps, rules = await asyncio.gather(c.list_networks(), c.list_endpoints(), c.list_policies())
    return Live(hosts, {n.name: n for n in nets}, {(e.network, e.name): e for e in eps},
                {(p.network, p.name): p for p in rules})


def plan(topo: Topology, live: Live) -> list[Step]:
    """What `up` would change, by comparing the topology with the running lab."""
    hosts, nets, eps, rules = live.hosts, live.nets, live.eps, live.rules
    steps = [Step("+", "host", h.name, h.underlay_ip) for h in topo.hosts if h.name not in hosts]
    want_hosts = {h.name for h in topo.hosts}
    steps += [Step("-", "host", h) for h in sorted(hosts - want_hosts)]
    steps += [Step("+", "network", n.name, n.subnet or "(subnet allocated)") for n in topo.networks
              if n.name not in nets]
    steps += [Step("-", "network", n) for n in sorted(set(nets) - {n.name for n in topo.networks})]
    want = {(a.network, c.name): (c, a) for c in topo.containers for a in c.networks}
    for (net, name), (c, a) in want.items():
        cur = eps.get((net, name))
        if cur is None:
            steps.append(Step("+", "container", name, f"on {c.host}, network {net}" + (f" ip {a.ip}" if a.ip else ""), net))
        elif cur.host != c.host or (a.ip and a.ip != cur.ip):
            steps.append(Step("~", "container", name, f"network {net}: {cur.host}/{cur.ip} -> {c.host}/{a.ip or 'any'}", net))
    steps += [Step("-", "container", name, f"network {net}", net) for (net, name) in eps if (net, name) not in want]
    wanted = {(p.network, p.name): p for p in topo.policies}
    for key, p in wanted.items():
        if key not in rules or not policy.same_rule(rules[key], p):
            steps.append(Step("+" if key not in rules else "~", "policy", p.name, policy.describe(p), p.network))
    steps += [Step("-", "policy", name, "", net) for (net, name) in rules if (net, name) not in wanted]
    return steps


async def apply(c: Client, topo: Topology, steps: list[Step]) -> None:
    """Carry out the controller's part of `steps`."""
    for s in steps:
        if s.kind == "container" and s.op in "-~":
            await c.delete_endpoint(s.network, s.name)
        elif s.kind == "policy" and s.op in "-~":
            await c.delete_policy(s.network, s.name)
    for s in steps:
        if s.kind == "network" and s.op == "-":
            await c.delete_network(s.name, force=True)
    specs = {n.name: n for n in topo.networks}
    await asyncio.gather(*(c.create_network(Network(
        name=n, subnet=specs[n].subnet or "", gateway=specs[n].gateway or "", vni=specs[n].vni or 0,
        mtu=specs[n].mtu or 0, internal=specs[n].internal, labels=dict(specs[n].labels),
        driver=specs[n].driver, host=specs[n].host or ""))
        for n in (s.name for s in steps if s.kind == "network" and s.op == "+")))
    todo = {(s.network, s.name) for s in steps if s.kind == "container" and s.op in "+~"}
    # Addresses follow the file: given ones first (all at once), then the others in
    # file order, one network after another in parallel. Concurrent creates would
    # hand out addresses in whatever order the transactions commit.
    chains: dict[str, list[Endpoint]] = {}
    fixed = []
    for ct in topo.containers:
        for a in ct.networks:
            if (a.network, ct.name) in todo:
                ep = Endpoint(name=ct.name, network=a.network, host=ct.host, ip=a.ip or "",
                              labels=dict(ct.labels))
                (fixed if a.ip else chains.setdefault(a.network, [])).append(ep)
    await asyncio.gather(*(c.create_endpoint(ep) for ep in fixed))

    async def in_order(eps: list[Endpoint]) -> None:
        for ep in eps:
            await c.create_endpoint(ep)
    await asyncio.gather(*(in_order(eps) for eps in chains.values()))
    todo_rules = {(s.network, s.name) for s in steps if s.kind == "policy" and s.op in "+~"}
    await asyncio.gather(*(c.create_policy(p) for p in topo.policies if (p.network, p.name) in todo_rules))
