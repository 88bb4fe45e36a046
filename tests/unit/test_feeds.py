"""Feed parsing against golden files: tests/fixtures/feeds/X.xml -> X.expected.json.

Regenerate after a deliberate change with ``NEWSMON_REGEN_GOLDEN=1 pytest tests/unit/test_feeds.py``
and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import FeedParseError
from monitor.feeds import html_to_text, parse_feed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
FEED_URLS = {
    "de_rss2.xml": "https://nachrichten.example/feeds/alle.rss",
    "en_atom.xml": "https://news.example/world/rss",
    "ru_rss2_cp1251.xml": "https://novosti.example/export/rss2/index.xml",
    "uk_rdf.xml": "https://novyny.example/rss/",
}
HEADERS = {"ru_rss2_cp1251.xml": {"content-type": "application/rss+xml"}}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@pytest.mark.parametrize("name", sorted(FEED_URLS))
def test_feed_matches_golden(name: str) -> None:
    parsed = parse_feed((FIXTURES / name).read_bytes(), FEED_URLS[name], HEADERS.get(name))
    actual = _jsonable(parsed)
    golden = FIXTURES / (name.rsplit(".", 1)[0] + ".expected.json")
    if os.environ.get("NEWSMON_REGEN_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", "utf-8")
    assert actual == json.loads(golden.read_text("utf-8"))


def test_cp1251_feed_decodes_cyrillic() -> None:
    parsed = parse_feed((FIXTURES / "ru_rss2_cp1251.xml").read_bytes(), FEED_URLS[
        "ru_rss2_cp1251.xml"])  # fmt: skip
    assert parsed.title.startswith("Новости")
    assert "Абу-Даби" in parsed.entries[0].title


def test_relative_links_resolve_against_the_feed_url_and_xml_base() -> None:
    de = parse_feed((FIXTURES / "de_rss2.xml").read_bytes(), FEED_URLS["de_rss2.xml"])
    assert de.entries[0].link is not None
    assert de.entries[0].link.startswith("https://nachrichten.example/ausland/")
    en = parse_feed((FIXTURES / "en_atom.xml").read_bytes(), FEED_URLS["en_atom.xml"])
    assert en.entries[0].link == (
        "https://news.example/world/2026/nov/28/abu-dhabi-talks-ceasefire?CMP=rss"
    )


def test_update_hints_from_ttl_and_syndication() -> None:
    de = parse_feed((FIXTURES / "de_rss2.xml").read_bytes(), FEED_URLS["de_rss2.xml"])
    uk = parse_feed((FIXTURES / "uk_rdf.xml").read_bytes(), FEED_URLS["uk_rdf.xml"])
    assert de.update_hint_seconds == 30 * 60
    assert uk.update_hint_seconds == 900


def test_malformed_feed_still_yields_entries_and_records_why() -> None:
    broken = (FIXTURES / "de_rss2.xml").read_bytes().replace(b"</channel>", b"<oops></channel>")
    parsed = parse_feed(broken, FEED_URLS["de_rss2.xml"])
    assert parsed.malformed_reason
    assert len(parsed.entries) == 3


@pytest.mark.parametrize("junk", [b"", b"<html><body>Not a feed</body></html>", b"\x00\xff" * 50])
def test_non_feed_documents_are_a_clear_error(junk: bytes) -> None:
    with pytest.raises(FeedParseError, match=r"https://x\.example/feed: not a feed"):
        parse_feed(junk, "https://x.example/feed")


def test_html_to_text_keeps_paragraphs_and_drops_scripts() -> None:
    html = "<p>One <b>two</b></p><script>alert(1)</script><ul><li>a</li><li>b</li></ul>x&amp;y"
    assert html_to_text(html) == "One two\n\na\n\nb\n\nx&y"
