"""The agent's copy of the desired state, fed by the controller's Watch stream.

A snapshot replaces everything; a change batch updates objects by identity (hosts by
name, networks by name, endpoints and policies by (network, name), faults by id). The revision of
the last batch applied is what the agent resumes from after a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vxlab.model import Endpoint, Fault, Host, Network, Policy, WatchBatch


@dataclass
class StateCache:
    revision: int = 0
    synced: bool = False  # a snapshot has been applied
    hosts: dict[str, Host] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    policies: dict[tuple[str, str], Policy] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)

    def copy(self) -> StateCache:
        """A copy a pass can read while the watch goes on applying batches here."""
        return StateCache(self.revision, self.synced, dict(self.hosts), dict(self.networks), dict(self.endpoints),
                          dict(self.policies), dict(self.faults))

    def apply(self, batch: WatchBatch) -> bool:
        """Apply a batch; returns True when it changed anything the kernel state depends
        on: False for heartbeats, and for puts that change nothing that matters (a host
        re-registering with a new lease or new labels, the same endpoint put again). In a
        lab of N hosts every registration reaches every agent: N² passes for nothing."""
        if batch.snapshot:
            self.hosts = {h.name: h for h in batch.hosts}
            self.networks = {n.name: n for n in batch.networks}
            self.endpoints = {(e.network, e.name): e for e in batch.endpoints}
            self.policies = {(p.network, p.name): p for p in batch.policies}
            self.faults = {f.id: f for f in batch.faults}
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
            elif isinstance(obj, Fault):
                if put:
                    changed |= self.faults.get(obj.id) != obj
                    self.faults[obj.id] = obj
                else:
                    changed |= self.faults.pop(obj.id, None) is not None
            else:
                table: dict[tuple[str, str], Any] = self.policies if isinstance(obj, Policy) else self.endpoints
                if put:
                    changed |= table.get((obj.network, obj.name)) != obj
                    table[(obj.network, obj.name)] = obj
                else:
                    changed |= table.pop((obj.network, obj.name), None) is not None
        self.revision = max(self.revision, batch.revision)
        return changed
