"""What `up` does to a running lab (lab/plan.py, lab/apply.py): every kind of
difference between a topology and the lab becomes steps in execution order, or one
refusal line naming the topology path; the controller's part runs step by step
against a recording client; a refused plan leaves the lab untouched."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from vxlab.lab import apply as lab_apply
from vxlab.lab import plan as lab_plan
from vxlab.lab.plan import Live, Plan, plan
from vxlab.lab.topology import CONTROLS, DEFAULT_CONTROL, Topology, parse
from vxlab.model import Endpoint, Network, Policy, Selector
from vxlab.view import View

OTHER_CONTROL = next(c for c in CONTROLS if c != DEFAULT_CONTROL)

BODY = """name: t
hosts: 2
networks:
  - {name: blue, subnet: 10.10.0.0/24, mtu: 1400}
  - {name: red, subnet: 10.20.0.0/24, internal: true}
containers:
  - {name: web, host: h1, networks: [blue, red]}
  - {name: db, host: h2, networks: [blue], labels: {tier: db}}
policies:
  - {name: nodb, network: blue, action: deny, from: web, to: db, proto: tcp, ports: 5432}
"""


def live(**over: Any) -> Live:
    """The running lab made from BODY; `over` replaces its fields or its view's tables."""
    tables: dict[str, Any] = dict(
        networks={"blue": Network(name="blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096, mtu=1400),
                  "red": Network(name="red", subnet="10.20.0.0/24", gateway="10.20.0.1", vni=4097, internal=True)},
        endpoints={("blue", "web"): Endpoint("web", "blue", "h1", "10.10.0.2", id="e1"),
                   ("red", "web"): Endpoint("web", "red", "h1", "10.20.0.2", id="e2"),
                   ("blue", "db"): Endpoint("db", "blue", "h2", "10.10.0.3", id="e3", labels={"tier": "db"})},
        policies={("blue", "nodb"): parse(BODY).policies[0]})
    tables.update({k: over.pop(k) for k in list(over) if k in tables})
    base = Live(hosts={"h1": "172.30.0.11", "h2": "172.30.0.12"}, view=View(**tables),
                underlay=("172.30.0.0/24", 1500), etcd_members=1, control=DEFAULT_CONTROL)
    return dataclasses.replace(base, **over)


def topo(old: str = "", new: str = "", body: str = BODY) -> Topology:
    assert old in body
    return parse(body.replace(old, new, 1))


def lines(p: Plan) -> list[str]:
    assert not p.refused, p.refused
    return [s.describe() for s in p.steps]


def test_no_difference_is_an_empty_plan() -> None:
    p = plan(topo(), live())
    assert p.steps == [] and p.refused == []


def test_a_new_lab_creates_everything_in_order() -> None:
    steps = lines(plan(topo(), Live()))
    assert steps == ["+ host h1: 172.30.0.11", "+ host h2: 172.30.0.12", "+ network blue: subnet 10.10.0.0/24",
                     "+ network red: subnet 10.20.0.0/24", "+ container web: on h1, network blue",
                     "+ container web: on h1, network red", "+ container db: on h2, network blue",
                     "+ policy nodb: network blue: deny tcp web -> db :5432 (priority 1000)"]


def test_network_mtu_is_changed_in_place() -> None:
    p = plan(topo("mtu: 1400", "mtu: 1300"), live())
    assert lines(p) == ["~ network blue: mtu 1400 -> 1300"]
    assert p.steps[0].fields == ("mtu",)
    assert lines(plan(topo(", mtu: 1400", ""), live())) == ["~ network blue: mtu 1400 -> auto"]


def test_gateway_internal_and_labels_are_one_update() -> None:
    p = plan(topo("{name: red, subnet: 10.20.0.0/24, internal: true}",
                  "{name: red, subnet: 10.20.0.0/24, gateway: 10.20.0.254, labels: {a: b}}"), live())
    assert lines(p) == ["~ network red: gateway 10.20.0.1 -> 10.20.0.254, internal true -> false, labels {} -> {a=b}"]
    assert p.steps[0].fields == ("gateway", "internal", "labels")


def test_a_gateway_not_given_is_the_subnets_first_address() -> None:
    running = live(networks={**live().view.networks,
                             "blue": dataclasses.replace(live().view.networks["blue"], gateway="10.10.0.254")})
    assert lines(plan(topo(), running)) == ["~ network blue: gateway 10.10.0.254 -> 10.10.0.1"]


@pytest.mark.parametrize(("old", "new", "line"), [
    ("subnet: 10.10.0.0/24, mtu", "subnet: 10.30.0.0/24, mtu",
     "networks[0].subnet: 10.10.0.0/24 -> 10.30.0.0/24 needs network 'blue' deleted and created again with its"
     " endpoints db, web and policies nodb; use --recreate"),
    ("mtu: 1400}", "mtu: 1400, vni: 5000}",
     "networks[0].vni: 4096 -> 5000 needs network 'blue' deleted and created again with its endpoints db, web and"
     " policies nodb; use --recreate"),
    ("{name: red, subnet: 10.20.0.0/24, internal: true}", "{name: red, subnet: 10.21.0.0/24, vni: 7}",
     "networks[1].subnet: 10.20.0.0/24 -> 10.21.0.0/24 (and vni 4097 -> 7) needs network 'red' deleted and created"
     " again with its endpoints web; use --recreate"),
])
def test_a_change_that_needs_recreation_is_refused_in_one_line(old: str, new: str, line: str) -> None:
    assert plan(topo(old, new), live()).refused == [line]


def test_driver_and_bridge_host_changes_need_recreation() -> None:
    body = BODY.replace("{name: red, subnet: 10.20.0.0/24, internal: true}",
                        "{name: red, subnet: 10.20.0.0/24, driver: bridge, host: h1}")
    red = Network(name="red", subnet="10.20.0.0/24", gateway="10.20.0.1", driver="bridge", host="h1")
    running = live(networks={**live().view.networks, "red": red})
    assert plan(parse(body), running).steps == []
    moved = body.replace("driver: bridge, host: h1", "driver: bridge, host: h2").replace(
        "{name: web, host: h1, networks: [blue, red]}", "{name: web, host: h2, networks: [blue, red]}")
    assert plan(parse(moved), running).refused == [
        "networks[1].host: h1 -> h2 needs network 'red' deleted and created again with its endpoints web;"
        " use --recreate"]
    overlay = body.replace(", driver: bridge, host: h1", "")
    assert plan(parse(overlay), running).refused[0].startswith(
        "networks[1].driver: bridge -> overlay (and host h1 -> none) needs network 'red' deleted")


def test_recreate_replaces_the_network_with_its_endpoints_and_policies_in_order() -> None:
    p = plan(topo("subnet: 10.10.0.0/24, mtu", "subnet: 10.30.0.0/24, mtu"), live(), recreate=True)
    assert lines(p) == [
        "- network blue: recreated for subnet 10.10.0.0/24 -> 10.30.0.0/24 (with its endpoints db, web and"
        " policies nodb)",
        "+ network blue: subnet 10.30.0.0/24 (recreated)",
        "+ container web: on h1, network blue (network recreated)",
        "+ container db: on h2, network blue (network recreated)",
        "+ policy nodb: network blue: deny tcp web -> db :5432 (priority 1000) (network recreated)"]
    # web's endpoint on red, and red, are not touched
    assert not any(s.network == "red" or s.name == "red" for s in p.steps)


@pytest.mark.parametrize(("old", "new", "path"), [
    ("hosts: 2", "hosts: 2\nunderlay: {subnet: 172.31.0.0/24}", "underlay.subnet: 172.30.0.0/24 -> 172.31.0.0/24"),
    ("hosts: 2", "hosts: 2\nunderlay: {mtu: 9000}", "underlay.mtu: 1500 -> 9000"),
    ("hosts: 2", "hosts: 2\netcd: {members: 3}", "etcd.members: 1 -> 3"),
    ("hosts: 2", f"hosts: 2\ncontrol: {OTHER_CONTROL}", f"control: {DEFAULT_CONTROL} -> {OTHER_CONTROL}"),
])
def test_the_underlay_and_etcd_cannot_change_on_a_running_lab(old: str, new: str, path: str) -> None:
    for recreate in (False, True):
        refused = plan(topo(old, new), live(), recreate=recreate).refused
        assert refused == [f"{path} cannot change on a running lab; 'vxlab down' it, then 'vxlab up'"]


def test_a_host_cannot_become_a_vm_on_a_running_lab() -> None:
    body = BODY.replace("hosts: 2", "hosts: [h1, {name: h2, vm: {memory: 1G}}]\ncontrol: underlay")
    running = live(control="underlay", vms={"h1": None, "h2": None})
    assert plan(topo(body=body), running).refused == [
        "hosts[1].vm: a namespace -> a VM (1 CPU, 1024 MiB) cannot change on a running lab; take host h2 out"
        " ('vxlab up' without it), then put it back"]


def test_attach_and_detach_a_network() -> None:
    p = plan(topo("{name: db, host: h2, networks: [blue]", "{name: db, host: h2, networks: [blue, red]"), live())
    assert lines(p) == ["+ container db: on h2, network red"]
    p = plan(topo("networks: [blue, red]}", "networks: [blue]}"), live())
    assert lines(p) == ["- container web: network red"]


def test_a_new_address_replaces_the_endpoint() -> None:
    p = plan(topo("{name: db, host: h2, networks: [blue]", "{name: db, host: h2, networks: [{name: blue, ip: 10.10.0.9}]"),
             live())
    assert lines(p) == ["- container db: network blue (replaced: ip 10.10.0.3 -> 10.10.0.9)",
                        "+ container db: on h2, network blue ip 10.10.0.9 (replaced: ip 10.10.0.3 -> 10.10.0.9)"]
    same = topo("{name: db, host: h2, networks: [blue]", "{name: db, host: h2, networks: [{name: blue, ip: 10.10.0.3}]")
    assert plan(same, live()).steps == []


def test_a_host_move_replaces_every_endpoint_of_the_container() -> None:
    p = plan(topo("{name: web, host: h1", "{name: web, host: h2"), live())
    assert lines(p) == ["- container web: network blue (replaced: host h1 -> h2)",
                        "- container web: network red (replaced: host h1 -> h2)",
                        "+ container web: on h2, network blue (replaced: host h1 -> h2)",
                        "+ container web: on h2, network red (replaced: host h1 -> h2)"]


def test_container_labels_are_changed_in_place() -> None:
    p = plan(topo("labels: {tier: db}", "labels: {tier: data, zone: a}"), live())
    assert lines(p) == ["~ container db: network blue labels {tier=db} -> {tier=data, zone=a}"]
    assert p.steps[0].fields == ("labels",)


def test_policies_added_changed_and_removed() -> None:
    changed = plan(topo("ports: 5432", "ports: 5433"), live())
    assert lines(changed) == ["- policy nodb: network blue (changed)",
                              "+ policy nodb: network blue: deny tcp web -> db :5433 (priority 1000) (changed)"]
    gone = BODY.split("policies:")[0]
    assert lines(plan(parse(gone), live())) == ["- policy nodb: network blue"]
    extra = BODY + "  - {name: ping, network: red, action: allow, proto: icmp}\n"
    assert lines(plan(parse(extra), live())) == ["+ policy ping: network red: allow icmp * -> * (priority 1000)"]


def test_hosts_added_removed_and_readdressed() -> None:
    assert lines(plan(topo("hosts: 2", "hosts: 3"), live())) == ["+ host h3: 172.30.0.13"]
    three = live(hosts={**live().hosts, "h3": "172.30.0.13"})
    assert lines(plan(topo(), three)) == ["- host h3"]
    moved = topo("hosts: 2", "hosts: [h1, {name: h2, underlay_ip: 172.30.0.42}]")
    p = plan(moved, live())
    assert lines(p) == ["~ host h2: underlay_ip 172.30.0.12 -> 172.30.0.42 (its agent restarts there; its"
                        " containers stay)"]
    assert plan(moved, live(hosts={"h1": "172.30.0.11", "h2": ""})).steps == []  # not known: not guessed


def test_network_mode_changes() -> None:
    none = topo("{name: db, host: h2, networks: [blue], labels: {tier: db}}", "{name: db, host: h2, network_mode: none}")
    assert lines(plan(none, live())) == ["- container db: network blue", "+ container db: network_mode none on h2"]
    isolated = live(endpoints={k: v for k, v in live().view.endpoints.items() if k[1] != "db"},
                    modes={"db": ("none", "h2")})
    assert plan(none, isolated).steps == []
    p = plan(topo(), isolated)
    assert lines(p) == ["- container db: network_mode none on h2", "+ container db: on h2, network blue"]
    assert p.steps[0].phase == lab_plan.LAB_FIRST  # the lab's namespace goes before the agent wants the name
    host = topo("{name: db, host: h2, networks: [blue], labels: {tier: db}}", "{name: db, host: h1, network_mode: host}")
    assert lines(plan(host, isolated)) == ["- container db: network_mode none on h2",
                                           "+ container db: network_mode host on h1"]


def test_a_new_gateway_on_an_address_a_container_keeps_is_refused() -> None:
    clash = topo("{name: blue, subnet: 10.10.0.0/24, mtu: 1400}", "{name: blue, subnet: 10.10.0.0/24, mtu: 1300,"
                 " gateway: 10.10.0.3}")
    assert plan(clash, live()).refused == ["networks[0].gateway: 10.10.0.3 is the address of container 'db', which"
                                           " keeps it"]
    freed = BODY.replace("mtu: 1400}", "mtu: 1400, gateway: 10.10.0.3}").replace(
        "{name: db, host: h2, networks: [blue]", "{name: db, host: h2, networks: [{name: blue, ip: 10.10.0.9}]")
    p = plan(parse(freed), live())
    assert not p.refused
    phases = [s.phase for s in p.steps]
    assert phases == sorted(phases) and p.steps[0].describe().startswith("- container db")


def test_an_address_a_container_keeps_is_refused_and_a_swap_is_not() -> None:
    taken = topo("{name: web, host: h1, networks: [blue, red]}",
                 "{name: web, host: h1, networks: [{name: blue, ip: 10.10.0.3}, red]}")
    assert plan(taken, live()).refused == ["containers[0].networks[0].ip: 10.10.0.3 is the address of container"
                                           " 'db' on network 'blue', which keeps it"]
    swap = BODY.replace("{name: web, host: h1, networks: [blue, red]}",
                        "{name: web, host: h1, networks: [{name: blue, ip: 10.10.0.3}, red]}").replace(
        "{name: db, host: h2, networks: [blue]", "{name: db, host: h2, networks: [{name: blue, ip: 10.10.0.2}]")
    steps = lines(plan(parse(swap), live()))
    assert [s[0] for s in steps] == ["-", "-", "+", "+"]


def test_unchanged_containers_are_left_alone_when_others_change() -> None:
    p = plan(topo("containers:\n", "containers:\n  - {name: cache, host: h2, networks: [red]}\n"), live())
    assert lines(p) == ["+ container cache: on h2, network red"]


def test_steps_are_in_execution_order() -> None:
    body = BODY.replace("subnet: 10.10.0.0/24, mtu: 1400", "subnet: 10.30.0.0/24, mtu: 1300").replace(
        "internal: true}", "internal: false}").replace("ports: 5432", "ports: 80") + \
        "  - {name: ping, network: red, action: allow, proto: icmp}\n"
    p = plan(parse(body.replace("hosts: 2", "hosts: 3")), live(), recreate=True)
    phases = [s.phase for s in p.steps]
    assert phases == sorted(phases)
    kinds = [(s.op, s.kind) for s in p.steps]
    assert kinds.index(("-", "network")) < kinds.index(("~", "network")) < kinds.index(("+", "network"))
    assert kinds.index(("+", "host")) < kinds.index(("+", "container"))


# --- the controller's part, against a recording client -----------------------------------


class Recorder:
    """Records every call `apply` makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kw: Any) -> None:
            await asyncio.sleep(0)
            self.calls.append((name, *args, *sorted(kw.items())))
        return call


def run(t: Topology, p: Plan) -> list[tuple[Any, ...]]:
    rec = Recorder()
    asyncio.run(lab_apply.apply(rec, t, p.steps))  # type: ignore[arg-type]
    return rec.calls


def test_apply_calls_the_controller_once_per_step() -> None:
    t = topo("mtu: 1400", "mtu: 1300")
    assert run(t, plan(t, live())) == [("update_network", Network(name="blue", subnet="10.10.0.0/24", mtu=1300),
                                        ("fields", ("mtu",)))]
    t = topo("labels: {tier: db}", "labels: {tier: data}")
    assert run(t, plan(t, live())) == [("update_endpoint", Endpoint("db", "blue", "h2", labels={"tier": "data"}),
                                        ("fields", ("labels",)))]
    assert run(topo(), plan(topo(), live())) == []


def test_apply_recreates_in_order() -> None:
    t = topo("subnet: 10.10.0.0/24, mtu", "subnet: 10.30.0.0/24, mtu")
    calls = run(t, plan(t, live(), recreate=True))
    assert [c[0] for c in calls] == ["delete_network", "create_network", "create_endpoint", "create_endpoint",
                                     "create_policy"]
    assert calls[0] == ("delete_network", "blue", ("force", True))
    assert [c[1].name for c in calls[2:4]] == ["web", "db"]  # file order: automatic addresses follow it
    assert calls[4][1] == Policy(name="nodb", network="blue", action="deny", source=Selector(container="web"),
                                 destination=Selector(container="db"), protocol="tcp", ports=("5432",),
                                 priority=1000)


def test_apply_deletes_before_it_creates() -> None:
    t = parse(BODY.replace("{name: web, host: h1, networks: [blue, red]}",
                           "{name: web, host: h1, networks: [{name: blue, ip: 10.10.0.3}, red]}").replace(
        "{name: db, host: h2, networks: [blue]", "{name: db, host: h2, networks: [{name: blue, ip: 10.10.0.2}]"))
    calls = run(t, plan(t, live()))
    assert [c[0] for c in calls] == ["delete_endpoint"] * 2 + ["create_endpoint"] * 2
    assert {(c[1].name, c[1].ip) for c in calls[2:]} == {("web", "10.10.0.3"), ("db", "10.10.0.2")}


# --- a refused plan changes nothing -----------------------------------------------------


def test_a_refused_up_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vxlab.lab import procs
    from vxlab.lab.lab import Lab

    monkeypatch.setenv("VXLAB_RUN", str(tmp_path))
    lab = Lab("t")
    monkeypatch.setattr(lab, "plan", lambda t, recreate=False: Plan([], ["networks[0].subnet: no"]))
    monkeypatch.setattr(procs, "start_etcd", lambda *a, **k: pytest.fail("started etcd"))
    with pytest.raises(procs.LabError, match=r"^networks\[0\]\.subnet: no$"):
        lab.up(topo())
    assert list(tmp_path.iterdir()) == []


def test_changed_aliases_are_an_update_in_place_before_creates() -> None:
    """An alias given up by one container and taken by a new one in the same `up`: the
    update (which frees it) runs before the create."""
    eps = dict(live().view.endpoints)
    eps["blue", "db"] = dataclasses.replace(eps["blue", "db"], aliases=("database", "pg"))
    t = topo("{name: db, host: h2, networks: [blue]", "{name: db, host: h2, networks: [{name: blue, aliases: [pg]}]")
    t = dataclasses.replace(t, containers=(*t.containers, *parse(BODY.replace(
        "{name: db, host: h2, networks: [blue]", "{name: pgadmin, host: h1, networks: [{name: blue, aliases:"
        " [database]}]")).containers[1:]))
    p = plan(t, live(endpoints=eps))
    assert lines(p) == ["~ container db: network blue aliases [database, pg] -> [pg]",
                        "+ container pgadmin: on h1, network blue"]
    assert p.steps[0].fields == ("aliases",) and p.steps[0].phase < p.steps[1].phase
