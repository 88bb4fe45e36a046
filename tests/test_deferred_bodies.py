"""Lead-first indexing during a backlog: the real service (local feed and pages, trafilatura,
SQLite, the embedded Qdrant store, the alert stage) with the hash embedder.

Every article is fetched first (``run_once(index=False)``), so the next run queues all of them
at once: with ``index.defer_bodies_over: 2`` the first of eight sees more than two others
waiting, and it and the next six (until the queue is empty) are indexed by their lead alone;
their bodies are embedded when the queue is empty.
The bodies repeat a topic's description and the leads do not, so the topic's best passage
tells whether matching saw the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from indexer.embed import HashEmbedder
from indexer.types import PassageKind
from monitor.config import load_config
from monitor.service import App, Progress, RunSummary, make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import Article, ArticleStatus, utcnow
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import FixtureArticle, article_page, write_config

ARTICLES = 8
LIMIT = 2
DEFERRED = ARTICLES - 1  # all queued at once: the last one finds the queue empty
TOPIC_TEXT = (
    "The gas transit pipeline through the valley was shut after the compressor station failed, "
    "and engineers expect repairs of the turbines and valves to take several weeks."
)
TOPIC = {"id": "pipeline", "name": "Gas transit pipeline shut", "description": TOPIC_TEXT,
         "channels": [], "threshold": -1.0}  # fmt: skip
EMBEDDER = HashEmbedder(dim=256)


def _lead(i: int) -> str:
    """A first paragraph of its own (over a quarter of the passage budget: it is the lead)."""
    words = " ".join(f"harbour{i} ferry{i} festival{i} orchestra{i} lantern{i}".split() * 14)
    return f"Local report {i}: {words}."


def _site(server: LocalServer) -> dict[str, tuple[str, str]]:
    items = []
    for i in range(ARTICLES):
        path = f"/news/{i}.html"
        body = tuple(f"{TOPIC_TEXT} Update {i}.{n} follows." for n in range(4))
        article = FixtureArticle(path, "en", f"Harbour festival number {i}", (_lead(i), *body))
        server.route(path, Response(article_page(article, server.url(path))))
        items.append(
            f"<item><title>{article.title}</title><link>{server.url(path)}</link>"
            f"<guid>n{i}</guid><description>Festival {i}.</description></item>"
        )
    feed = ('<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>'
            f"{''.join(items)}</channel></rss>")  # fmt: skip
    url = server.route("/feed.rss", Response(feed.encode(), content_type="application/rss+xml"))
    return {"Wire": (url, "en")}


def _config(tmp_path: Path, server: LocalServer, limit: int, batch: int = 1) -> Path:
    return write_config(tmp_path, _site(server), topics=[TOPIC], alert_backfill="0s",
                        index={"defer_bodies_over": limit, "batch": batch})  # fmt: skip


def _app(config: Path) -> App:
    return make_app(load_config(config), embedder=EMBEDDER)


def _fetch_all(config: Path) -> None:
    """Store every article without indexing it: the next run finds a backlog of eight."""
    app = _app(config)
    summary = asyncio.run(_closing(app, app.run_once(index=False)))
    assert summary.articles_fetched == ARTICLES


def _stored(tmp_path: Path) -> dict[str, Article]:
    with open_state_store(sqlite_url(tmp_path / "data")) as store:
        return {a.id: a for a in store.list_articles()}


async def _closing(app: App, work: Any) -> Any:
    try:
        return await work
    finally:
        await app.aclose()


@dataclass
class Snapshot:
    """The index as it was when the last lead was indexed (before any deferred body)."""

    bodies_indexed: int = -1
    pending: set[str] = field(default_factory=set)
    pending_count: int = -1
    points: dict[str, list[PassageKind]] = field(default_factory=dict)
    best_passages: dict[str, str] = field(default_factory=dict)


def _snapshot_when_all_leads_are_in(app: App, seen: Snapshot) -> Callable[[Progress], None]:
    def on_change(progress: Progress) -> None:
        if progress.articles_indexed != ARTICLES or seen.bodies_indexed >= 0:
            return
        seen.bodies_indexed = progress.bodies_indexed
        seen.pending = set(app.store.bodies_pending(EMBEDDER.model_id, 100))
        seen.pending_count = app.store.count_bodies_pending()
        seen.points = _points(app)
        seen.best_passages = _best_passages(app)

    return on_change


def _points(app: App) -> dict[str, list[PassageKind]]:
    indexer = app.indexer
    return {
        a.id: [p.kind for p, _ in indexer.vectors.article_points(indexer.collection, a.id)]
        for a in app.store.list_articles()
    }


def _best_passages(app: App) -> dict[str, str]:
    return {m.article.article_id: m.article.passage for m in app.store.list_matches()}


def _index(config: Path) -> tuple[RunSummary, Snapshot, dict[str, Any]]:
    """``run_once`` over the backlog; what it saw when the leads were in, and at the end."""
    app = _app(config)
    seen = Snapshot()
    app.progress.on_change = _snapshot_when_all_leads_are_in(app, seen)
    after: dict[str, Any] = {}

    async def run() -> RunSummary:
        summary = await app.run_once()
        after["points"] = _points(app)
        after["best"] = _best_passages(app)
        after["hits"] = app.searcher.search("compressor station turbines valves", limit=20)
        after["articles"] = {a.id: a for a in app.store.list_articles()}
        return summary

    return asyncio.run(_closing(app, run())), seen, after


@pytest.mark.parametrize(
    ("batch", "deferred"),
    [
        (1, DEFERRED),
        # one batch of all eight: seven others wait (over the limit), so all eight defer
        (ARTICLES, ARTICLES),
    ],
)
def test_a_backlog_indexes_leads_first_and_the_bodies_when_the_queue_is_idle(
    http_server: LocalServer, tmp_path: Path, batch: int, deferred: int
) -> None:
    config = _config(tmp_path, http_server, LIMIT, batch)
    _fetch_all(config)
    summary, seen, after = _index(config)

    assert summary.articles_indexed == ARTICLES
    assert summary.bodies_deferred == deferred
    assert summary.bodies_indexed == deferred
    # when the last lead was in, no body had been embedded yet: new articles come first
    assert seen.bodies_indexed == 0
    assert len(seen.pending) == deferred
    assert seen.pending_count == deferred  # what /health reports
    for article_id, kinds in seen.points.items():
        if article_id in seen.pending:  # searchable and clustered by its lead alone
            assert kinds == [PassageKind.LEAD]
        else:
            assert kinds[0] is PassageKind.LEAD
            assert len(kinds) > 1
    # every article was matched at once (on its lead when the body waited) ...
    assert seen.best_passages.keys() == seen.points.keys()
    for article_id in seen.pending:
        assert TOPIC_TEXT not in seen.best_passages[article_id]
    # ... and again once its body was in: the topic's best passage is now in the body
    articles = after["articles"]
    assert all(not a.body_pending for a in articles.values())
    assert all(a.status is ArticleStatus.INDEXED and a.story_id for a in articles.values())
    for article_id in seen.points.keys() - seen.pending:
        assert after["points"][article_id] == seen.points[article_id]
    for article_id in seen.pending:
        assert len(after["points"][article_id]) > 1
        assert TOPIC_TEXT in after["best"][article_id]
    # and the bodies are searchable
    hits = {hit.article_id: hit for hit in after["hits"]}
    assert hits.keys() >= seen.pending
    assert all(hits[a].passage_index > 0 for a in seen.pending)


@pytest.mark.parametrize("batch", [1, 3])
def test_zero_never_defers(http_server: LocalServer, tmp_path: Path, batch: int) -> None:
    config = _config(tmp_path, http_server, 0, batch)
    _fetch_all(config)
    summary, seen, after = _index(config)

    assert summary.articles_indexed == ARTICLES
    assert summary.bodies_deferred == summary.bodies_indexed == 0
    assert seen.pending == set()
    assert all(len(kinds) > 1 for kinds in seen.points.values())
    assert seen.points == after["points"]
    assert all(TOPIC_TEXT in passage for passage in after["best"].values())


def test_a_restart_resumes_the_pending_bodies(http_server: LocalServer, tmp_path: Path) -> None:
    config = _config(tmp_path, http_server, LIMIT)
    _fetch_all(config)
    # the service stops as soon as the leads are in: the bodies are left pending
    app = _app(config)
    stop = asyncio.Event()
    app.progress.on_change = lambda p: stop.set() if p.articles_indexed == ARTICLES else None
    asyncio.run(_closing(app, app.run_forever(stop, serve_api=False)))
    left = {a.id for a in _stored(tmp_path).values() if a.body_pending}
    assert DEFERRED - 1 <= len(left) <= DEFERRED  # shutdown lets a started body finish

    summary, _, after = _index(config)  # nothing new to fetch: the run embeds what was left

    assert summary.articles_indexed == 0
    assert summary.bodies_indexed == len(left)
    assert all(not a.body_pending for a in after["articles"].values())
    for article_id in left:
        assert len(after["points"][article_id]) > 1
    # matched again with its body (one whose body was in before the stop, by the sweep)
    assert all(TOPIC_TEXT in passage for passage in after["best"].values())


def test_reindexing_embeds_every_passage_and_never_matches_again(
    http_server: LocalServer, tmp_path: Path
) -> None:
    config = _config(tmp_path, http_server, LIMIT)
    _fetch_all(config)
    _index(config)
    # `newsmon reindex` with another model: everything again, bodies deferred as a backlog
    app = make_app(load_config(config), embedder=HashEmbedder(dim=128))
    matched = {a.id: a.matched_at for a in app.store.list_articles()}
    assert app.store.reset_index(app.indexer.embedder.model_id, utcnow()) == ARTICLES

    async def reindex() -> tuple[RunSummary, dict[str, list[PassageKind]]]:
        return await app.index_pending(), _points(app)

    summary, points = asyncio.run(_closing(app, reindex()))

    assert summary.articles_indexed == ARTICLES
    assert summary.bodies_deferred == summary.bodies_indexed == DEFERRED
    assert all(len(kinds) > 1 for kinds in points.values())
    articles = _stored(tmp_path)
    assert all(not a.body_pending and a.index_model == "hash:128" for a in articles.values())
    assert {a.id: a.matched_at for a in articles.values()} == matched  # matched once only
