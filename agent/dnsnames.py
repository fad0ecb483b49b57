"""The embedded DNS's answers, pure: a question, the asking container and the watch
cache give a response (dnspython messages; agent/dnsserver.py does the sockets).

Docker's rules for user-defined networks: a container's name, its aliases on a
network, and `<name>.<network>` (or `<alias>.<network>`) resolve to its address on
that network, for a container that shares the network, and for no other:

- a bare name is looked up on the asking container's networks in the order it was
  attached to them (the order of its eth0, eth1, …); the first network that knows the
  name answers (Docker's sandbox does the same), with that network's address;
- `<name>.<network>` only on that network, and only when the asker is on it;
- a name that exists only on networks the asker does not share is NXDOMAIN, never
  forwarded: isolation holds for names too; so is `<x>.<network>` for any network;
- A records carry the address; any other type for a known name is an empty NOERROR
  answer (AAAA included: the overlay is IPv4, and a resolver must not wait for one);
- a service (vxlab.services) is a name on its network like a container's: `<service>`
  and `<service>.<network>` resolve to its VIP (the controller keeps service names
  unique among the network's names and aliases);
- reverse lookups (PTR) of an address on a shared network give `<name>.<network>.`;
  an address in any network's subnet that is not the asker's to see is NXDOMAIN;
- anything else is not ours: `respond` returns None (the server forwards it to the
  host's resolvers) or, without forwarding, REFUSED.

TTL 0 (RFC 1035: use the answer for this transaction only): the answer comes from the
agent's cache at query time, a moved or re-created container resolves to its new
address at once, and a stub that caches (nscd, a JVM, nginx) must not keep the old one.
A query costs one round trip on loopback inside the container's namespace. Negative
answers carry no SOA, so they are not cached either (RFC 2308).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from vxlab.model import Endpoint, Network, Service

TTL = 0
_REVERSE = dns.name.from_text("in-addr.arpa.")


@dataclass(frozen=True)
class Names:
    """What the resolver answers from; built from the cache once per revision."""

    revision: int
    names: dict[str, dict[str, str]]          # network -> name or alias -> address
    ptr: dict[str, dict[str, str]]            # network -> address -> container name
    attached: dict[str, tuple[str, ...]]      # local container -> its networks, first attached first
    subnets: tuple[ipaddress.IPv4Network, ...]
    everywhere: frozenset[str]                # every name and alias on any network

    @classmethod
    def of(cls, endpoints: Iterable[Endpoint], networks: dict[str, Network], *, host: str,
           revision: int = 0, services: Iterable[Service] = ()) -> Names:
        names: dict[str, dict[str, str]] = {n: {} for n in networks}
        ptr: dict[str, dict[str, str]] = {n: {} for n in networks}
        local: dict[str, list[Endpoint]] = {}
        for ep in endpoints:
            if ep.network not in networks:
                continue
            on = names[ep.network]
            for name in (ep.name, *ep.aliases):
                on.setdefault(name, ep.ip)  # the controller keeps them unique; first wins if not
            ptr[ep.network][ep.ip] = ep.name
            if ep.host == host:
                local.setdefault(ep.name, []).append(ep)
        for s in services:
            if s.network in networks and s.vip:
                names[s.network].setdefault(s.name, s.vip)
                ptr[s.network][s.vip] = s.name
        attached = {c: tuple(e.network for e in sorted(eps, key=lambda e: (e.created, e.network)))
                    for c, eps in local.items()}
        subnets = tuple(ipaddress.IPv4Network(n.subnet) for n in networks.values() if n.subnet)
        return cls(revision, names, ptr, attached, subnets, frozenset(k for on in names.values() for k in on))


class Found(NamedTuple):
    """What a name is to one asker: ("found", addresses) or ("ptr", name), "nxdomain",
    or "unknown" (not ours: forward or refuse)."""

    kind: str
    data: tuple[str, ...] = ()


def lookup(names: Names, asker: str, qname: str) -> Found:
    """A forward name (lowercase, no final dot) as the container `asker` sees it."""
    mine = names.attached.get(asker, ())
    head, dot, network = qname.rpartition(".")
    if dot and "." not in head and network in names.names:
        ip = names.names[network].get(head) if network in mine else None
        return Found("found", (ip,)) if ip else Found("nxdomain")
    for net in mine:
        ip = names.names[net].get(qname)
        if ip:
            return Found("found", (ip,))
    return Found("nxdomain") if qname in names.everywhere else Found("unknown")


def reverse(names: Names, asker: str, address: str) -> Found:
    """A PTR question for `address` as `asker` sees it."""
    for net in names.attached.get(asker, ()):
        name = names.ptr[net].get(address)
        if name:
            return Found("ptr", (f"{name}.{net}.",))
    ip = ipaddress.IPv4Address(address)
    return Found("nxdomain") if any(ip in s for s in names.subnets) else Found("unknown")


def respond(query: dns.message.Message, asker: str, names: Names, *, forward: bool) -> dns.message.Message | None:
    """The response to `query` from the container `asker`; None: not ours, forward it."""
    if query.opcode() != dns.opcode.QUERY:
        return error(query, dns.rcode.NOTIMP, forward=forward)
    if len(query.question) != 1:
        return error(query, dns.rcode.FORMERR, forward=forward)
    q = query.question[0]
    found = Found("unknown")
    if q.rdclass == dns.rdataclass.IN:
        if q.name.is_subdomain(_REVERSE) and q.rdtype == dns.rdatatype.PTR:
            try:
                found = reverse(names, asker, dns.reversename.to_address(q.name))
            except (dns.exception.SyntaxError, ValueError):
                found = Found("unknown")
        else:
            found = lookup(names, asker, q.name.to_text(omit_final_dot=True).lower())
    if found.kind == "unknown":
        return None if forward else error(query, dns.rcode.REFUSED, forward=forward)
    r = dns.message.make_response(query, recursion_available=forward)
    r.flags |= dns.flags.AA
    if found.kind == "nxdomain":
        r.set_rcode(dns.rcode.NXDOMAIN)
    elif found.kind == "ptr" and q.rdtype == dns.rdatatype.PTR:
        r.answer.append(_rrset(q.name, dns.rdatatype.PTR, found.data))
    elif found.kind == "found" and q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
        r.answer.append(_rrset(q.name, dns.rdatatype.A, found.data))
    return r  # a known name asked for another type (AAAA, MX, …): NOERROR, no answer


def error(query: dns.message.Message, rcode: dns.rcode.Rcode, *, forward: bool) -> dns.message.Message:
    r = dns.message.make_response(query, recursion_available=forward)
    r.set_rcode(rcode)
    return r


def _rrset(name: dns.name.Name, rdtype: dns.rdatatype.RdataType, data: tuple[str, ...]) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, rdtype, list(data))
