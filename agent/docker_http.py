"""HTTP/1.1 with JSON bodies over unix sockets: the Docker plugin protocol's transport, both ways.

Docker talks to a legacy plugin as a client of `POST /<Interface>.<Method>` with a JSON
body (Content-Length, keep-alive), and expects 200 with a JSON object; an unknown
method answers 404 (Docker then treats an optional method as not implemented); a
handler's refusal is 200 with `{"Err": "…"}` (`{"Error": "…"}` for IpamDriver calls:
libnetwork's IPAM API names it so), which Docker shows as the error of the user's command. `serve` is that server (asyncio, stdlib only): one handler for every
path, which returns the reply object or raises `NotImplementedMethod` / `Refused`.

`get` is the small client the plugin needs the other way: a GET to the host's dockerd
(`/networks/<id>`: Docker gives network drivers no network name, see docker_driver.py).
`caller_pid()` is the pid of the process on the other end of the request being handled
(SO_PEERCRED: the dockerd that calls; its Join's SandboxKey is a path in its mount
namespace).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 1 << 20

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
_CALLER: contextvars.ContextVar[int] = contextvars.ContextVar("vxlab_docker_caller", default=0)


def caller_pid() -> int:
    """The pid of the process whose request is being handled (0: not known)."""
    return _CALLER.get()


def _peer_pid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return 0
    return int(struct.unpack("3i", creds)[0])


class NotImplementedMethod(Exception):
    """The path names no method this plugin serves (404)."""


class Refused(Exception):
    """The request is refused; the message is what the user sees (one line)."""


async def _read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """(start line, headers lower-cased, body) of one message; None at a clean EOF."""
    start = await reader.readline()
    if not start:
        return None
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while (size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16)) > 0:
            body += await reader.readexactly(size + 2)
            body = body[:-2]
            if len(body) > MAX_BODY:
                raise ValueError(f"body of more than {MAX_BODY} bytes")
        await reader.readline()  # the empty trailer
        return start.decode("latin-1").strip(), headers, body
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise ValueError(f"body of {length} bytes")
    body = await reader.readexactly(length) if length else b""
    return start.decode("latin-1").strip(), headers, body


def _response(status: str, obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


async def _connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _CALLER.set(_peer_pid(writer))  # this connection's task only
    try:
        while (msg := await _read_message(reader)) is not None:
            start, headers, body = msg
            _, path, *_ = start.split(" ") + [""]
            try:
                request = json.loads(body) if body.strip() else {}
                if not isinstance(request, dict):
                    raise Refused("the request body is not a JSON object")
                reply = _response("200 OK", await handler(path.lstrip("/"), request))
            except NotImplementedMethod:
                reply = _response("404 Not Found", {"Err": f"{path}: not implemented"})
            except Refused as e:  # IPAM replies carry it as "Error", the others as "Err"
                key = "Error" if path.lstrip("/").startswith("IpamDriver.") else "Err"
                reply = _response("200 OK", {key: " ".join(str(e).split())})
            except ValueError as e:  # a body that is not JSON
                reply = _response("400 Bad Request", {"Err": f"bad request: {e}"})
            writer.write(reply)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def serve(path: str | Path, handler: Handler, *, ready: Callable[[], None] = lambda: None) -> None:
    """Serve `handler` on the unix socket `path` (replacing a stale one) until cancelled."""
    sock = Path(path)
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(lambda r, w: _connection(handler, r, w), path=str(sock))
    os.chmod(sock, 0o660)
    ready()
    try:
        async with server:
            await server.serve_forever()
    finally:
        sock.unlink(missing_ok=True)


async def get(socket_path: str, path: str, *, timeout: float = 10.0) -> tuple[int, Any]:
    """GET `path` from the HTTP server on the unix socket `socket_path`: (status, JSON body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            msg = await _read_message(reader)
        finally:
            writer.close()
    if msg is None:
        raise ConnectionError(f"{socket_path}: closed without an answer")
    start, _, body = msg
    status = int(start.split(" ")[1])
    return status, json.loads(body) if body.strip() else None
