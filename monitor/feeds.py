"""Parsing feed documents with feedparser into wire types.

feedparser gets the raw bytes plus the HTTP headers, so it can resolve the encoding (header,
XML declaration, BOM) and relative links (``Content-Location`` = the final URL). A document it
flags as malformed ("bozo") still yields whatever entries it recovered; the reason is kept so
``newsmon feeds`` can show it. Only a document with nothing usable is an error.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import feedparser
import feedparser.api
import lxml.etree
import lxml.html

from monitor.errors import FeedParseError
from monitor.schedule import feed_update_hint
from monitor.types import ParsedEntry, ParsedFeed

# feedparser reports these as "bozo" although the document is fine for our purposes
# (a declared encoding corrected from the bytes; a feed served as text/html or without a type)
_BENIGN_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")

_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
     "tr", "table", "section", "article", "header", "footer", "pre", "figure", "figcaption", "hr"}
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
# C0/C1 controls (whitespace aside: _SPACES handles it), DEL and lone surrogates: invisible in
# text, refused by PostgreSQL (NUL) or by any UTF-8 encoder (surrogates) when storing
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff]+")
# what browsers drop from a URL (WHATWG): tab and newlines anywhere, controls and spaces around;
# other controls inside one are dropped too (a browser would percent-encode them)
_URL_DROPPED = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
_URL_EDGES = "".join(map(chr, range(0x21)))
_BLANK_LINES = re.compile(r"\n\s*\n+")


def parse_feed(content: bytes, url: str, headers: Mapping[str, str] | None = None) -> ParsedFeed:
    """Parse a feed document fetched from ``url`` (the final URL after redirects)."""
    response_headers = {k.lower(): v for k, v in (headers or {}).items()}
    response_headers["content-location"] = url
    content, repaired = _repair_utf8(content, response_headers.get("content-type", ""))
    try:
        parsed = feedparser.parse(content, response_headers=response_headers, sanitize_html=False)
    except Exception as e:  # feedparser is defensive, but a parser bug must not stop a poll
        raise FeedParseError(url, f"feed parser failed: {type(e).__name__}: {e}") from e
    reason = "; ".join(r for r in (repaired, _malformed_reason(parsed)) if r) or None
    entries = tuple(_entry(e) for e in parsed.entries)
    if not entries and not parsed.feed.get("title"):
        raise FeedParseError(url, _not_a_feed(content, response_headers, reason))
    feed = parsed.feed
    return ParsedFeed(
        title=_clean_line(_str(feed.get("title"))),
        link=_clean_link(feed.get("link")),
        language=_clean_line(_str(feed.get("language"))) or None,
        entries=entries,
        malformed_reason=reason,
        update_hint_seconds=feed_update_hint(
            feed.get("ttl"), feed.get("sy_updateperiod"), feed.get("sy_updatefrequency")
        ),
    )


def _malformed_reason(parsed: Any) -> str | None:
    if not parsed.get("bozo"):
        return None
    exc = parsed.get("bozo_exception")
    if isinstance(exc, _BENIGN_BOZO):
        return None
    text = str(exc) if exc is not None else "malformed document"
    return f"{type(exc).__name__}: {text}" if exc is not None else text


def _entry(raw: Any) -> ParsedEntry:
    # a broken document can leave any of feedparser's values None: _str() makes them ""
    return ParsedEntry(
        guid=_clean_line(_str(raw.get("id"))) or None,
        link=_clean_link(raw.get("link")) or _clean_link(_alternate_link(raw)),
        title=_clean_line(_text_of(raw.get("title_detail")) or _str(raw.get("title"))),
        summary=_text_of(raw.get("summary_detail")) or _clean_text(_str(raw.get("summary"))),
        content=_longest_content(raw.get("content")),
        # dict.get: feedparser's own get() maps a missing published date to the updated one
        published=_datetime(dict.get(raw, "published_parsed")),
        updated=_datetime(dict.get(raw, "updated_parsed")),
        author=_clean_line(_str(raw.get("author"))) or None,
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _clean_link(value: Any) -> str | None:
    """A link as a browser reads it (controls and surrounding spaces dropped), or None."""
    link = _URL_DROPPED.sub("", _str(value)).strip(_URL_EDGES).strip()
    return link or None


def _alternate_link(raw: Any) -> str | None:
    for link in raw.get("links", []) or []:
        if link.get("rel", "alternate") == "alternate" and link.get("href"):
            return str(link["href"])
    return None


def _longest_content(contents: Any) -> str:
    texts = [_text_of(c) for c in contents or []]
    return max(texts, key=len, default="")


def _text_of(detail: Any) -> str:
    """Plain text of a feedparser ``*_detail`` dict (HTML converted, plain text cleaned)."""
    if not detail:
        return ""
    value = _str(detail.get("value"))
    if "html" in (detail.get("type") or "") or _TAG.search(value):
        return html_to_text(value)
    return _clean_text(value)


def html_to_text(fragment: str) -> str:
    """Readable plain text of an HTML fragment: block elements become line breaks."""
    if not fragment.strip():
        return ""
    # lxml refuses control characters in the text it is given (dropping <script> moves its
    # tail into the text before it): what _clean_text removes anyway goes first
    fragment = _CONTROLS.sub("", fragment).replace("\v", " ").replace("\f", " ")
    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return _clean_text(re.sub(r"<[^>]*>", " ", fragment))
    for bad in root.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    pieces: list[str] = []
    _walk(root, pieces)
    return _clean_text("".join(pieces))


def _walk(node: Any, out: list[str]) -> None:
    tag = node.tag if isinstance(node.tag, str) else ""
    block = tag.lower() in _BLOCK_TAGS
    if block:
        out.append("\n")
    if node.text and tag:
        out.append(node.text)
    for child in node:
        _walk(child, out)
        if child.tail:
            out.append(child.tail)
    if block:
        out.append("\n")


def _clean_text(text: str) -> str:
    text = _CONTROLS.sub("", text).replace("\r\n", "\n")
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _clean_line(text: str) -> str:
    return _SPACES.sub(" ", _CONTROLS.sub("", text).replace("\n", " ")).strip()


def _datetime(value: time.struct_time | None) -> datetime | None:
    """feedparser's parsed dates are UTC struct_times."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


