"""Main text and metadata of an article page, with trafilatura.

Options, chosen by measurement (``bench/extract.py --modes``: one process on 2 shared cores,
pages/s move with the machine's load; P = mean token precision, R = mean token recall against
the gold body; for the trafilatura set, the share of "without" snippets absent / "with" found):

=============  ====  ========================  ========================
set            n     default (with fallback)   ``fast=True``
=============  ====  ========================  ========================
trafilatura    65    P .956  R .947  ~28 p/s   P .951  R .873  ~41 p/s
scrapinghub    50    P .959  R .976  ~37 p/s   P .959  R .976  ~48 p/s
fundus         41    P .936  R .987  ~30 p/s   P .937  R .987  ~40 p/s
readability    13    P .952  R .930  ~29 p/s   P .952  R .930  ~37 p/s
=============  ====  ========================  ========================

``fast`` is only ~1.3x faster and loses 7 points of recall on the most varied set, while even
the default runs at 28+ pages/s per process (a pool of 2 on 2 cores: ~43 pages/s including
language id), far above what a news monitor fetches. So the default (balanced, with the
readability/justext fallback) is used; ``favor_precision`` traded 2.6 points of recall for 1
of precision and was not taken either. Comments are left out: a monitor wants the article,
not its readers. htmldate's extensive date search is off (see ``_extract``).

Hostile input: pages over ``MAX_PAGE_BYTES`` and parsed trees over ``MAX_ELEMENTS`` elements
are refused before extraction, because extraction time grows with the element count (about
0.1-0.15 ms an element; a 5 MB page of 312k link divs took 52 s, the largest gold page has
3.1k elements and a real 40k-element page 3.7 s). libxml2 itself caps nesting at depth 256.
``MAX_TREE_SIZE`` (trafilatura's setting; its keyword argument is gone in 2.3) bounds the
extracted tree (gold maximum: 220 blocks).

trafilatura crashes the process when called from several threads at once
(adbar/trafilatura#925), so every call here holds ``_TRAFILATURA_LOCK``.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from urllib.parse import urljoin, urlsplit, urlunsplit

import trafilatura
from lxml.html import HtmlElement
from trafilatura.settings import Document, set_date_params, use_config

from monitor.errors import ExtractionError
from monitor.language import normalize_language_tag
from monitor.types import ExtractedPage, as_utc

MAX_PAGE_BYTES = 10_000_000
MAX_ELEMENTS = 30_000
MAX_TREE_SIZE = 3_000

_TRAFILATURA_LOCK = threading.Lock()
_CONFIG = use_config()
_CONFIG.set("DEFAULT", "MAX_FILE_SIZE", str(MAX_PAGE_BYTES))  # also caps decompressed size
_CONFIG.set("DEFAULT", "MAX_TREE_SIZE", str(MAX_TREE_SIZE))

# htmldate returns a bare date by default; ask for the time and offset when the page has them.
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
_DATE_FORMATS = (_DATE_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
# C0 controls other than whitespace; ESC stays allowed, ISO-2022-JP pages are full of it.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
# UTF-16 with a BOM, UTF-8 with one, gzip and zstd bodies: trafilatura decodes them itself.
_NOT_BINARY_PREFIXES = (b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"\x1f\x8b", b"\x28\xb5\x2f\xfd")
_BLANK_LINES = re.compile(r"\n{3,}")


def extract_page(html: bytes | str, url: str) -> ExtractedPage:
    """Extract the main text, title, author, date, language and canonical URL of a page.

    Bytes are decoded by trafilatura (it sniffs the encoding). Raises ``ExtractionError``
    when the input is empty, not HTML, too large or too complex, or holds no main text.
    """
    _check_input(html, url)
    with _TRAFILATURA_LOCK:
        tree = _parse(html, url)
        document = _extract(tree, url)
        canonical = canonical_url(tree, url)
    text = _clean_text(document.text or "")
    if not text:
        raise ExtractionError(url, "no main text found")
    return ExtractedPage(
        text=text,
        title=_clean_line(document.title),
        author=_clean_line(document.author),
        published=parse_published(document.date),
        language=normalize_language_tag(document.language) or _html_language(tree),
        canonical_url=canonical,
    )


def _check_input(html: bytes | str, url: str) -> None:
    if len(html) > MAX_PAGE_BYTES:
        unit = "bytes" if isinstance(html, bytes) else "characters"
        raise ExtractionError(url, f"page too large ({len(html)} {unit})")
    if not html.strip():
        raise ExtractionError(url, "empty page")
    if isinstance(html, bytes) and _looks_binary(html):
        raise ExtractionError(url, "not a text document (binary data)")


def _looks_binary(data: bytes) -> bool:
    """Control bytes do not occur in HTML text; random or binary data has ~10% of them."""
    if data.startswith(_NOT_BINARY_PREFIXES):
        return False
    head = data[:8192]
    if _looks_like_utf16(head):
        return False
    return len(_CONTROL_BYTES.findall(head)) > len(head) // 100


def _looks_like_utf16(head: bytes) -> bool:
    # UTF-16 without a BOM (trafilatura decodes it): markup, spaces and digits are ASCII, so
    # one byte of each such pair is NUL, at a single parity (a Ukrainian page: 50% of them).
    # Random data has NULs at 0.4% of positions; 20% of one parity is the line drawn.
    return max(head[0::2].count(0), head[1::2].count(0)) > len(head) // 10


def _parse(html: bytes | str, url: str) -> HtmlElement:
    try:
        tree = trafilatura.load_html(html, MAX_PAGE_BYTES)
    except Exception as e:  # trafilatura's parsing boundary: any failure means "not HTML"
        raise ExtractionError(url, f"unparsable page: {type(e).__name__}: {e}") from e
    if tree is None:
        raise ExtractionError(url, "not an HTML document")
    elements = sum(1 for _ in tree.iter())
    if elements > MAX_ELEMENTS:
        raise ExtractionError(url, f"page too complex ({elements} elements)")
    return tree


def _extract(tree: HtmlElement, url: str) -> Document:
    # Built per call: max_date is "today". No extensive search: over the 169 gold pages it
    # found one more date (of 169) at +42 MB RSS and seconds on its first use (dateparser
    # loads every locale), and the feed entry usually carries the date anyway.
    date_params = {**set_date_params(False), "outputformat": _DATE_FORMAT}
    try:
        document = trafilatura.bare_extraction(
            tree,
            url=url,
            with_metadata=True,
            include_comments=False,
            date_extraction_params=date_params,
            config=_CONFIG,
        )
    except Exception as e:  # a bug deep in trafilatura/htmldate must not end the stage
        raise ExtractionError(url, f"extractor failed: {type(e).__name__}: {e}") from e
    if not isinstance(document, Document):  # None: trafilatura found no main text
        raise ExtractionError(url, "no main text found")
    return document


def _clean_text(text: str) -> str:
    lines = (line.strip() for line in text.replace("\r", "").split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _clean_line(value: str | None) -> str | None:
    cleaned = " ".join(value.split()) if value else ""
    return cleaned or None


def parse_published(value: str | None) -> datetime | None:
    """htmldate's output as aware UTC; a date without time or offset counts as UTC."""
    if not value:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return as_utc(datetime.strptime(value, fmt))
        except ValueError:
            continue
    return None


