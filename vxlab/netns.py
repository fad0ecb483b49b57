"""Entering network namespaces: setns(2) for this thread, or a short-lived thread.

`setns(CLONE_NEWNET)` changes only the calling thread, and a socket stays in the
namespace it was opened in. So `in_thread(fn)` runs `fn` in a fresh OS thread that
may enter any namespace and then dies (the caller's namespace never changes), and
`enter(name)` moves the calling thread (a freshly forked agent, a probe's helper
thread) into `name` (a name under /run/netns, or a path).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def path(namespace: str) -> str:
    return namespace if namespace.startswith("/") else f"{NETNS_DIR}/{namespace}"


def enter(namespace: str) -> None:
    """Move the calling thread into `namespace`."""
    fd = os.open(path(namespace), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {namespace}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh OS thread (which may change its own namespace and then dies)
    and return its result or raise its exception."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["ok"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["err"] = exc

    worker = threading.Thread(target=run, name="vxlab-netns", daemon=True)
    worker.start()
    worker.join()
    if "err" in box:
        raise box["err"]  # type: ignore[misc]
    return box["ok"]  # type: ignore[return-value]
