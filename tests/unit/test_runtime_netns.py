"""A runtime endpoint's namespace (`Endpoint.netns`): its validation by the controller, the
agent's check that a namespace really holds the endpoint (runtime_ns: `holds`, `pin`),
and the ops executor entering a runtime's container through it (probes, kernel views,
exec) with a fake pin."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from vxlab import icmp, ops
from vxlab.agent import runtime_ns
from vxlab.agent.kernel import KernelError, Link, Namespace
from vxlab.controller import servicer
from vxlab.controller.core import Controller
from vxlab.errors import InvalidArgument
from vxlab.model import Change, Endpoint, WatchBatch
from vxlab.ops import OpFailed
from vxlab.testing.fuzz import Aborted, _Context
from vxlab.v1 import vxlab_pb2 as pb

from test_ops_agent import Agent, ep
from test_runtime_endpoints import ctl  # noqa: F401 - the fixture: h1 and blue on the memory store


# --- the field ------------------------------------------------------------------------
async def test_a_runtime_endpoint_records_its_namespace_at_create_and_by_an_update_naming_it(ctl: Controller) -> None:
    pod = await ctl.endpoints.create(Endpoint("pod", "blue", "h1", runtime="cni", netns="/run/netns/cni-1"))
    assert (await ctl.endpoints.get("blue", "pod")).netns == "/run/netns/cni-1"
    dk = await ctl.endpoints.create(Endpoint("dk", "blue", "h1", runtime="docker"))
    assert dk.netns == ""
    got = await ctl.endpoints.update(dataclasses.replace(dk, netns="/var/run/docker/netns/ab12"), fields=["netns"])
    assert got.netns == "/var/run/docker/netns/ab12"
    # an update without a mask changes labels, aliases and ports, never the namespace
    got = await ctl.endpoints.update(dataclasses.replace(dk, netns="", labels={"k": "v"}))
    assert got.netns == "/var/run/docker/netns/ab12" and got.labels == {"k": "v"}
    assert (await ctl.endpoints.update(dataclasses.replace(dk, netns=""), fields=["netns"])).netns == ""
    assert pod.netns == "/run/netns/cni-1"


@pytest.mark.parametrize("netns, said", [
    ("run/netns/x", "is not an absolute, normalised path"),
    ("/run/netns/../x", "is not an absolute, normalised path"),
    ("/run//netns/x", "is not an absolute, normalised path"),
    ("/run/netns/x/", "is not an absolute, normalised path"),
    ("/", "is not an absolute, normalised path"),
    ("/run/netns/x\n", "printable characters"),
    ("/" + "a" * 1024, "at most 1024"),
])
async def test_a_bad_namespace_path_is_refused_naming_the_field(ctl: Controller, netns: str, said: str) -> None:
    dk = await ctl.endpoints.create(Endpoint("dk", "blue", "h1", runtime="docker"))
    before = await ctl.store.revision()
    for call in (lambda: ctl.endpoints.create(Endpoint("pod", "blue", "h1", runtime="cni", netns=netns)),
                 lambda: ctl.endpoints.update(dataclasses.replace(dk, netns=netns), fields=["netns"])):
        with pytest.raises(InvalidArgument) as info:
            await call()
        assert info.value.field == "endpoint.netns" and said in info.value.reason
    assert await ctl.store.revision() == before, "a rejected request wrote something"


async def test_only_a_runtimes_endpoint_has_a_namespace_path(ctl: Controller) -> None:
    web = await ctl.endpoints.create(Endpoint("web", "blue", "h1"))
    before = await ctl.store.revision()
    for call in (lambda: ctl.endpoints.create(Endpoint("db", "blue", "h1", netns="/run/netns/x")),
                 lambda: ctl.endpoints.update(dataclasses.replace(web, netns="/run/netns/x"), fields=["netns"])):
        with pytest.raises(InvalidArgument) as info:
            await call()
        assert info.value.field == "endpoint.netns" and "only an endpoint of a runtime" in info.value.reason
    # through the servicer: INVALID_ARGUMENT, one line naming the field
    with pytest.raises(Aborted) as aborted:
        await servicer.EndpointServicer(ctl).CreateEndpoint(pb.CreateEndpointRequest(endpoint=pb.Endpoint(
            name="db", network="blue", host="h1", netns="/run/netns/x")), _Context())
    assert aborted.value.code == "INVALID_ARGUMENT" and aborted.value.details.startswith("endpoint.netns: ")
    assert await ctl.store.revision() == before


# --- the agent's check ------------------------------------------------------------------
POD = Endpoint("pod", "blue", "h1", ip="10.10.0.4", mac="02:00:00:00:00:04", id="p" * 64, runtime="cni",
               netns="/run/netns/cni-1")


def holding(*, mac: str = "02:00:00:00:00:04", addr: str = "10.10.0.4/24") -> Namespace:
    return Namespace("x", links={"lo": Link("lo", "loopback"), "eth0": Link("eth0", "veth", mac=mac)},
                     addrs=frozenset({("eth0", addr)} if addr else set()))


def test_a_namespace_holds_the_endpoint_with_an_interface_of_its_mac_and_address() -> None:
    assert runtime_ns.holds(POD, holding()) == ""
    assert runtime_ns.holds(POD, holding(mac="02:00:00:00:00:04".upper())) == ""
    assert runtime_ns.holds(POD, holding(mac="02:00:00:00:00:99")) == "no interface has its MAC 02:00:00:00:00:04"
    assert runtime_ns.holds(POD, holding(addr="10.10.0.9/24")) == \
        "eth0 has its MAC 02:00:00:00:00:04 but not its address 10.10.0.4 (10.10.0.9/24)"
    assert "no IPv4 address" in runtime_ns.holds(POD, holding(addr=""))


def test_pin_opens_the_namespace_once_and_refuses_what_does_not_hold_the_endpoint(tmp_path: Path) -> None:
    own = dataclasses.replace(POD, netns="/proc/self/ns/net")  # a network namespace anyone may open
    read: list[str] = []
    pinned = runtime_ns.pin([own], read=lambda path: read.append(path) or holding())
    try:
        assert pinned.path == f"/proc/{os.getpid()}/fd/{pinned.fd}" == read[0]
        assert os.stat(pinned.path).st_ino == os.stat("/proc/self/ns/net").st_ino
        assert pinned.view.name == "/proc/self/ns/net"  # named by the endpoint's path
    finally:
        pinned.close()
    fds = len(os.listdir("/proc/self/fd"))
    plain = tmp_path / "sandbox"
    plain.write_text("")  # what a namespace mounted in another mount namespace looks like here
    cases = [
        (dataclasses.replace(POD, netns=""), lambda p: holding(), "records no namespace"),
        (dataclasses.replace(POD, netns=str(tmp_path / "gone")), lambda p: holding(), "does not exist"),
        (dataclasses.replace(POD, netns=str(plain)), lambda p: holding(), "is not a network namespace"),
        (own, lambda p: holding(mac="02:00:00:00:00:99"),
         "/proc/self/ns/net does not hold endpoint pod on blue: no interface has its MAC"),
        (own, _broken, "cannot read its namespace /proc/self/ns/net: netlink says no"),
    ]
    for endpoint, reader, said in cases:
        with pytest.raises(OpFailed) as info:
            runtime_ns.pin([endpoint], read=reader)
        assert info.value.message.startswith("container pod (cni): ") and said in info.value.message
    assert len(os.listdir("/proc/self/fd")) == fds, "a refused pin left its fd open"


def _broken(path: str) -> Namespace:
    raise KernelError("netlink says no")


# --- the executor -----------------------------------------------------------------------
RT = ep("rt", "h1", "10.10.0.5", "02:00:00:00:00:05")


class FakePin:
    """Pins runtime containers without a kernel: a path per container, or a refusal."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse, self.pinned, self.closed = refuse, [], []

    def __call__(self, endpoints: Any) -> runtime_ns.Pinned:
        e = endpoints[0]
        if self.refuse:
            raise OpFailed(self.refuse)
        self.pinned.append(e.name)
        fake = self

        class P(runtime_ns.Pinned):
            path = f"/pinned/{e.name}"  # type: ignore[assignment]

            def close(self) -> None:
                fake.closed.append(e.name)
        return P(e.netns, -1, Namespace(e.netns, addrs=frozenset({("eth0", f"{e.ip}/24")})))


