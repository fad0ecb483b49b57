"""The controller's part of an `up` plan (lab/plan.py): its steps, phase by phase.

Steps of one phase run at once, but for endpoint creates: the ones with a given
address first (all at once), then the others in file order, one network after
another in parallel, so automatic addresses follow the file (concurrent creates
would hand them out in whatever order the transactions commit). A step is exactly
one call: delete, update (with the fields the plan found changed) or create. Endpoint
updates that leave an endpoint without published ports run before the others, so ports
moving to another endpoint are free when it claims them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from vxlab.client import Client
from vxlab.lab import plan
from vxlab.lab.topology import Topology
from vxlab.model import Endpoint
from vxlab.view import View


async def apply(c: Client, topo: Topology, steps: list[plan.Step], *, phases: range = plan.CONTROLLER) -> None:
    """Carry out the controller's steps of `steps` in `phases` (in phase order)."""
    want = plan.wanted(topo)
    calls: dict[tuple[int, str], Callable[[plan.Step], Awaitable[object]]] = {
        (plan.POLICY_DEL, "policy"): lambda s: c.delete_policy(s.network, s.name),
        (plan.ENDPOINT_DEL, "container"): lambda s: c.delete_endpoint(s.network, s.name),
        (plan.NETWORK_DEL, "network"): lambda s: c.delete_network(s.name, force=True),
        (plan.NETWORK_UPD, "network"): lambda s: c.update_network(want.networks[s.name], fields=s.fields),
        (plan.NETWORK_ADD, "network"): lambda s: c.create_network(want.networks[s.name]),
        (plan.ENDPOINT_UPD, "container"): lambda s: c.update_endpoint(want.endpoints[s.network, s.name],
                                                                      fields=s.fields),
        (plan.POLICY_ADD, "policy"): lambda s: c.create_policy(want.policies[s.network, s.name]),
        (plan.SERVICE_DEL, "service"): lambda s: c.delete_service(s.network, s.name),
        (plan.SERVICE_ADD, "service"): lambda s: c.create_service(want.services[s.network, s.name]),
    }
    for phase in phases:
        todo = [s for s in steps if s.phase == phase]
        if phase == plan.ENDPOINT_ADD:
            await _create_endpoints(c, want, {(s.network, s.name) for s in todo})
            continue
        if phase == plan.ENDPOINT_UPD:  # published ports that move: who gives them up goes first
            freeing = [s for s in todo if not want.endpoints[s.network, s.name].ports]
            await asyncio.gather(*(calls[phase, s.kind](s) for s in freeing))
            todo = [s for s in todo if s not in freeing]
        await asyncio.gather(*(calls[phase, s.kind](s) for s in todo))


async def _create_endpoints(c: Client, want: View, todo: set[tuple[str, str]]) -> None:
    eps = [e for key, e in want.endpoints.items() if key in todo]  # file order
    chains: dict[str, list[Endpoint]] = {}
    for e in eps:
        if not e.ip:
            chains.setdefault(e.network, []).append(e)
    await asyncio.gather(*(c.create_endpoint(e) for e in eps if e.ip))

    async def in_order(chain: list[Endpoint]) -> None:
        for e in chain:
            await c.create_endpoint(e)
    await asyncio.gather(*(in_order(chain) for chain in chains.values()))
