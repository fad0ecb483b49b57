"""The desired state as one view: every host, network, endpoint, policy and service keyed
by its identity (hosts and networks by name, endpoints, policies and services by
(network, name)), at the revision it is at.

Owned by the shared core; used by the controller's watch hub (its materialized state,
and the snapshot new subscribers get), the agent's cache (agent/cache.py: what a pass
reads) and lab planning (lab/plan.py: the running lab against the topology).

- `apply(batch)`: a snapshot replaces everything, a change batch puts and deletes
  objects. It returns a `Delta`: per kind, what was added, removed or changed, each
  with the old and the new object, so each user decides what matters to it. An object
  put again unchanged, or a delete of one that is not there, is no change.
- `snapshot()`: the view as a snapshot batch; one object, shared until the next change
  (the gRPC servicer converts each batch object once).
- `copy()`: cheap (objects are frozen; only the tables are copied).
- `diff(other, fields=…)`: what would make this view `other`, per object and field. It
  compares specs: the given fields, or every field but the identity and the status the
  controller or a host's liveness sets (`Kind.status`).

The view is changed only through `apply` (its cached snapshot would go stale). A new
kind of object is one more `Kind` in KINDS, one more table, one more WatchBatch field.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from vxlab.model import Endpoint, Host, Network, Object, Policy, Service, WatchBatch

Key = Any  # str (hosts, networks) or (network, name) (endpoints, policies, services)


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of object: its table in the view (and field of a snapshot batch), its
    class, its identity and the fields that are not part of its spec."""

    name: str
    cls: type
    identity: tuple[str, ...]
    status: tuple[str, ...]

    @property
    def key(self) -> Callable[[Any], Key]:
        return operator.attrgetter(*self.identity)

    @property
    def spec(self) -> tuple[str, ...]:
        """The fields `diff` compares by default, in declaration order."""
        skip = set(self.identity) | set(self.status)
        return tuple(f.name for f in dataclasses.fields(self.cls) if f.name not in skip)


KINDS = (
    Kind("hosts", Host, ("name",), ("alive", "lease_ttl", "registered_at", "agent_version")),
    Kind("networks", Network, ("name",), ("id", "created")),
    Kind("endpoints", Endpoint, ("network", "name"), ("id", "created")),
    Kind("policies", Policy, ("network", "name"), ("created",)),
    Kind("services", Service, ("network", "name"), ("id", "created")),
)
_BY_CLASS: dict[type, tuple[str, Callable[[Any], Key]]] = {k.cls: (k.name, k.key) for k in KINDS}
_FIELDS = {k.name: tuple(f.name for f in dataclasses.fields(k.cls) if f.name not in k.identity) for k in KINDS}
_SPEC = {k.name: k.spec for k in KINDS}


def key_of(obj: Object) -> tuple[str, Key]:
    """(kind, key) of an object."""
    kind, key = _BY_CLASS[obj.__class__]
    return kind, key(obj)


class FieldChange(NamedTuple):
    field: str
    old: Any
    new: Any


class Diff(NamedTuple):
    """One object's difference: added (`old` None), removed (`new` None) or changed."""

    kind: str
    key: Key
    old: Any
    new: Any
    compared: tuple[str, ...] | None = None  # the fields compared (None: every field but the identity)

    @property
    def op(self) -> str:
        return "added" if self.old is None else "removed" if self.new is None else "changed"

    @property
    def changes(self) -> tuple[FieldChange, ...]:
        """The compared fields that differ, in the order compared (none when added or removed)."""
        old, new = self.old, self.new
        if old is None or new is None:
            return ()
        names = self.compared if self.compared is not None else _FIELDS[self.kind]
        return tuple(FieldChange(f, getattr(old, f), getattr(new, f)) for f in names
                     if getattr(old, f) != getattr(new, f))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.changes)


