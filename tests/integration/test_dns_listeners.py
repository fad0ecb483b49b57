"""The embedded DNS server (agent/dnsserver.py) with real namespaces, outside a lab:
listeners opened inside the namespaces it is given and only there, closed when a
namespace is no longer wanted, opened again when one is deleted and made anew under
its name; names not ours forwarded (from the server's own namespace) to an upstream
on its loopback, over UDP and TCP, with the upstream's answer."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from vxlab.agent.cache import StateCache
from vxlab.agent.dnsserver import PORT, Resolver
from vxlab.icmp import socket_in_netns
from vxlab.model import Endpoint, Network, WatchBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dns_upstream import Upstream  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def namespaces() -> Iterator[list[str]]:
    tag = "vxt" + secrets.token_hex(3)
    made = [f"{tag}-a", f"{tag}-b"]
    for ns in made:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    yield made
    for ns in made:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def cache() -> StateCache:
    c = StateCache()
    c.apply(WatchBatch(revision=3, snapshot=True, networks=(Network("blue", subnet="10.10.0.0/24"),),
                       endpoints=(Endpoint("web", "blue", "h1", ip="10.10.0.2"),
                                  Endpoint("api", "blue", "h1", ip="10.10.0.4"),
                                  Endpoint("db", "blue", "h2", ip="10.10.0.3"))))
    return c


async def ask(ns: str, name: str, *, tcp: bool = False) -> dns.message.Message:
    """A question to the listener, 127.0.0.11:PORT, from inside `ns` (a blocking client,
    off the loop; no agent here plans the table that redirects :53 to it)."""
    def go() -> dns.message.Message:
        q = dns.message.make_query(name, "A")
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        with socket_in_netns(ns, socket.AF_INET, kind, 0) as s:
            s.settimeout(3)
            if tcp:
                s.connect(("127.0.0.11", PORT))
                return dns.query.tcp(q, "127.0.0.11", port=PORT, timeout=3, sock=s)
            return dns.query.udp(q, "127.0.0.11", port=PORT, timeout=3, sock=s)
    return await asyncio.to_thread(go)


def refused(ns: str) -> bool:
    """Nothing listens on 127.0.0.11:PORT in `ns` (a TCP connect is refused)."""
    with socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM, 0) as s:
        return s.connect_ex(("127.0.0.11", PORT)) != 0


async def test_listeners_follow_the_namespaces_and_forwarding_works(namespaces: list[str]) -> None:
    a, b = namespaces
    up = Upstream()
    await up.serve()
    r = Resolver(cache(), "h1", forward=True, servers=lambda: ["127.0.0.1"], upstream_port=up.port)
    try:
        await r.sync({a: "web"})
        r1 = await ask(a, "db")
        assert [rd.address for rd in r1.answer[0]] == ["10.10.0.3"]
        assert refused(b)  # not wanted there: no listener
        for tcp in (False, True):  # not ours: forwarded from our namespace to the upstream on loopback
            got = await ask(a, "example.org", tcp=tcp)
            assert [rd.address for rd in got.answer[0]] == ["192.0.2.7"]
        assert up.seen == ["example.org.", "example.org."]
        await r.sync({a: "web", b: "api"})
        assert (await ask(b, "web")).answer  # b asks as api
        await r.sync({b: "api"})
        assert refused(a)  # closed
        # b deleted and made again under its name: the next sync listens in the new one
        subprocess.run(["ip", "netns", "delete", b], check=True)
        subprocess.run(["ip", "netns", "add", b], check=True)
        subprocess.run(["ip", "-n", b, "link", "set", "lo", "up"], check=True)
        assert refused(b)
        await r.sync({b: "api"})
        assert (await ask(b, "db", tcp=True)).rcode() == dns.rcode.NOERROR
        # a namespace that does not exist: nothing opened, no error, tried again later
        await r.sync({b: "api", "vxt-nonexistent": "web"})
        assert (await ask(b, "db")).answer
    finally:
        r.close()
        up.close()


async def test_a_runtime_namespace_gets_listeners_only_once_it_holds_the_endpoint(namespaces: list[str]) -> None:
    """A CNI container's namespace, by the path its endpoint records: no listener while no
    interface there has the endpoint's MAC and address; one (answering as that container)
    once it does."""
    a, _ = namespaces
    pod = Endpoint("pod", "blue", "h1", ip="10.10.0.9", mac="02:00:00:00:00:09", runtime="cni",
                   netns=f"/run/netns/{a}")
    c = cache()
    c.apply(WatchBatch(revision=4, snapshot=True, networks=tuple(c.networks.values()),
                       endpoints=(*c.endpoints.values(), pod)))
    r = Resolver(c, "h1", forward=False)
    try:
        await r.sync({}, runtime={pod.netns: [pod]})
        assert refused(a) and "no interface has its MAC" in r._failed[pod.netns]
        subprocess.run(["ip", "-n", a, "link", "add", "eth0", "address", pod.mac, "type", "veth", "peer", "name", "eth1"],
                       check=True)
        subprocess.run(["ip", "-n", a, "addr", "add", f"{pod.ip}/24", "dev", "eth0"], check=True)
        await r.sync({}, runtime={pod.netns: [pod]})
        assert [rd.address for rd in (await ask(a, "db")).answer[0]] == ["10.10.0.3"]
        await r.sync({})
        assert refused(a)
    finally:
        r.close()
