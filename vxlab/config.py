"""Config files of `vxlab controller serve` and `vxlab agent run`: TOML (stdlib tomllib).

One format for both: a table per verb, `[controller]` and `[agent]`, whose keys are the
verb's flag names without the leading dashes (`lease-ttl = 5`, `underlay-dev = "eth0"`);
the exceptions are `agent.controller` (the global `--controller` flag),
`agent.labels` and `controller.listen-netns`, tables (the flags are `--label K=V` and
`--listen-netns NAME=ADDR`, repeated), and `agent.tls-ca`/
`tls-cert`/`tls-key` (the global `--tls-*` flags). vxlab.agentconfig turns the [agent]
table into an AgentConfig and back. A file may hold both
tables; a verb needs its own and checks the whole file. Flags given on the command line
override the file; what neither gives takes the defaults below (the flags show the same).

Unknown tables or keys and bad values are errors naming the file and the key, e.g.
`controller.toml: agent.resync: must be between 0.5 and 300`. Values from flags go
through the same checks, named by the flag (`--resync: …`).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vxlab import validate
from vxlab.errors import InvalidArgument
from vxlab.layout import DEFAULT_PREFIX

RESYNC_MIN, RESYNC_MAX = 0.5, 300.0
Check = Callable[[Any, str], Any]  # (value, field name for errors) -> normalised value


@dataclass(frozen=True)
class Key:
    """One option: how to check a value, and its default when neither file nor flag gives it."""

    check: Check
    default: Any = None


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(field, "must be a non-empty string")
    return value.strip()


def _addresses(value: Any, field: str) -> list[str]:
    """'a:1,b:2' or ['a:1', 'b:2'] -> ['a:1', 'b:2']."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidArgument(field, "must be a string or a list of strings")
    out = [a.strip() for item in items for a in item.split(",") if a.strip()]
    if not out:
        raise InvalidArgument(field, "no address given")
    return out


def _number(kind: type, lo: float, hi: float) -> Check:
    def check(value: Any, field: str) -> Any:
        ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            raise InvalidArgument(field, f"must be {'an integer' if kind is int else 'a number'}")
        if not lo <= value <= hi:
            raise InvalidArgument(field, f"must be between {lo:g} and {hi:g}")
        return kind(value)
    return check


def _cidr(value: Any, field: str) -> str:
    try:
        net = ipaddress.ip_network(_string(value, field), strict=True)
    except ValueError:
        raise InvalidArgument(field, f"{str(value)[:50]!r} is not an IPv4 CIDR with host bits zero") from None
    if net.version != 4:
        raise InvalidArgument(field, "IPv6 is not supported yet")
    return str(net)


def _ipv4(value: Any, field: str) -> str:
    return str(validate.ipv4(_string(value, field), field=field))


def _host(value: Any, field: str) -> str:
    return validate.name(_string(value, field), field=field, max_len=validate.HOST_NAME_MAX)


def _netns_prefix(value: Any, field: str) -> str:
    if not _string(value, field).startswith("vx"):
        raise InvalidArgument(field, "must start with 'vx'")
    return str(value)