# -- hostile documents ----------------------------------------------------------------------

# feedparser never fetches external entities or DTDs, but it keeps internal entities whose
# value is plain text, and its fallback ("loose") parser expands them without any limit: one
# 20 KB entity referenced 20,000 times in a 0.4 MB feed became a 400 MB string (a 50 KB one
# referenced 40,000 times: 54 s and a 5.7 GB peak). expat's amplification limit stops only the
# strict parser, and it only starts counting at 8 MiB. No feed needs DTD entities, so the whole
# DOCTYPE goes before either parser sees the document. This wraps the hook feedparser calls
# right after converting the document to UTF-8, so it holds whatever encoding the bytes came in
# (a check on the raw bytes would miss a UTF-16 document).
_feedparser_replace_doctype = feedparser.api.replace_doctype


def _replace_doctype(data: bytes) -> tuple[str | None, bytes, dict[str, str]]:
    version, data, _entities = _feedparser_replace_doctype(data)
    return version, _without_doctype(data), {}


feedparser.api.replace_doctype = _replace_doctype

_SPACE_RUN = re.compile(rb"\s*")
_DTD_SPECIAL = re.compile(rb"""[\[\]>"']|<!--|<\?""")
_DTD_CLOSERS = {b'"': b'"', b"'": b"'", b"<!--": b"-->", b"<?": b"?>"}


def _without_doctype(data: bytes) -> bytes:
    """``data`` without the DOCTYPE declaration in its prolog (internal subset and all).

    A linear scan (quoted literals, comments and processing instructions may hold any of
    ``[]>``); a declaration never closed takes the rest of the document with it.
    """
    start = _prolog_end(data)
    if not data.startswith(b"<!DOCTYPE", start):
        return data
    in_subset = False
    pos = start + len(b"<!DOCTYPE")
    while (found := _DTD_SPECIAL.search(data, pos)) is not None:
        token, pos = found.group(), found.end()
        if token in _DTD_CLOSERS:
            closer = data.find(_DTD_CLOSERS[token], pos)
            if closer < 0:
                break
            pos = closer + len(_DTD_CLOSERS[token])
        elif token == b"[" or token == b"]":
            in_subset = token == b"["
        elif not in_subset:  # the ">" that ends the declaration
            return data[:start] + data[pos:]
    return data[:start]


def _prolog_end(data: bytes) -> int:
    """Where the prolog's white space, comments and processing instructions end."""
    pos = 0
    while True:
        pos = _SPACE_RUN.match(data, pos).end()  # type: ignore[union-attr]  # \s* always matches
        opener = next((o for o in (b"<?", b"<!--") if data.startswith(o, pos)), None)
        if opener is None:
            return pos
        closer = data.find(_DTD_CLOSERS[opener], pos + len(opener))
        if closer < 0:
            return len(data)
        pos = closer + len(_DTD_CLOSERS[opener])


_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([\w.:-]+)""")
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_REPLACEMENT_UTF8 = "\ufffd".encode()


def _repair_utf8(content: bytes, content_type: str) -> tuple[bytes, str | None]:
    """A UTF-8 document with some invalid bytes, those bytes replaced (and a note saying so).

    Left to feedparser, one stray byte makes it decode the *whole* document as windows-1252,
    turning every Cyrillic word into mojibake. A document declared (or defaulting) to UTF-8
    whose valid multi-byte characters outnumber its invalid sequences is UTF-8 with damage;
    any other (a legacy encoding mislabelled, a Latin-1 byte in ASCII text) stays feedparser's.
    """
    if content.startswith(_UTF16_32_BOMS):
        return content, None
    declared = {m.group(1).lower() for m in [_CHARSET.search(content_type)] if m}
    declared |= {m.group(1).decode("ascii").lower()
                 for m in [_XML_ENCODING.match(content[:1024])] if m}  # fmt: skip
    if not declared <= _UTF8_NAMES:
        return content, None
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return content, None
    text = content.decode("utf-8", "replace")
    invalid = text.count("\ufffd") - content.count(_REPLACEMENT_UTF8)
    valid = sum(1 for ch in text if ch > "\x7f") - text.count("\ufffd")
    if valid < invalid:
        return content, None
    return text.encode("utf-8"), f"invalid UTF-8: {invalid} byte sequences replaced"


_BINARY_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF", b"PK\x03\x04", b"\x1f\x8b")
_BINARY_TYPES = ("image/", "audio/", "video/", "font/", "application/octet-stream",
                 "application/pdf", "application/zip", "application/gzip")  # fmt: skip
_HTML_START = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)\b", re.I | re.S)


def _not_a_feed(content: bytes, headers: Mapping[str, str], reason: str | None) -> str:
    """Why a document that yielded nothing is not a feed, in the words a reader needs."""
    ctype = headers.get("content-type", "").strip() or "no Content-Type"
    if not content.strip():
        return f"not a feed: empty response ({ctype})"
    if content.startswith(_BINARY_MAGIC) or ctype.lower().startswith(_BINARY_TYPES):
        return f"not a feed: binary data ({ctype})"
    if _HTML_START.match(content[:4096]) or ctype.lower().startswith("text/html"):
        return f"not a feed: an HTML page ({ctype})"
    return f"not a feed: {reason or 'no entries and no feed title'}"
