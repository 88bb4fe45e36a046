"""The long-running service: APScheduler jobs per feed, the article workers and the real
extraction process pool, against the local fixture site."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from monitor.config import load_config
from monitor.service import make_app
from monitor.types import ArticleStatus, TextSource
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import fixture_articles, serve_site, site_feeds, write_config


def test_service_polls_each_feed_once_processes_articles_and_reschedules(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server)
    feeds = site_feeds(urls)
    feeds["Broken"] = (http_server.route("/broken.rss", Response(b"no", status=503,
                                                                 headers={"Retry-After": "600"})),
                       "en")  # fmt: skip
    config = load_config(write_config(tmp_path, feeds, extract={"processes": 2}))
    app = make_app(config)
    expected = len(fixture_articles())

    async def scenario() -> dict[str, datetime | None]:
        stop = asyncio.Event()
        service = asyncio.create_task(app.run_forever(stop))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            fetched = app.store.count_articles(ArticleStatus.FETCHED)
            polled = [f for f in app.store.list_feeds() if f.last_polled_at]
            if fetched == expected and len(polled) == len(feeds):
                break
        jobs = {job.id: job.next_run_time for job in app.scheduler.get_jobs()}
        stop.set()
        await service
        await app.aclose()
        return jobs

    jobs = asyncio.run(scenario())

    store = make_app(config).store
    states = {f.name: f for f in store.list_feeds()}
    articles = store.list_articles()
    store.close()
    assert len(articles) == expected
    assert all(a.status is ArticleStatus.FETCHED for a in articles)
    assert all(a.text_source is TextSource.PAGE for a in articles)
    for path in ("/feeds/de.rss", "/feeds/en.atom", "/feeds/ru.rss", "/feeds/uk.rdf"):
        assert http_server.hits(path) == 1
    now = datetime.now(UTC)
    # every feed, the broken one too, has exactly one pending job at its stored next poll time
    assert set(jobs) == {f"feed:{name}" for name in feeds} | {"due-articles"}
    for name, state in states.items():
        assert state.next_poll_at is not None
        assert state.next_poll_at > now
        assert jobs[f"feed:{name}"] == state.next_poll_at
    broken = states["Broken"]
    assert "HTTP 503" in (broken.last_error or "")
    assert broken.next_poll_at is not None
    assert (broken.next_poll_at - now).total_seconds() > 590  # Retry-After honoured
