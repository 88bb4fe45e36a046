"""Story clustering does not depend on the order the reports arrive in.

The nine fixture articles (the Abu Dhabi talks in de/en/ru/uk, a Donbas explainer in en and ru,
security guarantees in de and uk, a Grand Prix report) reach the real service one feed at a
time, in orders that online clustering alone got wrong (measured on the bundled model): the
Russian talks report arrives right after the English Donbas explainer and joins it (their lead
margin is +0.008), and the talks that follow either leave it there or are pulled into the
explainer's story through it. Re-checking a new article's close neighbours moves them to the
story they fit best, while no alert has reported the story they are in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.service import make_app
from monitor.state import open_state_store, sqlite_url
from tests.support.httpserver import LocalServer, Request, Response
from tests.support.newsfixtures import TALKS_TOPIC, article_page, fixture_articles, write_config

TALKS = {
    "/ausland/abu-dhabi-gespraeche-100.html",
    "/world/2026/nov/28/abu-dhabi-talks-ceasefire",
    "/politics/20261128/abu-dabi.html",
    "/news/2026/11/28/abu-dabi/",
}
DONBAS = {"/world/2026/nov/27/donbas-withdrawal-explainer", "/politics/20261127/donbass.html"}
#: fixture_articles() indices: 0 de talks, 1 de guarantees, 2 de Grand Prix, 3 en talks,
#: 4 en Donbas, 5 ru talks, 6 ru Donbas, 7 uk guarantees, 8 uk talks
LEFT_OUT = (4, 5, 6, 7, 3, 0, 8, 2, 1)  # alone: the Russian report stays with the explainer
PULLED_IN = (4, 5, 8, 7, 1, 6, 3, 0, 2)  # alone: the explainer ends up in the talks' story


def ingest_in_order(
    tmp_path: Path, order: tuple[int, ...], topic: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One feed per article; each run of the service finds one more of them published, in
    ``order``, so the articles are indexed in that order whatever the machine's load. With a
    ``topic``, its alerts go to a local webhook receiver."""
    articles = fixture_articles()
    published: set[int] = set()

    def feed(index: int, item_url: str) -> Callable[[Request], Response]:
        article = articles[index]
        item = f"<item><title>{article.title}</title><link>{item_url}</link></item>"

        def serve(request: Request) -> Response:
            rss = (
                '<?xml version="1.0"?><rss version="2.0"><channel><title>Feed</title>'
                f"{item if index in published else ''}</channel></rss>"
            )
            return Response(rss.encode(), content_type="application/rss+xml")

        return serve

    with LocalServer() as server:
        overrides: dict[str, Any] = {}
        if topic is not None:
            hook = server.route("/hook", Response(b"ok", content_type="text/plain"))
            overrides |= {
                "topics": [{**topic, "channels": ["hook"]}],
                "channels": {"hook": {"type": "webhook", "url": hook}},
                "alert_backfill": "3650d",  # the fixture pages are dated in the past
                "delivery": {"wait": "5s"},
            }
        feeds = {}
        for index, article in enumerate(articles):
            page = server.route(
                article.path, Response(article_page(article, server.url(article.path)))
            )
            url = server.route(f"/feed-{index}.rss", feed(index, page))
            feeds[f"Feed {index}"] = (url, article.language)
        config = load_config(write_config(tmp_path, feeds, **overrides))
        app = make_app(config)

        async def one_by_one() -> None:
            try:
                for index in order:
                    published.add(index)
                    await app.run_once()
            finally:
                await app.aclose()

        asyncio.run(one_by_one())
        base = server.base_url
    store = open_state_store(sqlite_url(config.data_dir))
    try:
        stored = store.list_articles()
        indexed = sorted(stored, key=lambda a: a.indexed_at or a.discovered_at)
        arrival = [a.canonical_url.removeprefix(base) for a in indexed]
        assert arrival == [articles[i].path for i in order], "not indexed in the intended order"
        members: dict[str, set[str]] = {}
        for article in stored:
            assert article.story_id is not None
            members.setdefault(article.story_id, set()).add(article.canonical_url[len(base) :])
        stories = store.get_stories(list(members))
        listed = {s.id for s in store.list_stories()}
        alerted = store.alerted_stories(list(members))
    finally:
        store.close()
    return {"members": members, "stories": stories, "listed": listed, "config": config,
            "alerted": {frozenset(members[sid]) for sid in alerted}}  # fmt: skip


@pytest.mark.parametrize("order", [LEFT_OUT, PULLED_IN], ids=["left-out", "pulled-in"])
def test_the_talks_end_up_in_one_story_whatever_the_order(
    tmp_path: Path, order: tuple[int, ...]
) -> None:
    run = ingest_in_order(tmp_path, order)
    groups = list(run["members"].values())
    assert TALKS in groups
    assert DONBAS in groups  # the explainer is back with its Russian counterpart
    # the summaries follow their members, and an emptied story is gone
    assert run["listed"] == set(run["members"])
    for story_id, paths in run["members"].items():
        story = run["stories"][story_id]
        assert story.article_count == len(paths)
    talks = next(run["stories"][sid] for sid, paths in run["members"].items() if paths == TALKS)
    assert set(talks.languages) == {"de", "en", "ru", "uk"}
    assert len(talks.sources) == 4
    # the vector payloads carry the story ids too (search by story, story neighbours)
    app = make_app(run["config"])
    try:
        for article in app.store.list_articles():
            points = app.indexer.vectors.article_points(app.indexer.collection, article.id)
            assert points, article.canonical_url
            assert {p.story_id for p, _ in points} == {article.story_id}
    finally:
        asyncio.run(app.aclose())


def test_a_story_an_alert_reported_keeps_its_articles(tmp_path: Path) -> None:
    """The Russian talks report alerts as soon as it joins the explainer's story; the alert
    told its readers what that story was, so it is not reshaped afterwards (the alert stage
    joins the talks' own story to that alert instead)."""
    run = ingest_in_order(tmp_path, LEFT_OUT, topic=TALKS_TOPIC)
    pair = {"/world/2026/nov/27/donbas-withdrawal-explainer", "/politics/20261128/abu-dabi.html"}
    assert pair in run["members"].values()
    assert frozenset(pair) in run["alerted"]
    assert TALKS - pair in run["members"].values()
