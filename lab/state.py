"""A lab's state on disk: where it lives, what it started, how to find it again.

Every lab has a directory `$VXLAB_RUN/<lab>/` (default `/run/vxlab/<lab>/`) holding
`state.json` (process ids with their start times, the controller socket, the etcd
endpoints, the applied topology), the etcd data, the controller's socket and the
logs. It is written before anything is started, so `down` can clean up after an `up`
that crashed halfway or after any of the lab's processes was killed.

Kernel objects are named `vx-<lab>.…` and carry the lab's marker (vxlab.layout).

Unless the lab was brought up `--insecure`, it has a PKI in `<lab dir>/pki/` (made at
its first `up`, see vxlab.pki) and every hop is mutual TLS: `client_tls()` is the
admin certificate for anyone who talks to the lab's controller, `etcd_tls()` the
client certificate for its etcd.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from vxlab.layout import check_lab_name
from vxlab.lab.supervisor import Proc
from vxlab.lab.topology import Topology, TopologyError, from_mapping, to_dict
from vxlab.tls import Pki, TlsConfig


def run_root() -> Path:
    return Path(os.environ.get("VXLAB_RUN", "/run/vxlab"))


def lab_dir(lab: str) -> Path:
    return run_root() / check_lab_name(lab)


def list_labs() -> list[str]:
    root = run_root()
    return sorted(p.name for p in root.iterdir() if (p / "state.json").exists()) if root.is_dir() else []


@dataclass
class LabState:
    name: str
    etcd_endpoints: list[str] = field(default_factory=list)
    etcd: list[Proc] = field(default_factory=list)
    controller: Proc | None = None
    agents: dict[str, Proc] = field(default_factory=dict)
    topology: Topology | None = None  # what the last `up` applied (None: never up)
    created: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)  # recorded before they are created
    lease_ttl: int = 5  # the controller's host lease TTL (peers purge a dead host after it)
    pki_dir: str = ""  # "" until the first `up` makes it (never for an insecure lab)
    insecure: bool = False  # plaintext everywhere (`vxlab up --insecure`)

    @property
    def pki(self) -> Pki | None:
        return None if self.insecure or not self.pki_dir else Pki(Path(self.pki_dir))

    def client_tls(self) -> TlsConfig | None:
        """The admin certificate for the lab's controller; None for a plaintext lab."""
        return self.pki.admin() if self.pki else None

    def etcd_tls(self) -> TlsConfig | None:
        """The client certificate for the lab's etcd; None for a plaintext lab."""
        return self.pki.etcd_client() if self.pki else None

    def intend(self, ns: str) -> None:
        """Record a namespace before creating it, so `down` finds it even if the creation
        was interrupted before the namespace carried its marker."""
        if ns not in self.namespaces:
            self.namespaces.append(ns)
            self.save()

    @property
    def dir(self) -> Path:
        return lab_dir(self.name)

    @property
    def socket(self) -> str:
        return f"unix:{self.dir / 'controller.sock'}"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        raw = asdict(replace(self, topology=None))
        raw["topology"] = to_dict(self.topology) if self.topology else {}
        tmp.write_text(json.dumps(raw, indent=1))
        tmp.replace(self.dir / "state.json")

    @classmethod
    def load(cls, name: str) -> LabState | None:
        try:
            raw = json.loads((lab_dir(name) / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(
            name=raw["name"], etcd_endpoints=raw.get("etcd_endpoints", []),
            etcd=[Proc(**p) for p in raw.get("etcd", [])],
            controller=Proc(**raw["controller"]) if raw.get("controller") else None,
            agents={h: Proc(**p) for h, p in raw.get("agents", {}).items()},
            topology=_topology(raw.get("topology")), created=raw.get("created", 0.0),
            namespaces=raw.get("namespaces", []), lease_ttl=raw.get("lease_ttl", 5),
            pki_dir=raw.get("pki_dir", ""), insecure=raw.get("insecure", False),
        )


def _topology(raw: object) -> Topology | None:
    """The stored topology (its canonical form, `to_dict`); None when there is none or it
    no longer parses (written by another vxlab): `down` and `status` still work."""
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        return from_mapping(raw)
    except TopologyError:
        return None
