"""End to end over a real local HTTP server: config -> make_app -> run_once -> state -> CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from indexer.embed import HashEmbedder
from monitor.cli import main
from monitor.config import load_config
from monitor.service import App, make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import ArticleStatus, TextSource
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import (
    BOILERPLATE_MARK,
    fixture_articles,
    run_once,
    serve_site,
    site_feeds,
    write_config,
)


def _app(config_path: Path) -> App:
    # the hash embedder keeps these ingest tests fast; indexing quality is tested elsewhere
    return make_app(load_config(config_path), embedder=HashEmbedder())


def _run_once(config_path: Path):  # type: ignore[no-untyped-def]
    app = _app(config_path)
    return run_once(app), app


def _articles(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = open_state_store(sqlite_url(tmp_path / "data"))
    try:
        return {a.canonical_url: a for a in store.list_articles()}, {
            f.name: f for f in store.list_feeds()
        }
    finally:
        store.close()


def test_run_once_stores_every_article_with_page_text_and_language(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server)
    summary, _ = _run_once(write_config(tmp_path, site_feeds(urls)))

    expected = {http_server.url(a.path): a for a in fixture_articles()}
    articles, feeds = _articles(tmp_path)
    assert summary.feeds_polled == 4
    assert summary.feeds_failed == 0
    assert summary.articles_new == len(expected) == len(articles)
    for url, fixture in expected.items():
        stored = articles[url]
        assert stored.status is ArticleStatus.INDEXED
        assert stored.text_source is TextSource.PAGE, stored.last_error
        assert stored.language == fixture.language
        assert stored.text
        assert fixture.paragraphs[1][:60] in stored.text
        assert BOILERPLATE_MARK not in stored.text
        assert stored.title == fixture.title
    for feed in feeds.values():
        assert feed.last_error is None
        assert feed.last_status == 200
        assert feed.items_new == feed.items_seen > 0
        assert feed.next_poll_at is not None


def test_tracking_parameters_and_fragments_are_stripped_from_article_urls(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server)
    _run_once(write_config(tmp_path, site_feeds(urls)))
    articles, _ = _articles(tmp_path)
    canonical = {a.canonical_url for a in articles.values()}
    assert http_server.url("/ausland/abu-dhabi-gespraeche-100.html") in canonical
    assert http_server.url("/ausland/sicherheitsgarantien-102.html") in canonical
    assert not any("utm_" in c or "#" in c for c in canonical)


def test_second_run_uses_conditional_get_and_fetches_nothing_again(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server)
    config = write_config(tmp_path, site_feeds(urls))
    _run_once(config)
    requests_after_first = len(http_server.requests)

    summary, _ = _run_once(config)

    assert summary.articles_new == 0
    second = http_server.requests[requests_after_first:]
    assert len(second) == 4  # one conditional GET per feed, no page fetched again
    assert all(r.headers.get("if-none-match") for r in second)
    _, feeds = _articles(tmp_path)
    assert {f.last_status for f in feeds.values()} == {304}


def test_changed_entry_is_an_update_of_the_same_article(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server, etag=False)
    config = write_config(tmp_path, site_feeds(urls))
    _run_once(config)
    feed_path = "/feeds/uk.rdf"
    old = http_server.routes[feed_path]
    assert isinstance(old, Response)
    http_server.route(
        feed_path,
        Response(
            old.body.replace("тривають другий день".encode(), "тривають третій день".encode()),
            content_type=old.content_type,
        ),
    )
    summary, _ = _run_once(config)
    articles, _ = _articles(tmp_path)
    assert summary.articles_new == 1  # counted as changed work, but not a new article
    assert len(articles) == len(fixture_articles())
    updated = articles[http_server.url("/news/2026/11/28/abu-dabi/")]
    assert updated.version == 2
    assert updated.status is ArticleStatus.INDEXED
    assert http_server.hits("/news/2026/11/28/abu-dabi/") == 2  # processed again
    assert http_server.hits("/news/2026/11/28/garantii-bezpeky/") == 1


def test_broken_feeds_are_recorded_and_never_stop_healthy_ones(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server)
    feeds = site_feeds(urls)
    feeds["Down"] = (http_server.route("/down.rss", Response(b"oops", status=500)), "en")
    feeds["Gone"] = (http_server.route("/gone.rss", Response(b"", status=410)), "de")
    feeds["Slow"] = (
        http_server.route("/slow.rss", Response(b"<rss>" + b" " * 4000, chunk_delay=0.5,
                                                chunk_size=100)),
        "ru",
    )  # fmt: skip
    feeds["Huge"] = (
        http_server.route("/huge.rss", Response(b"<rss>" + b"x" * 3_000_000,
                                                content_type="application/xml")),
        "uk",
    )  # fmt: skip
    feeds["Not a feed"] = (http_server.route("/page.html", Response(b"<html>hi</html>")), "de")
    feeds["Refused"] = ("http://127.0.0.1:9/rss", "en")
    config = write_config(tmp_path, feeds, fetch={"timeout": "2s", "max_bytes": "1MB"})

    summary, _ = _run_once(config)

    assert summary.feeds_polled == 10
    assert summary.feeds_failed == 6
    assert summary.articles_fetched == len(fixture_articles())
    _, state = _articles(tmp_path)
    assert "HTTP 500" in (state["Down"].last_error or "")
    assert "HTTP 410" in (state["Gone"].last_error or "")
    assert "no complete response within 2s" in (state["Slow"].last_error or "")
    assert "larger than" in (state["Huge"].last_error or "")
    assert "not a feed" in (state["Not a feed"].last_error or "")
    assert "127.0.0.1:9" in (state["Refused"].last_error or "")
    for name in ("Down", "Gone", "Slow", "Huge", "Not a feed", "Refused"):
        assert state[name].error_count == 1
        assert state[name].consecutive_failures == 1
        assert state[name].next_poll_at is not None


def test_blocked_page_falls_back_to_feed_text(http_server: LocalServer, tmp_path: Path) -> None:
    urls = serve_site(http_server)
    blocked = "/world/2026/nov/27/donbas-withdrawal-explainer"
    http_server.route(blocked, Response(b"Forbidden", status=403))
    _run_once(write_config(tmp_path, site_feeds(urls)))
    articles, _ = _articles(tmp_path)
    article = articles[http_server.url(blocked)]
    assert article.status is ArticleStatus.INDEXED
    assert article.text_source is TextSource.FEED
    assert "pull its troops out" in (article.text or "")
    assert "403" in (article.last_error or "")
    assert article.language == "en"


def test_private_article_addresses_are_refused_by_default(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server)
    config = write_config(tmp_path, site_feeds(urls), fetch={"allow_private_addresses": False})
    summary, _ = _run_once(config)
    articles, feeds = _articles(tmp_path)
    # the configured feed URLs are trusted, the article links they contain are not
    assert all(f.last_error is None for f in feeds.values())
    assert summary.articles_fetched == len(articles) > 0
    assert all(a.text_source is TextSource.FEED for a in articles.values())
    assert all("refused" in (a.last_error or "") for a in articles.values())
    page_paths = {a.path for a in fixture_articles()}
    assert not any(r.path in page_paths for r in http_server.requests)


def test_interrupted_run_resumes_pending_articles_without_refetching_feeds(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server)
    config_path = write_config(tmp_path, site_feeds(urls))
    config = load_config(config_path)
    app = make_app(config, embedder=HashEmbedder())

    async def poll_only() -> None:  # the "crash": entries stored, pages never processed
        app.sync_feeds()
        for feed in config.feeds:
            await app.pipeline.poll_feed(feed)
        await app.aclose()

    asyncio.run(poll_only())
    articles, _ = _articles(tmp_path)
    assert {a.status for a in articles.values()} == {ArticleStatus.PENDING}
    hits_before = len(http_server.requests)

    summary, _ = _run_once(config_path)

    articles, _ = _articles(tmp_path)
    assert {a.status for a in articles.values()} == {ArticleStatus.INDEXED}
    assert summary.articles_new == 0
    assert summary.articles_fetched == len(articles)
    later = http_server.requests[hits_before:]
    assert sum(1 for r in later if r.path.startswith("/feeds/")) == 4  # 304s
    assert sum(1 for r in later if not r.path.startswith("/feeds/")) == len(articles)


def test_same_page_under_two_urls_is_stored_once(http_server: LocalServer, tmp_path: Path) -> None:
    urls = serve_site(http_server)
    original = fixture_articles()[0]
    from tests.support.newsfixtures import article_page

    # an AMP copy at another URL whose page names the original as canonical
    http_server.route("/amp/copy.html", Response(
        article_page(original, http_server.url(original.path))))  # fmt: skip
    feed = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Mirror</title>'
        f"<item><title>{original.title}</title><link>{http_server.url('/amp/copy.html')}</link>"
        "<description>copy</description></item></channel></rss>"
    )
    feeds = site_feeds(urls)
    feeds["Mirror"] = (http_server.route("/mirror.rss", Response(feed.encode(),
                                                                content_type="application/rss+xml")),
                       "de")  # fmt: skip
    # the mirror is processed last, so the original is already stored
    config = write_config(tmp_path, {k: feeds[k] for k in [*urls, "Mirror"]})
    _run_once(config)
    articles, _ = _articles(tmp_path)
    copy = articles[http_server.url("/amp/copy.html")]
    original_row = articles[http_server.url(original.path)]
    assert copy.status is ArticleStatus.DUPLICATE
    assert copy.duplicate_of == original_row.id


def test_cli_feeds_and_articles_json(
    http_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = serve_site(http_server)
    config = write_config(tmp_path, site_feeds(urls))
    assert main(["--config", str(config), "run", "--once"]) == 0
    assert "polled 4 feeds (0 failed)" in capsys.readouterr().out

    assert main(["--config", str(config), "feeds", "--json"]) == 0
    feeds = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in feeds] == list(urls)
    for f in feeds:
        assert f["last_error"] is None
        assert f["error_count"] == 0
        assert {"url", "last_polled_at", "last_status", "items_seen", "items_new",
                "next_poll_at"} <= f.keys()  # fmt: skip

    assert main(["--config", str(config), "articles", "--json", "--since", "1d",
                 "--feed", "Novyny", "--full"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    assert {r["language"] for r in rows} == {"uk"}
    for r in rows:
        assert r["source"] == "Novyny"
        assert r["text_source"] == "page"
        assert r["text_length"] == len(r["text"]) > 200
        assert {"url", "canonical_url", "title", "published", "fetched_at"} <= r.keys()

    assert main(["--config", str(config), "articles", "--feed", "Nope"]) == 2
    assert "Nope" in capsys.readouterr().err


def test_entries_of_a_feeds_first_poll_are_marked_as_its_backlog(
    http_server: LocalServer, tmp_path: Path
) -> None:
    urls = serve_site(http_server, etag=False)
    config = write_config(tmp_path, site_feeds(urls))
    _run_once(config)
    first, _ = _articles(tmp_path)
    assert first
    assert all(a.first_poll for a in first.values())  # alerts treat them as history if old
    feed_path = "/feeds/uk.rdf"
    old = http_server.routes[feed_path]
    assert isinstance(old, Response)
    new_item = b"""<item rdf:about="%s">
<title>Nova novyna</title><link>%s</link><description>Tekst</description>
<dc:date>2026-11-29T08:00:00Z</dc:date></item></rdf:RDF>""" % (
        http_server.url("/news/new/").encode(),
        http_server.url("/news/new/").encode(),
    )
    http_server.route(feed_path, Response(old.body.replace(b"</rdf:RDF>", new_item),
                                          content_type=old.content_type))  # fmt: skip
    _run_once(config)
    later, _ = _articles(tmp_path)
    added = later[http_server.url("/news/new/")]
    assert not added.first_poll  # a later poll's entry is news, whatever its date
