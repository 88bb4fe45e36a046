from __future__ import annotations

import pytest

from monitor.identity import (
    EntryChange,
    article_id,
    canonical_url,
    classify_entry,
    content_hash,
    entry_key,
    same_site,
)
from monitor.types import ParsedEntry


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        ("HTTPS://WWW.Example.COM:443/a/b?utm_source=rss&id=5#top", None,
         "https://www.example.com/a/b?id=5"),
        ("/news/1?fbclid=x&gclid=y", "https://ex.org/feed/", "https://ex.org/news/1"),
        ("story.html", "https://ex.org/feed/rss.xml", "https://ex.org/feed/story.html"),
        ("http://ex.org:8080", None, "http://ex.org:8080/"),
        ("https://ex.org/a?b=1&at_medium=rss&a=2", None, "https://ex.org/a?b=1&a=2"),
        ("https://пример.рф/новости", None, "https://xn--e1afmkfd.xn--p1ai/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8"),
        ("https://ex.org/a%20b", None, "https://ex.org/a%20b"),
        ("mailto:someone@ex.org", None, "mailto:someone@ex.org"),
    ],
)  # fmt: skip
def test_canonical_url(raw: str, base: str | None, expected: str) -> None:
    assert canonical_url(raw, base) == expected


def test_canonical_url_is_idempotent() -> None:
    once = canonical_url("https://Ex.org/x/../y/?utm_campaign=z&q=ü#f")
    assert canonical_url(once) == once


def test_same_site_ignores_www_and_mobile_but_not_other_hosts() -> None:
    assert same_site("https://www.bbc.co.uk/news/1", "https://m.bbc.co.uk/news/1")
    assert not same_site("https://evil.example/", "https://www.bbc.co.uk/")
    assert not same_site("not a url", "also not")


def _entry(**kw: object) -> ParsedEntry:
    base: dict[str, object] = {
        "guid": None, "link": None, "title": "T", "summary": "S", "content": "",
        "published": None, "updated": None,
    }  # fmt: skip
    base.update(kw)
    return ParsedEntry(**base)  # type: ignore[arg-type]


def test_entry_key_prefers_guid_then_link_then_text_hash() -> None:
    assert entry_key(_entry(guid="abc"), "https://x/1") == "guid:abc"
    assert entry_key(_entry(guid="  "), "https://x/1") == "url:https://x/1"
    key = entry_key(_entry(), None)
    assert key.startswith("hash:")
    assert key == entry_key(_entry(), None)
    assert key != entry_key(_entry(title="other"), None)


def test_article_id_is_deterministic_and_depends_on_canonical_url_only() -> None:
    a = article_id("https://ex.org/1", feed="A", key="guid:1")
    assert a == article_id("https://ex.org/1", feed="B", key="guid:9")
    assert a != article_id("https://ex.org/2", feed="A", key="guid:1")
    assert article_id(None, feed="A", key="hash:1") != article_id(None, feed="B", key="hash:1")


def test_content_hash_ignores_whitespace_only_changes() -> None:
    assert content_hash("Title", "a  b\n c") == content_hash(" Title ", "a b c")
    assert content_hash("Title", "a b c") != content_hash("Title!", "a b c")


def test_classify_entry() -> None:
    known = {"guid:1": "h1"}
    assert classify_entry("guid:2", "h", known) is EntryChange.NEW
    assert classify_entry("guid:1", "h1", known) is EntryChange.UNCHANGED
    assert classify_entry("guid:1", "h2", known) is EntryChange.UPDATED
