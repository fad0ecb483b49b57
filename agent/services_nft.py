"""Service VIPs, load-balanced in the client (kube-proxy's nftables mode; Docker swarm
also balances inside the client's sandbox): the table `ip vxlab_svc` an agent keeps in
each of its container namespaces on a network with services (pure: what it holds, its
text; agent/nft.py writes it, agent/nfttag.py tags it). Semantics: vxlab.services.

- `output` (nat, before routing): a new connection from the container to `VIP:port`
  is DNATed to one replica, `numgen random mod N` over the replicas whose hosts are
  alive (or, with `affinity: client-ip`, `jhash ip saddr mod N`: one replica per
  client, the same while the replica set stays); ICMP echo too, so the VIP answers
  ping. Conntrack in the namespace undoes it for the replies, and keeps a connection on
  its replica. The replicas are desired state: a host found dead (its lease expired)
  or back, a replica started or gone, rewrites the table, so a dead host's replicas
  drop out of new connections once the agent hears of it (the lease TTL, then a pass).
- `refuse` (filter, after it): anything else to a VIP (another port; a service with no
  live replica) is refused at once (TCP reset, ICMP port unreachable) rather than sent
  to an address nobody has.

Policy rules (agent/policy_nft.py, at the destination) see the connection after DNAT:
from the client's address to the replica's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from vxlab import services as semantics
from vxlab.agent import nfttag
from vxlab.agent.kernel import NftTable
from vxlab.model import Endpoint, Service

TABLE = "vxlab_svc"
FAMILY = "ip"
NAT = nfttag.Chain("output", "type nat hook output priority -100; policy accept;", ())
REJECT = nfttag.Chain("refuse", "type filter hook output priority filter; policy accept;", ())
SHAPE = nfttag.hooks([NAT, REJECT])


def _target(replicas: list[str], *, affinity: str) -> str:
    if len(replicas) == 1:
        return replicas[0]
    pick = "jhash ip saddr mod {n} seed 0x0" if affinity == "client-ip" else "numgen random mod {n}"
    return f"{pick.format(n=len(replicas))} map {{ " + ", ".join(f"{i} : {ip}" for i, ip in enumerate(replicas)) + " }"


def build(mine: Iterable[Endpoint], services: Iterable[Service], endpoints: Iterable[Endpoint], *,
          alive: Callable[[str], bool]) -> NftTable | None:
    """The table of the container whose endpoints are `mine`: every service on one of
    its networks, over the replicas (of `endpoints`) on hosts `alive` says are. None
    when no service is on its networks."""
    networks = {e.network for e in mine}
    on = sorted((s for s in services if s.network in networks and s.vip), key=lambda s: (s.network, s.name))
    if not on:
        return None
    all_eps = list(endpoints)
    nat: list[str] = []
    vips: list[str] = []
    what: list[str] = []
    for s in on:
        vip = str(ipaddress.IPv4Address(s.vip))
        vips.append(vip)
        live = [str(ipaddress.IPv4Address(e.ip)) for e in semantics.replicas(s, all_eps) if e.ip and alive(e.host)]
        what.append(f"{s.name} {vip} -> {len(live)}")
        if not live:
            continue
        target = _target(live, affinity=s.affinity)
        for port, proto in semantics.port_list(s):
            nat.append(f"ip daddr {vip} {proto} dport {port} dnat to {target}")
        nat.append(f"ip daddr {vip} icmp type echo-request dnat to {target}")
    vipset = "{ " + ", ".join(sorted(set(vips), key=ipaddress.IPv4Address)) + " }"
    reject = (f"ip daddr {vipset} meta l4proto tcp reject with tcp reset", f"ip daddr {vipset} reject")
    # The nat chain may be empty (no live replica anywhere): the tag then sits on the reject chain.
    script, tag = nfttag.render(FAMILY, TABLE, [NAT._replace(rules=tuple(nat)), REJECT._replace(rules=reject)])
    summary = ", ".join(what[:4]) + (", …" if len(what) > 4 else "")
    return NftTable(tag, script=script, summary=f"{len(on)} service{'s' if len(on) != 1 else ''}: {summary}")


def parse(listing: str) -> NftTable | None:
    """The table's tag from `nft -j list table ip vxlab_svc`; None when it is not in the
    shape `build` writes (a rewrite repairs it)."""
    tag = nfttag.parse(listing, SHAPE)
    return None if tag is None else NftTable(tag)


def diff_reason(want: NftTable | None, have: NftTable | None) -> str:
    """Why the table must change ("" when it is right)."""
    return nfttag.reason(want, have, what="services", gone="no service on its networks any more")
