"""Validation of user input: names, addresses, subnets, VNIs, MTUs, labels, namespace paths.

Pure functions that raise `InvalidArgument(field, reason)` and return normalised
values. The limits are chosen so every kernel object derived from a name fits the
kernel's 15-character interface-name limit:

- network names: at most 11 characters, because the agent names the network's
  bridge `vxb-<network>` and its VXLAN device `vxv-<network>` (4 + 11 = 15);
- host and container names: at most 32 characters; they only appear in namespace
  names (files under /run/netns, no 15-character limit) and in interface names
  through a short hash (`vxe-<11 hex of the endpoint id>`).

All names: lowercase ASCII letters, digits and '-', starting with a letter and not
ending with '-' — safe in interface names, namespace paths, nft rules and shells.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

from vxlab.errors import InvalidArgument

NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
NETWORK_NAME_MAX = 11
HOST_NAME_MAX = 32
CONTAINER_NAME_MAX = 32
VNI_MIN, VNI_MAX = 1, 16_777_215
MTU_MIN, MTU_MAX = 576, 9216
PREFIX_MIN, PREFIX_MAX = 8, 30
# `name` or `prefix/name` (as Kubernetes: `vxlab/netns-prefix`): one '/' at most, no
# '..', each part starting and ending with a letter or digit.
LABEL_KEY_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
LABEL_KEY_MAX = 63
LABEL_VALUE_MAX = 255


def name(value: str, *, field: str, max_len: int) -> str:
    """A host, network or container name (see the module docstring for the rules)."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"{value[:40]!r} is longer than {max_len} characters")
    if not NAME_RE.match(value):
        raise InvalidArgument(
            field,
            f"{value[:40]!r} is not a valid name: use lowercase letters, digits and '-',"
            " start with a letter, do not end with '-'",
        )
    return value


def ipv4(value: str, *, field: str) -> ipaddress.IPv4Address:
    """A single IPv4 address; IPv6 is refused with its own message."""
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidArgument(field, f"{value[:50]!r} is not a valid IPv4 address") from None
    if addr.version == 6:
        raise InvalidArgument(field, "IPv6 is not supported yet")
    assert isinstance(addr, ipaddress.IPv4Address)
    return addr


def subnet(value: str, *, field: str = "subnet") -> ipaddress.IPv4Network:
    """An IPv4 subnet in CIDR form, host bits zero, prefix length /8 to /30."""
    text = value.strip()
    if "/" not in text:
        raise InvalidArgument(field, f"{value[:50]!r} is not a CIDR (expected e.g. 10.10.0.0/24)")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(field, f"{value[:50]!r} is not a valid IPv4 CIDR") from None
    if net.version == 6:
        raise InvalidArgument(field, "IPv6 is not supported yet")
    assert isinstance(net, ipaddress.IPv4Network)
    if str(net.network_address) != text.split("/")[0]:
        raise InvalidArgument(field, f"{text} has host bits set; did you mean {net}?")
    if net.prefixlen > PREFIX_MAX:
        raise InvalidArgument(
            field, f"prefix /{net.prefixlen} is too small: at least /{PREFIX_MAX} is needed"
            " (a gateway and one endpoint)"
        )
    if net.prefixlen < PREFIX_MIN:
        raise InvalidArgument(field, f"prefix /{net.prefixlen} is too large: at most /{PREFIX_MIN}")
    return net


def host_in(addr: ipaddress.IPv4Address, net: ipaddress.IPv4Network, *, field: str) -> None:
    """`addr` must be a usable host address of `net` (not its network or broadcast address)."""
    if addr not in net:
        raise InvalidArgument(field, f"{addr} is outside subnet {net}")
    if addr == net.network_address:
        raise InvalidArgument(field, f"{addr} is the network address of {net}")
    if addr == net.broadcast_address:
        raise InvalidArgument(field, f"{addr} is the broadcast address of {net}")


def vni(value: int, *, field: str = "vni") -> int:
    """0 (allocate one) or a VXLAN network identifier in 1..16777215."""
    if value != 0 and not VNI_MIN <= value <= VNI_MAX:
        raise InvalidArgument(field, f"{value} is out of range {VNI_MIN}..{VNI_MAX}")
    return value


def mtu(value: int, *, field: str = "mtu") -> int:
    """0 (derive from the underlay) or an MTU in 576..9216."""
    if value != 0 and not MTU_MIN <= value <= MTU_MAX:
        raise InvalidArgument(field, f"{value} is out of range {MTU_MIN}..{MTU_MAX} (0 = automatic)")
    return value


def labels(value: dict[str, str], *, field: str = "labels") -> dict[str, str]:
    """Keys: `name` or `prefix/name` of [A-Za-z0-9._-], at most 63 characters, no '..'.
    Values: at most 255 printable characters; they are data, never part of a name,
    path, rule or command."""
    for key, val in value.items():
        # the error stays one line, and "field: reason" stays unambiguous
        shown = key[:40] if key[:40].isprintable() and ":" not in key else repr(key[:40])
        if len(key) > LABEL_KEY_MAX or ".." in key or not LABEL_KEY_RE.match(key):
            raise InvalidArgument(f"{field}.{shown}", "label keys are 1-63 of [A-Za-z0-9._/-]"
                                  " (name or prefix/name, no '..')")
        if len(val) > LABEL_VALUE_MAX or not val.isprintable():
            raise InvalidArgument(f"{field}.{shown}", f"label values are at most {LABEL_VALUE_MAX} printable characters")
    return dict(value)


ALIASES_MAX = 16  # a create's transaction checks each alias twice (etcd allows 128 operations)


def aliases(value: tuple[str, ...] | list[str], *, owner: str, field: str = "aliases") -> tuple[str, ...]:
    """A container's other DNS names on a network: names like a container's, at most
    ALIASES_MAX, none twice and none the container's own name `owner` (uniqueness on
    the network is the controller's, in its transaction)."""
    if len(value) > ALIASES_MAX:
        raise InvalidArgument(field, f"{len(value)} aliases; at most {ALIASES_MAX}")
    seen: set[str] = set()
    for i, alias in enumerate(value):
        name(alias, field=f"{field}[{i}]", max_len=CONTAINER_NAME_MAX)
        if alias == owner:
            raise InvalidArgument(f"{field}[{i}]", f"{alias!r} is the container's own name")
        if alias in seen:
            raise InvalidArgument(f"{field}[{i}]", f"{alias!r} is given twice")
        seen.add(alias)
    return tuple(value)


NETNS_PATH_MAX = 1024


def netns_path(value: str, *, field: str) -> str:
    """A network namespace's path as a runtime names it (CNI_NETNS, Docker's SandboxKey):
    absolute and normalised (no `.`, `..`, `//` or trailing `/`), at most NETNS_PATH_MAX
    printable characters. Whether it is a namespace holding the endpoint is the agent's
    to find out when it opens it."""
    shown = value[:60] if value[:60].isprintable() else repr(value[:60])
    if len(value) > NETNS_PATH_MAX or not value.isprintable():
        raise InvalidArgument(field, f"{shown!r}: at most {NETNS_PATH_MAX} printable characters")
    if not value.startswith("/") or value == "/" or posixpath.normpath(value) != value or value.startswith("//"):
        raise InvalidArgument(field, f"{shown!r} is not an absolute, normalised path (e.g. /run/netns/NAME)")
    return value
