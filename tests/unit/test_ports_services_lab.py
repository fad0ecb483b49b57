"""Published ports and services in the lab's layers, pure: the topology file (positions
in errors, the canonical form), what `up` plans (ports changed in place on the
publishing endpoint, services added after their replicas, changed by delete and
create, VIPs taken from the running lab), `check`'s VIP expectations, and the CLI's
Docker shapes (`container inspect`'s NetworkSettings.Ports, `container port`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vxlab.cli import main as _cli  # noqa: F401 - the verb modules attach to it
from vxlab.cli.container import docker_containers
from vxlab.lab import apply as lab_apply
from vxlab.lab import check as lab_check
from vxlab.lab.plan import Live, Plan, plan
from vxlab.lab.topology import TopologyError, from_mapping, parse, to_dict
from vxlab.model import Endpoint, Network, Policy, PortMapping, Selector, Service
from vxlab.view import View

BODY = """name: t
hosts: 2
networks:
  - {name: app, subnet: 10.50.0.0/24}
  - {name: vault, subnet: 10.60.0.0/24, internal: true}
containers:
  - {name: web, host: h1, networks: [vault, app], ports: ["8080:80"]}
  - {name: api1, host: h1, networks: [app], labels: {tier: api}}
  - {name: api2, host: h2, networks: [app], labels: {tier: api}}
services:
  - {name: api, network: app, replicas: [api1, api2], ports: [80/tcp]}
