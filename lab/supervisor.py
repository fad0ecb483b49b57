"""The lab's processes: who each one is, how it starts, starts again, and is found after a crash.

A process is known by its pid *and* its start time (`Proc`): pids get reused, and
state.json outlives the processes it names. What it takes to start one is a `Command`
(argv, working directory, log file): `start` runs it, `command` reads it back from a
running process (/proc: argv, cwd, stdout), so a killed one starts again exactly as it
was, and a fault keeps it in faults.json meanwhile (`to_json`/`from_json`).

Every process starts in a session of its own (the lab outlives the `vxlab up` that
started it, and a Ctrl-C in that terminal does not reach it), stdin from /dev/null,
stdout and stderr appended to its log. Every process of a lab names the lab's directory
on its command line (a socket, a data directory, a status file, `--for <dir>`):
`orphans()` finds them by it after an `up` that crashed before state.json named them.

Kinds today: etcd (vxlab.etcdproc starts it; the lab adopts its pid with `Proc.of`),
the controller and fault timers (`start`), the agents (forked by one zygote that imports
the agent once, vxlab.agent.spawner: `start_agents`). Who starts which, with what
options, is vxlab.lab.procs; the roles they play are recorded in vxlab.lab.state.

VM hosts (vxlab.lab.vm): QEMU runs here, found by its command line (`scan`; it names
the VM's run directory in the lab's directory, so `orphans` finds it too) and killed
like any process here (`Proc.stop`). The agent of a VM host runs in its guest: a `Proc`
with `vm` (the VM's run directory) and `boot` (the guest's boot id: a guest booted
again reuses pids and start times) is asked and signalled through the VM's command
channel (vxlab.lab.vmchan), by the same rules otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vxlab.agentconfig import Launch


class SpawnError(RuntimeError):
    """A process could not be started; the message says where to look."""


DEAD = ("Z", "X")  # /proc states of a process that is no more: a zombie, dead


def parse_stat(text: str) -> tuple[str, int]:
    """(state, start time in clock ticks since boot) of a /proc/PID/stat line."""
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def _stat(pid: int) -> tuple[str, int]:
    """(state, start time) of a process here; ("", 0) when there is no such process."""
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return "", 0


def start_time(pid: int) -> int:
    """The process start time (clock ticks since boot), 0 when there is no such process."""
    return _stat(pid)[1]


@dataclass
class Proc:
    """A process the lab started, identified by pid *and* start time (pids get reused);
    with `vm`, a process in that VM host's guest (see the module docstring)."""

    pid: int
    started: int
    vm: str = ""    # the run directory of the VM whose guest runs it ("": this machine)
    boot: str = ""  # that guest's boot id when the process started

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, start_time(pid))

    @classmethod
    def in_guest(cls, vm_dir: Path, pid: int) -> Proc:
        """The process `pid` in the guest of the VM in `vm_dir`, as it is now."""
        boot, _, started = _guest_stat(vm_dir, pid)
        return cls(pid, started, vm=str(vm_dir), boot=boot)

    def alive(self) -> bool:
        """Running: the same process (pid and start time) and not a zombie (a killed
        agent whose parent exited waits as a zombie until init reaps it, and in a
        container init may never do so)."""
        if self.vm:
            boot, state, started = _guest_stat(Path(self.vm), self.pid)
            return self.pid > 0 and started == self.started != 0 and boot == self.boot and state not in DEAD
        state, started = _stat(self.pid)
        return self.pid > 0 and started == self.started != 0 and state not in DEAD

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Signal the process group, wait, then SIGKILL; reap it if it is our child."""
        if self.vm:
            if self.alive():
                _guest_stop(Path(self.vm), self.pid, sig=sig, timeout=timeout)
            return
        if self.pid <= 0 or start_time(self.pid) != self.started or self.started == 0:
            return  # gone (or the pid belongs to another process now)
        if self.alive():
            _signal(self.pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.02)
            if self.alive():
                _signal(self.pid, signal.SIGKILL)
        _reap(self.pid)


@dataclass(frozen=True)
class Command:
    """What it takes to start a process: its argv, its log (stdout and stderr), and its
    working directory ("": the caller's)."""

    argv: tuple[str, ...]
    log: str
    cwd: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "cwd": self.cwd, "stdout": self.log}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Command:
        return cls(tuple(raw["argv"]), str(raw["stdout"]), str(raw.get("cwd", "")))


