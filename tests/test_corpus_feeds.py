"""Every real-world feed of ../shared/corpus/feeds_* served over HTTP through `run --once`.

Each one either parses (its entries become articles) or is recorded on its feed with a clear
error; none stops the run. Article pages are never fetched from the internet: the entries link to
real outlets, which the loopback-only transport refuses, so their feed text is stored instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.embed import HashEmbedder
from monitor.config import load_config
from monitor.fetch import HttpFetcher
from monitor.service import make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import ArticleStatus, TextSource
from tests.conftest import corpus_feed_files
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import run_once, write_config
from tests.support.offline import LoopbackOnlyTransport


@pytest.mark.corpus
@pytest.mark.timeout(240)
def test_every_corpus_feed_parses_or_is_recorded_and_none_stops_the_run(
    http_server: LocalServer, tmp_path: Path
) -> None:
    files = corpus_feed_files()
    feeds = {}
    for i, path in enumerate(files):
        url = http_server.route(
            f"/corpus/{i}.xml", Response(path.read_bytes(), content_type="application/xml")
        )
        feeds[f"{i:03d} {path.parent.name}/{path.name}"[:80]] = (url, "en")  # fmt: skip
    config = load_config(write_config(tmp_path, feeds, fetch={"timeout": "3s"}))
    fetcher = HttpFetcher.from_config(config.fetch, transport=LoopbackOnlyTransport())
    app = make_app(config, fetcher=fetcher, embedder=HashEmbedder())

    summary = run_once(app)

    store = open_state_store(sqlite_url(config.data_dir))
    states = {f.name: f for f in store.list_feeds()}
    articles = store.list_articles()
    store.close()
    assert summary.feeds_polled == len(files)
    assert len(states) == len(files)
    parsed = [s for s in states.values() if s.last_error is None]
    failed = [s for s in states.values() if s.last_error is not None]
    # most of these suites are valid feeds; the broken ones must say why, naming their URL
    assert len(parsed) > len(files) / 2
    for state in failed:
        assert state.url in state.last_error
        assert state.error_count == 1
        assert state.next_poll_at is not None
    for state in parsed:
        assert state.last_status == 200
    assert len(articles) > 500
    assert not [a for a in articles if a.status is ArticleStatus.PENDING]
    stored = [a for a in articles if a.status is ArticleStatus.INDEXED]
    assert all(a.text_source is TextSource.FEED for a in stored)
    reasons = {(a.last_error or "").split(":")[0] for a in stored}
    # "page blocked": relative links (intertwingly.atom) resolve against the feed's URL, i.e.
    # to the local server, which answers 404
    assert reasons <= {"page fetch failed", "entry has no link", "page refused", "page not fetched",
                       "page blocked"}  # fmt: skip
