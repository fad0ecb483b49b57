"""The store contract: a small MVCC key-value interface the controller needs from etcd.

Two implementations honour it: `EtcdStore` (store_etcd.py, aetcd against a real etcd)
and `MemoryStore` (store_memory.py, an in-memory fake for unit tests). The controller's
allocation, liveness and watch logic is written once against this contract.

Semantics follow etcd v3: one global revision that every successful write transaction
increments by exactly one; keys carry create and mod revisions; a transaction applies
all its operations atomically when every comparison holds; watches replay history
from a start revision and fail with `Compacted` when that history is gone, and so do
reads at a past revision; keys put with a lease vanish when the lease expires. Every method raises `StoreUnavailable`
when the backend cannot be reached (the controller maps it to gRPC UNAVAILABLE).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal


class StoreUnavailable(Exception):
    """The backend cannot be reached or did not answer in time."""


class Compacted(Exception):
    """The requested start revision is older than the store's compaction point."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; oldest available is {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


# --- transaction comparisons ------------------------------------------------------


@dataclass(frozen=True)
class Absent:
    """Holds when `key` does not exist (etcd: create_revision == 0)."""

    key: str


@dataclass(frozen=True)
class ModRevisionIs:
    """Holds when `key` exists and was last modified at `revision` (an optimistic lock)."""

    key: str
    revision: int


@dataclass(frozen=True)
class PrefixUnchangedSince:
    """Holds when no key under `prefix` was created or modified after `revision`.

    etcd: mod_revision < revision + 1 over the prefix range. Deletions are not seen;
    use it for checks that only an added key could invalidate (e.g. subnet overlap).
    """

    prefix: str
    revision: int


Compare = Absent | ModRevisionIs | PrefixUnchangedSince


# --- transaction operations ---------------------------------------------------------


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class DeletePrefix:
    prefix: str


Op = Put | Delete | DeletePrefix


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after the transaction (unchanged if it failed)


@dataclass(frozen=True)
class Event:
    kind: Literal["put", "delete"]
    key: str
    value: bytes  # empty for a delete
    mod_revision: int  # the revision of the change


class Store(ABC):
    """What the controller needs from its key-value store. Keys are str, values bytes."""

    @abstractmethod
    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        """`key` now, or as it was at `revision` (as `range` reads it)."""

    @abstractmethod
    async def range(self, prefix: str, *, revision: int = 0) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` in key order, and the store revision they were read at.

        With `revision` > 0 the keys as they were at that revision (and that revision):
        `Compacted` when it is older than the compaction point, `ValueError` when it is
        newer than the store's current revision."""

    @abstractmethod
    async def txn(self, compares: list[Compare], ops: list[Op]) -> TxnResult:
        """Apply all `ops` atomically if every comparison holds. An empty `ops` still checks."""

    @abstractmethod
    async def revision(self) -> int:
        """The store's current revision (a linearizable read)."""

    @abstractmethod
    async def grant_lease(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; returns its id (> 0)."""

    @abstractmethod
    async def refresh_lease(self, lease_id: int) -> int:
        """Renew a lease; returns its TTL, or 0 when the lease no longer exists."""

    @abstractmethod
    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease, deleting its keys; a lease that no longer exists is no error."""

    @abstractmethod
    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[tuple[int, list[Event]]]:
        """Changes under `prefix` from `start_revision` (inclusive): `(revision, events)`,
        one item per revision, in revision order.

        Raises `Compacted` (at the first iteration) when `start_revision` was compacted,
        and `StoreUnavailable` when the connection is lost. An item with no events is a
        progress notification: nothing under `prefix` changed up to `revision`; stores
        send one after a few idle seconds. The iterator is closed with `aclose()`.
        """

    @abstractmethod
    async def compact(self, revision: int) -> None:
        """Discard history older than `revision`."""

    @abstractmethod
    async def close(self) -> None: ...
