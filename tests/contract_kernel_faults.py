"""The kernel contract's host faults (agent/kernel.py `HostFaults`): the fault table,
root qdiscs of ours on the underlay and on the IFB `vxifb0` its ingress is redirected
to, the underlay's up/down state with its routes, all in the kernel's own namespace on
the underlay device `outside.underlay.dev`. Ensure-style writes (nothing the second
time), reads that give back what was written, deletes of what is missing that write
nothing, a foreign root qdisc left alone, netem applied or refused plainly."""

from __future__ import annotations

import pytest

from contract_kernel_base import Base, Outside, counting
from vxlab.agent import fault_nft
from vxlab.agent.kernel import FAULT_IFB, NETEM_MISSING, Foreign, HostFaults, Kernel, KernelError, Qdisc, Route, Unsupported

TBF = Qdisc("tbf", rate=1_250_000)


def faults(kernel: Kernel, outside: Outside) -> HostFaults:
    return kernel.agent_ns(underlay=outside.underlay.dev).faults


class FaultContract(Base):
    def test_fault_table_written_read_back_and_deleted(self, kernel: Kernel, outside: Outside) -> None:
        one = fault_nft.build([("output", 'ip daddr { 192.0.2.20 } counter drop comment "f1"')])
        two = fault_nft.build([("input", 'iifname "u0" numgen random mod 10000 < 500 counter drop comment "f2"')])
        assert one is not None and two is not None
        for table in (one, two):
            with counting(kernel) as w:
                kernel.set_fault_table(table)
            assert w == {"set_fault_table": 1} and faults(kernel, outside).table == table
            with counting(kernel) as w:
                kernel.set_fault_table(table)
            assert w == {}
        assert kernel.agent_ns() == kernel.agent_ns(underlay="")  # without the underlay: no host faults read
        with counting(kernel) as w:
            kernel.delete_fault_table()
            kernel.delete_fault_table()
        assert w == {"delete_fault_table": 1} and faults(kernel, outside).table is None

    def test_qdiscs_on_the_underlay_and_through_the_ifb(self, kernel: Kernel, outside: Outside) -> None:
        u = outside.underlay.dev
        with counting(kernel) as w:
            kernel.set_fault_qdisc(u, TBF)
            kernel.set_fault_qdisc(u, TBF)
        assert w == {"set_fault_qdisc": 1}
        with pytest.raises(KernelError):  # no IFB before the redirect
            kernel.set_fault_qdisc(FAULT_IFB, TBF)
        with counting(kernel) as w:
            kernel.set_fault_ingress(u)
        assert set(w) == {"set_fault_ingress"}
        with counting(kernel) as w:
            kernel.set_fault_ingress(u)
            kernel.set_fault_qdisc(FAULT_IFB, TBF)
        assert w == {"set_fault_qdisc": 1}
        have = faults(kernel, outside)
        assert (have.qdiscs, have.ingress) == ({u: TBF, FAULT_IFB: TBF}, True)
        faster = Qdisc("tbf", rate=2_500_000)
        with counting(kernel) as w:
            kernel.set_fault_qdisc(u, faster)
        assert w == {"set_fault_qdisc": 1} and faults(kernel, outside).qdiscs[u] == faster
        with counting(kernel) as w:
            kernel.delete_fault_ingress(u)  # the redirect first, then the IFB (and its qdisc with it)
        assert set(w) == {"delete_fault_ingress"}
        have = faults(kernel, outside)
        assert (have.qdiscs, have.ingress) == ({u: faster}, False)
        with counting(kernel) as w:
            kernel.delete_fault_qdisc(u)
            kernel.delete_fault_qdisc(u)
            kernel.delete_fault_ingress(u)
            kernel.delete_fault_qdisc(FAULT_IFB)
        assert w == {"delete_fault_qdisc": 1} and faults(kernel, outside).qdiscs == {}

    def test_netem_applied_or_refused_plainly(self, kernel: Kernel, outside: Outside) -> None:
        u, netem = outside.underlay.dev, Qdisc("netem", delay_us=10_000)
        try:
            kernel.set_fault_qdisc(u, netem)
        except Unsupported as e:
            assert str(e) == NETEM_MISSING and faults(kernel, outside).qdiscs == {}
        else:
            assert faults(kernel, outside).qdiscs == {u: netem}

    def test_a_foreign_root_qdisc_is_left_alone(self, kernel: Kernel, outside: Outside) -> None:
        u = outside.underlay.dev
        outside.root_qdisc(u)
        with pytest.raises(Foreign):
            kernel.set_fault_qdisc(u, TBF)
        with counting(kernel) as w:
            kernel.delete_fault_qdisc(u)
        assert w == {} and faults(kernel, outside).qdiscs == {}

    def test_the_underlay_down_and_up_with_its_routes(self, kernel: Kernel, outside: Outside) -> None:
        u = outside.underlay.dev
        route = Route("198.51.100.0/24", "", u)  # the system's, on-link
        outside.route("", route.dst, u)
        have = faults(kernel, outside)
        assert (have.down, have.routes) == (False, (route,))
        with counting(kernel) as w:
            kernel.set_underlay_state(u, up=False)
            kernel.set_underlay_state(u, up=False)
        assert w == {"set_underlay_state": 1}
        have = faults(kernel, outside)
        assert (have.down, have.routes) == (True, ())  # the kernel dropped them
        with counting(kernel) as w:
            kernel.set_underlay_state(u, up=True, routes=(route,))
        assert w == {"set_underlay_state": 1, "add_route": 1}
        have = faults(kernel, outside)
        assert (have.down, have.routes) == (False, (route,))
        with pytest.raises(KernelError):
            kernel.set_underlay_state("vxtnothere", up=False)
