"""Kernel contract sections: addresses, routes, FDB and neighbour entries (one by one
and in bulk), nftables tables, the agent's own namespace. Part of `KernelContract`
(tests/contract_kernel.py)."""

from __future__ import annotations

import pytest
from contract_kernel_base import CTR_MARK, MAC, RMAC, VX, Base, Outside, counting, empty, policy
from vxlab.agent.kernel import AgentNs, Fdb, Kernel, KernelError, Nat, Neigh, Route, VtepFilter


class EntryContract(Base):
    # --- addresses and routes -------------------------------------------------------------
    def test_addresses_are_ensured_and_deleted_once(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        for _ in range(2):
            with counting(kernel) as w:
                kernel.add_addr(ctr, "eth0", "10.10.0.2/24")
        assert not w and kernel.dump(outside.prefix)[ctr].addrs == {("eth0", "10.10.0.2/24")}
        for _ in range(2):
            with counting(kernel) as w:
                kernel.del_addr(ctr, "eth0", "10.10.0.2/24")
        assert not w and kernel.dump(outside.prefix)[ctr].addrs == frozenset()
        with counting(kernel) as w:
            kernel.add_addr(ctr, "eth0", "10.10.0.2/24")
            kernel.del_addr(ctr, "eth9", "10.10.0.2/24")
        assert w == {"add_addr": 1}
        with pytest.raises(KernelError, match="eth9"):
            kernel.add_addr(ctr, "eth9", "10.10.0.9/24")

    def test_routes_are_ensured_and_deleted_once(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        kernel.add_addr(ctr, "eth0", "10.10.0.2/24")
        routes = {Route("default", "10.10.0.1", "eth0"), Route("10.99.0.0/16", "", "eth0")}
        for _ in range(2):
            with counting(kernel) as w:
                for r in sorted(routes):
                    kernel.add_route(ctr, r)
            assert kernel.dump(outside.prefix)[ctr].routes == routes, "only ours: no kernel link routes"
        assert not w
        for _ in range(2):
            with counting(kernel) as w:
                for r in sorted(routes):
                    kernel.del_route(ctr, r)
        assert not w and kernel.dump(outside.prefix)[ctr].routes == frozenset()
        with pytest.raises(KernelError, match="eth9"):
            kernel.add_route(ctr, Route("10.98.0.0/16", "", "eth9"))

    # --- FDB and neighbour entries ----------------------------------------------------------
    @pytest.mark.parametrize("kind", ["fdb", "neigh"])
    def test_an_entry_is_replaced_under_its_key(self, kernel: Kernel, outside: Outside, kind: str) -> None:
        """FDB entries are keyed by (device, MAC), neighbours by (device, IP): an add with
        another VTEP / MAC replaces the entry; a delete of one that points elsewhere now,
        or is missing, writes nothing; an add on a device that does not exist fails."""
        net = self.network(kernel, outside)
        old: Fdb | Neigh
        if kind == "fdb":
            old, new = Fdb(VX, RMAC, "172.31.0.2"), Fdb(VX, RMAC, "172.31.0.3")
            nodev: Fdb | Neigh = Fdb("vxv-none", RMAC, "172.31.0.2")
            add, delete = kernel.add_fdb, kernel.del_fdb
        else:
            old, new = Neigh(VX, "10.10.0.3", RMAC), Neigh(VX, "10.10.0.3", MAC)
            nodev = Neigh("vxv-none", "10.10.0.3", RMAC)
            add, delete = kernel.add_neigh, kernel.del_neigh
        held = lambda: getattr(kernel.dump(outside.prefix)[net], kind)  # noqa: E731
        for _ in range(2):
            with counting(kernel) as w:
                add(net, old)
        assert not w and held() == {old}
        with counting(kernel) as w:
            add(net, new)
            delete(net, old)
        assert w == {f"add_{kind}": 1} and held() == {new}
        for _ in range(2):
            with counting(kernel) as w:
                delete(net, new)
        assert not w and held() == frozenset()
        with pytest.raises(KernelError):
            add(net, nodev)

    @pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "00:00:00:00:00:00"])
    def test_a_replace_cannot_add_a_multicast_or_zero_fdb_entry(self, kernel: Kernel, outside: Outside,
                                                                mac: str) -> None:
        net = self.network(kernel, outside)
        with pytest.raises(KernelError):
            kernel.add_fdb(net, Fdb(VX, mac, "172.31.0.2"))
        assert kernel.dump(outside.prefix)[net].fdb == frozenset()

    def test_the_dump_shows_only_the_entries_of_vxlan_devices(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        kernel.add_neigh(ctr, Neigh("eth0", "10.10.0.3", RMAC))
        kernel.add_neigh(net, Neigh(VX, "10.10.0.3", RMAC))
        dump = kernel.dump(outside.prefix)
        assert (dump[ctr].neigh, dump[net].neigh) == (frozenset(), {Neigh(VX, "10.10.0.3", RMAC)})
        assert outside.neighbours(ctr, "eth0") == {"10.10.0.3": (RMAC, True)}

    def test_apply_entries_adds_and_deletes_many_at_once(self, kernel: Kernel, outside: Outside) -> None:
        """Every add is sent (a replace, counted even where the entry is right already:
        the caller sends differences); a delete removes the entry under its key, a
        missing one is no error and no write."""
        net = self.network(kernel, outside)
        fdb = [Fdb(VX, f"02:42:0a:0b:{i // 256:02x}:{i % 256:02x}", f"172.31.{i // 200}.{i % 200 + 1}")
               for i in range(300)]
        neigh = [Neigh(VX, f"10.11.{i // 256}.{i % 256}", e.mac) for i, e in enumerate(fdb)]
        with counting(kernel) as w:
            kernel.apply_entries(net, add=[*fdb, *neigh], delete=[])
        assert w == {"add_fdb": 300, "add_neigh": 300}
        dump = kernel.dump(outside.prefix)[net]
        assert (dump.fdb, dump.neigh) == (frozenset(fdb), frozenset(neigh))
        moved = [e._replace(dst="172.31.99.1") for e in fdb[:10]]
        with counting(kernel) as w:
            kernel.apply_entries(net, add=moved, delete=[*fdb[250:], *neigh[250:], Fdb(VX, RMAC, "172.31.0.9"),
                                                         Neigh(VX, "10.12.0.1", RMAC)])
        assert w == {"add_fdb": 10, "del_fdb": 50, "del_neigh": 50}
        dump = kernel.dump(outside.prefix)[net]
        assert dump.fdb == frozenset(moved + fdb[10:250]) and dump.neigh == frozenset(neigh[:250])
        kernel.apply_entries(net, add=[], delete=[fdb[0], Fdb("vxv-gone", RMAC, "172.31.0.9")])
        assert kernel.dump(outside.prefix)[net].fdb == frozenset(moved + fdb[10:250]), \
            "an FDB entry that points elsewhere now stays"
        with counting(kernel) as w:
            kernel.apply_entries(net, add=[], delete=[neigh[0]._replace(mac=RMAC)])
        assert w == {"del_neigh": 1} and neigh[0] not in kernel.dump(outside.prefix)[net].neigh, \
            "a neighbour entry goes by its IP, whatever its MAC"

    def test_apply_entries_applies_the_rest_and_reports_what_failed(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        good = [Fdb(VX, RMAC, "172.31.0.2"), Neigh(VX, "10.10.0.3", RMAC)]
        bad = Fdb(VX, "01:00:5e:00:00:01", "172.31.0.2")   # multicast: the kernel refuses its replace
        with counting(kernel) as w:
            with pytest.raises(KernelError, match=r"1 of 4 entries failed .*01:00:5e:00:00:01"):
                kernel.apply_entries(net, add=[good[0], bad, good[1]], delete=[Neigh(VX, "10.10.0.9", RMAC)])
        assert w == {"add_fdb": 1, "add_neigh": 1}
        dump = kernel.dump(outside.prefix)[net]
        assert (dump.fdb, dump.neigh) == ({good[0]}, {good[1]})
        with counting(kernel) as w:
            with pytest.raises(KernelError, match="vxv-none"):  # checked before anything is sent
                kernel.apply_entries(net, add=[Fdb(VX, MAC, "172.31.0.4"), Fdb("vxv-none", MAC, "172.31.0.4")],
                                     delete=[])
        assert not w

    def test_forget_stale_neigh_deletes_only_dynamic_entries_naming_another_mac(self, kernel: Kernel,
                                                                                outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = self.container(kernel, outside, net)
        kernel.add_addr(ctr, "eth0", "10.10.0.2/24")
        outside.arp(ctr, "eth0", "10.10.0.3", "02:42:0a:0a:00:99")   # a reused IP's old owner
        outside.arp(ctr, "eth0", "10.10.0.4", "02:42:0a:0a:00:04")   # right already
        kernel.add_neigh(ctr, Neigh("eth0", "10.10.0.5", "02:42:0a:0a:00:55"))  # permanent: someone's
        entries = (("10.10.0.3", RMAC), ("10.10.0.4", "02:42:0a:0a:00:04"), ("10.10.0.5", RMAC),
                   ("10.10.0.6", RMAC))
        with counting(kernel) as w:
            kernel.forget_stale_neigh(ctr, "eth0", entries=entries)
        assert w == {"forget_neigh": 1}
        assert outside.neighbours(ctr, "eth0") == {"10.10.0.4": ("02:42:0a:0a:00:04", False),
                                                   "10.10.0.5": ("02:42:0a:0a:00:55", True)}
        with counting(kernel) as w:
            kernel.forget_stale_neigh(ctr, "eth0", entries=entries)
            kernel.forget_stale_neigh(ctr, "eth9", entries=entries)
        assert not w

    # --- nftables tables ------------------------------------------------------------------
    def test_the_vtep_filter_is_ensured_read_back_and_removed(self, kernel: Kernel, outside: Outside) -> None:
        want = VtepFilter(4789, frozenset({"172.31.0.2", "172.31.0.3"}))
        for _ in range(2):
            with counting(kernel) as w:
                kernel.set_vtep_filter(want)
            assert kernel.vtep_filter() == want and kernel.agent_ns().vteps == want
        assert not w, "the second call writes nothing"
        with counting(kernel) as w:
            kernel.set_vtep_filter(VtepFilter(4789, frozenset({"172.31.0.2"})))
        assert set(w) == {"set_vtep_filter"}
        for _ in range(2):
            with counting(kernel) as w:
                kernel.delete_vtep_filter()
            assert kernel.vtep_filter() is None
        assert not w

    def test_nat_tables_are_ensured_read_back_and_removed(self, kernel: Kernel, outside: Outside) -> None:
        """In a network namespace and in the agent's own ("")."""
        net = self.network(kernel, outside, vxlan=False)
        mine, host = Nat("10.10.0.0/24", "vxgw0"), Nat("169.254.0.0/16", "vxg-*", oif_negated=True)
        for _ in range(2):
            with counting(kernel) as w:
                kernel.set_nat(net, mine)
                kernel.set_nat("", host)
            assert kernel.dump(outside.prefix)[net].nat == mine and kernel.agent_ns().nat == host
        assert not w, "the second call writes nothing"
        with counting(kernel) as w:
            kernel.set_nat(net, Nat("10.10.0.0/16", "vxgw0"))
        assert set(w) == {"set_nat"} and kernel.dump(outside.prefix)[net].nat == Nat("10.10.0.0/16", "vxgw0")
        for _ in range(2):
            with counting(kernel) as w:
                kernel.delete_nat(net)
                kernel.delete_nat("")
        assert not w and kernel.dump(outside.prefix)[net].nat is None and kernel.agent_ns() == AgentNs()

    def test_tables_are_read_only_in_network_namespaces(self, kernel: Kernel, outside: Outside) -> None:
        """A namespace of ours without a bridge (a container's) is dumped without tables."""
        ctr = outside.ns("c-web")
        kernel.create_netns(ctr, marker=CTR_MARK)
        kernel.set_nat(ctr, Nat("10.10.0.0/24", "eth0"))
        assert kernel.dump(outside.prefix)[ctr] == empty(ctr, CTR_MARK)

    def test_a_policy_table_is_ensured_read_back_by_its_tag_and_removed(self, kernel: Kernel,
                                                                        outside: Outside) -> None:
        net = self.network(kernel, outside)
        table, other = policy("10.10.0.3"), policy("10.10.0.4")
        for _ in range(2):
            with counting(kernel) as w:
                kernel.set_policy(net, table)
            assert kernel.dump(outside.prefix)[net].policy == table
        assert not w, "the second call writes nothing"
        with counting(kernel) as w:
            kernel.set_policy(net, other)
        assert set(w) == {"set_policy"} and kernel.dump(outside.prefix)[net].policy == other
        for _ in range(2):
            with counting(kernel) as w:
                kernel.delete_policy(net)
            assert kernel.dump(outside.prefix)[net].policy is None
        assert w == {}

    # --- the agent's own namespace ----------------------------------------------------------
    def test_underlay_is_the_device_with_the_address(self, kernel: Kernel, outside: Outside) -> None:
        u = outside.underlay
        assert kernel.underlay() == u
        assert kernel.underlay(ip=u.ip) == u and kernel.underlay(dev=u.dev) == u
        assert kernel.underlay(ip=u.ip, dev=u.dev, towards=["172.31.0.99"]) == u
        with pytest.raises(KernelError, match="no device has address 10.1.1.1"):
            kernel.underlay(ip="10.1.1.1")
        with pytest.raises(KernelError, match="no device 'nodev'"):
            kernel.underlay(dev="nodev")

    def test_agent_ns_shows_only_our_uplinks(self, kernel: Kernel, outside: Outside) -> None:
        outside.link("", "vxg-red", "bridge")
        outside.link("", "vxg-x", "bridge", alias="vxlab:bridge:x")
        assert kernel.agent_ns() == AgentNs()
