"""The embedded DNS server's parts that need no namespace (agent/dnsserver.py): the
index follows the cache's revision, malformed queries, UDP size limits (TC), the
host's upstreams read from resolv.conf, and forwarding to an upstream on loopback
over UDP and TCP (SERVFAIL when none answers)."""

from __future__ import annotations

import sys
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dns_upstream import Upstream  # noqa: E402
from vxlab.agent.cache import StateCache
from vxlab.agent.dnsserver import Resolver, udp_wire, upstreams
from vxlab.model import Change, Endpoint, Network, WatchBatch


def cache() -> StateCache:
    c = StateCache()
    c.apply(WatchBatch(revision=5, snapshot=True, networks=(Network("blue", subnet="10.10.0.0/24"),),
                       endpoints=(Endpoint("web", "blue", "h1", ip="10.10.0.2"),
                                  Endpoint("db", "blue", "h2", ip="10.10.0.3"))))
    return c


def test_answers_follow_the_cache_at_query_time() -> None:
    c = cache()
    r = Resolver(c, "h1", forward=False)
    q = dns.message.make_query("db", "A")
    _, resp = r.answer(q.to_wire(), "web")
    assert [rd.address for rd in resp.answer[0]] == ["10.10.0.3"]  # type: ignore[union-attr]
    c.apply(WatchBatch(revision=6, changes=(Change("put", Endpoint("db", "blue", "h2", ip="10.10.0.9")),)))
    _, resp = r.answer(q.to_wire(), "web")
    assert [rd.address for rd in resp.answer[0]] == ["10.10.0.9"]  # type: ignore[union-attr]


def test_malformed_queries() -> None:
    r = Resolver(cache(), "h1", forward=False)
    assert r.answer(b"\x01\x02", "web") == (None, None)  # shorter than a header: dropped
    query, resp = r.answer(b"\x12\x34" + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xff\xff", "web")
    assert resp is not None and resp.id == 0x1234 and resp.rcode() == dns.rcode.FORMERR
    assert dns.message.from_wire(udp_wire(query, resp)).rcode() == dns.rcode.FORMERR  # type: ignore[arg-type]


def test_a_udp_answer_larger_than_the_client_takes_is_truncated() -> None:
    q = dns.message.make_query("big.example", "A")
    big = dns.message.make_response(q)
    big.answer.append(dns.rrset.from_text_list("big.example.", 0, "IN", "A", [f"10.0.{i // 250}.{i % 250}"
                                                                                for i in range(100)]))
    small = dns.message.from_wire(udp_wire(q, big))
    assert small.flags & dns.flags.TC and not small.answer
    q = dns.message.make_query("big.example", "A", use_edns=0, payload=4096)
    assert len(dns.message.from_wire(udp_wire(q, big)).answer[0]) == 100


def test_upstreams_are_the_non_loopback_nameservers(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nsearch example\n")
    assert upstreams(str(f)) == ["192.0.2.53"]
    assert upstreams(str(tmp_path / "missing")) == []


@pytest.mark.parametrize("tcp", [False, True])
async def test_forwarding_to_an_upstream(tcp: bool) -> None:
    up = Upstream()
    await up.serve()
    r = Resolver(cache(), "h1", forward=True, servers=lambda: ["127.0.0.1"], upstream_port=up.port)
    query, resp = r.answer(dns.message.make_query("example.com", "A").to_wire(), "web")
    assert resp is None  # not ours
    got = await r.forwarded(query, tcp=tcp)  # type: ignore[arg-type]
    assert [rd.address for rd in got.answer[0]] == ["192.0.2.7"] and up.seen == ["example.com."]
    _, resp = r.answer(dns.message.make_query("db", "A").to_wire(), "web")
    assert resp is not None and resp.flags & dns.flags.RA and up.seen == ["example.com."]  # ours: not forwarded
    nobody = Resolver(cache(), "h1", forward=True, servers=lambda: [])
    assert (await nobody.forwarded(query, tcp=tcp)).rcode() == dns.rcode.SERVFAIL  # type: ignore[arg-type]
    up.close()
