"""Closer to VMs (issue 8): an agent in mount and PID namespaces of its own, besides its
host's network namespace, needs nothing from the lab runner beyond its flags — it is PID
1 of its PID namespace, sees its own mount table, and still programs the overlay (its
/run/netns mounts reach the host through shared propagation, as on a VM they would stay
on the VM).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig import Rig

pytestmark = pytest.mark.integration


def _agent_pid(host_prefix: str) -> int:
    """The agent's pid as seen from here: the python process (not `unshare`) whose
    command line names the host's namespace prefix."""
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if cmd and b"vxlab.cli" in cmd and host_prefix.encode() in cmd and not cmd[0].endswith(b"unshare"):
            return int(entry.name)
    raise AssertionError("agent process not found")


def test_agent_in_its_own_mount_and_pid_namespaces(tmp_path: Path) -> None:
    rig = Rig(tmp_path, hosts=2)
    try:
        rig.start()
        rig.kill_agent("h2")
        h = rig.hosts["h2"]
        log = (tmp_path / "agent-h2-isolated.log").open("ab")
        rig.agents["h2"] = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "unchanged",
             "nsenter", f"--net=/run/netns/{h.ns}", sys.executable, "-m", "vxlab.cli", "--controller", rig.sock,
             "agent", "run", "--host", "h2", "--netns-prefix", rig.prefix("h2"), "--resync", str(rig.resync),
             "--status-file", str(rig.status_path("h2"))],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        rig.wait(lambda: rig.status("h2").registered, "the isolated agent registered")
        assert rig.status("h2").pid == 1  # PID 1 of a PID namespace of its own
        pid = _agent_pid(rig.prefix("h2"))
        for ns in ("mnt", "pid", "net"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
        rig.network("blue", subnet="10.79.0.0/24")
        web = rig.container("web", "h1", "blue")
        db = rig.container("db", "h2", "blue")
        rig.settle()
        assert rig.ping(rig.cns("h1", "web"), db.ip).returncode == 0
        assert rig.ping(rig.cns("h2", "db"), web.ip).returncode == 0
    finally:
        rig.close()
