"""The ops that run a program: exec, capture (tcpdump) and iperf3, as asyncio subprocesses.

Each runs in a session of its own and is killed (the whole group) when its op ends for
any reason: its Done, its deadline, a Cancel. Output is capped (vxlab.ops.OUTPUT_CAP
bytes per stream, LINE_CAP characters per capture line): beyond the cap it is read and
dropped, so a chatty command never blocks on a full pipe. `enter(ns)` is the argv
prefix that runs a program in a container's namespace (`netns_exec`; the unit tests run
programs here instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence

from vxlab import ops
from vxlab.ops import OpFailed

Enter = Callable[[str], list[str]]
LISTEN_TIMEOUT = 5.0  # tcpdump or iperf3 not listening after this long: the op fails
CAPTURE_LINES = 8     # lines a packet may print (a cap, not an expectation)


def netns_exec(namespace: str) -> list[str]:
    """The argv prefix that runs a program in `namespace`: `ip netns exec NAME` for one of
    vxlab's (it also mounts the namespace's /etc/netns resolv.conf), `nsenter --net=PATH`
    for a path (a runtime's container, pinned by the agent: its network namespace only,
    the host's files)."""
    if namespace.startswith("/"):
        return ["nsenter", f"--net={namespace}", "--"]
    return ["ip", "netns", "exec", namespace]


async def _start(argv: Sequence[str], *, what: str, stdin: int | None = asyncio.subprocess.DEVNULL,
                 ) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(*argv, stdin=stdin, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise OpFailed(f"{what}: {argv[0]} is not installed on this host") from None
    except OSError as e:
        raise OpFailed(f"{what}: cannot start {argv[0]}: {e.strerror or e}") from None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()


async def _capped(stream: asyncio.StreamReader | None, cap: int) -> tuple[bytes, bool]:
    """Everything `stream` says until EOF, the first `cap` bytes kept; (kept, cut)."""
    kept, cut = bytearray(), False
    while stream is not None and (chunk := await stream.read(65536)):
        room = cap - len(kept)
        kept += chunk[:max(room, 0)]
        cut |= len(chunk) > room
    return bytes(kept), cut


async def run(argv: Sequence[str], *, what: str = "exec", cap: int = ops.OUTPUT_CAP) -> ops.ExecResult:
    """`argv` to its end: exit code (negative: the signal), capped stdout and stderr."""
    proc = await _start(argv, what=what)
    try:
        (out, cut_out), (err, cut_err) = await asyncio.gather(_capped(proc.stdout, cap), _capped(proc.stderr, cap))
        code = await proc.wait()
    finally:
        await _kill(proc)
    return ops.ExecResult(code, out, err, cut_out or cut_err)


async def _wait_line(stream: asyncio.StreamReader | None, needle: bytes, *, what: str,
                     proc: asyncio.subprocess.Process) -> str:
    """The first line of `stream` holding `needle` (a program saying it listens)."""
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(LISTEN_TIMEOUT):
            while stream is not None and (line := await stream.readline()):
                if needle in line:
                    return line.decode(errors="replace").strip()
                seen.append(line)
    except TimeoutError:
        raise OpFailed(f"{what}: not listening after {LISTEN_TIMEOUT:g}s") from None
    err = (await _capped(proc.stderr, 4096))[0] if proc.stderr is not stream else b""
    await proc.wait()
    said = b" ".join(x.strip() for x in [*seen, err]).decode(errors="replace").strip()
    raise OpFailed(f"{what}: exited with {proc.returncode} before listening: {said[-300:]}")


async def capture(op: ops.Capture, device: str) -> AsyncIterator[ops.Ready | ops.Line]:
    """tcpdump on `device` (this namespace): a Ready when it listens, then a Line per
    line it prints (a VXLAN packet is two: outer and inner headers) until `count`
    packets (tcpdump -c ends), `seconds`, or CAPTURE_LINES lines per packet asked for."""
    proc = await _start(["tcpdump", "-i", device, "-nn", "-l", "-c", str(op.count), "--", *op.filter], what="capture")
    try:
        yield ops.Ready(await _wait_line(proc.stderr, b"listening on", what="capture", proc=proc))
        loop = asyncio.get_running_loop()
        end = loop.time() + op.seconds
        for _ in range(op.count * CAPTURE_LINES):
            try:
                async with asyncio.timeout(max(0.0, end - loop.time())):
                    line = await proc.stdout.readline() if proc.stdout else b""
            except TimeoutError:
                return
            if not line:
                return
            yield ops.Line(line.decode(errors="replace").rstrip("\n")[:ops.LINE_CAP])
    finally:
        await _kill(proc)


async def iperf_server(op: ops.IperfServer, namespace: str, enter: Enter) -> AsyncIterator[ops.Ready]:
    """iperf3 -s for one test: a Ready once it listens; returns when the test ended."""
    proc = await _start([*enter(namespace), "iperf3", "-s", "-1", "--forceflush", "-p", str(op.port)],
                        what="iperf_server")
    try:
        yield ops.Ready(await _wait_line(proc.stdout, b"listening on", what="iperf_server", proc=proc))
        (_, _), (err, _) = await asyncio.gather(_capped(proc.stdout, 0), _capped(proc.stderr, 4096))
        if await proc.wait() != 0:
            raise OpFailed(f"iperf_server: iperf3 exited with {proc.returncode}: "
                           f"{err.decode(errors='replace').strip()[-300:]}")
    finally:
        await _kill(proc)


async def iperf_client(op: ops.IperfClient, namespace: str, enter: Enter) -> ops.IperfReport:
    """iperf3 -c: its JSON report (an error in it fails the op)."""
    result = await run([*enter(namespace), "iperf3", "-c", op.ip, "-p", str(op.port), "-t", f"{op.seconds:g}",
                        "-i", f"{op.interval:g}", "-J"], what="iperf_client")
    text = result.stdout.decode(errors="replace")
    try:
        error = json.loads(text).get("error", "")
    except ValueError:
        error = f"no JSON report (exit {result.exit_code}): {result.stderr.decode(errors='replace').strip()[-300:]}"
    if error:
        raise OpFailed(f"iperf_client: {error}")
    return ops.IperfReport(text)
