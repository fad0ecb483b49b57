"""Strict YAML 1.2 for vxlab's files (topologies, scenarios): reading a document with the
position of every node, the one-line `TopologyError` ("file:line:column: path: reason"),
and typed access to parsed mappings that names the YAML path in every error.

PyYAML alone reads YAML 1.1, where `mtu: 01400` is octal 768, `22:30` is the base-60
number 1350 and `off` is false. vxlab's files are YAML 1.2 (core schema) instead:
- booleans: only `true` and `false` (also `True`, `TRUE`, …); `yes`, `on`, `off` are strings;
- integers: decimal (`1400`, `-5`), `0o17` (octal), `0x1000` (hexadecimal);
  `1_000`, `0b101` and `22:30` are strings, so a field that wants a number refuses them;
- a decimal with a leading zero (`01400`) is refused wherever it appears: YAML 1.2 reads
  it as 1400 and YAML 1.1 as octal 768, and silently picking either would be wrong for
  someone (`networks[0].mtu: 01400 has a leading zero (YAML 1.1 would read it as octal
  768); write 1400, or '01400' for a string`);
- floats: `1.5`, `.5`, `1e3`, `.inf`, `.nan`; `1:30.5` is a string (nothing is base 60);
- `null`, `~` or nothing is null; dates (`2024-01-01`) are strings; `<<` is an ordinary
  key (no merge keys); duplicate keys are refused.

`read(text, source=…)` gives a `Document`: the data and, per YAML path (`networks[0].mtu`,
the same paths the validators name), where its key and its value start. A validator
raises `TopologyError(path, reason)` knowing nothing of files; `Document.locate` adds
the file, line and column of the value (of the key for an error about the key itself,
`on_key=True`), or of the nearest enclosing node when the path names something absent
(a required key). Data that never was a file (`from_mapping`) has no position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vxlab import validate


@dataclass(frozen=True)
class Position:
    """Where a node starts: 1-based line and column in `source`."""

    source: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"


class TopologyError(Exception):
    """A topology is invalid: `path` is the YAML location (or the file), `reason` why, `at`
    where in which file (None for data that was not read from a file)."""

    def __init__(self, path: str, reason: str, *, on_key: bool = False, at: Position | None = None) -> None:
        path, reason = one_line(path), one_line(reason)  # a key or YAML excerpt may hold a newline
        super().__init__(": ".join(part for part in (str(at) if at else "", path, reason) if part))
        self.path = path
        self.reason = reason
        self.on_key = on_key  # the error is about the key at `path` (unknown, duplicate), not its value
        self.at = at

    def located(self, at: Position | None) -> TopologyError:
        """The same error (same class) at `at`."""
        return type(self)(self.path, self.reason, on_key=self.on_key, at=at)


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped (errors are one line)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- YAML 1.2 --------------------------------------------------------------------------

_BOOL, _INT, _FLOAT, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "null"))
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")


class _Loader(yaml.SafeLoader):
    """SafeLoader with the resolvers and constructors of the YAML 1.2 core schema."""

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def construct_yaml_int(self, node: yaml.Node) -> int:
        text = str(self.construct_scalar(node))  # type: ignore[arg-type]
        if not _INT_RE.fullmatch(text):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a YAML 1.2 integer", node.start_mark)
        return int(text[2:], 8) if text.startswith("0o") else int(text[2:], 16) if text.startswith("0x") else int(text)

    def construct_yaml_float(self, node: yaml.Node) -> float:
        text = str(self.construct_scalar(node))  # type: ignore[arg-type]
        if not _FLOAT_RE.fullmatch(text):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a YAML 1.2 float", node.start_mark)
        return float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))

    def construct_yaml_bool(self, node: yaml.Node) -> bool:
        text = str(self.construct_scalar(node))  # type: ignore[arg-type]
        if text.lower() not in ("true", "false"):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not true or false", node.start_mark)
        return text.lower() == "true"


for _tag, _rx, _first in (
    (_BOOL, r"true|True|TRUE|false|False|FALSE", "tTfF"),
    (_INT, _INT_RE.pattern, "-+0123456789"),  # before floats: 1400 matches both
    (_FLOAT, _FLOAT_RE.pattern, "-+.0123456789"),
    (_NULL, r"~|null|Null|NULL|", ["~", "n", "N", ""]),
):
    _Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_rx})$"), list(_first))
_Loader.add_constructor(_INT, _Loader.construct_yaml_int)
_Loader.add_constructor(_FLOAT, _Loader.construct_yaml_float)
_Loader.add_constructor(_BOOL, _Loader.construct_yaml_bool)


def yaml11_number(text: str) -> int | float | None:
    """The number YAML 1.1 (PyYAML's default) reads the plain scalar `text` as, when YAML
    1.2 reads a string there (`1_400`, `22:30`, `0b101`); else None."""
    if _INT_RE.fullmatch(text) or _FLOAT_RE.fullmatch(text):
        return None
    old = yaml.SafeLoader("")
    tag = old.resolve(yaml.ScalarNode, text, (True, False))
    node = yaml.ScalarNode(tag, text)
    try:
        return old.construct_yaml_int(node) if tag == _INT else old.construct_yaml_float(node) if tag == _FLOAT else None
    except ValueError:
        return None
    finally:
        old.dispose()


@dataclass
class Document:
    """A parsed YAML file: its data and, per YAML path, where its key and value start."""

    data: Any
    source: str
    marks: dict[str, tuple[Position, Position]] = field(default_factory=dict)

    def locate(self, err: TopologyError) -> TopologyError:
        """`err` at the position its path names (the key's for `on_key`), else at the
        nearest enclosing node; unchanged when it has a position already."""
        if err.at is not None:
            return err
        path = err.path
        while path and path not in self.marks:
            path = _parent(path)
        key, value = self.marks.get(path, (None, None))
        return err.located(key if err.on_key and path == err.path else value)


def _parent(path: str) -> str:
    """'a.b[2]' -> 'a.b' -> 'a' -> ''."""
    if path.endswith("]") and "[" in path:
        return path[:path.rindex("[")]
    return path[:path.rindex(".")] if "." in path else ""


def read_file(path: str | Path, *, error: type[TopologyError] = TopologyError) -> Document:
    """Read and parse the YAML file at `path` (errors name it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(str(path), f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    return read(text, source=str(path), error=error)


def read(text: str, *, source: str = "<string>", error: type[TopologyError] = TopologyError) -> Document:
    """Parse one YAML 1.2 document; syntax errors and leading zeros are `error` at their position."""
    loader: _Loader | None = None
    doc = Document(None, source)
    try:
        loader = _Loader(text)  # checks every character first
        node = loader.get_single_node()
        if node is not None:
            _walk(loader, node, "", None, doc, set(), error)
            doc.data = loader.construct_document(node)
        return doc
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = Position(one_line(source), mark.line + 1, mark.column + 1) if mark is not None else None
        path = next((p for p, (_, value) in doc.marks.items() if value == at), "")  # a bad `!!int 1_0`: its path
        raise error(path if at else source, e.problem or e.context or "not valid YAML", at=at) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        at = Position(one_line(source), line, e.position - text.rfind("\n", 0, e.position))
        char = chr(e.character) if isinstance(e.character, int) else e.character
        raise error("", f"character {char!r} is not allowed in YAML", at=at) from None
    except yaml.YAMLError as e:
        raise error(source, str(e)) from None
    except RecursionError:
        raise error(source, "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _walk(loader: _Loader, node: yaml.Node, path: str, key_at: Position | None, doc: Document,
          seen: set[int], error: type[TopologyError]) -> None:
    """Record where `path` starts; refuse leading zeros and duplicate keys. An aliased node
    is descended once (at its first place), so aliases cannot make this exponential."""
    at = _position(doc.source, node)
    doc.marks.setdefault(path, (key_at or at, at))
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        _no_leading_zero(node, path, at, error)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, f"{path}[{i}]", None, doc, seen, error)
    elif isinstance(node, yaml.MappingNode):
        keys: set[Any] = set()
        for key_node, value_node in node.value:
            key_at = _position(doc.source, key_node)
            key: Any = "?"  # a mapping or list as a key: refused when the document is constructed
            if isinstance(key_node, yaml.ScalarNode):
                _no_leading_zero(key_node, one_line(_join(path, key_node.value)), key_at, error)
                key = loader.construct_object(key_node)
            key_path = one_line(_join(path, key))
            if key in keys:
                raise error(key_path, "duplicate key", on_key=True, at=key_at)
            keys.add(key)
            _walk(loader, value_node, key_path, key_at, doc, seen, error)


def _position(source: str, node: yaml.Node) -> Position:
    return Position(one_line(source), node.start_mark.line + 1, node.start_mark.column + 1)


def _no_leading_zero(node: yaml.ScalarNode, path: str, at: Position, error: type[TopologyError]) -> None:
    if node.tag == _INT and _LEADING_ZERO.fullmatch(node.value):
        digits = node.value.lstrip("+-")
        old = f"octal {int(node.value, 8)}" if set(digits) <= set("01234567") else "a string"
        raise error(path, f"{node.value} has a leading zero (YAML 1.1 would read it as {old});"
                    f" write {int(node.value)}, or '{node.value}' for a string", at=at)


# --- typed access ----------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, str) and (old := yaml11_number(value)) is not None:
        return f"str ({value} is a string in YAML 1.2; YAML 1.1 would read it as {old})"
    return type(value).__name__


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _mapping(value: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TopologyError(path, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if key not in keys:
            raise TopologyError(_join(path, key), "unknown key", on_key=True)
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
