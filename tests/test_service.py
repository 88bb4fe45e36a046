"""The long-running service: APScheduler jobs per feed, the article and index workers, the real
extraction process pool, and the local HTTP API that CLI commands use while it runs."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from indexer.embed import HashEmbedder
from monitor.cli import main
from monitor.config import load_config
from monitor.memory import trim_available
from monitor.service import App, make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import ArticleStatus, TextSource
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import (
    fixture_articles,
    free_port,
    serve_site,
    site_feeds,
    write_config,
)


async def _until(app: App, expected: int, feeds: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        indexed = app.store.count_articles(ArticleStatus.INDEXED)
        polled = [f for f in app.store.list_feeds() if f.last_polled_at]
        if indexed == expected and len(polled) == feeds:
            return


def test_service_polls_each_feed_once_processes_articles_and_reschedules(
    http_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = serve_site(http_server)
    feeds = site_feeds(urls)
    feeds["Broken"] = (http_server.route("/broken.rss", Response(b"no", status=503,
                                                                 headers={"Retry-After": "600"})),
                       "en")  # fmt: skip
    port = free_port()
    config_path = write_config(tmp_path, feeds, extract={"processes": 2}, api={"port": port})
    config = load_config(config_path)
    app = make_app(config, embedder=HashEmbedder())
    expected = len(fixture_articles())
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        service = asyncio.create_task(app.run_forever(stop))
        await _until(app, expected, len(feeds))
        seen["jobs"] = {job.id: job.next_run_time for job in app.scheduler.get_jobs()}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            seen["health"] = (await client.get("/health")).json()
            found = await client.get("/search", params={"q": "Abu Dhabi", "lang": "de"})
            seen["search"] = found.json()
            seen["bad"] = (
                await client.get("/search", params={"q": "x", "limit": 1000})
            ).status_code
        # the CLI finds the running service and searches through it (the embedded store is
        # locked by the service, so opening it directly would fail)
        seen["cli"] = await asyncio.to_thread(
            main, ["--config", str(config_path), "search", "Abu Dhabi", "--json"]
        )
        stop.set()
        await service
        await app.aclose()

    asyncio.run(scenario())

    store = open_state_store(sqlite_url(config.data_dir))
    states = {f.name: f for f in store.list_feeds()}
    articles = store.list_articles()
    store.close()
    assert len(articles) == expected
    assert all(a.status is ArticleStatus.INDEXED for a in articles)
    assert all(a.text_source is TextSource.PAGE for a in articles)
    assert all(a.story_id for a in articles)
    for path in ("/feeds/de.rss", "/feeds/en.atom", "/feeds/ru.rss", "/feeds/uk.rdf"):
        assert http_server.hits(path) == 1
    now = datetime.now(UTC)
    # every feed, the broken one too, has exactly one pending job at its stored next poll time
    jobs = seen["jobs"]
    assert set(jobs) == {f"feed:{name}" for name in feeds} | {
        "due-articles",
        "vector-maintenance",
        "alert-follow-ups",
        "weekly-digest",
        "weekly-digest-catch-up",
    } | ({"memory-trim"} if trim_available() else set())
    for name, state in states.items():
        assert state.next_poll_at is not None
        assert state.next_poll_at > now
        assert jobs[f"feed:{name}"] == state.next_poll_at
    broken = states["Broken"]
    assert "HTTP 503" in (broken.last_error or "")
    assert broken.next_poll_at is not None
    assert (broken.next_poll_at - now).total_seconds() > 590  # Retry-After honoured
    # the API answered while the service ran
    assert seen["health"]["status"] == "ok"
    assert seen["search"]
    assert {hit["language"] for hit in seen["search"]} == {"de"}
    assert seen["bad"] == 422
    assert seen["cli"] == 0
    cli_hits = json.loads(capsys.readouterr().out)
    assert {"url", "title", "language", "source", "published", "score", "passage",
            "story_id"} <= cli_hits[0].keys()  # fmt: skip


def test_a_stop_waits_for_vector_maintenance_before_closing_the_store(
    http_server: LocalServer, tmp_path: Path
) -> None:
    """The maintenance job runs the store's flush in a thread; a stop cancels the job, never the
    thread, so aclose() must wait for it rather than close the store under it."""
    import threading

    from indexer.qdrant_edge import EdgeVectorStore

    events: list[str] = []
    release = threading.Event()

    class SlowFlush(EdgeVectorStore):
        def maintain(self) -> None:
            events.append("maintain started")
            release.wait(5)
            super().maintain()
            events.append("maintain done")

        def close(self) -> None:
            events.append("close")
            super().close()

    config = load_config(write_config(tmp_path, site_feeds(serve_site(http_server))))
    app = make_app(config, embedder=HashEmbedder(),
                   vectors=SlowFlush(config.data_dir / "vectors"))  # fmt: skip

    async def scenario() -> None:
        job = asyncio.create_task(app._maintain_vectors())
        while not events:
            await asyncio.sleep(0.01)
        job.cancel()  # what the scheduler's shutdown does to a running job
        with pytest.raises(asyncio.CancelledError):
            await job
        asyncio.get_running_loop().call_later(0.2, release.set)
        await app.aclose()

    asyncio.run(scenario())
    assert events == ["maintain started", "maintain done", "close"]


def test_a_scheduled_job_cancelled_by_a_stop_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    from monitor.service import _stoppable

    async def _follow_ups() -> None:
        await asyncio.sleep(10)

    async def scenario() -> None:
        job = asyncio.create_task(_stoppable(_follow_ups)())
        await asyncio.sleep(0.01)
        job.cancel()
        await job  # no CancelledError for APScheduler to log as a failure

    caplog.set_level("INFO", logger="newsmon")
    asyncio.run(scenario())
    assert "follow ups interrupted by the shutdown" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
