"""The kernel contract, published ports and services (a section of tests/contract_kernel.py):
the agent namespace's published-ports table with the sysctls it needs, a container
namespace's services and DNS redirect tables, all read back by their tag; the agent namespace's routes
through our uplinks (and only those)."""

from __future__ import annotations

from contract_kernel_base import CTR_MARK, UP_ALIAS, Base, Outside, counting
from vxlab.agent import dns_nft, ports_nft, services_nft
from vxlab.agent.kernel import Kernel, NftTable, Route
from vxlab.model import Endpoint, PortMapping, Service


def ports_table(*, container_port: int = 80) -> NftTable:
    """A real ports table: 8080 and loopback 9000 on h1 to web (10.10.0.2) through vxg-blue."""
    web = Endpoint("web", "blue", "h1", ip="10.10.0.2", ports=(
        PortMapping(8080, container_port), PortMapping(9000, 9000, "tcp", "127.0.0.1")))
    table, _ = ports_nft.build([ports_nft.Published(web, "10.10.0.0/24", "vxg-blue", "169.254.1.2")])
    assert table is not None
    return table


def services_table(*, replicas: tuple[str, ...] = ("api1", "api2")) -> NftTable:
    """A real services table: api (10.10.0.254, 80/tcp) over `replicas` of 10.10.0.3, .4, .5."""
    eps = [Endpoint(f"api{i}", "blue", "h2", ip=f"10.10.0.{i + 2}") for i in (1, 2, 3)]
    api = Service("api", "blue", vip="10.10.0.254", replicas=replicas, ports=("80/tcp",))
    table = services_nft.build([Endpoint("web", "blue", "h1", ip="10.10.0.2")], [api], eps, alive=lambda h: True)
    assert table is not None
    return table


class TableContract(Base):
    def uplink(self, kernel: Kernel, outside: Outside) -> str:
        net = self.network(kernel, outside, vxlan=False)
        kernel.add_uplink(net, "vxgw0", alias=UP_ALIAS, mtu=1500, host_name="vxg-blue", host_cidr="169.254.1.1/30")
        return net

    def test_the_ports_table_is_ensured_read_back_by_its_tag_and_removed(self, kernel: Kernel,
                                                                         outside: Outside) -> None:
        self.uplink(kernel, outside)
        table, other = ports_table(), ports_table(container_port=8000)
        for _ in range(2):
            with counting(kernel) as w:
                kernel.set_ports(table)
            assert kernel.agent_ns().ports == table
        assert not w, "the second call writes nothing"
        assert outside.sysctl("", "net/ipv4/conf/vxg-blue/route_localnet") == "1"  # a loopback-bound port
        with counting(kernel) as w:
            kernel.set_ports(other)
        assert set(w) == {"set_ports"} and kernel.agent_ns().ports == other
        for _ in range(2):
            with counting(kernel) as w:
                kernel.delete_ports()
            assert kernel.agent_ns().ports is None
        assert not w

    def test_a_services_table_is_read_in_container_namespaces_only(self, kernel: Kernel, outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = outside.ns("c-web")
        kernel.create_netns(ctr, marker=CTR_MARK)
        table, other = services_table(), services_table(replicas=("api3",))
        for _ in range(2):
            with counting(kernel) as w:
                kernel.set_services(ctr, table)
            assert kernel.dump(outside.prefix)[ctr].services == table
        assert not w, "the second call writes nothing"
        with counting(kernel) as w:
            kernel.set_services(ctr, other)
        assert set(w) == {"set_services"} and kernel.dump(outside.prefix)[ctr].services == other
        kernel.set_services(net, table)
        assert kernel.dump(outside.prefix)[net].services is None  # a network namespace: not read
        for _ in range(2):
            with counting(kernel) as w:
                kernel.delete_services(ctr)
                kernel.delete_services(outside.ns("c-gone"))
            assert kernel.dump(outside.prefix)[ctr].services is None
        assert not w

    def test_a_dns_redirect_is_read_in_container_namespaces_only_beside_services(self, kernel: Kernel,
                                                                                 outside: Outside) -> None:
        net = self.network(kernel, outside)
        ctr = outside.ns("c-web")
        kernel.create_netns(ctr, marker=CTR_MARK)
        table = dns_nft.build()
        kernel.set_services(ctr, services_table())
        for _ in range(2):
            with counting(kernel) as w:
                kernel.set_dns_redirect(ctr, table)
            got = kernel.dump(outside.prefix)[ctr]
            assert got.dns == table and got.services == services_table()  # two tables, one read
        assert not w, "the second call writes nothing"
        kernel.set_dns_redirect(net, table)
        assert kernel.dump(outside.prefix)[net].dns is None  # a network namespace: not read
        for _ in range(2):
            with counting(kernel) as w:
                kernel.delete_dns_redirect(ctr)
                kernel.delete_dns_redirect(outside.ns("c-gone"))
            got = kernel.dump(outside.prefix)[ctr]
            assert got.dns is None and got.services == services_table()
        assert not w

    def test_agent_ns_routes_are_those_through_our_uplinks(self, kernel: Kernel, outside: Outside) -> None:
        self.uplink(kernel, outside)
        route = Route("10.10.0.0/24", "169.254.1.2", "vxg-blue")
        outside.route("", "10.99.0.0/24", outside.underlay.dev)  # not through an uplink: not ours
        for _ in range(2):
            with counting(kernel) as w:
                kernel.add_route("", route)
            assert kernel.agent_ns().routes == {route}
        assert not w, "the second call writes nothing"
        kernel.del_route("", route)
        assert kernel.agent_ns().routes == frozenset()