class Delta:
    """What changed, per kind and key. `snapshot`: it came from a snapshot, which replaced
    everything (the differences are between the view before and the snapshot, worked out
    when first asked for: an agent that only needs to know a snapshot came pays nothing)."""

    __slots__ = ("snapshot", "_kinds", "_lazy")

    def __init__(self, *, snapshot: bool = False) -> None:
        self.snapshot = snapshot
        self._kinds: dict[str, dict[Key, Diff]] = {}
        self._lazy: tuple[View, WatchBatch] | None = None  # (the view before, the snapshot)

    def _add(self, d: Diff) -> None:
        table = self._kinds.get(d.kind)
        if table is None:
            self._kinds[d.kind] = {d.key: d}
            return
        prev = table.get(d.key)
        if prev is not None:  # the same object twice in one batch: first old, last new
            d = d._replace(old=prev.old)
            if d.old is None and d.new is None or d.old is not None and d.old == d.new:
                del table[d.key]
                if not table:
                    del self._kinds[d.kind]
                return
        table[d.key] = d

    @property
    def _diffs(self) -> dict[str, dict[Key, Diff]]:
        if self._lazy is not None:
            before, snap = self._lazy
            self._lazy = None
            before._compare(View.of(snap), None, self)
        return self._kinds

    def __bool__(self) -> bool:
        return bool(self._diffs)

    def __len__(self) -> int:
        return sum(len(t) for t in self._diffs.values())

    def __iter__(self) -> Iterator[Diff]:
        for table in self._diffs.values():
            yield from table.values()

    def __repr__(self) -> str:
        return f"Delta(snapshot={self.snapshot}, {list(self)})"

    def of(self, kind: str) -> Mapping[Key, Diff]:
        return self._diffs.get(kind, {})

    def get(self, kind: str, key: Key) -> Diff | None:
        return self.of(kind).get(key)

    def added(self, kind: str) -> list[Diff]:
        return [d for d in self.of(kind).values() if d.old is None]

    def removed(self, kind: str) -> list[Diff]:
        return [d for d in self.of(kind).values() if d.new is None]

    def changed(self, kind: str) -> list[Diff]:
        return [d for d in self.of(kind).values() if d.old is not None and d.new is not None]


_NOTHING = Delta()  # what a heartbeat changes (never modified: `_add` is only called on new deltas)


