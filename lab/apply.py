"""The controller's part of an `up` plan (lab/plan.py): its steps, phase by phase.

Steps of one phase run at once, but for endpoint creates: the ones with a given
address first (all at once), then the others in file order, one network after
another in parallel, so automatic addresses follow the file (concurrent creates
would hand them out in whatever order the transactions commit). A step is exactly
one call: delete, update (with the fields the plan found changed) or create.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from vxlab.client import Client
from vxlab.lab import plan
from vxlab.lab.topology import Topology
from vxlab.model import Endpoint


async def apply(c: Client, topo: Topology, steps: list[plan.Step], *, phases: range = plan.CONTROLLER) -> None:
    """Carry out the controller's steps of `steps` in `phases` (in phase order)."""
    nets = {n.name: plan.wanted_network(n) for n in topo.networks}
    containers = {ct.name: ct for ct in topo.containers}
    rules = {(r.network, r.name): r for r in topo.policies}

    def endpoint(s: plan.Step) -> Endpoint:
        ct = containers[s.name]
        a = next(a for a in ct.networks if a.network == s.network)
        return Endpoint(name=ct.name, network=s.network, host=ct.host, ip=a.ip or "", labels=dict(ct.labels),
                        aliases=a.aliases)

    calls: dict[tuple[int, str], Callable[[plan.Step], Awaitable[object]]] = {
        (plan.POLICY_DEL, "policy"): lambda s: c.delete_policy(s.network, s.name),
        (plan.ENDPOINT_DEL, "container"): lambda s: c.delete_endpoint(s.network, s.name),
        (plan.NETWORK_DEL, "network"): lambda s: c.delete_network(s.name, force=True),
        (plan.NETWORK_UPD, "network"): lambda s: c.update_network(nets[s.name], fields=s.fields),
        (plan.NETWORK_ADD, "network"): lambda s: c.create_network(nets[s.name]),
        (plan.ENDPOINT_UPD, "container"): lambda s: c.update_endpoint(endpoint(s), fields=s.fields),
        (plan.POLICY_ADD, "policy"): lambda s: c.create_policy(rules[s.network, s.name]),
    }
    for phase in phases:
        todo = [s for s in steps if s.phase == phase]
        if phase == plan.ENDPOINT_ADD:
            await _create_endpoints(c, topo, [endpoint(s) for s in todo])
        else:
            await asyncio.gather(*(calls[phase, s.kind](s) for s in todo))


async def _create_endpoints(c: Client, topo: Topology, eps: list[Endpoint]) -> None:
    todo = {(e.network, e.name): e for e in eps}
    fixed = [e for e in eps if e.ip]
    chains: dict[str, list[Endpoint]] = {}
    for ct in topo.containers:  # file order
        for a in ct.networks:
            e = todo.get((a.network, ct.name))
            if e is not None and not e.ip:
                chains.setdefault(a.network, []).append(e)
    await asyncio.gather(*(c.create_endpoint(e) for e in fixed))

    async def in_order(chain: list[Endpoint]) -> None:
        for e in chain:
            await c.create_endpoint(e)
    await asyncio.gather(*(in_order(chain) for chain in chains.values()))