"""
APP = Network(name="app", subnet="10.50.0.0/24", gateway="10.50.0.1", vni=4096)
VAULT = Network(name="vault", subnet="10.60.0.0/24", gateway="10.60.0.1", vni=4097, internal=True)


def live(*, services: tuple[Service, ...] | None = None, web_ports: tuple[PortMapping, ...] = (PortMapping(8080, 80),)
         ) -> Live:
    eps = [Endpoint("web", "vault", "h1", "10.60.0.2"), Endpoint("web", "app", "h1", "10.50.0.2", ports=web_ports),
           Endpoint("api1", "app", "h1", "10.50.0.3", labels={"tier": "api"}),
           Endpoint("api2", "app", "h2", "10.50.0.4", labels={"tier": "api"})]
    svcs = (Service("api", "app", vip="10.50.0.254", replicas=("api1", "api2"), ports=("80/tcp",), affinity="none",
                    id="s1"),) if services is None else services
    return Live(hosts={"h1": "172.30.0.11", "h2": "172.30.0.12"}, underlay=("172.30.0.0/24", 1500), etcd_members=1,
                view=View.of_objects([APP, VAULT, *eps, *svcs]))


def lines(p: Plan) -> list[str]:
    assert not p.refused, p.refused
    return [s.describe() for s in p.steps]


def test_the_topology_keeps_ports_and_services_in_its_canonical_form() -> None:
    t = parse(BODY)
    assert t.containers[0].ports == (PortMapping(8080, 80),) and t.services[0].ports == ("80/tcp",)
    assert from_mapping(to_dict(t)) == t


@pytest.mark.parametrize("old, new, error", [
    ('ports: ["8080:80"]', 'ports: ["8080:80", "8080:81"]',
     'lab.yaml:7:70: containers[0].ports[1].host_port: tcp 8080 is published twice (also containers[0].ports[0])'),
    ('networks: [vault, app], ports', 'networks: [vault], ports',
     "lab.yaml:7:53: containers[0].ports: the container has no non-internal network to publish on"),
    ("replicas: [api1, api2]", "replicas: [api1, web2]",
     "lab.yaml:11:48: services[0].replicas[1]: no container 'web2' on network 'app'"),
    ("ports: [80/tcp]", "ports: [80/tcp], vip: 10.60.0.9",
     "lab.yaml:11:77: services[0].vip: 10.60.0.9 is outside subnet 10.50.0.0/24"),
    ("ports: [80/tcp]", "ports: [80/tcp], vip: 10.50.0.1",
     "lab.yaml:11:77: services[0].vip: 10.50.0.1 is the gateway of network 'app'"),
    ("ports: [80/tcp]", "ports: [80/tcp], affinity: sticky",
     "lab.yaml:11:82: services[0].affinity: 'sticky' is not one of none, client-ip"),
    ("{name: api, network", "{name: api1, network",
     "lab.yaml:11:12: services[0].name: 'api1' is already the name of container 'api1' on network 'app'"),
])
def test_bad_ports_and_services_are_refused_at_their_position(old: str, new: str, error: str) -> None:
    with pytest.raises(TopologyError) as info:
        parse(BODY.replace(old, new), source="lab.yaml")
    assert str(info.value) == error


def test_up_on_a_running_lab_with_nothing_changed_plans_nothing() -> None:
    assert lines(plan(parse(BODY), live())) == []


def test_ports_change_in_place_on_the_publishing_endpoint() -> None:
    p = plan(parse(BODY.replace('["8080:80"]', '["8080:80", "127.0.0.1:9000:9000"]')), live())
    assert lines(p) == ["~ container web: network app ports [8080:80/tcp] -> [8080:80/tcp, 127.0.0.1:9000:9000/tcp]"]
    assert p.steps[0].fields == ("ports",)


def test_services_come_after_their_replicas_and_change_by_delete_and_create() -> None:
    t = parse(BODY)
    p = plan(t, live(services=()))
    assert lines(p) == ["+ service api: network app: (vip allocated) 80/tcp -> api1,api2"]
    changed = parse(BODY.replace("ports: [80/tcp]", "ports: [80/tcp], affinity: client-ip"))
    assert lines(plan(changed, live())) == [
        "- service api: network app (changed)",
        "+ service api: network app: (vip allocated) 80/tcp -> api1,api2 (affinity client-ip) (changed)"]
    gone = parse(BODY.split("services:")[0])
    assert lines(plan(gone, live())) == ["- service api: network app"]


def test_apply_creates_services_after_endpoints() -> None:
    t = parse(BODY)
    p = plan(t, Live())
    calls: list[tuple[str, Any]] = []

    class Rec:
        def __getattr__(self, name: str) -> Any:
            async def call(*args: Any, **kw: Any) -> None:
                calls.append((name, args[0] if args else None))
            return call
    asyncio.run(lab_apply.apply(Rec(), t, p.steps))  # type: ignore[arg-type]
    kinds = [name for name, _ in calls]
    assert kinds[-1] == "create_service" and kinds.index("create_service") > max(
        i for i, k in enumerate(kinds) if k == "create_endpoint")
    web = [obj for name, obj in calls if name == "create_endpoint" and obj.name == "web"]
    assert {(e.network, e.ports) for e in web} == {("vault", ()), ("app", (PortMapping(8080, 80),))}


def test_check_expects_every_vip_from_every_container_on_its_network() -> None:
    eps = [e for e in live().view.endpoints.values()] + [Endpoint("far", "vault", "h2", "10.60.0.3")]
    svc = live().view.services["app", "api"]
    probes = [p for p in lab_check.expectations(eps, (), [svc]) if p.dst == "api (vip)"]
    assert sorted((p.src, p.ip, p.expect) for p in probes) == [
        ("api1", "10.50.0.254", True), ("api2", "10.50.0.254", True), ("web", "10.50.0.254", True)]
    deny_all = Policy("no-ping", "app", action="deny", destination=Selector(label="tier=api"), protocol="icmp")
    probes = [p for p in lab_check.expectations(eps, [deny_all], [svc]) if p.dst == "api (vip)"]
    assert {(p.expect, p.rule) for p in probes} == {(False, "no-ping")}
    deny_one = Policy("no-api2", "app", action="deny", destination=Selector(container="api2"), protocol="icmp")
    assert not [p for p in lab_check.expectations(eps, [deny_one], [svc]) if p.dst == "api (vip)"]
    empty = Service("none", "app", vip="10.50.0.250", replicas=("gone",), ports=("80/tcp",))
    assert {p.expect for p in lab_check.expectations(eps, (), [empty]) if p.dst == "none (vip)"} == {False}


def test_inspect_and_port_show_dockers_shapes() -> None:
    eps = list(live(web_ports=(PortMapping(8080, 80), PortMapping(9000, 9000, "tcp", "127.0.0.1"))).view.endpoints.values())
    [web] = docker_containers("web", endpoints=eps, networks={"app": APP, "vault": VAULT})
    assert web["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                                               "9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}]}


def test_a_port_moving_between_containers_is_given_up_before_it_is_taken() -> None:
    moved = parse(BODY.replace(', ports: ["8080:80"]', "").replace(
        "{name: api1, host: h1, networks: [app],", '{name: api1, host: h1, networks: [app], ports: ["8080:80"],'))
    p = plan(moved, live())
    assert sorted(lines(p)) == ["~ container api1: network app ports [] -> [8080:80/tcp]",
                                "~ container web: network app ports [8080:80/tcp] -> []"]
    calls: list[tuple[str, Any]] = []

    class Rec:
        def __getattr__(self, name: str) -> Any:
            async def call(*args: Any, **kw: Any) -> None:
                calls.append((name, args[0].name))
            return call
    asyncio.run(lab_apply.apply(Rec(), moved, p.steps))  # type: ignore[arg-type]
    assert calls == [("update_endpoint", "web"), ("update_endpoint", "api1")]
