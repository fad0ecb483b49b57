"""Network-namespace plumbing of the netlink driver, without forking helper processes.

A netlink socket belongs to the namespace its creator was in when it was opened, and
`setns(2)` / `unshare(CLONE_NEWNET)` only change the calling *thread*. So everything
that needs another namespace runs in a short-lived thread that enters (or creates) the
namespace, opens its sockets and exits: the caller's namespace never changes, and no
process is forked (pyroute2's `IPRoute(netns=...)` and `netns.create` fork a child).
Entering a namespace, the thread and libc are vxlab.netns (vxlab's one setns).

`Handles` caches one `NsHandle` (a pyroute2 `IPRoute` for requests plus a raw
NETLINK_ROUTE socket for fast neighbour dumps) per namespace, keyed by the namespace's
nsfs inode: a namespace that was deleted (or deleted and created again) drops its
handle, which also releases the namespace, since an open socket keeps it alive.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from dataclasses import dataclass

from pyroute2 import IPRoute

from vxlab.netns import CLONE_NEWNET, NETNS_DIR, ident, in_thread, run_in
from vxlab.netns import check as _check
from vxlab.netns import libc as _c

_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SHARED = 1 << 20
_MNT_DETACH = 2

_rundir_lock = threading.Lock()
_rundir_shared = False


class NamespaceMissing(OSError):
    """The namespace has no mount under /run/netns (or it is not a namespace)."""


def path_of(name: str) -> str:
    """/run/netns/<name>, for a valid name."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad namespace name {name!r}")
    return f"{NETNS_DIR}/{name}"


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def ns_ident(name: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the namespace `name` (vxlab.netns.ident)."""
    return ident(path_of(name))


def rtnl_fds() -> tuple[int, int]:
    """Two NETLINK_ROUTE sockets of the current thread's namespace, as detached fds."""
    a = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    b = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    return a.detach(), b.detach()


def _share_rundir() -> None:
    """Make /run/netns a shared mount (as iproute2 does), so namespace mounts propagate
    into mount namespaces cloned later (e.g. by `ip netns exec`)."""
    global _rundir_shared
    with _rundir_lock:
        if _rundir_shared:
            return
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        libc = _c()
        if libc.mount(b"none", NETNS_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:
                _check(-1, f"mount --make-shared {NETNS_DIR}")
            _check(libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", _MS_BIND | _MS_REC, None),
                   f"mount --bind {NETNS_DIR}")
            _check(libc.mount(b"none", NETNS_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None),
                   f"mount --make-shared {NETNS_DIR}")
        _rundir_shared = True


def create_netns(name: str, *, marker: str = "") -> tuple[int, int]:
    """Create namespace `name` (bind-mounted at /run/netns/name, like `ip netns add`) and
    return two netlink socket fds opened inside it. A stale mount point (a leftover file
    that is no namespace) is replaced; an existing namespace raises FileExistsError.

    `lo` is brought up and given `marker` as its ifalias *before* the namespace is
    mounted under its name: a process killed half-way leaves either nothing (an
    unmounted namespace dies with its thread) or a marked namespace, never an unmarked
    one that would look foreign afterwards."""
    path = path_of(name)
    _share_rundir()
    if os.path.exists(path):
        if ns_ident(name) is not None:
            raise FileExistsError(errno.EEXIST, f"namespace {name} exists")
        remove_netns(name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))

    def make() -> tuple[int, int]:
        _check(_c().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        fds = rtnl_fds()
        ipr = IPRoute(fileno=os.dup(fds[0]), groups=0)
        try:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up", **({"ifalias": marker} if marker else {}))
        finally:
            ipr.close()
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_c().mount(src, path.encode(), b"none", _MS_BIND, None), f"mount --bind {src.decode()} {path}")
        return fds

    try:
        return in_thread(make)
    except BaseException:
        remove_netns(name)
        raise


def remove_netns(name: str) -> bool:
    """Unmount and unlink /run/netns/name (like `ip netns del`); False when missing."""
    path = path_of(name)
    if not os.path.lexists(path):
        return False
    _c().umount2(path.encode(), _MNT_DETACH)  # fails harmlessly on a stale file
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _open_ipr(fd: int) -> IPRoute:
    try:
        return IPRoute(fileno=fd, groups=0)  # groups=0: no event subscriptions to buffer
    except BaseException:
        os.close(fd)
        raise


@dataclass
class NsHandle:
    """Sockets of one namespace: `ipr` for requests, `raw` for the fast dumps."""

    name: str                        # "" for the agent's own namespace
    ident: tuple[int, int] | None
    ipr: IPRoute
    raw: socket.socket

    @classmethod
    def from_fds(cls, name: str, ident: tuple[int, int] | None, fds: tuple[int, int]) -> NsHandle:
        raw = socket.socket(fileno=fds[1])
        try:
            ipr = _open_ipr(fds[0])
        except BaseException:
            raw.close()
            raise
        raw.settimeout(10.0)
        return cls(name, ident, ipr, raw)

    def close(self) -> None:
        try:
            self.ipr.close()
        finally:
            self.raw.close()


class Handles:
    """The own-namespace handle plus one lazily opened, cached handle per namespace."""

    def __init__(self) -> None:
        self.own = NsHandle.from_fds("", None, rtnl_fds())
        self._cache: dict[str, NsHandle] = {}

    def get(self, name: str) -> NsHandle:
        """The handle of `name` ("" = own namespace); NamespaceMissing when it is gone."""
        if not name:
            return self.own
        ident = ns_ident(name)
        cached = self._cache.get(name)
        if cached is not None and cached.ident == ident:
            return cached
        self.drop(name)
        if ident is None:
            raise NamespaceMissing(errno.ENOENT, f"no network namespace {name}")
        handle = NsHandle.from_fds(name, ident, run_in(path_of(name), rtnl_fds))
        self._cache[name] = handle
        return handle

    def adopt(self, name: str, fds: tuple[int, int]) -> NsHandle:
        """Cache the sockets `create_netns` opened in the new namespace."""
        self.drop(name)
        handle = NsHandle.from_fds(name, ns_ident(name), fds)
        self._cache[name] = handle
        return handle

    def drop(self, name: str) -> None:
        handle = self._cache.pop(name, None)
        if handle is not None:
            handle.close()

    def prune(self, alive: set[str]) -> None:
        for name in [n for n in self._cache if n not in alive]:
            self.drop(name)

    def close(self) -> None:
        for name in list(self._cache):
            self.drop(name)
        self.own.close()
