"""The soak benchmark's outlets (``bench/soak.py``): feeds that grow over time, their article
pages, feeds that fail in a dozen ways, and the webhook receiver that timestamps alerts.

One real HTTP server (``http.server``, a thread per connection) per outlet host, all in one
process of their own so that their CPU and memory are not counted as the service's. Outlet hosts
are loopback addresses 127.0.0.1, 127.0.0.2, ... (Linux routes all of 127/8 to ``lo``), so the
fetcher's per-host concurrency limit sees many outlets, as it would in production, instead of
one host that every timeout blocks.

An item appears on its feed at ``t0 + item.at`` (``t0`` is set by the benchmark when the service
starts; before that every feed is empty) with that time as its ``pubDate``; a feed lists its
newest ``FEED_ITEMS`` and answers ``If-None-Match`` with 304. ``GET /_stats`` on the first host
returns what was served and every webhook POST received, with the time it arrived.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import json
import random
import socket
import struct
import threading
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

#: the newest items a feed document lists
FEED_ITEMS = 20

#: how each failing feed misbehaves, on every poll unless the description says otherwise
FAULTS: dict[str, str] = {
    "http-500": "500 Internal Server Error",
    "flaky-503": "503 on half the polls (the others succeed; it publishes)",
    "http-404": "404 Not Found",
    "http-410": "410 Gone",
    "http-429": "429 Too Many Requests, Retry-After: 150",
    "timeout": "no status line for 40 s (fetch.timeout is 20 s)",
    "slow-body": "headers at once, then 64 bytes a second (the exchange deadline)",
    "reset": "TCP reset (RST) as soon as the request is read",
    "disconnect": "connection closed without an answer",
    "oversized": "Content-Length: 50 MB (fetch.max_bytes is 10 MB)",
    "gzip-bomb": "16 KB of gzip that inflates to 16 MiB, no Content-Length",
    "invalid-xml": "200 with a body that is not a feed",
    "truncated-xml": "the feed cut off mid-item (usable: malformed, not failed; it publishes)",
}
#: faulty feeds that still deliver their items (on some polls, or in a malformed document)
PUBLISHING_FAULTS = frozenset({"flaky-503", "truncated-xml"})
RETRY_AFTER = 150
_BOMB = gzip.compress(b"\0" * (16 << 20), compresslevel=9)


@dataclass(frozen=True, slots=True)
class Feed:
    index: int
    name: str
    language: str
    host: int  # index into ServerPlan.hosts
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """An article's content: a real page from the corpus (``path``) or a text to wrap in a page."""

    origin: str
    language: str
    title: str
    summary: str
    paragraphs: tuple[str, ...] = ()
    path: str | None = None  # a corpus HTML file (.html or .html.gz)
    topics: tuple[str, ...] = ()  # labelled topics (the topic fixtures)


@dataclass(frozen=True, slots=True)
class Item:
    n: int
    feed: int
    at: float  # seconds after t0 when it appears on its feed
    page: Page
    page_fault: str | None = None  # None, "404" (the feed text is used) or "503-once"


@dataclass(frozen=True, slots=True)
class ServerPlan:
    hosts: tuple[str, ...]
    feeds: tuple[Feed, ...]
    items: tuple[Item, ...]


def feed_path(feed: int) -> str:
    return f"/feed/{feed}.xml"


def item_path(n: int) -> str:
    return f"/a/{n}.html"