def with_runtime(agent: Agent, netns: str = "/run/netns/cni-9") -> None:
    rt = dataclasses.replace(RT, runtime="cni", netns=netns)
    agent.cache.apply(WatchBatch(revision=11, changes=(Change("put", rt),)))


def test_probes_from_a_runtime_container_go_through_its_pinned_namespace() -> None:
    async def body() -> None:
        a, pin = Agent(), FakePin()
        a.executor._pin = pin
        with_runtime(a)
        events = await a.run(ops.ProbeBatch((ops.ProbeSpec("rt", "10.10.0.3"), ops.ProbeSpec("web", "10.10.0.3"))))
        assert a.prober.batches == [[icmp.Target("/pinned/rt", "10.10.0.3"), icmp.Target("vxt-h1-c-web", "10.10.0.3")]]
        assert events[0] == ops.ProbeResults((ops.ProbeResult(0, True, 0.5), ops.ProbeResult(1, True, 0.5)))
        assert pin.pinned == pin.closed == ["rt"]
    asyncio.run(body())


def test_a_runtime_container_that_cannot_be_pinned_fails_its_own_probes_only() -> None:
    async def body() -> None:
        a = Agent()
        a.executor._pin = FakePin(refuse="container rt (cni): its namespace /run/netns/cni-9 does not exist")
        with_runtime(a)
        events = await a.run(ops.ProbeBatch((ops.ProbeSpec("rt", "10.10.0.3"), ops.ProbeSpec("web", "10.10.0.3"))))
        assert events[0] == ops.ProbeResults((
            ops.ProbeResult(0, False, error="container rt (cni): its namespace /run/netns/cni-9 does not exist"),
            ops.ProbeResult(1, True, 0.5)))
        assert a.prober.batches == [[icmp.Target("vxt-h1-c-web", "10.10.0.3")]]
        a.events.clear()
        said = await a.run(ops.Exec("rt", ("true",)))  # any other op fails whole, with the reason
        assert said == [ops.Done("container rt (cni): its namespace /run/netns/cni-9 does not exist")]
    asyncio.run(body())


