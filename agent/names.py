"""Names and markers of the links the agent creates, inside the namespaces that
vxlab.layout names (`<prefix>n-<network>`, `<prefix>c-<container>`; the prefix is `vx-`
on a real host, `vx-<lab>.<host>.` for a lab's host). All start with `vx`:

    vxb-<network>           the bridge            (<= 15 chars: network names <= 11)
    vxv-<network>           the VXLAN device
    vxe-<endpoint id[:11]>  the bridge-side end of a container's veth
    vxh<endpoint id[:11]>   a runtime endpoint's container end, in the agent's own
                            namespace until the runtime takes it (Layout.handoff_link)
    vxgw0 / vxg-<network>   a non-internal network's uplink (inside its namespace / in
                            the host's), a /30 of 169.254.0.0/16 unique on this host
                            (desired.py allocates it), NAT on both sides

Markers: every link's ifalias is `vxlab:bridge:<network>`, `vxlab:vxlan:<network>`,
`vxlab:ep:<endpoint id>` (both veth ends) or `vxlab:uplink:<network>`; the namespaces'
own markers and the ownership rule (`owns_ns`) are vxlab.layout's `Layout`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from vxlab.agent.kernel import ENDPOINT_MARK, MARK, UPLINK_MARK
from vxlab.layout import Layout

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
_LINK_LOCAL = (169 << 24) | (254 << 16)
# Uplink /30s, numbered within 169.254.0.0/16: 169.254.1.0 up to 169.254.254.255 (RFC 3927
# reserves the first and the last /24), without the one holding 169.254.169.254 (the
# metadata address of cloud VMs).
UPLINK_BLOCKS = [b for b in range(64, 16320) if b != (169 * 256 + 254) // 4]


@dataclass(frozen=True)
class Naming(Layout):
    """The agent's layout (its namespaces and their markers) and the names of its links."""

    @staticmethod
    def bridge(network: str) -> str:
        return f"vxb-{network}"

    @staticmethod
    def vxlan(network: str) -> str:
        return f"vxv-{network}"

    @staticmethod
    def veth(endpoint_id: str) -> str:
        return f"vxe-{endpoint_id[:11]}"

    UPLINK = "vxgw0"  # inside a network namespace: its way out (non-internal networks)

    @staticmethod
    def uplink_host(network: str) -> str:
        return f"vxg-{network}"

    @staticmethod
    def uplink_alias(network: str) -> str:
        return f"{UPLINK_MARK}{network}"

    @staticmethod
    def uplink_addresses(block: int) -> tuple[str, str]:
        """(host side, namespace side) of the uplink in /30 number `block` of 169.254.0.0/16."""
        base = _LINK_LOCAL | (block * 4)
        def dotted(n: int) -> str:
            return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))
        return dotted(base + 1), dotted(base + 2)

    @staticmethod
    def uplink_block(cidr: str) -> int | None:
        """The /30 number of a namespace-side uplink address ("169.254.x.y/30"); None when
        it is not one (another prefix, outside 169.254.0.0/16, not the /30's second)."""
        try:
            iface = ipaddress.IPv4Interface(cidr)
        except ValueError:
            return None
        n = int(iface.ip) - _LINK_LOCAL
        if iface.network.prefixlen != 30 or not 0 <= n < 1 << 16 or n % 4 != 2:
            return None
        return n // 4

    @staticmethod
    def bridge_alias(network: str) -> str:
        return f"{MARK}bridge:{network}"

    @staticmethod
    def vxlan_alias(network: str) -> str:
        return f"{MARK}vxlan:{network}"

    @staticmethod
    def endpoint_alias(endpoint_id: str) -> str:
        return f"{ENDPOINT_MARK}{endpoint_id}"