class Outlets:
    """What every host serves; shared by the request threads."""

    def __init__(self, plan: ServerPlan, t0: Any) -> None:
        self.plan = plan
        self.t0 = t0  # a multiprocessing.Value("d"): 0 until the service starts
        self.by_feed: dict[int, list[Item]] = {}
        for item in sorted(plan.items, key=lambda i: i.at):
            self.by_feed.setdefault(item.feed, []).append(item)
        self.times = {f: [i.at for i in items] for f, items in self.by_feed.items()}
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (feed kind, status)
        self.page_requests: Counter[int] = Counter()
        self.page_tries: Counter[int] = Counter()
        self.hooks: list[tuple[float, str]] = []
        self._docs: dict[tuple[int, int], bytes] = {}
        self._pages: dict[int, bytes] = {}
        self._rand = random.Random(7)

    def elapsed(self) -> float | None:
        t0 = float(self.t0.value)
        return None if t0 == 0 else time.time() - t0

    def visible(self, feed: int) -> list[Item]:
        elapsed = self.elapsed()
        if elapsed is None:
            return []
        items = self.by_feed.get(feed, [])
        return items[: bisect_right(self.times.get(feed, []), elapsed)]

    def count(self, kind: str, status: int) -> None:
        with self.lock:
            self.requests[(kind, status)] += 1

    # -- documents

    def feed_document(self, feed: Feed, items: list[Item], base: str) -> bytes:
        key = (feed.index, len(items))
        with self.lock:
            cached = self._docs.get(key)
        if cached is not None:
            return cached
        t0 = float(self.t0.value)
        entries = []
        for item in reversed(items[-FEED_ITEMS:]):
            published = format_datetime(datetime.fromtimestamp(t0 + item.at, UTC), usegmt=True)
            entries.append(
                f"<item><title>{escape(item.page.title)}</title>"
                f"<link>{base}{item_path(item.n)}</link>"
                f'<guid isPermaLink="false">soak-{item.n}</guid>'
                f"<pubDate>{published}</pubDate>"
                f"<description>{escape(item.page.summary)}</description></item>"
            )
        doc = (
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            f"<title>Soak outlet {feed.index} ({feed.language})</title><link>{base}/</link>"
            f"<language>{feed.language}</language>{''.join(entries)}</channel></rss>"
        ).encode()
        with self.lock:
            self._docs.pop((feed.index, len(items) - 1), None)  # the previous version
            self._docs[key] = doc
        return doc

    def page_html(self, item: Item, url: str) -> bytes:
        with self.lock:
            cached = self._pages.get(item.n)
        if cached is not None:
            return cached
        page = item.page
        if page.path is not None:
            raw = Path(page.path).read_bytes()
            body = gzip.decompress(raw) if page.path.endswith(".gz") else raw
        else:
            body = article_page(page, url, float(self.t0.value) + item.at)
        with self.lock:
            self._pages[item.n] = body
        return body

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": [[k, s, n] for (k, s), n in sorted(self.requests.items())],
                "page_requests": [[s, n] for s, n in sorted(self.page_requests.items())],
                "hooks": list(self.hooks),
            }


