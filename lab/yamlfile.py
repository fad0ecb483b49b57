"""Strict YAML for vxlab's files (topologies, scenarios): a loader that refuses duplicate
keys and reads only true/false as booleans, the one-line `TopologyError` ("path:
reason"), and typed access to parsed mappings that names the YAML path in every error.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from vxlab import validate


class TopologyError(Exception):
    """A topology is invalid: `path` is the YAML location (or the file), `reason` why."""

    def __init__(self, path: str, reason: str) -> None:
        path, reason = one_line(path), one_line(reason)  # a key or YAML excerpt may hold a newline
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped (errors are one line)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)



# --- YAML ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one, and
    reads only true/false as booleans (as YAML 1.2 does): `name: off` is a string."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)):
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark)
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


YamlLoader = _Loader  # for other vxlab YAML files (scenarios): the same strict rules


# --- typed access ----------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _mapping(value: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TopologyError(path, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if key not in keys:
            raise TopologyError(_join(path, key), "unknown key")
    return value


def _opt(m: dict[str, Any], key: str, path: str, types: type | tuple[type, ...], what: str) -> Any:
    """m[key] checked against `types` (bool is never an int); None when absent or null."""
    value = m.get(key)
    if value is None:
        return None
    if isinstance(value, bool) != (types is bool) or not isinstance(value, types):
        raise TopologyError(_join(path, key), f"expected {what}, got {_kind(value)}")
    return value


def _str(m: dict[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    value: str | None = _opt(m, key, path, str, "a string")
    if required and not value:
        raise TopologyError(_join(path, key), "required")
    return value


def _int(m: dict[str, Any], key: str, path: str) -> int | None:
    return _opt(m, key, path, int, "an integer")  # type: ignore[no-any-return]


def _labels(m: dict[str, Any], path: str) -> dict[str, str]:
    raw = _opt(m, "labels", path, dict, "a mapping") or {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            bad = key if not isinstance(key, str) else value
            raise TopologyError(_join(path, f"labels.{key}"), f"expected a string, got {_kind(bad)}")
    return validate.labels(raw, field=_join(path, "labels"))


def _section(top: dict[str, Any], key: str, keys: tuple[str, ...]) -> dict[str, Any]:
    return {} if top.get(key) is None else _mapping(top[key], key, keys)


def _items(m: dict[str, Any], key: str) -> list[Any]:
    value = m.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TopologyError(key, f"expected a list, got {_kind(value)}")
    return value
