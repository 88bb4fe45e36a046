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
_BLANK_LINES = re.compile(r"\n\s*\n+")


def parse_feed(content: bytes, url: str, headers: Mapping[str, str] | None = None) -> ParsedFeed:
    """Parse a feed document fetched from ``url`` (the final URL after redirects)."""
    response_headers = {k.lower(): v for k, v in (headers or {}).items()}
    response_headers["content-location"] = url
    try:
        parsed = feedparser.parse(content, response_headers=response_headers, sanitize_html=False)
    except Exception as e:  # feedparser is defensive, but a parser bug must not stop a poll
        raise FeedParseError(url, f"feed parser failed: {type(e).__name__}: {e}") from e
    reason = _malformed_reason(parsed)
    entries = tuple(_entry(e) for e in parsed.entries)
    if not entries and not parsed.feed.get("title"):
        raise FeedParseError(url, f"not a feed: {reason or 'no entries and no feed title'}")
    feed = parsed.feed
    return ParsedFeed(
        title=_clean_line(feed.get("title", "")),
        link=feed.get("link"),
        language=(feed.get("language") or None),
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
    link = raw.get("link") or _alternate_link(raw)
    return ParsedEntry(
        guid=(raw.get("id") or None),
        link=link.strip() if isinstance(link, str) and link.strip() else None,
        title=_clean_line(_text_of(raw.get("title_detail")) or raw.get("title", "")),
        summary=_text_of(raw.get("summary_detail")) or _clean_text(raw.get("summary", "")),
        content=_longest_content(raw.get("content")),
        # dict.get: feedparser's own get() maps a missing published date to the updated one
        published=_datetime(dict.get(raw, "published_parsed")),
        updated=_datetime(dict.get(raw, "updated_parsed")),
        author=_clean_line(raw.get("author", "")) or None,
    )


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
    value = detail.get("value") or ""
    if "html" in (detail.get("type") or "") or _TAG.search(value):
        return html_to_text(value)
    return _clean_text(value)


def html_to_text(fragment: str) -> str:
    """Readable plain text of an HTML fragment: block elements become line breaks."""
    if not fragment.strip():
        return ""
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
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _clean_line(text: str) -> str:
    return _SPACES.sub(" ", text.replace("\n", " ")).strip()


def _datetime(value: time.struct_time | None) -> datetime | None:
    """feedparser's parsed dates are UTC struct_times."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None
