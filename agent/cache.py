"""The agent's copy of the desired state, fed by the controller's Watch stream.

The objects and their revision are a `vxlab.view.View` (a snapshot replaces everything,
a change batch updates objects by identity); this adds whether a snapshot came yet and
the agent's rule for which changes the kernel state depends on. The revision of the
last batch applied is what the agent resumes from after a reconnect.
"""

from __future__ import annotations

from vxlab.model import Endpoint, Host, Network, Policy, Service, WatchBatch
from vxlab.view import Diff, View


class StateCache:
    __slots__ = ("view", "synced")

    def __init__(self, revision: int = 0, synced: bool = False, *, view: View | None = None) -> None:
        self.view = View(revision) if view is None else view
        self.synced = synced  # a snapshot has been applied

    # What a pass reads (agent/desired.py, agent/reconciler.py): the view's tables.
    @property
    def revision(self) -> int:
        return self.view.revision

    @property
    def hosts(self) -> dict[str, Host]:
        return self.view.hosts

    @property
    def networks(self) -> dict[str, Network]:
        return self.view.networks

    @property
    def endpoints(self) -> dict[tuple[str, str], Endpoint]:
        return self.view.endpoints

    @property
    def policies(self) -> dict[tuple[str, str], Policy]:
        return self.view.policies

    @property
    def services(self) -> dict[tuple[str, str], Service]:
        return self.view.services

    def copy(self) -> StateCache:
        """A copy a pass can read while the watch goes on applying batches here."""
        return StateCache(synced=self.synced, view=self.view.copy())

    def apply(self, batch: WatchBatch) -> bool:
        """Apply a batch; returns True when it changed anything the kernel state depends
        on: False for heartbeats, and for puts that change nothing that matters (a host
        re-registering with a new lease or new labels, the same endpoint put again). In a
        lab of N hosts every registration reaches every agent: N² passes for nothing."""
        delta = self.view.apply(batch)
        if batch.snapshot:
            self.synced = True
            return True
        for d in delta:
            if matters(d):
                return True
        return False


def matters(d: Diff) -> bool:
    """Does the kernel state depend on this difference? A host only by its underlay
    address and its liveness; any other object by anything."""
    if d.kind == "hosts" and d.old is not None and d.new is not None:
        return bool((d.old.underlay_ip, d.old.alive) != (d.new.underlay_ip, d.new.alive))
    return True
