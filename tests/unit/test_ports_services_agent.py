"""Published ports and service VIPs in the agent, against FakeKernel: the renderers
(ports_nft.py, services_nft.py: their rules, tags, parse of what nft lists), what a
pass plans (the ports table and routes in the agent's namespace, a services table in
every client container on the network) with reasons, zero writes the second time and
after a restart, drift repaired by a full pass, a dead host's replicas dropped and
back, the default route through the network a container publishes on, and the DNS
names of services."""

from __future__ import annotations

import json

import dns.message
import dns.rcode

from vxlab.agent import nfttag, ports_nft, services_nft
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.agent.dnsnames import Names, respond
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.kernel import Route
from vxlab.agent.reconciler import Reconciler
from vxlab.model import Change, Endpoint, Host, Network, PortMapping, Service, WatchBatch

ME = HostInfo(name="h1", underlay_ip="172.30.0.11", underlay_mtu=1500, netns_prefix="vxt-h1-")
APP = Network("app", subnet="10.50.0.0/24", gateway="10.50.0.1", vni=4096)
BACK = Network("back", subnet="10.60.0.0/24", gateway="10.60.0.1", vni=4097)


def ep(name: str, host: str, ip: str, *, net: str = "app", ports: tuple[PortMapping, ...] = (),
       created: str = "1") -> Endpoint:
    mac = "02:00:00:00:00:%02x" % int(ip.rsplit(".", 1)[1])
    return Endpoint(name=name, network=net, host=host, ip=ip, mac=mac, id=(name + net).ljust(64, "0"),
                    created=created, ports=ports)


API = Service("api", "app", vip="10.50.0.254", replicas=("api1", "api2", "api3"), ports=("80/tcp",))
EPS = (ep("web", "h1", "10.50.0.5", ports=(PortMapping(8080, 80), PortMapping(9000, 9000, "tcp", "127.0.0.1"))),
       ep("api1", "h1", "10.50.0.2"), ep("api2", "h2", "10.50.0.3"), ep("api3", "h3", "10.50.0.4"))


def state(*, services: tuple[Service, ...] = (API,), endpoints: tuple[Endpoint, ...] = EPS,
          dead: tuple[str, ...] = ()) -> StateCache:
    s = StateCache()
    s.apply(WatchBatch(revision=10, snapshot=True, hosts=tuple(
        Host(h, f"172.30.0.1{i}", alive=h not in dead) for i, h in enumerate(("h1", "h2", "h3"), 1)),
        networks=(APP, BACK), endpoints=endpoints, services=services))
    return s


def listing(table, family: str, name: str) -> str:
    """`nft -j list table` as nft 1.0.6 prints what `render` wrote: chains, then rules."""
    items: list[dict] = [{"metainfo": {}}, {"table": {"family": family, "name": name}}]
    rules = []
    chain = None
    for line in table.script.splitlines():
        line = line.strip()
        if line.startswith("chain "):
            chain = line.split()[1]
            items.append({"chain": {"name": chain}})
        elif line.startswith("type "):
            words = line.replace(";", "").split()
            items[-1]["chain"].update(type=words[1], hook=words[3])
        elif line and line not in ("}",) and not line.startswith("table "):
            rules.append({"rule": {"chain": chain, "expr": [],
                                   **({"comment": line.split('comment "')[1][:-1]} if "comment" in line else {})}})
    return json.dumps({"nftables": items + rules})


def test_ports_table_dnats_every_mapping_and_masquerades_hairpin_only() -> None:
    pub = ports_nft.Published(EPS[0], "10.50.0.0/24", "vxg-app", "169.254.1.2")
    table, routes = ports_nft.build([pub])
    assert table is not None and routes == {Route("10.50.0.0/24", "169.254.1.2", "vxg-app")}
    assert "ip daddr != 127.0.0.0/8 tcp dport 8080 dnat to 10.50.0.5:80" in table.script
    assert "ip daddr 127.0.0.1 tcp dport 9000 dnat to 10.50.0.5:9000" in table.script
    assert "fib daddr type local ip daddr != 127.0.0.0/8 jump published" in table.script  # prerouting
    assert 'ct status dnat ip saddr { 169.254.0.0/16, 127.0.0.0/8 } oifname "vxg-*" masquerade' in table.script
    assert table.sysctls == (("net/ipv4/conf/vxg-app/route_localnet", "1"),)
    assert ports_nft.parse(listing(table, "ip", ports_nft.TABLE)) == table
    assert ports_nft.build([ports_nft.Published(EPS[1], "10.50.0.0/24", "vxg-app", "169.254.1.2")]) == (None, set())
    moved = ports_nft.build([pub._replace(endpoint=ep("web", "h1", "10.50.0.6", ports=EPS[0].ports))])[0]
    assert moved != table  # another address: another tag


def test_services_table_balances_across_live_replicas() -> None:
    table = services_nft.build([EPS[0]], [API], EPS, alive=lambda h: h != "h3")
    assert table is not None
    assert ("ip daddr 10.50.0.254 tcp dport 80 dnat to numgen random mod 2 map { 0 : 10.50.0.2, 1 : 10.50.0.3 }"
            in table.script)
    assert "ip daddr 10.50.0.254 icmp type echo-request dnat to numgen random mod 2" in table.script
    assert "ip daddr { 10.50.0.254 } meta l4proto tcp reject with tcp reset" in table.script
    assert services_nft.parse(listing(table, "ip", services_nft.TABLE)) == table
    sticky = services_nft.build([EPS[0]], [Service(**{**API.__dict__, "affinity": "client-ip"})], EPS,
                                alive=lambda h: True)
    assert sticky is not None and "jhash ip saddr mod 3 seed 0x0 map" in sticky.script
    none_alive = services_nft.build([EPS[0]], [API], EPS, alive=lambda h: False)
    assert none_alive is not None and "dnat" not in none_alive.script and "reject" in none_alive.script
    assert services_nft.parse(listing(none_alive, "ip", services_nft.TABLE)) == none_alive
    assert services_nft.build([ep("x", "h1", "10.60.0.2", net="back")], [API], EPS, alive=lambda h: True) is None


