"""Kit for the crash-safety test: ``newsmon run`` as a real subprocess that a test SIGKILLs, and
receivers that know when they acknowledged a message.

* ``Service``: starts ``python -m monitor.cli --config X run`` with its log in a file per start,
  kills it (SIGKILL) or stops it (SIGTERM).
* ``MailReceiver`` (aiosmtpd) and ``HookReceiver`` (a threaded HTTP server): each acknowledges a
  message ``ack_delay`` seconds after it arrived - a slow receiver, so that a kill can land while
  a delivery is in flight - and records it (id, time of the acknowledgement) only if the sender
  is still connected at that moment: a message whose sender died before the answer was never
  acknowledged, and the sender is right to send it again. What the receivers record is thus what
  a real receiver would have processed.
* ``state_counts``/``read_state``: the state store read with ``sqlite3`` while the service writes
  (WAL: readers never block the writer).
* ``children``/``process_running``: a process's children from /proc (Linux), to see what a
  killed service leaves behind; ``quiet_connection_errors``: no traceback per connection that a
  killed client left half-open on a ``LocalServer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.httpserver import LocalServer

ROOT = Path(__file__).resolve().parents[2]


# -- receivers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    id: str  # the alert message id (Message-ID local part, webhook "id")
    acked_at: float  # time.monotonic() when the acknowledgement went out


@dataclass
class _Log:
    """What a receiver acknowledged, and how many requests are in flight (arrived, not
    answered)."""

    received: list[Received] = field(default_factory=list)
    arrivals: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arrive(self) -> None:
        with self.lock:
            self.arrivals += 1
            self.in_flight += 1

    def done(self, message_id: str | None) -> None:
        with self.lock:
            self.in_flight -= 1
            if message_id is not None:
                self.received.append(Received(message_id, time.monotonic()))

    def ids(self) -> list[str]:
        with self.lock:
            return [r.id for r in self.received]

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)


class MailReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that answers DATA after ``ack_delay``."""

    def __init__(self, ack_delay: float = 0.0) -> None:
        self.ack_delay = ack_delay
        self.log = _Log()
        self.port = _free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def start(self) -> MailReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.log.arrive()
        message_id: str | None = None
        try:
            # aiosmtpd cancels this coroutine when the client disconnects meanwhile (killed):
            # then nothing was acknowledged
            await asyncio.sleep(self.ack_delay)
            mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
            message_id = str(mail["Message-ID"]).strip().removeprefix("<").split("@")[0]
            return "250 OK"
        finally:
            self.log.done(message_id)


class HookReceiver:
    """A webhook endpoint (a real threaded HTTP server on 127.0.0.1) that answers 200 after
    ``ack_delay``, and records the message only when its sender is still connected then."""

    def __init__(self, ack_delay: float = 0.0) -> None:
        self.ack_delay = ack_delay
        self.log = _Log()
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                receiver._serve(self)

        self._httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def start(self) -> HookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        self.log.arrive()
        message_id: str | None = None
        try:
            time.sleep(self.ack_delay)
            if not peer_connected(h.connection):
                h.close_connection = True
                return  # the sender is gone: it never learns of an acknowledgement
            message_id = str(json.loads(body)["id"])
            h.send_response(200)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Content-Length", "2")
            h.end_headers()
            h.wfile.write(b"ok")
            h.wfile.flush()
        finally:
            self.log.done(message_id)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed client: expected
            super().handle_error(request, client_address)


def quiet_connection_errors(server: LocalServer) -> None:
    """No traceback on stderr for each connection a killed client left half-open."""
    httpd = server._httpd
    report = httpd.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            report(request, client_address)

    httpd.handle_error = handle_error  # type: ignore[method-assign]


def peer_connected(sock: socket.socket) -> bool:
    """False when the peer closed the connection (a killed process's sockets are closed by the
    kernel): the socket is readable and reading would return end-of-file."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return True
        return sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the service as a subprocess ------------------------------------------------------------------


class Service:
    """``newsmon run`` on ``config`` as a child process; each start logs to its own file."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        logs.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.logs / f"run-{self.starts}.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NEWSMON_LOG_LEVEL": "INFO"}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "--config", str(self.config), "run"],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL; returns time.monotonic() of the kill."""
        assert self.proc is not None
        at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return at

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the service's orderly shutdown."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def running(self) -> bool:
        """Past start-up: the service logged that it runs."""
        return "newsmon running" in self.log_text()

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def all_logs(self) -> str:
        parts = []
        for n in range(1, self.starts + 1):
            path = self.logs / f"run-{n}.log"
            parts.append(f"--- start {n} ---\n{path.read_text('utf-8', 'replace')}")
        return "\n".join(parts)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from /proc; Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            found.append(int(entry.name))
    return found


def process_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (exited, not reaped yet)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc/<pid>/stat; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parens
    return fields[0], int(fields[1])


# -- reading the state store from outside ---------------------------------------------------------


@contextlib.contextmanager
def _connect(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def read_state(db: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with _connect(db) as conn:
        try:
            return list(conn.execute(query, args))
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # not migrated yet
                return []
            raise


@dataclass(frozen=True)
class StateCounts:
    pending: int = 0  # articles waiting for their page
    fetched: int = 0  # stored, not indexed yet
    indexed: int = 0
    unmatched: int = 0  # indexed, not matched against the topics yet
    deliveries_pending: int = 0
    deliveries_sent: int = 0
    messages: int = 0


def state_counts(db: Path) -> StateCounts:
    rows = read_state(
        db,
        """SELECT
            (SELECT count(*) FROM articles WHERE status = 'pending'),
            (SELECT count(*) FROM articles WHERE status = 'fetched'),
            (SELECT count(*) FROM articles WHERE status = 'indexed'),
            (SELECT count(*) FROM articles WHERE status = 'indexed' AND matched_at IS NULL),
            (SELECT count(*) FROM deliveries WHERE status = 'pending'),
            (SELECT count(*) FROM deliveries WHERE status = 'sent'),
            (SELECT count(*) FROM alert_messages)""",
    )
    return StateCounts(*rows[0]) if rows else StateCounts()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)