def _html_language(tree: HtmlElement) -> str | None:
    # trafilatura fills ``language`` only when it filters by language, so read <html lang>.
    root = tree.getroottree().getroot()
    return normalize_language_tag(root.get("lang") or root.get("xml:lang"))


def canonical_url(tree: HtmlElement, page_url: str) -> str | None:
    """The page's ``<link rel=canonical>`` or ``og:url``, absolute, http(s) only.

    Read here rather than from trafilatura's ``url``: that one also comes from ``<base>`` or
    hreflang links and silently defaults to the page URL, so it cannot say "the page named it".
    """
    for candidate in _canonical_candidates(tree):
        resolved = _absolute_http_url(candidate, page_url)
        if resolved is not None and not _is_bare_home_page(resolved, page_url):
            return resolved
    return None


def _canonical_candidates(tree: HtmlElement) -> list[str]:
    links = [
        str(link.get("href", ""))
        for link in tree.iter("link")
        if "canonical" in str(link.get("rel", "")).lower().split()
    ]
    metas = [
        str(meta.get("content", ""))
        for meta in tree.iter("meta")
        if str(meta.get("property") or meta.get("name") or "").lower() == "og:url"
    ]
    return [value.strip() for value in links + metas if value.strip()]


def _absolute_http_url(href: str, page_url: str) -> str | None:
    try:
        parts = urlsplit(urljoin(page_url, href))
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return urlunsplit(parts._replace(fragment=""))


def _is_bare_home_page(candidate: str, page_url: str) -> bool:
    """CMS templates that name the home page as every page's canonical would merge articles."""
    return urlsplit(candidate).path in ("", "/") and urlsplit(page_url).path not in ("", "/")