def test_a_pass_programs_ports_and_services_then_writes_nothing() -> None:
    k = FakeKernel()
    r = Reconciler(k, ME)
    s = state()
    res = r.reconcile(s, full=True)
    assert res.ok, res.errors
    assert {(a.kind, a.op) for a in res.actions} >= {("ports", "add"), ("services", "add"), ("route", "add")}
    assert k.agent_ns().routes == {Route("10.50.0.0/24", "169.254.1.2", "vxg-app")}
    assert k.agent_ns().ports is not None and k.sysctls == {("", "net/ipv4/conf/vxg-app/route_localnet"): "1"}
    for name in ("web", "api1"):  # every client on the network, replicas too
        assert k.ns[f"vxt-h1-c-{name}"].services is not None
    for full in (False, True):
        again = r.reconcile(s, full=full)
        assert again.actions == [] and sum(again.writes.values()) == 0, again.actions
    restarted = Reconciler(k, ME)
    assert restarted.reconcile(s, full=True).actions == []
    describe = [a.describe() for a in res.actions if a.kind in ("ports", "services")]
    assert any("published ports: create (2 ports: 127.0.0.1:9000:9000/tcp -> web, 8080:80/tcp -> web)" in d
               for d in describe), describe


def test_drift_is_repaired_and_a_dead_hosts_replicas_drop_out() -> None:
    k = FakeKernel()
    r = Reconciler(k, ME)
    s = state()
    assert r.reconcile(s, full=True).ok
    before = k.ns["vxt-h1-c-web"].services
    k.ns["vxt-h1-c-web"].services = None
    k.own.ports = None
    k.own.routes.clear()
    assert r.reconcile(s).actions == []  # between full passes the reconciler trusts what it wrote
    fixed = r.reconcile(s, full=True)
    assert {a.kind for a in fixed.actions} == {"services", "ports", "route"}
    dead = r.reconcile(state(dead=("h3",)))
    [act] = [a for a in dead.actions if a.ns == "vxt-h1-c-web"]
    assert act.method == "set_services" and "api 10.50.0.254 -> 2" in act.reason
    assert "mod 2" in k.ns["vxt-h1-c-web"].services.script  # type: ignore[union-attr]
    back = r.reconcile(s)
    assert any(a.ns == "vxt-h1-c-web" for a in back.actions) and k.ns["vxt-h1-c-web"].services == before


def test_tables_and_routes_go_when_nothing_needs_them() -> None:
    k = FakeKernel()
    r = Reconciler(k, ME)
    assert r.reconcile(state(), full=True).ok
    s = state(services=(), endpoints=tuple(e for e in EPS if e.name != "web"))
    res = r.reconcile(s, full=True)
    assert {(a.kind, a.op) for a in res.actions if a.kind in ("ports", "services", "route")} == {
        ("ports", "delete"), ("services", "delete"), ("route", "delete")}
    assert k.agent_ns().ports is None and k.agent_ns().routes == frozenset()
    assert k.ns["vxt-h1-c-api1"].services is None


def test_the_default_route_goes_through_the_network_with_published_ports() -> None:
    k = FakeKernel()
    r = Reconciler(k, ME)
    two = (ep("web", "h1", "10.60.0.5", net="back", created="1"),
           ep("web", "h1", "10.50.0.5", ports=(PortMapping(8080, 80),), created="2"))
    assert r.reconcile(state(services=(), endpoints=two), full=True).ok
    ctr = k.ns["vxt-h1-c-web"]
    dev = next(d for d, c in ctr.addrs if c == "10.50.0.5/24")
    assert dev == "eth1" and ctr.routes == {Route("default", "10.50.0.1", "eth1")}


def test_services_resolve_to_their_vip_on_their_network() -> None:
    names = Names.of(EPS, {"app": APP, "back": BACK}, host="h1", services=[API])
    for qname in ("api", "api.app"):
        r = respond(dns.message.make_query(qname, "A"), "web", names, forward=False)
        assert r is not None and [rd.address for rrset in r.answer for rd in rrset] == ["10.50.0.254"]
    ptr = respond(dns.message.make_query("254.0.50.10.in-addr.arpa", "PTR"), "web", names, forward=False)
    assert ptr is not None and ptr.answer[0][0].target.to_text() == "api.app."
    other = Names.of([*EPS, ep("lone", "h1", "10.60.0.9", net="back")], {"app": APP, "back": BACK}, host="h1",
                     services=[API])
    assert respond(dns.message.make_query("api", "A"), "lone", other, forward=False).rcode() == dns.rcode.NXDOMAIN


def test_a_tag_names_the_rule_count_and_the_shape() -> None:
    chains = [nfttag.Chain("a", "type nat hook output priority -100; policy accept;", ("x", "y")),
              nfttag.Chain("b", "", ("z",))]
    script, tag = nfttag.render("ip", "t", chains)
    assert tag.endswith(":3") and script.count(tag) == 1 and nfttag.hooks(chains) == (("a", "nat", "output"),
                                                                                       ("b", "", ""))
    assert nfttag.parse("not json", nfttag.hooks(chains)) is None
