"""Entering network namespaces: setns(2) for this thread, or a short-lived thread.

`setns(CLONE_NEWNET)` changes only the calling thread, and a socket stays in the
namespace it was opened in. So `in_thread(fn)` runs `fn` in a fresh OS thread that
may enter any namespace and then dies (the caller's namespace never changes),
`run_in(name, fn)` is that thread entering `name` first, and `enter(name)` moves the
calling thread (a freshly forked agent, a probe's helper thread) into `name` (a name
under /run/netns, or a path). A thread starts in its creator's namespace, and a
process forked by a thread starts in that thread's: an `nft` or a netlink socket made
inside `run_in` belongs to the namespace entered.

This is vxlab's one setns(2): everything that enters a namespace comes here. `libc()`
is the one ctypes handle on the C library (the agent's namespace plumbing,
agent/netlink_ns.py, also unshares and mounts with it).
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


def libc() -> ctypes.CDLL:
    """The C library, with errno kept for `check`."""
    return _libc


def check(ret: int, what: str) -> None:
    """OSError with errno and `what` when a libc call returned non-zero."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path(namespace: str) -> str:
    return namespace if namespace.startswith("/") else f"{NETNS_DIR}/{namespace}"


def enter(namespace: str) -> None:
    """Move the calling thread into `namespace`."""
    fd = os.open(path(namespace), os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(_libc.setns(fd, CLONE_NEWNET), f"setns {namespace}")
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


def run_in(namespace: str, fn: Callable[[], T]) -> T:
    """`fn()` in a fresh thread inside `namespace` ("" = the caller's own namespace)."""
    def inside() -> T:
        if namespace:
            enter(namespace)
        return fn()
    return in_thread(inside)