def article_page(page: Page, url: str, published: float) -> bytes:
    """A text in a realistic page: navigation, cookie banner, related links, footer."""
    when = datetime.fromtimestamp(published, UTC).isoformat(timespec="seconds")
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in page.paragraphs)
    title = html.escape(page.title)
    return f"""<!DOCTYPE html>
<html lang="{page.language}"><head><meta charset="utf-8">
<title>{title} | Soak Outlet</title>
<link rel="canonical" href="{html.escape(url)}">
<meta property="og:title" content="{title}">
<meta property="article:published_time" content="{when}">
</head><body>
<div class="cookie-banner">We use cookies. <a href="/privacy">Privacy</a></div>
<nav><ul><li><a href="/">Home</a></li><li><a href="/politics">Politics</a></li>
<li><a href="/sport">Sport</a></li><li><a href="/newsletter">Newsletter</a></li></ul></nav>
<main><article><h1>{title}</h1>
<p class="byline">By the newsroom, {when[:10]}</p>
{body}
</article>
<aside><h3>Related</h3><ul><li><a href="/x">Another story</a></li>
<li><a href="/y">Yet another story</a></li></ul></aside></main>
<footer><p>© Soak Outlet · Imprint · Newsletter</p></footer>
</body></html>""".encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    outlets: Outlets

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that give up (timeouts, resets, closed keep-alives) are expected."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            self._get()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        received = time.time()
        outlets = self.server.outlets
        if self.path.split("?")[0] == "/hook":
            with outlets.lock:
                outlets.hooks.append((received, body.decode("utf-8", "replace")))
            self._send(200, b"ok", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _send(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _get(self) -> None:
        path = self.path.split("?")[0]
        outlets = self.server.outlets
        if path.startswith("/feed/"):
            self._feed(outlets, int(path.removeprefix("/feed/").removesuffix(".xml")))
        elif path.startswith("/a/"):
            self._page(outlets, int(path.removeprefix("/a/").removesuffix(".html")))
        elif path == "/_stats":
            self._send(200, json.dumps(outlets.stats()).encode(), "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def _feed(self, outlets: Outlets, index: int) -> None:
        feed = outlets.plan.feeds[index]
        kind = feed.fault or "ok"
        if feed.fault and self._fault(outlets, feed):
            return
        items = outlets.visible(index)
        etag = f'"f{index}-{len(items)}"'
        if self.headers.get("If-None-Match") == etag:
            outlets.count(kind, 304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        doc = outlets.feed_document(feed, items, self.base)
        if feed.fault == "truncated-xml":
            doc = doc.replace(b"</channel></rss>", b"<item><title>Cut off in the mid")
        outlets.count(kind, 200)
        self._send(200, doc, "application/rss+xml; charset=utf-8", {"ETag": etag})

    def _fault(self, outlets: Outlets, feed: Feed) -> bool:
        """Misbehave as the feed's fault says (and count it); False: serve the feed."""
        fault = feed.fault or "ok"
        status = self._misbehave(outlets, fault)
        if status is None:
            return False
        outlets.count(fault, status)
        return True

    def _misbehave(self, outlets: Outlets, fault: str) -> int | None:
        """The status answered (0: none), or None to serve the feed after all."""
        if fault == "flaky-503":
            with outlets.lock:
                fail = outlets._rand.random() < 0.5
            if not fail:
                return None
            self._send(503, b"busy", "text/plain")
            return 503
        if fault in ("http-500", "http-404", "http-410"):
            status = int(fault.removeprefix("http-"))
            self._send(status, b"<html><body>error</body></html>", "text/html")
            return status
        if fault == "http-429":
            self._send(429, b"slow down", "text/plain", {"Retry-After": str(RETRY_AFTER)})
            return 429
        if fault == "timeout":
            time.sleep(40)
            with contextlib.suppress(OSError):  # the client gave up long ago
                self._send(200, b"", "application/rss+xml")
            self.close_connection = True
            return 0
        if fault == "slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            with contextlib.suppress(OSError):  # until the client gives up
                for _ in range(60):
                    self.wfile.write(b"<!-- " + b"x" * 55 + b" -->\n")
                    self.wfile.flush()
                    time.sleep(1.0)
            self.close_connection = True
            return 200
        if fault == "reset":
            # SO_LINGER 0: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return 0
        if fault == "disconnect":
            self.close_connection = True
            return 0
        if fault == "oversized":
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(50 * 10**6))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stops at the header
                self.wfile.write(b"<rss>" + b" " * 65536)
            self.close_connection = True
            return 200
        if fault == "gzip-bomb":
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stops at its size cap
                self.wfile.write(_BOMB)
            self.close_connection = True  # no length: the end of the connection ends the body
            return 200
        if fault == "invalid-xml":
            body = b'\x00\x01{"maintenance": true} <<< not a feed'
            self._send(200, body, "application/rss+xml")
            return 200
        return None  # truncated-xml: served (cut) by _feed

    def _page(self, outlets: Outlets, n: int) -> None:
        items = outlets.plan.items
        elapsed = outlets.elapsed()
        if not 0 <= n < len(items) or elapsed is None or items[n].at > elapsed:
            self._page_status(outlets, 404, b"not found")
            return
        item = items[n]
        with outlets.lock:
            outlets.page_tries[n] += 1
            tries = outlets.page_tries[n]
        if item.page_fault == "404":
            self._page_status(outlets, 404, b"<html><body>gone</body></html>")
            return
        if item.page_fault == "503-once" and tries == 1:
            self._page_status(outlets, 503, b"<html><body>busy</body></html>")
            return
        body = outlets.page_html(item, self.base + item_path(n))
        with outlets.lock:
            outlets.page_requests[200] += 1
        self._send(200, body, "text/html; charset=utf-8")

    def _page_status(self, outlets: Outlets, status: int, body: bytes) -> None:
        with outlets.lock:
            outlets.page_requests[status] += 1
        self._send(status, body, "text/html")


def serve(plan: ServerPlan, t0: Any, ready: Any) -> None:
    """Run every outlet host until the process is terminated; put their ports on ``ready``."""
    outlets = Outlets(plan, t0)
    ports = []
    for host in plan.hosts:
        server = _Server((host, 0), _Handler)
        server.outlets = outlets
        ports.append(int(server.server_address[1]))
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ready.put(ports)
    threading.Event().wait()
