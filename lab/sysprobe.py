"""The machine as the checks of `vxlab doctor` and `up`'s preflight see it.

One seam: which commands are on PATH, running a command with a time limit, reading a
file, whether we are root, which etcd would run. `System()` is this machine (with
`path=` a PATH of your choice); unit tests pass a fake with the same methods, so every
check is tested without root and without touching the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vxlab.etcdproc import EtcdBinary, EtcdError, find_etcd


@dataclass(frozen=True)
class Ran:
    """What a command did: its exit code (None: timed out or could not start), output."""

    rc: int | None
    out: str = ""
    err: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        """The first line of what it said, for a row's detail."""
        text = (self.err.strip() or self.out.strip()).splitlines()
        return text[0].strip() if text else f"exit code {self.rc}"


class System:
    """This machine. `path`: the PATH commands are looked up in (default: ours)."""

    def __init__(self, *, path: str | None = None) -> None:
        self.path = os.environ.get("PATH", os.defpath) if path is None else path

    def which(self, cmd: str) -> str | None:
        return shutil.which(cmd, path=self.path)

    def run(self, argv: list[str], *, timeout: float = 5.0, stdin: str | None = None) -> Ran:
        """Run `argv` (its first word looked up on our PATH); never raises, never hangs
        past `timeout` (the child is killed)."""
        exe = self.which(argv[0])
        if exe is None:
            return Ran(None, err=f"{argv[0]}: not found")
        try:
            p = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                               env={**os.environ, "PATH": self.path}, start_new_session=True,
                               **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}))
        except subprocess.TimeoutExpired:
            return Ran(None, err=f"{argv[0]}: no answer within {timeout:g}s")
        except OSError as e:
            return Ran(None, err=f"{argv[0]}: {e.strerror or e}")
        return Ran(p.returncode, p.stdout, p.stderr)

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def writable(self, path: str) -> bool:
        return os.access(path, os.W_OK)

    def is_root(self) -> bool:
        return os.geteuid() == 0

    def etcd(self) -> EtcdBinary | str:
        """The etcd a lab would run (see vxlab.etcdproc.find_etcd), or why there is none."""
        old = os.environ.get("PATH")
        if old != self.path:
            os.environ["PATH"] = self.path  # find_etcd looks on PATH; ours may be another
        try:
            return find_etcd()
        except (EtcdError, OSError, subprocess.SubprocessError) as e:
            return str(e)
        finally:
            if old is None:
                os.environ.pop("PATH", None)
            elif old != self.path:
                os.environ["PATH"] = old
