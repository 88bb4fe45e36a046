"""A real HTTP server on 127.0.0.1 for tests and benchmarks: feeds and pages are served locally.

Routes map a path to a static ``Response`` or to a handler ``(Request) -> Response`` so a test can
script 304s, redirects, slow bodies or errors. Every request is recorded in ``server.requests``.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # including the query string
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    body: bytes = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "text/html; charset=utf-8"
    #: send the body in pieces with a pause between them (a slow server)
    chunk_delay: float = 0.0
    chunk_size: int = 1024
    #: gzip the body on the wire when the client accepts it
    gzip: bool = False
    #: pause before the status line (for timeouts)
    delay: float = 0.0
    #: honour If-None-Match / If-Modified-Since against these validators with a 304
    etag: str | None = None
    last_modified: str | None = None
    #: send the body with Transfer-Encoding: chunked instead of a Content-Length
    chunked: bool = False
    #: close the connection without answering (the client sees a disconnect)
    drop_connection: bool = False


Handler = Callable[[Request], Response]


class LocalServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Response | Handler] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._serve(self)

            def do_POST(self) -> None:
                server._serve(self)

            def do_HEAD(self) -> None:
                server._serve(self)

        self._httpd = ThreadingHTTPServer((host, 0), _Handler)
        self._httpd.daemon_threads = True
        host_, port_ = self._httpd.server_address[:2]
        self.host, self.port = str(host_), int(port_)
        # a short poll interval makes stop() (every test teardown) take ~10 ms instead of 0.5 s
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    # -- lifecycle
    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, response: Response | Handler) -> str:
        self.routes[path] = response
        return self.url(path)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    # -- serving
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Request(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(req)
        target = self.routes.get(h.path) or self.routes.get(urlsplit(h.path).path)
        if target is None:
            resp = Response(b"not found", status=404, content_type="text/plain")
        elif callable(target):
            resp = target(req)
        else:
            resp = target
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self._write(h, req, resp)

    def _write(self, h: BaseHTTPRequestHandler, req: Request, resp: Response) -> None:
        if resp.delay:
            time.sleep(resp.delay)
        if resp.drop_connection:
            h.close_connection = True
            return
        if self._not_modified(req, resp):
            h.send_response(304)
            self._validators(h, resp)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = resp.body
        h.send_response(resp.status)
        h.send_header("Content-Type", resp.content_type)
        if resp.gzip and "gzip" in req.headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            h.send_header("Content-Encoding", "gzip")
        for k, v in resp.headers.items():
            h.send_header(k, v)
        self._validators(h, resp)
        if resp.chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if req.method == "HEAD":
            return
        for piece in _chunks(body, resp.chunk_size if resp.chunk_delay else len(body) or 1):
            h.wfile.write(_chunk_frame(piece) if resp.chunked else piece)
            h.wfile.flush()
            if resp.chunk_delay:
                time.sleep(resp.chunk_delay)
        if resp.chunked:
            h.wfile.write(_chunk_frame(b""))  # the zero-length last chunk
            h.wfile.flush()

    @staticmethod
    def _validators(h: BaseHTTPRequestHandler, resp: Response) -> None:
        if resp.etag:
            h.send_header("ETag", resp.etag)
        if resp.last_modified:
            h.send_header("Last-Modified", resp.last_modified)

    @staticmethod
    def _not_modified(req: Request, resp: Response) -> bool:
        if resp.etag and req.headers.get("if-none-match") == resp.etag:
            return True
        return bool(
            resp.last_modified
            and not resp.etag
            and req.headers.get("if-modified-since") == resp.last_modified
        )


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _chunk_frame(piece: bytes) -> bytes:
    return f"{len(piece):X}\r\n".encode() + piece + b"\r\n"
