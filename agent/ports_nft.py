"""Published ports (the role of Docker's DOCKER chain): the table `ip vxlab_ports` an
agent keeps in its own namespace, and the routes it needs (pure: what it should hold,
why it changes, its text; agent/nft.py writes it, agent/nfttag.py tags it).

For every local endpoint with ports (vxlab.ports), traffic to `HOST_IP:HOST_PORT` is
DNATed to `CONTAINER_IP:CONTAINER_PORT`:

- `prerouting`: from outside (other hosts, the lab's outside address), to any local
  address of the host but loopback (`fib daddr type local`); a packet to 127.0.0.0/8
  from outside is never DNATed (it would otherwise reach a loopback-bound port);
- `output`: from the host itself, loopback included;
- a route to the container's subnet through its network's uplink (`vxg-<network>`, via
  the network namespace's end of it), so the DNATed packet reaches the network's
  namespace, which routes it onto the bridge; the reply follows the container's
  default route back out of the same uplink (a container publishes on the network of
  its default route: agent/desired.py), and conntrack undoes the DNAT;
- `postrouting`: DNATed traffic leaving through an uplink whose source is an uplink's
  169.254.x.y (a container of this host: hairpin) or loopback is masqueraded. Without
  it a container on the same network would see its packet come back into the network's
  namespace from the uplink with that namespace's own address as source, a martian the
  kernel drops; traffic from outside keeps its source address (what the container and
  the network's policy rules see). A loopback source may leave through an uplink only
  with `route_localnet` on it: set on the uplinks of loopback-bound ports (`sysctls`).

`HOST_IP` empty (`0.0.0.0`) is every address of the host but loopback (Docker's
`addrtype LOCAL` without 127.0.0.0/8); a loopback address, the host's loopback only; any
other address, that address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from vxlab import ports as portspec
from vxlab.agent import nfttag
from vxlab.agent.kernel import NftTable, Route
from vxlab.model import Endpoint

TABLE = "vxlab_ports"
FAMILY = "ip"
CHAIN = "published"
UPLINKS = "169.254.0.0/16"
CHAINS = (
    nfttag.Chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;",
                 ("fib daddr type local ip daddr != 127.0.0.0/8 jump published",)),
    nfttag.Chain("output", "type nat hook output priority -100; policy accept;", ("fib daddr type local jump published",)),
    nfttag.Chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;",
                 (f'ct status dnat ip saddr {{ {UPLINKS}, 127.0.0.0/8 }} oifname "vxg-*" masquerade',)),
)
SHAPE = nfttag.hooks([*CHAINS, nfttag.Chain(CHAIN, "", ())])


class Published(NamedTuple):
    """A local endpoint with ports, and the way to it from the agent's namespace."""

    endpoint: Endpoint
    subnet: str       # its network's subnet
    uplink: str       # the uplink's host end, vxg-<network>
    via: str          # the network namespace's end of the uplink


def _match(host_ip: str) -> str:
    if not host_ip:
        return "ip daddr != 127.0.0.0/8"
    return f"ip daddr {ipaddress.IPv4Address(host_ip)}"


def build(published: Iterable[Published]) -> tuple[NftTable | None, frozenset[Route]]:
    """The table and the routes for these endpoints (None and none when no port is
    published here)."""
    rules: list[tuple[tuple[str, int], str]] = []
    routes: set[Route] = set()
    sysctls: set[tuple[str, str]] = set()
    what: list[str] = []
    for pub in published:
        ep = pub.endpoint
        if not ep.ports:
            continue
        ip = ipaddress.IPv4Address(ep.ip)
        routes.add(Route(str(ipaddress.IPv4Network(pub.subnet)), str(ipaddress.IPv4Address(pub.via)), pub.uplink))
        for p in ep.ports:
            proto = portspec.protocol(p.protocol, field="ports.protocol")
            rules.append(((proto, p.host_port), f"{_match(p.host_ip)} {proto} dport {int(p.host_port)}"
                                                f" dnat to {ip}:{int(p.container_port)}"))
            what.append(f"{portspec.describe(p)} -> {ep.name}")
            if portspec.loopback(p):
                sysctls.add((f"net/ipv4/conf/{pub.uplink}/route_localnet", "1"))
    if not rules:
        return None, frozenset()
    chains = [*CHAINS, nfttag.Chain(CHAIN, "", tuple(r for _, r in sorted(rules)))]
    script, tag = nfttag.render(FAMILY, TABLE, chains)
    summary = f"{len(rules)} port{'s' if len(rules) != 1 else ''}: " + ", ".join(sorted(what)[:4]) + (
        ", …" if len(what) > 4 else "")
    return NftTable(tag, script=script, summary=summary, sysctls=tuple(sorted(sysctls))), frozenset(routes)


def parse(listing: str) -> NftTable | None:
    """The table's tag from `nft -j list table ip vxlab_ports`; None when it is not in
    the shape `build` writes (a rewrite repairs it)."""
    tag = nfttag.parse(listing, SHAPE)
    return None if tag is None else NftTable(tag)


def diff_reason(want: NftTable | None, have: NftTable | None) -> str:
    """Why the table must change ("" when it is right)."""
    return nfttag.reason(want, have, what="published ports", gone="no port is published here any more")