class View:
    """Objects keyed by identity, at a revision. The tables passed in are taken, not copied."""

    __slots__ = ("revision", "hosts", "networks", "endpoints", "policies", "services", "_snap")
    hosts: dict[str, Host]
    networks: dict[str, Network]
    endpoints: dict[tuple[str, str], Endpoint]
    policies: dict[tuple[str, str], Policy]
    services: dict[tuple[str, str], Service]

    def __init__(self, revision: int = 0, *, hosts: dict[str, Host] | None = None,
                 networks: dict[str, Network] | None = None,
                 endpoints: dict[tuple[str, str], Endpoint] | None = None,
                 policies: dict[tuple[str, str], Policy] | None = None,
                 services: dict[tuple[str, str], Service] | None = None) -> None:
        self.revision = revision
        self.hosts = {} if hosts is None else hosts
        self.networks = {} if networks is None else networks
        self.endpoints = {} if endpoints is None else endpoints
        self.policies = {} if policies is None else policies
        self.services = {} if services is None else services
        self._snap: WatchBatch | None = None

    @classmethod
    def of(cls, snap: WatchBatch) -> View:
        """The view a snapshot batch describes; the batch itself is its first snapshot()."""
        v = cls(snap.revision, hosts={h.name: h for h in snap.hosts}, networks={n.name: n for n in snap.networks},
                endpoints={(e.network, e.name): e for e in snap.endpoints},
                policies={(p.network, p.name): p for p in snap.policies},
                services={(s.network, s.name): s for s in snap.services})
        v._snap = None if snap.compacted else snap
        return v

    @classmethod
    def of_objects(cls, objects: Iterable[Object], *, revision: int = 0) -> View:
        v = cls(revision)
        for obj in objects:
            kind, key = key_of(obj)
            getattr(v, kind)[key] = obj
        return v

    def table(self, kind: str) -> dict[Key, Any]:
        return getattr(self, kind)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k.name}={len(self.table(k.name))}" for k in KINDS)
        return f"View(revision={self.revision}, {sizes})"

    # --- following the Watch stream -------------------------------------------------
    def apply(self, batch: WatchBatch) -> Delta:
        """Apply a snapshot (replaces everything) or a change batch; returns what changed.
        The revision follows every batch, heartbeats too."""
        if batch.snapshot:
            delta = Delta(snapshot=True)
            before = View(self.revision, hosts=self.hosts, networks=self.networks, endpoints=self.endpoints,
                          policies=self.policies, services=self.services)
            delta._lazy = (before, batch)
            new = View.of(batch)
            self.revision, self._snap = new.revision, new._snap
            self.hosts, self.networks, self.endpoints, self.policies, self.services = new.hosts, new.networks, \
                new.endpoints, new.policies, new.services
            return delta
        if batch.revision > self.revision:
            self.revision = batch.revision
        if not batch.changes:
            return _NOTHING
        delta = Delta()
        add = delta._add
        for c in batch.changes:
            obj = c.obj
            kind, key_fn = _BY_CLASS[obj.__class__]
            table = getattr(self, kind)
            key = key_fn(obj)
            if c.kind == "delete":
                old = table.pop(key, None)
                if old is not None:
                    add(Diff(kind, key, old, None))
            else:
                old = table.get(key)
                if old is None or old is not obj and old != obj:
                    table[key] = obj
                    add(Diff(kind, key, old, obj))
        if delta._kinds:
            self._snap = None
        return delta

    def snapshot(self) -> WatchBatch:
        """The view as a snapshot batch (sorted by key), the same object until a change.
        Its revision is the view's when it was made: a heartbeat changes nothing in it."""
        if self._snap is None:
            self._snap = WatchBatch(revision=self.revision, snapshot=True,
                                    **{k.name: _sorted(self.table(k.name)) for k in KINDS})
        return self._snap

    def copy(self) -> View:
        v = View(self.revision, hosts=dict(self.hosts), networks=dict(self.networks),
                 endpoints=dict(self.endpoints), policies=dict(self.policies), services=dict(self.services))
        v._snap = self._snap
        return v

    # --- comparing specs ------------------------------------------------------------
    def diff(self, other: View, *, fields: Mapping[str, Sequence[str]] | None = None) -> Delta:
        """What would make this view `other`: objects only it has (added), only this one
        has (removed), and both have with different specs (changed). `fields`, per kind:
        the fields compared, in the order `Diff.changes` reports them (default: the spec)."""
        names = {k.name: tuple(fields[k.name]) if fields and k.name in fields else _SPEC[k.name] for k in KINDS}
        return self._compare(other, names, Delta())

    def _compare(self, other: View, names: dict[str, tuple[str, ...]] | None, delta: Delta) -> Delta:
        """Differences towards `other`: by `names` per kind, or (None) any unequal field."""
        for k in KINDS:
            mine, theirs = self.table(k.name), other.table(k.name)
            compared = None if names is None else names[k.name]
            for key, new in theirs.items():
                old = mine.get(key)
                if old is None:
                    delta._add(Diff(k.name, key, None, new, compared))
                elif old is not new and (old != new if compared is None else
                                         any(getattr(old, f) != getattr(new, f) for f in compared)):
                    delta._add(Diff(k.name, key, old, new, compared))
            for key, old in mine.items():
                if key not in theirs:
                    delta._add(Diff(k.name, key, old, None, compared))
        return delta


def _sorted(table: dict[Key, Any]) -> tuple[Any, ...]:
    return tuple(table[k] for k in sorted(table))
