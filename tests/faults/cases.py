"""The catalogue of hostile answers: each a named fault, how the hostile server produces it, and
the fragment newsmon must record for it (on the feed, or on the article whose page it is).

A case installs itself on a ``HostileServer`` at a path and returns the URL to point a feed or
an entry at. ``feed_error`` is what ``newsmon feeds`` must show for a feed served this way;
``page_error`` what the article must record when its page is served this way (None: the case
is not an article-level fault). Cases that a feed survives (odd encodings, entity tricks) have
no ``feed_error``; their feeds must be parsed without harm, ``feed_note`` (when set) recorded as
the malformed reason.
"""

from __future__ import annotations

import functools
import html
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from tests.faults.server import (
    Behaviour,
    HostileServer,
    Raw,
    Reply,
    Reset,
    Silent,
    Stream,
    redirect,
)

#: the fetch settings the cases are sized for (tests write them into the config)
TIMEOUT_S = 2.0
MAX_BYTES = 1_000_000
HUGE = 50_000_000  # the "50 MB" bodies
BOMB_INFLATED = 128 * 2**20  # what the gzip bomb inflates to (it is ~130 KB on the wire)

RSS_TYPE = "application/rss+xml; charset=utf-8"
PASSWD = "/etc/passwd"


# -- documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    title: str
    link: str
    description: str


def rss(items: Sequence[Item], *, title: str = "Hostile test feed", prolog: str = "",
        encoding: str = "utf-8") -> bytes:  # fmt: skip
    """An RSS 2.0 document; ``prolog`` goes between the XML declaration and ``<rss>``."""
    body = "".join(
        f"<item><title>{html.escape(i.title)}</title><link>{html.escape(i.link)}</link>"
        f"<guid>{html.escape(i.link)}</guid><description>{html.escape(i.description)}"
        "</description></item>\n"
        for i in items
    )
    doc = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n{prolog}\n<rss version="2.0"><channel>'
        f"<title>{html.escape(title)}</title><link>http://hostile.invalid/</link>"
        f"<description>hostile</description>\n{body}</channel></rss>\n"
    )
    return doc.encode(encoding)


def article_html(title: str, paragraphs: Sequence[str], *, doctype: str = "<!DOCTYPE html>",
                 lang: str = "en") -> str:  # fmt: skip
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f'{doctype}\n<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
        f"</head><body><main><article><h1>{title}</h1>\n{body}\n</article></main></body></html>"
    )


#: prose long enough for extraction (min_chars 250) and language id
PROSE = (
    "The delegations met again on Tuesday in the capital to continue talks about a ceasefire "
    "along the front line, officials from both sides said after the session ended late.",
    "According to the mediators, the next round will deal with prisoner exchanges, the return "
    "of deported children and guarantees for the safety of the nuclear power plant.",
    "Observers cautioned that earlier rounds had ended without agreement and that the positions "
    "of the parties on territorial questions remain far apart, despite the optimism.",
)


