"""A hostile HTTP server on 127.0.0.1 (or ::1) for fault tests: real sockets, scripted misbehaviour.

``tests.support.httpserver.LocalServer`` (http.server) serves well-behaved answers, but it cannot
reset a connection, stream 50 MB without holding it in memory, or frame a body by closing the
connection. This server speaks HTTP/1.1 by hand on an asyncio loop in a thread, so every
behaviour is exact:

* ``Reply``: a complete answer with a Content-Length (statuses, redirects, odd content types);
* ``Stream``: a body generated piece by piece (never held whole), framed by Content-Length,
  chunked transfer coding or the connection's close, optionally with a pause between pieces;
* ``Reset``: an RST (SO_LINGER 0) after reading the request, optionally after some bytes;
* ``Raw``: bytes as they are, then a normal close (garbage, broken framing, huge headers);
* ``Silent``: reads the request and never answers;
* ``Dynamic``: a function of the request that picks one of the above.

``unaccepting_url()`` gives a URL whose port listens but never accepts, with its backlog
already full: connecting to it hangs until the client's connect timeout, offline (Linux drops
the SYNs a full accept queue cannot take). Every request is recorded in ``requests`` and every
accepted connection counted in ``connections``; ``bytes_sent`` counts body bytes per path, so a
test can show that the client stopped reading early.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "Behaviour",
    "Dynamic",
    "HostileServer",
    "Raw",
    "Reply",
    "Request",
    "Reset",
    "Silent",
    "Stream",
    "redirect",
]

T = TypeVar("T")
_MAX_HEAD = 64 * 1024
_REASONS = {
    200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    307: "Temporary Redirect", 308: "Permanent Redirect", 403: "Forbidden", 404: "Not Found",
    410: "Gone", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}  # fmt: skip


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # including the query string
    headers: Mapping[str, str]  # lower-case names


class _Connection:
    """One accepted connection, as the behaviours see it."""

    def __init__(
        self, server: HostileServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def send_head(
        self, status: int, headers: Mapping[str, str], *, close: bool = True
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if close:
            lines.append("Connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def send_body(self, path: str, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()
        self.server._count(path, len(data))

    def reset(self) -> None:
        """Close with an RST instead of a FIN: SO_LINGER on, timeout 0, then close."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class Behaviour(Protocol):
    async def serve(self, conn: _Connection, request: Request) -> None: ...


@dataclass(frozen=True)
class Reply:
    body: bytes = b""
    status: int = 200
    content_type: str | None = "text/html; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    async def serve(self, conn: _Connection, request: Request) -> None:
        headers = dict(self.headers)
        if self.content_type:
            headers["Content-Type"] = self.content_type
        headers["Content-Length"] = str(len(self.body))
        await conn.send_head(self.status, headers)
        if request.method != "HEAD":
            await conn.send_body(request.path, self.body)


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(b"", status=status, content_type=None, headers={"Location": location})


@dataclass(frozen=True)
class Stream:
    """``total`` body bytes made of ``piece`` repeated; never more than one piece in memory."""

    piece: bytes
    total: int
    framing: Literal["length", "chunked", "close"] = "length"
    delay: float = 0.0  # pause after each piece (a trickle)
    status: int = 200
    content_type: str = "application/rss+xml"
    headers: Mapping[str, str] = field(default_factory=dict)

    def pieces(self) -> Iterator[bytes]:
        left = self.total
        while left > 0:
            piece = self.piece[:left]
            left -= len(piece)
            yield piece

    async def serve(self, conn: _Connection, request: Request) -> None:
        headers = {"Content-Type": self.content_type, **self.headers}
        if self.framing == "length":
            headers["Content-Length"] = str(self.total)
        elif self.framing == "chunked":
            headers["Transfer-Encoding"] = "chunked"
        await conn.send_head(self.status, headers)
        for piece in self.pieces():
            frame = f"{len(piece):X}\r\n".encode() + piece + b"\r\n" if self.chunked else piece
            await conn.send_body(request.path, frame)
            if self.delay:
                await asyncio.sleep(self.delay)
        if self.chunked:
            await conn.send_body(request.path, b"0\r\n\r\n")

    @property
    def chunked(self) -> bool:
        return self.framing == "chunked"


@dataclass(frozen=True)
class Reset:
    """Send ``before`` (say, the start of a response), then reset the connection."""

    before: bytes = b""

    async def serve(self, conn: _Connection, request: Request) -> None:
        if self.before:
            await conn.send_body(request.path, self.before)
            await asyncio.sleep(0.05)  # let the client read it before the RST discards it
        conn.reset()


@dataclass(frozen=True)
class Raw:
    """Send these bytes as they are (no status line or headers added), then close."""

    data: bytes

    async def serve(self, conn: _Connection, request: Request) -> None:
        await conn.send_body(request.path, self.data)


@dataclass(frozen=True)
class Silent:
    """Accept, read the request, never answer (until the server stops)."""

    async def serve(self, conn: _Connection, request: Request) -> None:
        await conn.server._stopping.wait()


@dataclass(frozen=True)
class Dynamic:
    choose: Callable[[Request], Behaviour]

    async def serve(self, conn: _Connection, request: Request) -> None:
        await self.choose(request).serve(conn, request)


class HostileServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.routes: dict[str, Behaviour] = {}
        self.requests: list[Request] = []
        #: connections accepted, whether or not a request followed
        self.connections = 0
        self._bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._unaccepting: list[socket.socket] = []

    # -- lifecycle

    def start(self) -> HostileServer:
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        for sock in self._unaccepting:
            sock.close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(server.sockets[0].getsockname()[1])
        return server

    async def _close(self) -> None:
        assert self._server is not None
        self._stopping.set()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- configuration

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, behaviour: Behaviour) -> str:
        self.routes[path] = behaviour
        return self.url(path)

    def unaccepting_url(self, path: str = "/") -> str:
        """A URL on a port that listens but never accepts, its backlog full: connects hang."""
        listener = socket.socket()
        listener.bind((self.host if ":" not in self.host else "127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        self._unaccepting.append(listener)
        for _ in range(3):  # these fill the accept queue; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            self._unaccepting.append(filler)
        return f"http://127.0.0.1:{port}{path}"

    # -- what happened

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if urlsplit(r.path).path == path)

    def bytes_sent(self, path: str) -> int:
        with self._lock:
            return self._bytes_sent.get(path, 0)

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self._bytes_sent[path] = self._bytes_sent.get(path, 0) + n

    # -- serving

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self.connections += 1
        try:
            request = await self._read_request(reader)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
            behaviour = self.routes.get(request.path) or self.routes.get(
                urlsplit(request.path).path
            )
            conn = _Connection(self, reader, writer)
            if behaviour is None:
                behaviour = Reply(b"not found", status=404, content_type="text/plain")
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await behaviour.serve(conn, request)
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        if len(head) > _MAX_HEAD:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return Request(method, path, headers)
