"""Kernel contract sections: namespaces, links, half-made links (the fault point and
`adopt_link`). Part of `KernelContract` (tests/contract_kernel.py)."""

from __future__ import annotations

import dataclasses

import pytest
from contract_kernel_base import (BR, BR_ALIAS, CTR_MARK, EP_ALIAS, LO, MAC, NET_MARK, RMAC, UP_ALIAS, VE, VX, VX_ALIAS,
                                  Base, Outside, counting, empty, nomac, policy)
from vxlab import netns
from vxlab.agent.kernel import Fdb, Foreign, Kernel, KernelError, Link, Namespace, Nat, Neigh, Route


class LinkContract(Base):
    # --- namespaces ---------------------------------------------------------------------
    def test_create_netns_marks_it_and_writes_nothing_the_second_time(self, kernel: Kernel, outside: Outside) -> None:
        name = outside.ns("n-blue")
        with counting(kernel) as w:
            kernel.create_netns(name, marker=NET_MARK)
        assert set(w) == {"create_netns"}
        with counting(kernel) as w:
            kernel.create_netns(name, marker=NET_MARK)
        assert not w
        assert kernel.dump(outside.prefix)[name] == empty(name, NET_MARK)

    def test_create_netns_refuses_another_marker_and_an_unmarked_namespace(self, kernel: Kernel,
                                                                           outside: Outside) -> None:
        mine, theirs = outside.ns("n-blue"), outside.ns("other")
        kernel.create_netns(mine, marker=NET_MARK)
        outside.netns(theirs)
        with counting(kernel) as w:
            with pytest.raises(Foreign, match=NET_MARK):
                kernel.create_netns(mine, marker="vxlab:h2:net:blue")
            with pytest.raises(Foreign):
                kernel.create_netns(theirs, marker=NET_MARK)
        assert not w
        dump = kernel.dump(outside.prefix)
        assert (dump[mine].marker, dump[theirs].marker) == (NET_MARK, "")

    def test_dump_reads_the_namespaces_with_the_prefix_only(self, kernel: Kernel, outside: Outside) -> None:
        for name in ("a", "ab", "b"):
            kernel.create_netns(outside.ns(name), marker=f"vxlab:h1:ctr:{name}")
        outside.netns(outside.ns("a-theirs"))
        assert sorted(kernel.dump(outside.ns("a"))) == [outside.ns("a"), outside.ns("a-theirs"), outside.ns("ab")]
        assert kernel.dump(outside.ns("a"))[outside.ns("a-theirs")].marker == ""
        assert kernel.dump(outside.ns("zzz")) == {}

    def test_delete_netns_takes_its_veth_peers_and_is_no_error_when_missing(self, kernel: Kernel,
                                                                            outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        with counting(kernel) as w:
            kernel.delete_netns(ctr)
        assert set(w) == {"delete_netns"}
        dump = kernel.dump(outside.prefix)
        assert ctr not in dump and VE not in dump[net].links
        ctr = self.container(kernel, outside, net)
        kernel.delete_netns(net)
        assert kernel.dump(outside.prefix)[ctr] == empty(ctr, CTR_MARK)
        with counting(kernel) as w:
            kernel.delete_netns(net)
            kernel.delete_netns(outside.ns("never"))
        assert not w

    def test_a_namespace_removed_behind_the_kernels_back(self, kernel: Kernel, outside: Outside) -> None:
        """Gone from the dump; adds in it fail, deletes are no error and no write; it can
        be made again, with another marker."""
        net = self.network(kernel, outside)
        outside.remove_netns(net)
        assert net not in kernel.dump(outside.prefix)
        with pytest.raises(KernelError):
            kernel.add_bridge(net, BR, mtu=1450, alias=BR_ALIAS)
        with pytest.raises(KernelError):
            kernel.add_addr(net, BR, "10.10.0.1/24")
        with counting(kernel) as w:
            kernel.delete_link(net, BR)
            kernel.del_addr(net, BR, "10.10.0.1/24")
            kernel.del_route(net, Route("default", "10.10.0.254", BR))
            kernel.del_fdb(net, Fdb(VX, RMAC, "172.31.0.2"))
            kernel.del_neigh(net, Neigh(VX, "10.10.0.3", RMAC))
            kernel.forget_stale_neigh(net, "eth0", entries=(("10.10.0.3", RMAC),))
            kernel.apply_entries(net, add=[], delete=[])
            kernel.delete_nat(net)
            kernel.delete_policy(net)
            kernel.delete_netns(net)
        assert not w
        kernel.create_netns(net, marker="vxlab:h1:net:red")
        assert kernel.dump(outside.prefix)[net] == empty(net, "vxlab:h1:net:red")

    def test_set_resolv_writes_once_is_dumped_and_goes_with_its_namespace(self, kernel: Kernel,
                                                                           outside: Outside) -> None:
        """A container namespace's resolv.conf (/etc/netns/<name>/, the agent's DNS)."""
        ctr = outside.ns("c-web")
        kernel.create_netns(ctr, marker=CTR_MARK)
        text = netns.resolv_conf(CTR_MARK)
        try:
            with counting(kernel) as w:
                kernel.set_resolv(ctr, text)
                kernel.set_resolv(ctr, text)
            assert w == {"set_resolv": 1}
            assert kernel.dump(outside.prefix)[ctr] == dataclasses.replace(empty(ctr, CTR_MARK), resolv=text)
            with counting(kernel) as w:
                kernel.delete_resolv(ctr)
                kernel.delete_resolv(ctr)
            assert w == {"delete_resolv": 1} and kernel.dump(outside.prefix)[ctr].resolv is None
            kernel.set_resolv(ctr, text)
            kernel.delete_netns(ctr)
            kernel.create_netns(ctr, marker=CTR_MARK)
            assert kernel.dump(outside.prefix)[ctr].resolv is None  # it went with its namespace
        finally:
            netns.remove_etc(ctr)

    def test_a_network_namespace_dumps_as_built(self, kernel: Kernel, outside: Outside) -> None:
        """Everything a network namespace holds, read back equal (MACs the kernel picks left out)."""
        net = self.network(kernel, outside)
        self.container(kernel, outside, net)
        kernel.add_uplink(net, "vxgw0", alias=UP_ALIAS, mtu=1500, host_name="vxg-blue", host_cidr="169.254.1.1/30")
        kernel.add_addr(net, "vxgw0", "169.254.1.2/30")
        kernel.add_route(net, Route("default", "169.254.1.1", "vxgw0"))
        fdb, neigh, nat, table = Fdb(VX, RMAC, "172.31.0.2"), Neigh(VX, "10.10.0.3", RMAC), Nat(
            "10.10.0.0/24", "vxgw0"), policy("10.10.0.2")
        kernel.add_fdb(net, fdb)
        kernel.add_neigh(net, neigh)
        kernel.set_nat(net, nat)
        kernel.set_policy(net, table)
        dump = kernel.dump(outside.prefix)[net]
        links = {
            "lo": dataclasses.replace(LO, alias=NET_MARK, mac=""),
            BR: Link(BR, "bridge", alias=BR_ALIAS, mtu=1450, up=True),
            VX: Link(VX, "vxlan", alias=VX_ALIAS, mtu=1450, up=True, master=BR, vni=4096, local=outside.underlay.ip,
                     port=4789, learning=False, proxy=True),
            VE: Link(VE, "veth", alias=EP_ALIAS, mtu=1450, up=True, master=BR),
            "vxgw0": Link("vxgw0", "veth", alias=UP_ALIAS, mtu=1500, up=True)}
        assert dataclasses.replace(dump, links={n: nomac(link) for n, link in dump.links.items()}) == Namespace(
            net, NET_MARK, links, frozenset({("vxgw0", "169.254.1.2/30")}), frozenset({Route("default", "169.254.1.1",
                                                                                           "vxgw0")}),
            frozenset({fdb}), frozenset({neigh}), table, nat)

    # --- links --------------------------------------------------------------------------
    def test_add_bridge_is_dumped_as_asked_and_repaired_in_place(self, kernel: Kernel, outside: Outside) -> None:
        net = outside.ns("n-blue")
        kernel.create_netns(net, marker=NET_MARK)
        with counting(kernel) as w:
            kernel.add_bridge(net, BR, mtu=1450, alias=BR_ALIAS)
        assert set(w) == {"add_bridge"}
        assert nomac(kernel.dump(outside.prefix)[net].links[BR]) == Link(BR, "bridge", alias=BR_ALIAS, mtu=1450,
                                                                          up=True)
        with counting(kernel) as w:
            kernel.add_bridge(net, BR, mtu=1450, alias=BR_ALIAS)
        assert not w
        kernel.set_link(net, BR, mtu=1400, up=False)
        with counting(kernel) as w:
            kernel.add_bridge(net, BR, mtu=1450, alias=BR_ALIAS)
        assert set(w) == {"add_bridge"}
        assert kernel.dump(outside.prefix)[net].links[BR].mtu == 1450 and kernel.dump(outside.prefix)[net].links[BR].up

    def test_add_vxlan_is_dumped_as_asked_and_replaced_for_another_vni(self, kernel: Kernel,
                                                                       outside: Outside) -> None:
        net = self.network(kernel, outside, vxlan=False)
        local = outside.underlay.ip
        want = Link(VX, "vxlan", alias=VX_ALIAS, mtu=1450, up=True, master=BR, vni=4096, local=local, port=4789,
                    learning=False, proxy=True)
        for _ in range(2):
            with counting(kernel) as w:
                kernel.add_vxlan(net, VX, vni=4096, local=local, port=4789, mtu=1450, alias=VX_ALIAS, master=BR)
            assert nomac(kernel.dump(outside.prefix)[net].links[VX]) == want
        assert not w, "the second call writes nothing"
        with counting(kernel) as w:
            kernel.add_vxlan(net, VX, vni=4097, local=local, port=4789, mtu=1400, alias=VX_ALIAS, master=BR)
        assert set(w) == {"add_vxlan"}
        assert nomac(kernel.dump(outside.prefix)[net].links[VX]) == dataclasses.replace(want, vni=4097, mtu=1400)
        with counting(kernel) as w:
            kernel.add_vxlan(net, VX, vni=4097, local=local, port=4789, mtu=1450, alias=VX_ALIAS, master=BR)
        assert set(w) == {"add_vxlan"} and kernel.dump(outside.prefix)[net].links[VX].mtu == 1450
        with pytest.raises(KernelError, match="master 'nobr' does not exist"):
            kernel.add_vxlan(net, "vxv-x", vni=4098, local=local, port=4789, mtu=1450, alias=VX_ALIAS, master="nobr")
        assert "vxv-x" not in kernel.dump(outside.prefix)[net].links

    def test_a_link_of_ours_of_another_kind_is_replaced(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside, vxlan=False)
        kernel.add_bridge(net, "vxx", mtu=1450, alias="vxlab:bridge:x")
        with counting(kernel) as w:
            kernel.add_vxlan(net, "vxx", vni=4099, local=outside.underlay.ip, port=4789, mtu=1450,
                             alias="vxlab:vxlan:x", master=BR)
        assert set(w) == {"add_vxlan"}
        assert kernel.dump(outside.prefix)[net].links["vxx"].kind == "vxlan"

    def test_add_veth_makes_both_ends_as_asked_and_fixes_both(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        with counting(kernel) as w:
            ctr = self.container(kernel, outside, net)
        assert set(w) == {"create_netns", "add_veth"}
        end = Link(VE, "veth", alias=EP_ALIAS, mtu=1450, up=True, master=BR)
        peer = Link("eth0", "veth", alias=EP_ALIAS, mac=MAC, mtu=1450, up=True)
        dump = kernel.dump(outside.prefix)
        assert nomac(dump[net].links[VE]) == end and dump[ctr] == empty(ctr, CTR_MARK, eth0=peer)
        with counting(kernel) as w:
            self.container(kernel, outside, net)
        assert not w
        with counting(kernel) as w:
            self.container(kernel, outside, net, mtu=1400)
        assert set(w) == {"add_veth"}
        dump = kernel.dump(outside.prefix)
        assert (dump[net].links[VE].mtu, dump[ctr].links["eth0"].mtu) == (1400, 1400)

    def test_a_veth_pair_vanishes_together(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        kernel.add_addr(ctr, "eth0", "10.10.0.2/24")
        with counting(kernel) as w:
            kernel.delete_link(net, VE)
        assert set(w) == {"delete_link"}
        assert kernel.dump(outside.prefix)[ctr] == empty(ctr, CTR_MARK)
        with counting(kernel) as w:
            kernel.delete_link(net, VE)
            kernel.delete_link(ctr, "eth0")
        assert not w
        self.container(kernel, outside, net)
        kernel.delete_link(ctr, "eth0")  # from the other end
        assert VE not in kernel.dump(outside.prefix)[net].links

    def test_a_peer_of_ours_in_the_way_is_replaced(self, kernel: Kernel, outside: Outside) -> None:
        """`eth0` exists, marked, as the peer of another host end: add_veth makes the pair
        again (the old host end goes with its peer)."""
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        with counting(kernel) as w:
            kernel.add_veth(net, "vxe-new", alias="vxlab:ep:new", master=BR, mtu=1450, peer_ns=ctr, peer_name="eth0",
                            peer_mac=RMAC, peer_alias="vxlab:ep:new")
        assert set(w) == {"add_veth"}
        dump = kernel.dump(outside.prefix)
        assert VE not in dump[net].links and dump[ctr].links["eth0"].mac == RMAC
        kernel.delete_link(net, "vxe-new")
        assert "eth0" not in kernel.dump(outside.prefix)[ctr].links

    def test_set_link_changes_only_what_differs(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        with counting(kernel) as w:
            kernel.set_link(ctr, "eth0", mtu=1450, up=True)
            kernel.set_link(ctr, "eth0")
        assert not w
        with counting(kernel) as w:
            kernel.set_link(ctr, "eth0", mtu=1400)
            kernel.set_link(ctr, "eth0", mtu=1400, up=True)
        assert set(w) == {"set_link"}
        kernel.set_link(ctr, "eth0", up=False)
        eth0 = kernel.dump(outside.prefix)[ctr].links["eth0"]
        assert (eth0.mtu, eth0.up) == (1400, False)
        with pytest.raises(KernelError):
            kernel.set_link(ctr, "eth9", mtu=1400)

    def test_add_uplink_moves_its_host_end_out_and_writes_nothing_the_second_time(self, kernel: Kernel,
                                                                                    outside: Outside) -> None:
        net = self.network(kernel, outside)
        for _ in range(2):
            with counting(kernel) as w:
                kernel.add_uplink(net, "vxgw0", alias=UP_ALIAS, mtu=1500, host_name="vxg-blue",
                                  host_cidr="169.254.1.1/30")
            links = kernel.dump(outside.prefix)[net].links
            assert nomac(links["vxgw0"]) == Link("vxgw0", "veth", alias=UP_ALIAS, mtu=1500, up=True)
            assert "vxg-blue" not in links
            assert kernel.agent_ns().uplinks == {"vxg-blue": frozenset({"169.254.1.1/30"})}
            assert outside.aliases("")["vxg-blue"] == UP_ALIAS
        assert not w, "the second call writes nothing"
        with counting(kernel) as w:
            kernel.delete_link("", "vxg-blue")
        assert set(w) == {"delete_link"}
        assert kernel.agent_ns().uplinks == {} and "vxgw0" not in kernel.dump(outside.prefix)[net].links

    def test_unmarked_links_in_the_way_are_foreign_and_untouched(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        outside.link(net, "vxb-x", "bridge")
        outside.link(net, "vxv-x", "vxlan")
        outside.link(net, "vxe-x", "bridge", alias="someone")
        outside.link(ctr, "eth1", "bridge")
        outside.link(net, "vxgw0", "bridge")
        outside.link("", "vxg-red", "bridge")
        before = {ns: outside.aliases(ns) for ns in ("", net, ctr)}
        local = outside.underlay.ip
        with counting(kernel) as w:
            with pytest.raises(Foreign, match="vxb-x"):
                kernel.add_bridge(net, "vxb-x", mtu=1450, alias=BR_ALIAS)
            with pytest.raises(Foreign, match="vxv-x"):
                kernel.add_vxlan(net, "vxv-x", vni=7, local=local, port=4789, mtu=1450, alias=VX_ALIAS, master=BR)
            with pytest.raises(Foreign, match="vxe-x"):
                kernel.add_veth(net, "vxe-x", alias=EP_ALIAS, master=BR, mtu=1450, peer_ns=ctr, peer_name="eth2",
                                peer_mac=RMAC, peer_alias=EP_ALIAS)
            with pytest.raises(Foreign, match="eth1"):  # the peer's name
                kernel.add_veth(net, "vxe-y", alias=EP_ALIAS, master=BR, mtu=1450, peer_ns=ctr, peer_name="eth1",
                                peer_mac=RMAC, peer_alias=EP_ALIAS)
            with pytest.raises(Foreign, match="vxgw0"):
                kernel.add_uplink(net, "vxgw0", alias=UP_ALIAS, mtu=1500, host_name="vxg-blue",
                                  host_cidr="169.254.1.1/30")
            with pytest.raises(Foreign, match="vxg-red"):
                kernel.add_uplink(net, "vxgw1", alias=UP_ALIAS, mtu=1500, host_name="vxg-red",
                                  host_cidr="169.254.1.5/30")
            for ns, name in ((net, "vxb-x"), (net, "vxe-x"), (ctr, "eth1"), ("", "vxg-red")):
                with pytest.raises(Foreign, match=name):
                    kernel.delete_link(ns, name)
                with pytest.raises(Foreign, match=name):
                    kernel.set_link(ns, name, mtu=1400)
        assert not w
        assert {ns: outside.aliases(ns) for ns in ("", net, ctr)} == before
        assert "vxe-y" not in before[net] and "vxgw1" not in before[net]

    # --- half-made links: the fault point and adoption ------------------------------------
    def test_adopt_link_marks_an_unmarked_link_in_a_namespace_with_our_marker(self, kernel: Kernel,
                                                                              outside: Outside) -> None:
        net = self.network(kernel, outside, vxlan=False)
        outside.link(net, "vxb-red", "bridge")
        for _ in range(2):
            with counting(kernel) as w:
                kernel.adopt_link(net, "vxb-red", alias="vxlab:bridge:red", ns_marker=NET_MARK)
            assert outside.aliases(net)["vxb-red"] == "vxlab:bridge:red"
        assert not w, "the second call writes nothing"
        with counting(kernel) as w:
            kernel.adopt_link(net, "gone", alias="vxlab:bridge:gone", ns_marker=NET_MARK)
            kernel.adopt_link(net, BR, alias="vxlab:bridge:other", ns_marker=NET_MARK)  # marked: left alone
        assert not w and outside.aliases(net)[BR] == BR_ALIAS

    def test_adopt_link_is_foreign_where_the_namespace_does_not_prove_the_link_ours(self, kernel: Kernel,
                                                                                   outside: Outside) -> None:
        net = self.network(kernel, outside, vxlan=False)
        theirs = outside.ns("other")
        outside.netns(theirs)
        outside.link("", "vxg-blue", "bridge")
        outside.link(net, "vxb-red", "bridge")
        outside.link(net, "vxb-x", "bridge", alias="someone")
        outside.link(theirs, "vxb-red", "bridge")
        before = {ns: outside.aliases(ns) for ns in ("", net, theirs)}
        with counting(kernel) as w:
            with pytest.raises(Foreign, match="never in the agent's own namespace"):
                kernel.adopt_link("", "vxg-blue", alias=UP_ALIAS, ns_marker=NET_MARK)
            with pytest.raises(Foreign, match="marker"):
                kernel.adopt_link(net, "vxb-red", alias="vxlab:bridge:red", ns_marker="vxlab:h2:net:blue")
            with pytest.raises(Foreign, match="marker"):
                kernel.adopt_link(theirs, "vxb-red", alias="vxlab:bridge:red", ns_marker="")
            with pytest.raises(Foreign, match="someone's alias"):
                kernel.adopt_link(net, "vxb-x", alias="vxlab:bridge:x", ns_marker=NET_MARK)
        assert not w
        assert {ns: outside.aliases(ns) for ns in ("", net, theirs)} == before

    @pytest.mark.parametrize("method", ["add_bridge", "add_vxlan", "add_veth", "add_uplink"])
    def test_a_call_stopped_between_create_and_mark_leaves_an_adoptable_link_in_our_namespace(
            self, kernel: Kernel, outside: Outside, method: str) -> None:
        """The fault point stops `method` right after its create request: the link it
        leaves unmarked, with the name asked for, is in a namespace of ours (never in the
        agent's own); adopted, the same call again converges, then writes nothing."""
        net = outside.ns("n-blue")
        kernel.create_netns(net, marker=NET_MARK)
        if method != "add_bridge":
            kernel.add_bridge(net, BR, mtu=1450, alias=BR_ALIAS)
        ctr = outside.ns("c-web")
        kernel.create_netns(ctr, marker=CTR_MARK)
        calls = {
            "add_bridge": lambda: kernel.add_bridge(net, BR, mtu=1450, alias=BR_ALIAS),
            "add_vxlan": lambda: kernel.add_vxlan(net, "vxv-red", vni=4097, local=outside.underlay.ip, port=4789,
                                                  mtu=1450, alias="vxlab:vxlan:red", master=BR),
            "add_veth": lambda: self.container(kernel, outside, net),
            "add_uplink": lambda: kernel.add_uplink(net, "vxgw0", alias=UP_ALIAS, mtu=1500, host_name="vxg-blue",
                                                    host_cidr="169.254.1.1/30"),
        }
        aliases = {"add_bridge": {(net, BR): BR_ALIAS}, "add_vxlan": {(net, "vxv-red"): "vxlab:vxlan:red"},
                   "add_veth": {(net, VE): EP_ALIAS, (ctr, "eth0"): EP_ALIAS},
                   "add_uplink": {(net, "vxgw0"): UP_ALIAS, (net, "vxg-blue"): UP_ALIAS}}[method]
        own = outside.aliases("")
        kernel.interrupt = {method}
        with pytest.raises(KernelError, match="fault point"):
            calls[method]()
        kernel.interrupt = set()
        half = {(ns, name) for ns in (net, ctr) for name, alias in outside.aliases(ns).items() if not alias
                and name != "lo"}
        assert half == set(aliases), "the unmarked links left are the ones asked for"
        assert outside.aliases("") == own, "nothing is left in the agent's own namespace"
        for (ns, name), alias in aliases.items():
            kernel.adopt_link(ns, name, alias=alias, ns_marker=NET_MARK if ns == net else CTR_MARK)
        calls[method]()
        with counting(kernel) as w:
            calls[method]()
        assert not w
        for (ns, name), alias in aliases.items():
            if ns == net and name == "vxg-blue":
                assert kernel.agent_ns().uplinks == {"vxg-blue": frozenset({"169.254.1.1/30"})}
            else:
                link = kernel.dump(outside.prefix)[ns].links[name]
                assert (link.alias, link.up) == (alias, True)
