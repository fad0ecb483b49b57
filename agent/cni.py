"""The CNI protocol as vxlab-cni speaks it (pure): spec 1.0.0 (ADD, DEL, CHECK, VERSION)
and 1.1.0's GC and STATUS; results and errors for 0.3.x/0.4.0 configs too (podman 4.3
writes 0.4.0 conflists).

Input: the plugin's config on stdin (a conflist entry, `name` and `cniVersion` put in by
the runtime): `type` "vxlab", `network` (the vxlab network), `host` (this host's name,
as its agent registered it), `controller` (one address or a comma-separated list, or a
list), `pki` (optional: a `vxlab pki init` directory: the host's certificate in it is used,
else the admin's; none: plaintext), `timeout` (optional, seconds to wait for the agent, default 20). The
environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME (CNI_ARGS, CNI_PATH
are not needed). Output: a result or an error as JSON on stdout; errors exit non-zero.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SPEC = "1.0.0"
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# Error codes of the spec (1-99), and ours (100+).
INCOMPATIBLE, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, BAD_ENV, IO_FAILURE, DECODE, BAD_CONFIG = 1, 2, 3, 4, 5, 6, 7
TRY_AGAIN, NOT_AVAILABLE = 11, 50
NOT_AS_MADE = 100  # CHECK: the interface is missing, or not what ADD made
LABEL_CONTAINER = "cni/container-id"  # on the endpoint: the runtime's container id
LABEL_IFNAME = "cni/ifname"
DEFAULT_TIMEOUT = 20.0
_NEEDS = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"), "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
          "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"), "GC": (), "STATUS": ()}
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")


class CniError(Exception):
    """What the plugin answers when a command fails: a code of the spec, a message."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


@dataclass(frozen=True)
class Config:
    cni_version: str
    name: str
    network: str
    host: str
    controller: tuple[str, ...]
    pki: str = ""
    timeout: float = DEFAULT_TIMEOUT
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, data: bytes) -> Config:
        try:
            raw = json.loads(data or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise CniError(DECODE, f"the config on stdin is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CniError(DECODE, "the config on stdin is not a JSON object")
        version = raw.get("cniVersion", "")
        if version not in SUPPORTED:
            raise CniError(INCOMPATIBLE, f"cniVersion: {version!r} is not one vxlab-cni speaks"
                                         f" ({', '.join(SUPPORTED)})")
        if raw.get("type", "vxlab") != "vxlab":
            raise CniError(BAD_CONFIG, f"type: {raw.get('type')!r}, this plugin is 'vxlab'")
        missing = [k for k in ("network", "host", "controller") if not raw.get(k)]
        if missing:
            raise CniError(BAD_CONFIG, f"{missing[0]}: missing in the plugin's config (needs network, host,"
                                       " controller)")
        for key in ("network", "host", "pki"):
            if not isinstance(raw.get(key, ""), str):
                raise CniError(BAD_CONFIG, f"{key}: must be a string")
        ctl = raw["controller"]
        addresses = tuple(a.strip() for a in (ctl.split(",") if isinstance(ctl, str) else ctl) if str(a).strip())
        timeout = raw.get("timeout", DEFAULT_TIMEOUT)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 600:
            raise CniError(BAD_CONFIG, "timeout: seconds, more than 0 and at most 600")
        return cls(version, str(raw.get("name", "")), raw["network"], raw["host"], addresses, raw.get("pki", ""),
                   float(timeout), raw)


def version_of(data: bytes) -> str:
    """The config's cniVersion, for an error's JSON (the spec's own when unreadable)."""
    try:
        raw = json.loads(data or b"{}")
    except (ValueError, UnicodeDecodeError):
        return SPEC
    version = raw.get("cniVersion") if isinstance(raw, dict) else None
    return version if version in SUPPORTED else SPEC


@dataclass(frozen=True)
class Env:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""

    @classmethod
    def of(cls, environ: Mapping[str, str]) -> Env:
        command = environ.get("CNI_COMMAND", "")
        if command not in COMMANDS:
            raise CniError(BAD_ENV, f"CNI_COMMAND: {command[:20]!r} is not one of {', '.join(COMMANDS)}")
        for key in _NEEDS.get(command, ()):
            if not environ.get(key):
                raise CniError(BAD_ENV, f"{key}: missing; {command} needs {', '.join(_NEEDS[command])}")
        ifname = environ.get("CNI_IFNAME", "")
        if ifname and (len(ifname) > 15 or not re.fullmatch(r"[A-Za-z0-9_.-]+", ifname)):
            raise CniError(BAD_ENV, f"CNI_IFNAME: {ifname[:20]!r} is not an interface name (1-15 of [A-Za-z0-9_.-])")
        return cls(command, environ.get("CNI_CONTAINERID", ""), environ.get("CNI_NETNS", ""), ifname)


def endpoint_name(container_id: str, ifname: str) -> str:
    """The vxlab endpoint of one container's interface: `cni-<12 of the id>-<ifname>`
    (hex ids as `podman ps` shows them; others, or odd interface names, hashed)."""
    cid = container_id.lower()
    short = cid[:12] if re.fullmatch(r"[0-9a-f]{12,}", cid) else hashlib.sha1(container_id.encode()).hexdigest()[:12]
    tail = ifname if re.fullmatch(r"[a-z0-9]{1,15}", ifname) else hashlib.sha1(ifname.encode()).hexdigest()[:8]
    return f"cni-{short}-{tail}"


DNS = {"nameservers": ["127.0.0.11"], "options": ["ndots:0"]}  # the result's `dns`: the agent's embedded DNS


def result(version: str, *, ifname: str, mac: str, sandbox: str, ip: str, subnet: str, gateway: str) -> dict[str, Any]:
    """ADD's result: the container's interface, its address (and the gateway with a
    default route through it, on a network with a way out: `gateway` ""), and `dns`: the
    resolver configuration the runtime may write into the container's resolv.conf (the
    spec's `nameservers`, `options`): the host agent's embedded DNS at 127.0.0.11, which
    ADD redirected to the agent's listener in the container's namespace."""
    prefix = ipaddress.IPv4Network(subnet).prefixlen
    addr: dict[str, Any] = {"address": f"{ip}/{prefix}", "interface": 0}
    if gateway:
        addr["gateway"] = gateway
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        addr["version"] = "4"
    return {"cniVersion": version, "interfaces": [{"name": ifname, "mac": mac, "sandbox": sandbox}],
            "ips": [addr], "routes": [{"dst": "0.0.0.0/0", "gw": gateway}] if gateway else [],
            "dns": {k: list(v) for k, v in DNS.items()}}


def error(version: str, exc: CniError) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
    if exc.details:
        out["details"] = exc.details
    return out


def versions(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED)}


def valid_attachments(conf: Config) -> set[tuple[str, str]] | None:
    """GC's `cni.dev/valid-attachments`: (container id, ifname) pairs to keep; None when absent."""
    found = conf.raw.get("cni.dev/valid-attachments")
    if found is None:
        return None
    if not isinstance(found, list) or not all(isinstance(a, dict) for a in found):
        raise CniError(BAD_CONFIG, "cni.dev/valid-attachments: a list of {containerID, ifname}")
    return {(str(a.get("containerID", "")), str(a.get("ifname", ""))) for a in found}