def test_kernel_view_and_exec_of_a_runtime_container() -> None:
    async def body() -> None:
        a, pin = Agent(), FakePin()
        a.executor._pin = pin
        entered: list[str] = []
        a.executor._enter = lambda ns: entered.append(ns) or []
        with_runtime(a)
        state = (await a.run(ops.KernelView("blue", ("web", "rt"))))[0]
        assert isinstance(state, ops.KernelState)
        assert [n.name for n in state.namespaces] == ["vxt-h1-n-blue", "vxt-h1-c-web", "/run/netns/cni-9"]
        assert state.namespaces[2].addrs == (("eth0", "10.10.0.5/24"),)
        a.events.clear()
        done = await a.run(ops.Exec("rt", ("true",)))
        assert isinstance(done[0], ops.ExecResult) and done[0].exit_code == 0 and entered == ["/pinned/rt"]
        assert pin.closed == ["rt", "rt"]
    asyncio.run(body())


def test_programs_enter_a_path_with_nsenter_and_a_name_with_ip_netns_exec() -> None:
    from vxlab.agent.opsproc import netns_exec
    assert netns_exec("vxt-h1-c-web") == ["ip", "netns", "exec", "vxt-h1-c-web"]
    assert netns_exec("/proc/1/fd/7") == ["nsenter", "--net=/proc/1/fd/7", "--"]


def test_trace_shows_a_runtime_containers_namespace_by_its_path() -> None:
    from test_ops_views import DB, NET, WEB, view

    from vxlab.lab.trace import build
    pod = dataclasses.replace(WEB, runtime="docker", netns="/proc/9/root/run/docker/netns/ab")
    src = view("h1", pod, DB, "192.0.2.11", "192.0.2.12")
    ctr = dataclasses.replace(src.namespaces[1], name=pod.netns, marker="")  # Docker's: no marker of ours
    src = dataclasses.replace(src, namespaces=(src.namespaces[0], ctr))
    t = build(pod, DB, NET, src_view=src, dst_view=view("h2", DB, pod, "192.0.2.12", "192.0.2.11"))
    assert (t.hops[0].where, t.hops[0].what) == ("/proc/9/root/run/docker/netns/ab (docker's)", "eth0")
    assert "route: 10.10.0.3 dev eth0" in t.hops[0].detail
    unknown = dataclasses.replace(pod, netns="")  # a namespace its endpoint does not record: not guessed
    t = build(unknown, DB, NET, src_view=src, dst_view=view("h2", DB, pod, "192.0.2.12", "192.0.2.11"))
    assert t.hops[0].where == "(no container namespace on h1)"
