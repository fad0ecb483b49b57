"""The embedded DNS's answers (agent/dnsnames.py), pure: a question, the asking
container and the cache give a response. Names, aliases and `<name>.<network>` on
shared networks; NXDOMAIN for names on networks the asker does not share; empty
NOERROR for AAAA; PTR; forwarding or REFUSED for the rest."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from vxlab.agent.dnsnames import TTL, Names, respond
from vxlab.model import Endpoint, Network

NETS = {"blue": Network(name="blue", subnet="10.10.0.0/24"), "red": Network(name="red", subnet="10.20.0.0/24"),
        "green": Network(name="green", subnet="10.30.0.0/24")}
EPS = [
    Endpoint(name="web", network="blue", host="h1", ip="10.10.0.2", created="1"),
    Endpoint(name="web", network="red", host="h1", ip="10.20.0.2", created="2"),
    Endpoint(name="db", network="blue", host="h2", ip="10.10.0.3", aliases=("database", "pg")),
    Endpoint(name="db", network="red", host="h2", ip="10.20.0.3"),
    Endpoint(name="cache", network="red", host="h2", ip="10.20.0.4", aliases=("redis",)),
    Endpoint(name="secret", network="green", host="h2", ip="10.30.0.2", aliases=("vault",)),
    Endpoint(name="lonely", network="green", host="h1", ip="10.30.0.3"),
]
NAMES = Names.of(EPS, NETS, host="h1", revision=7)


def ask(name: str, rdtype: str = "A", *, asker: str = "web", forward: bool = False,
        edns: bool = False) -> dns.message.Message | None:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else None)
    return respond(q, asker, NAMES, forward=forward)


def addresses(r: dns.message.Message | None) -> list[str]:
    assert r is not None and r.rcode() == dns.rcode.NOERROR, r
    return [rd.address for rrset in r.answer for rd in rrset]


def test_a_name_resolves_on_the_first_shared_network() -> None:
    r = ask("db")
    assert addresses(r) == ["10.10.0.3"]  # blue: web's first network
    assert r.flags & dns.flags.AA and r.flags & dns.flags.QR and r.answer[0].ttl == TTL == 0


def test_aliases_and_name_dot_network() -> None:
    assert addresses(ask("database")) == ["10.10.0.3"]
    assert addresses(ask("pg.blue")) == ["10.10.0.3"]
    assert addresses(ask("db.red")) == ["10.20.0.3"]
    assert addresses(ask("redis")) == ["10.20.0.4"]  # only on red: found there
    assert addresses(ask("cache.red.")) == ["10.20.0.4"]
    assert addresses(ask("DB.Blue")) == ["10.10.0.3"]  # names are case-insensitive
    assert addresses(ask("web")) == ["10.10.0.2"]      # itself


@pytest.mark.parametrize("name", ["secret", "vault", "secret.green", "db.green", "database.red", "nobody.blue"])
def test_names_off_the_askers_networks_are_nxdomain(name: str) -> None:
    r = ask(name, forward=True)  # never forwarded either
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN and not r.answer


def test_isolation_holds_the_other_way() -> None:
    r = respond(dns.message.make_query("db", "A"), "lonely", NAMES, forward=False)
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN
    assert addresses(respond(dns.message.make_query("vault", "A"), "lonely", NAMES, forward=False)) == ["10.30.0.2"]


def test_aaaa_and_other_types_of_known_names_are_empty_noerror() -> None:
    for rdtype in ("AAAA", "MX", "TXT"):
        r = ask("db", rdtype)
        assert r is not None and r.rcode() == dns.rcode.NOERROR and not r.answer
    assert addresses(ask("db", "ANY")) == ["10.10.0.3"]


def test_reverse_lookups() -> None:
    r = ask(dns.reversename.from_address("10.20.0.4").to_text(), "PTR")
    assert r is not None and [rd.target.to_text() for rd in r.answer[0]] == ["cache.red."]
    r = ask(dns.reversename.from_address("10.30.0.2").to_text(), "PTR", forward=True)
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN  # green is not web's
    assert ask(dns.reversename.from_address("192.0.2.1").to_text(), "PTR", forward=True) is None


def test_other_names_are_forwarded_or_refused() -> None:
    assert ask("example.com", forward=True) is None
    assert ask("nosuchname", forward=True) is None
    r = ask("example.com", forward=False)
    assert r is not None and r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.RA
    assert ask("db", forward=True).flags & dns.flags.RA  # type: ignore[union-attr]
    r = respond(dns.message.make_query("db", "A", rdclass="CH"), "web", NAMES, forward=False)
    assert r is not None and r.rcode() == dns.rcode.REFUSED


def test_odd_queries() -> None:
    q = dns.message.make_query("db", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    assert respond(q, "web", NAMES, forward=False).rcode() == dns.rcode.NOTIMP  # type: ignore[union-attr]
    q = dns.message.make_query("db", "A")
    q.question.append(q.question[0])
    assert respond(q, "web", NAMES, forward=False).rcode() == dns.rcode.FORMERR  # type: ignore[union-attr]
    r = respond(dns.message.make_query("db", "A"), "stranger", NAMES, forward=False)  # not a local container
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN


def test_edns_is_answered_with_edns() -> None:
    r = ask("db", edns=True)
    assert r is not None and r.edns == 0 and addresses(r) == ["10.10.0.3"]


def test_a_recreated_container_is_a_new_index() -> None:
    moved = [e if (e.network, e.name) != ("blue", "db") else
             Endpoint(name="db", network="blue", host="h1", ip="10.10.0.9") for e in EPS]
    names = Names.of(moved, NETS, host="h1", revision=8)
    assert addresses(respond(dns.message.make_query("db", "A"), "web", names, forward=False)) == ["10.10.0.9"]
    assert names.attached["web"] == ("blue", "red") and NAMES.attached["lonely"] == ("green",)
