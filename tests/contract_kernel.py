"""The kernel contract (agent/kernel.py) as a reusable test suite that every `Kernel`
implementation must pass: FakeKernel in tests/unit/test_kernel_contract_fake.py,
NetlinkKernel on the real kernel in tests/integration/test_kernel_contract_netlink.py.

Subclass `KernelContract` as `Test…` and provide two fixtures: `kernel` (the Kernel
under test, its own namespace a fresh one) and `outside` (an `Outside`: what another
program does behind the kernel's back, and how a test looks at what the kernel's reads
do not show). Every test works in namespaces named `outside.ns(…)`.

What is checked is what the reconciler relies on: ensure-style calls that write nothing
when the object is right, deletes of missing objects that are no error and no write,
writes counted under the name of the method called, a dump that equals what was asked
for, veth pairs that vanish together, `Foreign` for unmarked objects in the way (and
those objects untouched), replace semantics of FDB and neighbour keys, the bulk path's
partial failures, adoption of half-made links only in a namespace of ours.

The sections are bases of `KernelContract`: contract_kernel_links.py (namespaces, links,
half-made links), contract_kernel_entries.py (addresses, routes, FDB and neighbour
entries, nftables tables, the agent's own namespace), contract_kernel_tables.py (the
published ports and services tables, the agent namespace's routes through uplinks),
contract_kernel_faults.py (host faults: the fault table, qdiscs, the IFB redirect, the
underlay's state), contract_kernel_handoff.py (runtime endpoints' veths, whose container
end waits in the agent's namespace for the runtime); `Outside` and the shared steps
are in contract_kernel_base.py. A new Kernel method gets its tests in the section of
its kind (or in a new section module, one more base here), and when a test needs state
the kernel will not make itself, one method more in `Outside` with an implementation in
both test files. `uncovered()` names the Kernel methods no test of the suite calls; the
unit test file fails while there is one.
"""

from __future__ import annotations

import inspect
import re

from contract_kernel_base import Outside
from contract_kernel_entries import EntryContract
from contract_kernel_faults import FaultContract
from contract_kernel_handoff import HandoffContract
from contract_kernel_links import LinkContract
from contract_kernel_tables import TableContract
from vxlab.agent.kernel import Kernel

__all__ = ["KernelContract", "Outside", "uncovered"]


class KernelContract(LinkContract, EntryContract, TableContract, FaultContract, HandoffContract):
    """Every section of the contract; subclass it once per implementation."""


def uncovered() -> list[str]:
    """Public Kernel methods that no test of KernelContract calls."""
    source = "".join(inspect.getsource(c) for c in KernelContract.__mro__ if c.__module__.startswith("contract_kernel"))
    methods = [n for n, f in inspect.getmembers(Kernel, inspect.isfunction) if not n.startswith("_")]
    return [n for n in methods if n != "close" and not re.search(rf"\.{n}\b", source)]
