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
        """Apply a batch; returns True when the state changed (False for heartbeats)."""
        if batch.snapshot:
            self.hosts = {h.name: h for h in batch.hosts}
            self.networks = {n.name: n for n in batch.networks}
            self.endpoints = {(e.network, e.name): e for e in batch.endpoints}
            self.revision = batch.revision
            self.synced = True
            return True
        for change in batch.changes:
            obj = change.obj
            put = change.kind == "put"
            if isinstance(obj, Host):
                if put:
                    self.hosts[obj.name] = obj
                else:
                    self.hosts.pop(obj.name, None)
            elif isinstance(obj, Network):
                if put:
                    self.networks[obj.name] = obj
                else:
                    self.networks.pop(obj.name, None)
            elif put:
                self.endpoints[(obj.network, obj.name)] = obj
            else:
                self.endpoints.pop((obj.network, obj.name), None)
        self.revision = max(self.revision, batch.revision)
        return bool(batch.changes)
