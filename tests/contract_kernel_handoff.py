"""Kernel contract section: runtime endpoints' veths (`add_handoff`), whose container
end waits in the agent's own namespace until a runtime (Docker, CNI) takes it. Part of
`KernelContract` (tests/contract_kernel.py)."""

from __future__ import annotations

import time

import pytest
from contract_kernel_base import BR, EP_ALIAS, MAC, VE, Base, Outside, counting, nomac
from vxlab.agent.kernel import Kernel, KernelError, Link

HO = "vxhweb00000000"  # a handoff name: vxh + 11 characters of the endpoint id


class HandoffContract(Base):
    def handoff(self, kernel: Kernel, net: str, *, mtu: int = 1450) -> None:
        kernel.add_handoff(net, VE, alias=EP_ALIAS, master=BR, mtu=mtu, handoff=HO, mac=MAC)

    def test_add_handoff_leaves_the_container_end_marked_in_the_agents_namespace(self, kernel: Kernel,
                                                                                 outside: Outside) -> None:
        net = self.network(kernel, outside)
        with counting(kernel) as w:
            self.handoff(kernel, net)
        assert set(w) == {"add_handoff"}
        assert nomac(kernel.dump(outside.prefix)[net].links[VE]) == Link(VE, "veth", alias=EP_ALIAS, mtu=1450,
                                                                          up=True, master=BR)
        assert HO not in kernel.dump(outside.prefix)[net].links
        assert kernel.agent_ns().handoffs == {HO: Link(HO, "veth", alias=EP_ALIAS, mac=MAC, mtu=1450)}
        with counting(kernel) as w:
            self.handoff(kernel, net)
        assert not w, "the second call writes nothing"
        kernel.set_link("", HO, mtu=1400)
        with counting(kernel) as w:
            self.handoff(kernel, net)
        assert set(w) == {"add_handoff"} and kernel.agent_ns().handoffs[HO].mtu == 1450

    def test_a_taken_handoff_end_is_none_of_ours_and_its_pair_goes_with_the_runtimes_namespace(
            self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        self.handoff(kernel, net)
        pod = outside.ns("pod")
        outside.netns(pod)
        outside.move("", HO, pod)
        assert kernel.agent_ns().handoffs == {}
        assert kernel.dump(outside.prefix)[net].links[VE].master == BR  # the bridge end stays, its peer elsewhere
        with counting(kernel) as w:
            self.handoff(kernel, net)
        assert not w, "a taken end is not made again while its bridge end is there"
        outside.remove_netns(pod)  # the runtime's namespace goes, and the pair with it
        # (the kernel destroys an unmounted namespace in the background: until it did)
        deadline = time.monotonic() + 10
        while VE in kernel.dump(outside.prefix)[net].links:
            assert time.monotonic() < deadline, "the bridge end outlived the runtime's namespace by 10 s"
            time.sleep(0.02)
        self.handoff(kernel, net)
        assert set(kernel.agent_ns().handoffs) == {HO}

    def test_either_end_deleted_takes_the_other(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        self.handoff(kernel, net)
        with counting(kernel) as w:
            kernel.delete_link(net, VE)
        assert w == {"delete_link": 1} and kernel.agent_ns().handoffs == {}
        self.handoff(kernel, net)
        with counting(kernel) as w:
            kernel.delete_link("", HO)
            kernel.delete_link("", HO)
        assert w == {"delete_link": 1} and VE not in kernel.dump(outside.prefix)[net].links

    def test_a_stopped_add_handoff_leaves_nothing_unmarked_in_the_agents_namespace(self, kernel: Kernel,
                                                                                   outside: Outside) -> None:
        net = self.network(kernel, outside)
        kernel.interrupt = {"add_handoff"}
        with pytest.raises(KernelError, match="interrupted"):
            self.handoff(kernel, net)
        kernel.interrupt = set()
        assert HO not in outside.aliases("")
        assert outside.aliases(net)[HO] == "" and outside.aliases(net)[VE] == ""
        marker = kernel.dump(outside.prefix)[net].marker
        for name in (VE, HO):
            kernel.adopt_link(net, name, alias=EP_ALIAS, ns_marker=marker)
        self.handoff(kernel, net)  # finishes it: the handoff end moved out
        assert HO not in kernel.dump(outside.prefix)[net].links
        assert kernel.agent_ns().handoffs == {HO: Link(HO, "veth", alias=EP_ALIAS, mac=MAC, mtu=1450)}
