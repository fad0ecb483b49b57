"""The embedded DNS's port redirect (Docker's 127.0.0.11 DNAT): the table `ip vxlab_dns`
an agent keeps in each container namespace it has a resolver in (pure: what it holds,
its text; agent/nft.py writes it, agent/nfttag.py tags it).

The agent's listeners (agent/dnsserver.py) are bound to 127.0.0.11:PORT, not :53, so
port 53 of the container stays free: a DNS server in the container can bind
0.0.0.0:53 (`-p 5353:53/udp`), which a listener on 127.0.0.11:53 would make EADDRINUSE.
`output` (nat, before routing) DNATs UDP and TCP to 127.0.0.11:53 to 127.0.0.11:PORT;
conntrack undoes it for the replies, so a stub resolver (glibc checks the source of an
answer) sees them come from 127.0.0.11:53. No SNAT is needed.

PORT is one fixed port, the same in every namespace (Docker picks random ones and
rewrites its rules each time): the desired table is then a constant, so a restarted
agent binds the same port again and finds the table right by its tag, adopting it with
zero writes, with nothing to record or read back. It is outside Linux's ephemeral range
(32768-60999), so no outgoing connection of the container ever takes it, and is bound
on 127.0.0.11 only: it is taken from the container only for a server binding that very
port on the wildcard address (or 127.0.0.11).
"""

from __future__ import annotations

import functools

from vxlab.agent import nfttag
from vxlab.agent.kernel import NftTable

TABLE = "vxlab_dns"
FAMILY = "ip"
ADDRESS = "127.0.0.11"
PORT = 10053          # where the listeners are bound, in every container namespace
SERVICE_PORT = 53     # what the container asks
CHAINS = (nfttag.Chain("output", "type nat hook output priority -100; policy accept;",
                       tuple(f"ip daddr {ADDRESS} {proto} dport {SERVICE_PORT} dnat to {ADDRESS}:{PORT}"
                             for proto in ("udp", "tcp"))),)
SHAPE = nfttag.hooks(CHAINS)


@functools.cache
def build() -> NftTable:
    """The table of every container namespace with a resolver."""
    script, tag = nfttag.render(FAMILY, TABLE, CHAINS)
    return NftTable(tag, script=script, summary=f"{ADDRESS}:{SERVICE_PORT} -> :{PORT}, udp and tcp")


def parse(listing: str) -> NftTable | None:
    """The table's tag from `nft -j list table ip vxlab_dns`; None when it is not in the
    shape `build` writes (a rewrite repairs it)."""
    tag = nfttag.parse(listing, SHAPE)
    return None if tag is None else NftTable(tag)


def diff_reason(want: NftTable | None, have: NftTable | None) -> str:
    """Why the table must change ("" when it is right)."""
    return nfttag.reason(want, have, what="dns redirect", gone="no resolver in this namespace any more")
