"""The firewall driver: the agent's own nftables tables, in any network namespace.

Every table of ours (the VTEP allow-list, network policy, NAT, published ports,
services; next faults) goes through here, the same three ways:

- read: `list tables`, then `list table` (JSON) for each of the asked-for tables that
  exists; nothing but our tables is listed, so a large or odd foreign ruleset (Docker's,
  kube-proxy's) never costs or breaks a read;
- replace: `add table; delete table; table … { … }` in ONE transaction, which the
  kernel commits atomically: there is no moment without the table, and no moment with
  half of it;
- delete: `add table; delete table` (a missing table is no error).

What a table holds is rendered and parsed by pure modules (vtep.py, policy_nft.py,
nat.py); this module only runs them.

Two backends, one behaviour: libnftables in-process (Debian's python3-nftables, the
`nftables` module; DEVELOPERS.md says how the venv gets it) when it loads, else the
`nft` command. Either runs in a short-lived thread that entered the namespace
(vxlab.netns.run_in): libnftables opens its netlink socket when its context is made,
in the namespace of the thread making it, and an `nft` forked by that thread starts
there too. No `nsenter`, and the caller's namespace never changes. A context is made
per call and freed at once, so no socket pins a namespace that is being deleted.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Collection
from typing import Any

from vxlab import netns
from vxlab.agent.kernel import KernelError

Table = tuple[str, str]  # (family, name)
_LIB_LOCK = threading.Lock()  # libnftables contexts share library state: one call at a time


def where(ns: str) -> str:
    return f"netns {ns}" if ns else "the agent's namespace"


class _Lib:
    """libnftables through the `nftables` module: a fresh JSON-output context per call."""

    name = "libnftables"

    def __init__(self, module: Any) -> None:
        self._module = module
        self.run(["list tables"])  # loads libnftables.so.1 (OSError when it is missing)

    def run(self, cmds: list[str]) -> list[tuple[int, str, str]]:
        with _LIB_LOCK:
            ctx = self._module.Nftables()
            ctx.set_json_output(True)
            out = []
            for cmd in cmds:
                rc, stdout, stderr = ctx.cmd(cmd)
                out.append((rc, stdout, stderr))
                if rc:
                    break
            del ctx  # nft_ctx_free: its socket goes now, in this namespace
            return out


class _Cli:
    """The `nft` command (forked by the calling thread, so in its namespace): a listing
    as arguments with `-j` (nft 1.0.6 prints no JSON for a listing read with `-f`), a
    transaction on standard input."""

    name = "nft"

    def run(self, cmds: list[str]) -> list[tuple[int, str, str]]:
        out = []
        for cmd in cmds:
            listing = cmd.startswith("list ")
            argv, script = (["nft", "-j", *cmd.split()], None) if listing else (["nft", "-f", "-"], cmd)
            try:
                done = subprocess.run(argv, input=script, capture_output=True, text=True)
            except OSError as exc:
                raise KernelError(f"nft: {exc.strerror or exc} (apt-get install nftables)") from exc
            out.append((done.returncode, done.stdout, done.stderr))
            if done.returncode:
                break
        return out


BACKEND_ENV = "VXLAB_NFT_BACKEND"  # auto (default), libnftables or nft: what "auto" means for this process


def _backend(kind: str) -> _Lib | _Cli:
    if kind == "auto":
        kind = os.environ.get(BACKEND_ENV, "auto") or "auto"
    if kind not in ("auto", "libnftables", "nft"):
        raise ValueError(f"nft backend {kind!r}: not auto, libnftables or nft")
    if kind != "nft":
        try:
            return _Lib(importlib.import_module("nftables"))
        except (ImportError, OSError):
            if kind == "libnftables":
                raise
    return _Cli()


class Nft:
    """Our nftables tables in the namespaces of one kernel user. `ns` "" is the namespace
    of the calling thread (the agent's own), any other value a name under /run/netns."""

    def __init__(self, *, backend: str = "auto") -> None:
        self._backend = _backend(backend)

    @property
    def backend(self) -> str:
        """"libnftables" (in-process) or "nft" (the command)."""
        return self._backend.name

    def _run(self, ns: str, what: str, make: Callable[[Callable[[list[str]], list[tuple[int, str, str]]]], Any]) -> Any:
        try:
            return netns.run_in(ns, lambda: make(self._backend.run))
        except OSError as exc:
            raise KernelError(f"{what} in {where(ns)}: {exc.strerror or exc}") from exc

    def read(self, ns: str, tables: Collection[Table]) -> dict[Table, str]:
        """`nft -j list table F N` (the JSON text) of each of `tables` that exists in `ns`.
        No nft at all reads as no table (the write that follows says why it fails)."""
        def go(run: Callable[[list[str]], list[tuple[int, str, str]]]) -> dict[Table, str]:
            try:
                [(rc, out, err)] = run(["list tables"])
            except KernelError:
                return {}
            if rc:
                raise KernelError(f"nft list tables in {where(ns)}: {err.strip()}")
            present = {(t["table"]["family"], t["table"]["name"]) for t in _items(out) if "table" in t}
            wanted = [t for t in tables if t in present]
            done = run([f"list table {f} {n}" for f, n in wanted])
            return {t: o for t, (rc, o, _e) in zip(wanted, done) if rc == 0}
        return self._run(ns, "nft list", go)  # type: ignore[no-any-return]

    def replace(self, ns: str, table: Table, body: str) -> None:
        """Make `table` in `ns` exactly `body` (its `table F N { … }` text), atomically."""
        family, name = table
        if not body.startswith(f"table {family} {name} {{"):
            raise KernelError(f"nft: a body for table {family} {name} must define that table alone")
        self._transaction(ns, f"add table {family} {name}\ndelete table {family} {name}\n{body}")

    def delete(self, ns: str, table: Table) -> None:
        """Remove `table` from `ns`; a missing one is no error."""
        family, name = table
        self._transaction(ns, f"add table {family} {name}\ndelete table {family} {name}\n")

    def _transaction(self, ns: str, script: str) -> None:
        [(rc, out, err)] = self._run(ns, "nft", lambda run: run([script]))
        if rc:
            raise KernelError(f"nft in {where(ns)}: {err.strip() or out.strip()}")


def _items(listing: str) -> list[dict[str, Any]]:
    try:
        items = json.loads(listing)["nftables"]
    except (ValueError, KeyError, TypeError):
        return []
    return [i for i in items if isinstance(i, dict)]