@functools.cache
def gzip_bomb(inflated: int = BOMB_INFLATED) -> bytes:
    """Zeros, gzip-compressed, built a MiB at a time (the inflated body never exists here)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(2**20)
    parts = [packer.compress(block) for _ in range(inflated // len(block))]
    return b"".join([*parts, packer.flush()])


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00"
    + bytes(range(256)) * 64
)

HTML_PAGE = article_html("Welcome to Example News", PROSE).encode()

# invalid UTF-8 bytes inside an otherwise UTF-8 (Cyrillic) feed: a lone continuation byte, a
# truncated sequence and a Latin-1 "é" (mixed encodings)
INVALID_UTF8_TITLE = "Переговори тривають у столиці"
INVALID_UTF8_FEED = rss(
    [Item(INVALID_UTF8_TITLE, "http://hostile.invalid/uk/1", "Делегації зустрілися знову.")],
    title="Кодування",
).replace("знову".encode(), "знову".encode() + b" \x80 \xd0 caf\xe9 ok")

# a windows-1251 document whose HTTP header claims UTF-8 (its XML declaration tells the truth)
CP1251_TITLE = "Переговоры продолжаются в столице"
CP1251_FEED = rss(
    [Item(CP1251_TITLE, "http://hostile.invalid/ru/1", "Делегации встретились снова.")],
    title="Новости", encoding="windows-1251",
)  # fmt: skip

BILLION_LAUGHS = (
    '<!DOCTYPE rss [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">\n' for i in range(1, 10)
    )
    + "]>"
)
#: one innocent-looking text entity, referenced 5,000 times below: 100 MB when expanded (kept
#: modest so that a regression costs the test run some memory, not the machine)
QUADRATIC_ENTITY = "Q" * 20_000
QUADRATIC = f'<!DOCTYPE rss [\n<!ENTITY q "{QUADRATIC_ENTITY}">\n]>'


def _entity_feed(prolog: str, reference: str, times: int = 1, encoding: str = "utf-8") -> bytes:
    link = f"http://hostile.invalid/entity/{reference.strip('&;')}/{encoding}"
    items = [Item("Entity item", link, "before REF after")]
    feed = rss(items, prolog=prolog, encoding=encoding)
    bare = "utf-16-le" if encoding == "utf-16" else encoding  # no BOM inside the document
    return feed.replace("REF".encode(bare), (reference * times).encode(bare))


def xxe_prolog(server: HostileServer, root: str = "rss") -> str:
    """Every way to make a parser read a file or a URL: external entities (file, http), an
    external parameter entity and an external DTD. The http ones point at the hostile server,
    so a test can show that nothing ever asked for them."""
    return (
        f'<!DOCTYPE {root} SYSTEM "{server.url("/xxe/dtd")}" [\n'
        f'<!ENTITY file SYSTEM "file://{PASSWD}">\n'
        f'<!ENTITY remote SYSTEM "{server.url("/xxe/entity")}">\n'
        f'<!ENTITY % param SYSTEM "{server.url("/xxe/param")}">\n'
        "%param;\n]>"
    )


XXE_PATHS = ("/xxe/dtd", "/xxe/entity", "/xxe/param")


def _xxe_feed(server: HostileServer) -> bytes:
    return _entity_feed(xxe_prolog(server), "&file;&remote;")


def _xxe_page(server: HostileServer) -> bytes:
    paragraphs = [*PROSE, "Leaked: &file; and &remote; end."]
    return article_html("Entity page", paragraphs, doctype=xxe_prolog(server, "html")).encode()


def _laughs_page(_server: HostileServer) -> bytes:
    doctype = BILLION_LAUGHS.replace("<!DOCTYPE rss", "<!DOCTYPE html")
    return article_html("Laughing page", [*PROSE, "Laughs: &lol9; end."], doctype=doctype).encode()


# -- the catalogue --------------------------------------------------------------------------

Install = Callable[[HostileServer, str], str]


def _serve(make: Callable[[HostileServer], Behaviour]) -> Install:
    def install(server: HostileServer, path: str) -> str:
        return server.route(path, make(server))

    return install


def _redirect_loop(server: HostileServer, path: str) -> str:
    # /path -> /path/b -> /path -> ...: the same two URLs again and again
    server.route(path + "/b", redirect(server.url(path)))
    return server.route(path, redirect(server.url(path + "/b"), status=301))


def _unaccepting(server: HostileServer, path: str) -> str:
    return server.unaccepting_url(path)


def _reset_mid_body(server: HostileServer) -> Reset:
    return Reset(before=_HEAD_100K + b"<rss><channel><title>cut" + b" " * 1000)


@dataclass(frozen=True)
class FaultCase:
    name: str
    install: Install
    feed_error: str | None
    page_error: str | None = None
    feed_note: str | None = None
    #: the failure is worth retrying (network, 5xx, 429): an article gets a second attempt
    transient: bool = False


def _status(status: int, **headers: str) -> Install:
    return _serve(lambda _s: Reply(b"<h1>error</h1>", status=status, headers=headers))


def _reply(body: bytes, content_type: str = RSS_TYPE, **headers: str) -> Install:
    return _serve(lambda _s: Reply(body, content_type=content_type, headers=headers))


def _stream(piece: bytes, framing: Literal["length", "chunked", "close"]) -> Install:
    return _serve(lambda _s: Stream(piece * (65536 // len(piece)), HUGE, framing))


def _raw(data: bytes) -> Install:
    return _serve(lambda _s: Raw(data))


_HEAD_100K = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 100000\r\n\r\n"
)
_BROKE_OFF = "the server broke off or garbled the response"
_CONNECTION = "connection reset"
_TOO_LARGE = f"larger than {MAX_BYTES} bytes"
_FILE_URL = "cannot fetch a 'file' URL"

# fmt: off
CASES: tuple[FaultCase, ...] = (
    # -- error statuses
    FaultCase("HTTP 500", _status(500), "HTTP 500", "HTTP 500", transient=True),
    FaultCase("HTTP 403", _status(403), "HTTP 403", "page blocked: HTTP 403"),
    FaultCase("HTTP 404", _status(404), "HTTP 404", "page blocked: HTTP 404"),
    FaultCase("HTTP 410", _status(410), "HTTP 410", "page blocked: HTTP 410"),
    FaultCase(
        "HTTP 429 Retry-After", _status(429, **{"Retry-After": "7200"}), "HTTP 429", "HTTP 429",
        transient=True,
    ),
    # -- the network
    FaultCase("connect timeout", _unaccepting, "connect timed out", "connect timed out",
              transient=True),
    FaultCase("read timeout", _serve(lambda _s: Silent()), "no response headers",
              "no response headers", transient=True),
    FaultCase("connection reset", _serve(lambda _s: Reset()), _CONNECTION, _CONNECTION,
              transient=True),
    FaultCase("reset mid-body", _serve(_reset_mid_body), _CONNECTION, _CONNECTION,
              transient=True),
    FaultCase("trickle", _serve(lambda _s: Stream(b"<!-- -->", 80_000, delay=0.05)),
              "body not complete", "body not complete", transient=True),
    FaultCase("closed mid-body", _raw(_HEAD_100K + b"<rss><channel><title>cut"), _BROKE_OFF,
              _BROKE_OFF, transient=True),
    FaultCase("not HTTP", _raw(b"SSH-2.0-OpenSSH_9.6\r\n"), _BROKE_OFF, _BROKE_OFF,
              transient=True),
    FaultCase("huge header", _raw(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * 300_000 + b"\r\n\r\n"),
              _BROKE_OFF, _BROKE_OFF, transient=True),
    # -- sizes
    FaultCase("50 MB with length", _stream(b"\0", "length"), f"(Content-Length: {HUGE})",
              _TOO_LARGE),
    FaultCase("50 MB chunked", _stream(b"<", "chunked"), _TOO_LARGE, _TOO_LARGE),
    FaultCase("50 MB until close", _stream(b"a", "close"), _TOO_LARGE, _TOO_LARGE),
    FaultCase("gzip bomb", _serve(lambda _s: Reply(gzip_bomb(), content_type=RSS_TYPE,
                                                   headers={"Content-Encoding": "gzip"})),
              _TOO_LARGE, _TOO_LARGE),
    # -- not a feed
    FaultCase("HTML as feed", _reply(HTML_PAGE, "text/html"), "not a feed: an HTML page"),
    FaultCase("PNG as feed", _reply(PNG, "image/png"), "not a feed: binary data (image/png)",
              "not an HTML page (image/png)"),
    FaultCase("PNG labelled RSS", _reply(PNG), "not a feed: binary data (application/rss+xml"),
    FaultCase("empty body", _reply(b""), "not a feed: empty response"),
    # -- redirects
    FaultCase("redirect loop", _redirect_loop, "a redirect loop", "a redirect loop"),
    FaultCase("redirect to file", _serve(lambda _s: redirect(f"file://{PASSWD}")), _FILE_URL,
              _FILE_URL),
    # -- feeds that must parse without harm
    FaultCase("invalid UTF-8", _reply(INVALID_UTF8_FEED), None, feed_note="invalid UTF-8"),
    FaultCase("charset conflict", _reply(CP1251_FEED), None),
    FaultCase("billion laughs", _reply(_entity_feed(BILLION_LAUGHS, "&lol9;")), None,
              feed_note="entity"),
    FaultCase("quadratic entity", _reply(_entity_feed(QUADRATIC, "&q;", 5_000)), None,
              feed_note="entity"),
    # the same in UTF-16 (with its BOM): no byte-level check on the raw document would see it
    FaultCase("quadratic entity UTF-16",
              _reply(_entity_feed(QUADRATIC, "&q;", 5_000, "utf-16"), "application/rss+xml"),
              None, feed_note="entity"),
    FaultCase("external entities", _serve(lambda s: Reply(_xxe_feed(s), content_type=RSS_TYPE)),
              None, feed_note="entity"),
)

_XHTML = "application/xhtml+xml"

#: article-level only: pages that are no HTML page or try entity tricks on the extractor
PAGE_CASES: tuple[FaultCase, ...] = (
    FaultCase("PNG labelled HTML", _reply(PNG, "text/html"), None),
    FaultCase("XHTML with external entities",
              _serve(lambda s: Reply(_xxe_page(s), content_type=_XHTML)), None),
    FaultCase("XHTML billion laughs",
              _serve(lambda s: Reply(_laughs_page(s), content_type=_XHTML)), None),
)
# fmt: on

BY_NAME = {case.name: case for case in (*CASES, *PAGE_CASES)}
#: the cases whose fetch ends with no usable body (they exercise the memory limits)
BIG_BODIES = ("50 MB with length", "50 MB chunked", "50 MB until close", "gzip bomb")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())
