"""Runtime containers' namespaces (Docker's, CNI's) as the agent's ops enter them: by the
path the endpoint records (`Endpoint.netns`), only once they proved to hold the endpoint.

`pin(endpoints, read=…)` opens the path once (an fd, so the namespace stays the one that
was checked, and alive, for the whole op), checks it is a network namespace, reads it
(`read`: agent/netlink_handoff.py's `view`, read only) and checks that it holds every
endpoint given: an interface with the endpoint's MAC carrying its address (`holds`,
pure). What it hands out is `/proc/<agent pid>/fd/<fd>`: a path that this process's
threads (probe sockets, vxlab.netns.enter) and the programs it starts (`nsenter
--net=PATH`) open as that very namespace. Anything else is an OpFailed naming the
container, the path and the reason; nothing in the runtime's namespace is changed.

Mount namespaces: the path is opened in the agent's own. A runtime whose namespaces are
mounted in a mount namespace of its own (a lab's dockerd) is recorded through
`/proc/<its pid>/root/…` by its plugin (agent/docker_driver.py's Join): an nsfs mount
seen only there reads as a plain file here, refused with that reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vxlab.agent.kernel import KernelError, Namespace
from vxlab.model import Endpoint
from vxlab.netns import CLONE_NEWNET
from vxlab.ops import OpFailed

NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: its CLONE_NEW* type (Linux 4.11)
Reader = Callable[[str], Namespace]


def holds(ep: Endpoint, ns: Namespace) -> str:
    """"" when `ns` has an interface with `ep`'s MAC that carries `ep`'s address; else why not."""
    mac = ep.mac.lower()
    links = [link.name for link in ns.links.values() if link.mac.lower() == mac]
    if not links:
        return f"no interface has its MAC {mac}"
    have = sorted(cidr for dev, cidr in ns.addrs if dev in links)
    if any(cidr.split("/")[0] == ep.ip for cidr in have):
        return ""
    return (f"{links[0]} has its MAC {mac} but not its address {ep.ip}"
            f" ({', '.join(have) if have else 'no IPv4 address'})")


@dataclass
class Pinned:
    """A runtime's namespace opened for one op: `path` enters exactly it (threads and
    programs of this agent), `view` is what it held when checked (named by the
    endpoint's path)."""

    netns: str
    fd: int
    view: Namespace

    @property
    def path(self) -> str:
        return f"/proc/{_self_pid()}/fd/{self.fd}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _self_pid() -> str:
    """This process's pid as /proc names it (also when the agent has a PID namespace of its own)."""
    return os.readlink("/proc/self")


def pin(endpoints: Sequence[Endpoint], *, read: Reader) -> Pinned:
    """Open the namespace of `endpoints` (one container's, a runtime's) and check it holds
    each of them; OpFailed naming the container and the reason."""
    ep = endpoints[0]
    who = f"container {ep.name} ({ep.runtime})"
    if not ep.netns:
        raise OpFailed(f"{who}: its endpoint records no namespace (made before vxlab recorded runtime "
                       "namespaces, or not joined to its container yet); reconnect it, or use the runtime's exec")
    try:
        fd = os.open(ep.netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OpFailed(f"{who}: its namespace {ep.netns} does not exist (the container stopped?)") from None
    except OSError as e:
        raise OpFailed(f"{who}: cannot open its namespace {ep.netns}: {e.strerror or e}") from None
    pinned = Pinned(ep.netns, fd, Namespace(ep.netns))
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = 0
        if kind != CLONE_NEWNET:
            raise OpFailed(f"{who}: {ep.netns} is not a network namespace in the agent's mount namespace"
                           " (a runtime that mounts its namespaces in a mount namespace of its own is"
                           " reached through /proc/<its pid>/root)")
        try:
            pinned.view = dataclasses.replace(read(pinned.path), name=ep.netns)
        except KernelError as e:
            raise OpFailed(f"{who}: cannot read its namespace {ep.netns}: {e}") from None
        for one in endpoints:
            if one.netns != ep.netns:
                raise OpFailed(f"{who}: its endpoints name two namespaces ({ep.netns}, {one.netns})")
            if why := holds(one, pinned.view):
                raise OpFailed(f"{who}: {ep.netns} does not hold endpoint {one.name} on {one.network}: {why}")
    except BaseException:
        pinned.close()
        raise
    return pinned
