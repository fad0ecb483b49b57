"""Optimistic transactions: read, compute a candidate, compare-and-commit, retry.

Like flannel's subnet lease loop: an `attempt` reads what it needs, builds a
transaction and returns `CONFLICT` when etcd refused it because another writer got
there first; it is then run again after a short jittered backoff. Errors raised by
the attempt (validation, not found, …) end the loop at once and write nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from vxlab.controller import metrics
from vxlab.errors import Aborted

T = TypeVar("T")


class _Conflict:
    def __repr__(self) -> str:
        return "CONFLICT"


CONFLICT: Final = _Conflict()
MAX_ATTEMPTS = 100


async def retry(attempt: Callable[[], Awaitable[T | _Conflict]], *, kind: str) -> T:
    """Run `attempt` until it returns something other than CONFLICT."""
    for i in range(MAX_ATTEMPTS):
        result = await attempt()
        if not isinstance(result, _Conflict):
            metrics.TXN_TOTAL.labels(kind).inc()
            return result
        metrics.TXN_RETRIES.labels(kind).inc()
        await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** min(i, 8))))
    raise Aborted(f"{kind}: gave up after {MAX_ATTEMPTS} conflicting transactions; retry")