class Supervisor:
    """Starts and finds the processes of the lab whose directory is `directory`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def log(self, name: str) -> Path:
        """The log file of a process: `<lab dir>/logs/<name>.log`."""
        return self.dir / "logs" / f"{name}.log"

    def start(self, cmd: Command) -> Proc:
        Path(cmd.log).parent.mkdir(parents=True, exist_ok=True)
        with open(cmd.log, "ab") as out:
            p = subprocess.Popen(cmd.argv, cwd=cmd.cwd or None, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        return Proc.of(p.pid)

    @staticmethod
    def command(proc: Proc) -> Command:
        """The command a running process was started with (to start it again after a kill)."""
        base = Path(f"/proc/{proc.pid}")
        argv = tuple(a.decode() for a in (base / "cmdline").read_bytes().split(b"\0") if a)
        return Command(argv, os.readlink(base / "fd" / "1"), os.readlink(base / "cwd"))

    def start_agents(self, launches: Iterable[Launch], *, started: Callable[[str, Proc], None]) -> None:
        """Start one agent per launch (its options and where it runs) through one zygote
        process (vxlab.agent.spawner); `started(host, proc)` hears each as soon as it
        runs, so the caller records it before the next one starts."""
        self.log("spawner").parent.mkdir(parents=True, exist_ok=True)
        # The lab's directory on the spawner's command line (which its forked agents share):
        # `orphans()` finds agents by it even if the caller dies before recording them.
        with self.log("spawner").open("ab") as errors:
            spawner = subprocess.Popen([sys.executable, "-m", "vxlab.agent.spawner", "--for", str(self.dir)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert spawner.stdin is not None and spawner.stdout is not None
        try:
            for launch in launches:
                spawner.stdin.write(json.dumps(launch.to_json()) + "\n")
                spawner.stdin.flush()
                line = spawner.stdout.readline()
                if not line:
                    raise SpawnError(f"the agent spawner died (see {self.log('spawner')})")
                started(launch.config.host, Proc.of(int(json.loads(line)["pid"])))
        finally:
            spawner.stdin.close()
            spawner.wait(10)

    def orphans(self) -> list[Proc]:
        """Processes whose command line names the lab's directory (its sockets, data,
        status; a VM's run directory)."""
        needle = str(self.dir).encode()
        return scan(lambda argv: any(needle in arg for arg in argv))


def scan(match: Callable[[list[bytes]], bool]) -> list[Proc]:
    """The live processes here (not this one, no zombie) whose argv `match` accepts."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv != [b""] and match(argv) and (proc := Proc.of(int(entry.name))).alive():
                found.append(proc)
    return found


def qemu_of(vm_dir: Path) -> list[Proc]:
    """The QEMU of the VM whose run directory is `vm_dir` (its command line names its pid file)."""
    pidfile = str(vm_dir / "qemu.pid").encode()
    return scan(lambda argv: b"qemu-system" in argv[0] and pidfile in argv)


def _guest_stat(vm_dir: Path, pid: int) -> tuple[str, str, int]:
    """(boot id, state, start time) of a guest's process; ("", "", 0) when it or its VM is gone."""
    from vxlab.lab.vmchan import Channel, ChannelError  # stdlib only; imported when a lab has VM hosts

    if not qemu_of(vm_dir):
        return "", "", 0
    try:
        rc, out, _ = Channel(vm_dir / "ctl.sock").run(
            ["cat", "/proc/sys/kernel/random/boot_id", f"/proc/{pid}/stat"], timeout=30,
            alive=lambda: bool(qemu_of(vm_dir)))
    except (ChannelError, OSError):
        return "", "", 0
    boot, _, stat = out.partition("\n")
    try:
        return (boot.strip(), *parse_stat(stat)) if rc == 0 else (boot.strip(), "", 0)
    except (IndexError, ValueError):
        return boot.strip(), "", 0


def _guest_stop(vm_dir: Path, pid: int, *, sig: int, timeout: float) -> None:
    """`sig` to a guest's process, SIGKILL once `timeout` passed and it is still there."""
    from vxlab.lab.vmchan import Channel, ChannelError

    tries = max(1, int(timeout / 0.05))
    script = (f"kill -{int(sig)} {pid} 2>/dev/null; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt {tries} ];"
              f" do sleep 0.05; i=$((i+1)); done; kill -9 {pid} 2>/dev/null; true")
    try:
        Channel(vm_dir / "ctl.sock").run(["/bin/sh", "-c", script], timeout=timeout + 30,
                                         alive=lambda: bool(qemu_of(vm_dir)))
    except (ChannelError, OSError):
        pass  # the VM went, and its processes with it


def _signal(pid: int, sig: int) -> None:
    """Signal the process group the process leads, else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
