"""The command channel of a VM host: run a command in the guest, no ssh and no keys.

QEMU gives the guest a virtio console port (`-device virtconsole`, the guest's
/dev/hvc0) whose host side is a unix socket in the VM's run directory. This file is
both ends, standard library only:

- the guest side, `python3 -I -S vmchan.py serve`, started by the guest's init
  (vxlab/lab/vminitrd.py) from this machine's root filesystem, which the guest sees
  read-only over 9p at the same path; it answers requests one line of JSON each,
  every request in a thread of its own;
- the host side, `Channel(socket).run(cmd)` -> (rc, stdout, stderr), `spawn(argv,
  log=…)` (a process left running in the guest, e.g. its agent) and `ping()`.

Why a console port rather than a plain virtio-serial port: reading a serial port whose
host side is not connected returns EOF at once (the guest would have to poll), a tty
just blocks. vsock would need /dev/vhost-vsock on this machine, which it lacks.

QEMU accepts one connection on the socket at a time (another caller waits in the
socket's backlog until the first one is done); each call connects, sends one request
tagged with a fresh `id` and reads until the answer with `re` equal to it (an answer to
a caller that went away is dropped by QEMU or skipped here; so is the tty's echo of a
request that arrived before the server made the port raw).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

GUEST_DEVICE = "/dev/hvc0"
OUTPUT_MAX = 8 << 20  # per stream; the rest is cut and the answer says so


class ChannelError(RuntimeError):
    """The guest did not answer: the message says why and where to look."""


class RunResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


# --- host side ---------------------------------------------------------------------------


class Channel:
    """The host end: one unix socket, one request per connection."""

    def __init__(self, path: Path, *, hint: str = "") -> None:
        self.path = path
        self.hint = hint  # appended to errors, e.g. "see <console log>"

    def call(self, request: dict[str, Any], *, timeout: float,
             alive: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Send `request` (an id is added) and return the guest's answer; `alive` (is
        QEMU still there?) ends the wait early when it says no."""
        rid = secrets.token_hex(6)
        deadline = time.monotonic() + timeout
        sock = self._connect(deadline, alive)
        gone = ChannelError(f"the VM closed its channel (QEMU exited?){self.hint}")
        try:
            sock.sendall(json.dumps({**request, "id": rid}).encode() + b"\n")
            buf = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChannelError(f"the guest did not answer within {timeout:g} s{self.hint}")
                if alive is not None and not alive():
                    raise gone
                sock.settimeout(min(left, 1.0))
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    raise gone
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    answer = _decode(line)
                    if answer is not None and answer.get("re") == rid:
                        return answer
        except (ConnectionError, BrokenPipeError):
            raise gone from None
        finally:
            sock.close()

    def _connect(self, deadline: float, alive: Callable[[], bool] | None) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if time.monotonic() >= deadline or (alive is not None and not alive()):
                    raise ChannelError(f"no VM channel at {self.path}: {e.strerror}{self.hint}") from None
                time.sleep(0.05)

    def ping(self, *, timeout: float = 5.0, alive: Callable[[], bool] | None = None) -> dict[str, Any]:
        """The guest's kernel release and uptime; raises ChannelError when it does not answer."""
        return self.call({"op": "ping"}, timeout=timeout, alive=alive)

    def run(self, cmd: str | list[str], *, timeout: float = 60.0, stdin: str = "",
            alive: Callable[[], bool] | None = None) -> RunResult:
        """Run `cmd` in the guest (a string goes to /bin/sh -c) as root in its root
        namespace; `timeout` bounds the command (killed then, rc 124) and the call;
        `alive` (is QEMU still there?) ends the wait early when it says no."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        answer = self.call({"op": "run", "argv": argv, "timeout": timeout, "stdin": stdin}, timeout=timeout + 10,
                           alive=alive)
        if "error" in answer:
            return RunResult(127, "", answer["error"])
        return RunResult(int(answer["rc"]), answer["stdout"], answer["stderr"])


    def spawn(self, argv: list[str], *, log: str = "", env: dict[str, str] | None = None,
              timeout: float = 30.0) -> int:
        """Start `argv` in the guest in the background (a session of its own, stdout and
        stderr appended to the guest path `log`); returns its pid in the guest."""
        answer = self.call({"op": "spawn", "argv": argv, "log": log, "env": env or {}}, timeout=timeout)
        if "error" in answer:
            raise ChannelError(f"spawn {argv[0]} in the guest: {answer['error']}")
        return int(answer["pid"])


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- guest side --------------------------------------------------------------------------


def _run(req: dict[str, Any]) -> dict[str, Any]:
    timeout = float(req.get("timeout") or 60)
    try:
        proc = subprocess.Popen(req["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd="/", start_new_session=True)
    except OSError as e:
        return {"error": f"{req['argv'][0]}: {e.strerror}"}
    try:
        out, err = proc.communicate(req.get("stdin", "").encode(), timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:g} s)".encode()
        rc = 124
    return {"rc": rc, "stdout": _text(out), "stderr": _text(err)}


def _spawn(req: dict[str, Any]) -> dict[str, Any]:
    """Start a process detached from the server (own session, output appended to `log`)."""
    log = req.get("log") or "/dev/null"
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(req["argv"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd="/", start_new_session=True, env={**os.environ, **req.get("env", {})})
    except OSError as e:
        return {"error": f"{req['argv'][0]}: {e.strerror}"}
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped when it exits
    return {"pid": proc.pid}


def _text(data: bytes) -> str:
    if len(data) > OUTPUT_MAX:
        data = data[:OUTPUT_MAX] + b"\n(output cut at %d bytes)" % OUTPUT_MAX
    return data.decode(errors="replace")


def _answer(req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "ping":
        return {"kernel": os.uname().release, "uptime": float(Path("/proc/uptime").read_text().split()[0])}
    if op in ("run", "spawn") and isinstance(req.get("argv"), list) and req["argv"]:
        return _run(req) if op == "run" else _spawn(req)
    return {"error": f"unknown request {op!r}"}


def serve(device: str = GUEST_DEVICE) -> None:
    """The guest side: answer requests from the console port until it goes away."""
    import termios
    import tty

    deadline = time.monotonic() + 60
    while not os.path.exists(device):  # the port is probed asynchronously at boot
        if time.monotonic() > deadline:
            sys.exit(f"vmchan: {device} did not appear")
        time.sleep(0.05)
    fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd, termios.TCSANOW)  # no echo, no line editing, bytes as they are
    lock = threading.Lock()

    def reply(req: dict[str, Any]) -> None:
        try:
            answer = _answer(req)
        except Exception as e:  # noqa: BLE001 - the host hears every failure
            answer = {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps({**answer, "re": req.get("id")}).encode() + b"\n"
        with lock:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

    print(f"vmchan: serving on {device}", file=sys.stderr, flush=True)
    buf = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            time.sleep(0.1)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = _decode(line)
            if req is not None:
                threading.Thread(target=reply, args=(req,), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: vmchan.py serve [DEVICE]")
    serve(*sys.argv[2:3])
