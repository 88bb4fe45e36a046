"""A feed that lists thousands of entries in one document (broken or hostile) gets only its
newest ``fetch.max_entries_per_poll`` taken, and says so on the feed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import load_config
from monitor.pipeline import newest_entries
from monitor.service import make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import ParsedEntry
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import run_once, write_config

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def entry(n: int, *, dated: bool = True) -> ParsedEntry:
    published = T0 + timedelta(minutes=n) if dated else None
    return ParsedEntry(f"g{n}", f"https://x.example/{n}", f"t{n}", "", "", published, None)


def test_newest_entries_by_date_in_document_order() -> None:
    entries = [entry(n) for n in (3, 9, 1, 7, 5)]
    assert [e.guid for e in newest_entries(entries, 2)] == ["g9", "g7"]
    assert newest_entries(entries, 5) == entries


def test_newest_entries_without_dates_are_the_first_ones() -> None:
    entries = [entry(3), entry(9, dated=False), entry(1)]
    assert [e.guid for e in newest_entries(entries, 2)] == ["g3", "g9"]


def flood(count: int, base: str) -> bytes:
    items = "".join(
        f"<item><title>Item {n}</title><link>{base}/gone/{n}</link><guid>n{n}</guid>"
        f"<description>Text of item {n}</description>"
        f"<pubDate>{(T0 + timedelta(minutes=n)).strftime('%a, %d %b %Y %H:%M:%S +0000')}"
        "</pubDate></item>"
        for n in range(count)
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Flood</title>{items}'
            "</channel></rss>").encode()  # fmt: skip


@pytest.mark.timeout(60)
def test_a_flood_of_entries_is_capped_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalServer() as server:
        url = server.route("/flood.rss", Response(flood(5000, server.base_url),
                                                  content_type="application/rss+xml"))  # fmt: skip
        config_path = write_config(tmp_path, {"Flood": (url, "en")},
                                   fetch={"max_entries_per_poll": 40})  # fmt: skip
        config = load_config(config_path)
        app = make_app(config)

        run_once(app, index=False)
        page_requests = [r.path for r in server.requests if r.path.startswith("/gone/")]
    store = open_state_store(sqlite_url(config.data_dir))
    try:
        articles = store.list_articles(limit=None)
        [feed] = store.list_feeds()
    finally:
        store.close()
    assert sorted(int(a.url.rsplit("/", 1)[1]) for a in articles) == list(range(4960, 5000))
    assert len(set(page_requests)) == 40
    assert feed.malformed_reason is not None
    assert "5000 entries in one document; the newest 40 taken" in feed.malformed_reason
    assert main(["--config", str(config_path), "feeds", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert "the newest 40 taken" in row["malformed_reason"]