def _listen_netns(value: Any, field: str) -> dict[str, str]:
    """{network namespace: host:port}: more listeners of the controller, each created in
    that namespace (a name under /run/netns, or a path)."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(field, "must be a table of strings (namespace = \"host:port\")")
    out = {}
    for ns, addr in value.items():
        shown = ns[:40] if ns[:40].isprintable() else repr(ns[:40])
        if not ns or not ns.isprintable() or any(c.isspace() for c in ns) or ns in (".", "..") or (
                "/" in ns and not ns.startswith("/")):
            raise InvalidArgument(f"{field}.{shown}", "a network namespace: a name under /run/netns or an absolute path")
        host, sep, port = addr.strip().rpartition(":")
        if addr.strip().startswith(("unix:", "unix-abstract:")):
            raise InvalidArgument(f"{field}.{shown}", "a unix socket belongs to no network namespace; "
                                  "use listen for it")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise InvalidArgument(f"{field}.{shown}", f"{addr[:50]!r} is not host:port")
        out[ns] = addr.strip()
    return out


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(field, "must be true or false")
    return value


def _labels(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(field, "must be a table of strings (key = \"value\")")
    return validate.labels(value, field=field)


SECTIONS: dict[str, dict[str, Key]] = {
    "controller": {
        "listen": Key(_string, "127.0.0.1:7070"),
        "listen-netns": Key(_listen_netns, {}),
        "etcd": Key(_addresses),
        "embedded-etcd": Key(_string),
        "metrics": Key(_string),
        "lease-ttl": Key(_number(int, 1, 3600), 5),
        "subnet-pool": Key(_cidr, "10.0.0.0/8"),
        "subnet-prefix": Key(_number(int, 1, 32), 24),
        "pki": Key(_string),
        "tls-ca": Key(_string), "tls-cert": Key(_string), "tls-key": Key(_string),
        "etcd-ca": Key(_string), "etcd-cert": Key(_string), "etcd-key": Key(_string),
        "insecure": Key(_bool, False),
    },
    "agent": {
        "controller": Key(_addresses),
        "host": Key(_host),
        "underlay-ip": Key(_ipv4, ""),
        "underlay-dev": Key(_string, ""),
        "netns-prefix": Key(_netns_prefix, DEFAULT_PREFIX),
        "resync": Key(_number(float, RESYNC_MIN, RESYNC_MAX), 10.0),
        "metrics": Key(_string),
        "status-file": Key(_string, ""),
        "labels": Key(_labels, {}),
        "pki": Key(_string),
        "dns-forward": Key(_bool, True),
        "tls-ca": Key(_string), "tls-cert": Key(_string), "tls-key": Key(_string),
    },
}


def default(section: str, key: str) -> Any:
    """The default of `section.key` (the CLI shows the same in --help)."""
    return SECTIONS[section][key].default


def param(key: str) -> str:
    """The Python name of a key: 'lease-ttl' -> 'lease_ttl'."""
    return key.replace("-", "_")


def load(path: str | Path, section: str) -> dict[str, Any]:
    """The checked values of `[section]` in the file at `path`, by Python name; the other
    tables are checked too. Raises InvalidArgument naming the file (and the key)."""
    name = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise InvalidArgument(name, e.strerror or str(e)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(name, f"not valid TOML: {e}") from None
    for table, values in data.items():
        if table not in SECTIONS:
            raise InvalidArgument(f"{name}: {table}", f"unknown table (expected {' or '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise InvalidArgument(f"{name}: {table}", "must be a table ([" + table + "])")
        for key in values:
            if key not in SECTIONS[table]:
                raise InvalidArgument(f"{name}: {table}.{key}",
                                      f"unknown key (known: {', '.join(SECTIONS[table])})")
    if section not in data:
        raise InvalidArgument(name, f"no [{section}] table")
    out = check(section, data[section], source=name)
    for table, values in data.items():  # the other verb's table must be valid as well
        if table != section:
            check(table, values, source=name)
    return out


def check(section: str, table: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The checked values of a `[section]` table (keys as in the file), by Python name;
    an unknown key or a bad value is an InvalidArgument naming `source: section.key`."""
    keys = SECTIONS[section]
    for key in table:
        if key not in keys:
            raise InvalidArgument(f"{source}: {section}.{key}", f"unknown key (known: {', '.join(keys)})")
    return {param(k): keys[k].check(v, f"{source}: {section}.{k}") for k, v in table.items()}


def resolve(section: str, *, path: str | Path | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of `section` by Python name: the defaults, overridden by the file at
    `path` (if any), overridden by `flags` (Python name -> value given on the command line,
    checked here as well and named by the flag in errors)."""
    keys = SECTIONS[section]
    values = {param(k): key.default for k, key in keys.items()}
    if path is not None:
        values.update(load(path, section))
    by_param = {param(k): key for k, key in keys.items()}
    for p, value in flags.items():
        values[p] = by_param[p].check(value, f"--{p.replace('_', '-')}") if p in by_param else value
    return values
