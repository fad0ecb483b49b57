"""The agent's copy of the desired state, fed by the controller's Watch stream.

A snapshot replaces everything; a change batch updates objects by identity (hosts by
name, networks by name, endpoints by (network, name)). The revision of the last batch
applied is what the agent resumes from after a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vxlab.model import Endpoint, Host, Network, WatchBatch


@dataclass
class StateCache:
    revision: int = 0
    synced: bool = False  # a snapshot has been applied
    hosts: dict[str, Host] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], Endpoint] = field(default_factory=dict)

    def apply(self, batch: WatchBatch) -> bool:
        """Apply a batch; returns True when it changed anything the kernel state depends
        on: False for heartbeats, and for puts that change nothing that matters (a host
        re-registering with a new lease or new labels, the same endpoint put again). In a
        lab of N hosts every registration reaches every agent: N² passes for nothing."""
        if batch.snapshot:
            self.hosts = {h.name: h for h in batch.hosts}
            self.networks = {n.name: n for n in batch.networks}
            self.endpoints = {(e.network, e.name): e for e in batch.endpoints}
            self.revision = batch.revision
            self.synced = True
            return True
        changed = False
        for change in batch.changes:
            obj = change.obj
            put = change.kind == "put"
            if isinstance(obj, Host):
                old = self.hosts.get(obj.name)
                if put:
                    self.hosts[obj.name] = obj
                    changed |= old is None or (old.underlay_ip, old.alive) != (obj.underlay_ip, obj.alive)
                else:
                    changed |= self.hosts.pop(obj.name, None) is not None
            elif isinstance(obj, Network):
                if put:
                    changed |= self.networks.get(obj.name) != obj
                    self.networks[obj.name] = obj
                else:
                    changed |= self.networks.pop(obj.name, None) is not None
            elif put:
                changed |= self.endpoints.get((obj.network, obj.name)) != obj
                self.endpoints[(obj.network, obj.name)] = obj
            else:
                changed |= self.endpoints.pop((obj.network, obj.name), None) is not None
        self.revision = max(self.revision, batch.revision)
        return changed
