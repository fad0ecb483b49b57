"""A read-only look at the lab's etcd: every key the controller keeps under /vxlab/v1/.

For learners: the overlay's whole desired state is a handful of etcd keys (hosts,
alive/ keys bound to a lease, networks, endpoints, alloc/ reservations; see
vxlab.controller.keys). `store_ls` reads them with one range request and returns
them as plain rows, values JSON-decoded when they are JSON, plus the store revision
the read happened at.
"""

from __future__ import annotations

import json
from typing import Any

from vxlab.controller.keys import DEFAULT_PREFIX
from vxlab.controller.store import KeyValue
from vxlab.controller.store_etcd import EtcdStore
from vxlab.tls import TlsConfig

READ_TIMEOUT = 5.0


def full_prefix(prefix: str = "") -> str:
    """'networks/', '/networks/' or '/vxlab/v1/networks/' -> '/vxlab/v1/networks/'."""
    if prefix.startswith(DEFAULT_PREFIX):
        return prefix
    if prefix.rstrip("/") == DEFAULT_PREFIX.rstrip("/"):  # '/vxlab/v1' itself
        return DEFAULT_PREFIX
    return DEFAULT_PREFIX + prefix.lstrip("/")


def decode_value(value: bytes) -> Any:
    """The value as JSON when it is JSON, else as text (undecodable bytes replaced)."""
    text = value.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def row(kv: KeyValue) -> dict[str, Any]:
    """One key as a JSON-ready row."""
    return {"key": kv.key, "value": decode_value(kv.value), "create_revision": kv.create_revision,
            "mod_revision": kv.mod_revision, "lease": kv.lease or 0}


async def store_ls(endpoints: list[str], prefix: str = "", *,
                   tls: TlsConfig | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every key under /vxlab/v1/<prefix> (sorted by key) and the store revision;
    `tls`: the etcd client certificate (https endpoints).

    Raises StoreUnavailable when etcd does not answer, ValueError for bad endpoints.
    """
    store = EtcdStore(endpoints, timeout=READ_TIMEOUT, tls=tls)
    try:
        kvs, revision = await store.range(full_prefix(prefix))
    finally:
        await store.close()
    return [row(kv) for kv in kvs], revision


def one_line(value: Any, *, width: int = 0) -> str:
    """A value as one line (compact JSON, text as is), cut to `width` characters with '…'."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = " ".join(text.split()) if isinstance(value, str) else text
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text
