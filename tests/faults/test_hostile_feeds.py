"""End to end over real sockets: one feed per hostile answer in tests/faults/cases.py, a feed
whose entries link to hostile pages, and the fixture news site beside them, through the real
service (``make_app(config).run_once()``, twice, then the scheduler) and the CLI.

Every fault must end as a clear error on its own feed or article (shown by ``newsmon feeds`` /
``newsmon articles``), the good feeds must be indexed all the same, the failing feeds must back
off, and the next run must go on as if nothing happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from indexer.embed import HashEmbedder
from monitor.cli import main
from monitor.config import load_config
from monitor.service import RunSummary, make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import Article, ArticleStatus, FeedState, TextSource
from tests.faults.cases import (
    BIG_BODIES,
    CASES,
    HUGE,
    MAX_BYTES,
    PAGE_CASES,
    PASSWD,
    PROSE,
    QUADRATIC_ENTITY,
    RSS_TYPE,
    TIMEOUT_S,
    XXE_PATHS,
    FaultCase,
    Item,
    article_html,
    rss,
    slug,
)
from tests.faults.server import HostileServer, Reply
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import (
    fixture_articles,
    run_once,
    serve_site,
    site_feeds,
    write_config,
)

PAGES_FEED = "Hostile pages"
GROWING_FEED = "Growing"  # a good feed that gains an entry between the two runs
GOOD_PAGE_TITLE = "A good page beside hostile ones"
FAILING = [c for c in CASES if c.feed_error]
SURVIVING = [c for c in CASES if not c.feed_error]
PAGE_FAULTS = [c for c in CASES if c.page_error] + list(PAGE_CASES)
#: page faults whose fetch is tried again (a second, last-chance attempt in the same run)
RETRIED = {c.name for c in PAGE_FAULTS if c.transient}


def page_title(case: FaultCase) -> str:
    return f"Page case: {case.name}"


def feed_text(case: FaultCase) -> str:
    return f"Feed summary standing in for the page of the {case.name} case, kept if it fails."


@dataclass
class Snapshot:
    summary: RunSummary
    seconds: float
    feeds: dict[str, FeedState]
    articles: list[Article]
    by_url: dict[str, Article]
    table: dict[str, str]  # feed name -> its row in `newsmon feeds`
    feeds_json: dict[str, dict[str, Any]]
    articles_json: dict[str, dict[str, Any]]  # by URL, from `newsmon articles --json --full`
    page_hits: dict[str, int]  # page case -> requests for its page so far


@dataclass
class Scenario:
    hostile: HostileServer
    first: Snapshot
    second: Snapshot
    jobs: dict[str, datetime]
    growing_url: str  # the entry added between the runs
    page_urls: dict[str, str]  # page case -> the URL its entry links to


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("hostile")
    with HostileServer() as hostile, LocalServer() as site:
        feeds = site_feeds(serve_site(site))
        for case in CASES:
            feeds[case.name] = (case.install(hostile, f"/feed/{slug(case.name)}"), "en")
        page_urls = {c.name: c.install(hostile, f"/page/{slug(c.name)}") for c in PAGE_FAULTS}
        items = [Item(page_title(c), page_urls[c.name], feed_text(c)) for c in PAGE_FAULTS]
        good_page = article_html(GOOD_PAGE_TITLE, PROSE).encode()
        items.append(Item(GOOD_PAGE_TITLE, hostile.route("/page/good", Reply(good_page)), "ok"))
        feeds[PAGES_FEED] = (hostile.route("/pages.rss", Reply(rss(items), content_type=RSS_TYPE)),
                             "en")  # fmt: skip
        feeds[GROWING_FEED] = (_growing_feed(site, 1), "en")
        config = write_config(
            tmp, feeds,
            fetch={"timeout": f"{TIMEOUT_S}s", "max_bytes": MAX_BYTES,
                   "per_host_concurrency": 64},
        )  # fmt: skip

        first = _run(config, hostile)
        _growing_feed(site, 2)
        second = _run(config, hostile)
        jobs = _scheduled(config)
        yield Scenario(hostile, first, second, jobs, site.url("/growing/2"), page_urls)


def _growing_feed(site: LocalServer, entries: int) -> str:
    items = []
    for n in range(1, entries + 1):
        title = f"Growing story number {n}"
        site.route(f"/growing/{n}", Response(article_html(title, PROSE).encode()))
        items.append(Item(title, site.url(f"/growing/{n}"), f"Summary of story {n}."))
    return site.route("/growing.rss", Response(rss(items, title="Growing"),
                                               content_type=RSS_TYPE))  # fmt: skip


def _run(config: Path, hostile: HostileServer) -> Snapshot:
    app = make_app(load_config(config), embedder=HashEmbedder())
    started = time.monotonic()
    summary = run_once(app)
    seconds = time.monotonic() - started
    store = open_state_store(sqlite_url(config.parent / "data"))
    try:
        feeds = {f.name: f for f in store.list_feeds()}
        articles = store.list_articles()
    finally:
        store.close()
    table_lines = cli(config, "feeds").splitlines()
    return Snapshot(
        summary=summary,
        seconds=seconds,
        feeds=feeds,
        articles=articles,
        by_url={a.url: a for a in articles},
        table={line[:22].rstrip(): line for line in table_lines[1:]},
        feeds_json={f["name"]: f for f in json.loads(cli(config, "feeds", "--json"))},
        articles_json={
            a["url"]: a
            for a in json.loads(cli(config, "articles", "--json", "--full", "--limit", "0"))
        },
        page_hits={c.name: hostile.hits(f"/page/{slug(c.name)}") for c in PAGE_FAULTS},
    )


def cli(config: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--config", str(config), *args])
    assert code == 0, out.getvalue()
    return out.getvalue()


def _scheduled(config: Path) -> dict[str, datetime]:
    """Start the long-running service on the same state, read its poll jobs, stop it."""
    app = make_app(load_config(config), embedder=HashEmbedder())
    jobs: dict[str, datetime] = {}

    async def peek() -> None:
        stop = asyncio.Event()
        service = asyncio.create_task(app.run_forever(stop, serve_api=False))
        deadline = time.monotonic() + 20
        while app.scheduler is None and time.monotonic() < deadline and not service.done():
            await asyncio.sleep(0.02)
        if app.scheduler is not None:
            jobs.update({job.id: job.next_run_time for job in app.scheduler.get_jobs()})
        stop.set()
        await service
        await app.aclose()

    asyncio.run(peek())
    return jobs


# -- feeds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", FAILING, ids=lambda c: c.name)
def test_each_fault_is_recorded_on_its_own_feed_and_shown_by_newsmon_feeds(
    scenario: Scenario, case: FaultCase
) -> None:
    assert case.feed_error is not None
    for run in (scenario.first, scenario.second):
        state = run.feeds[case.name]
        assert case.feed_error in (state.last_error or ""), state.last_error
        assert run.feeds_json[case.name]["last_error"] == state.last_error
        assert state.last_status in (None, *range(400, 600))
        assert state.items_seen == 0
    # the table shows it in the feed's own row; the feed's URL is not repeated there, so the
    # problem itself fits in the column
    state = scenario.first.feeds[case.name]
    row = scenario.first.table[case.name]
    problem = (state.last_error or "").removeprefix(f"{state.url}: ")
    assert problem[:50] in row, row
    assert state.url not in row


def test_every_failing_feed_is_counted_and_no_other(scenario: Scenario) -> None:
    failing = {name for name, f in scenario.first.feeds.items() if f.last_error}
    assert failing == {c.name for c in FAILING}
    assert scenario.first.summary.feeds_failed == len(FAILING)
    assert scenario.first.summary.feeds_polled == len(scenario.first.feeds)


def test_errors_name_the_problem_not_just_a_timeout(scenario: Scenario) -> None:
    errors = {c.name: scenario.first.feeds[c.name].last_error or "" for c in FAILING}
    assert "connect timed out" in errors["connect timeout"]
    assert "no response headers" in errors["read timeout"]
    assert "body not complete" in errors["trickle"]
    assert "bytes received" in errors["trickle"]
    # a redirect names where it went, the loop and the refused scheme
    assert errors["redirect loop"].startswith(scenario.hostile.url("/feed/redirect-loop"))
    assert errors["redirect to file"].startswith(f"file:{PASSWD}")
    assert "HTTP 429" in errors["HTTP 429 Retry-After"]


def test_the_good_feeds_are_indexed_beside_the_hostile_ones(scenario: Scenario) -> None:
    first = scenario.first
    fixture_titles = {a.title for a in fixture_articles()}
    titled = {a.title: a for a in first.articles}
    assert fixture_titles <= set(titled)
    for title in fixture_titles:
        article = titled[title]
        assert article.status is ArticleStatus.INDEXED
        assert article.text_source is TextSource.PAGE, article.last_error
        assert article.story_id
    good = titled[GOOD_PAGE_TITLE]  # on the hostile server, beside the hostile pages
    assert good.status is ArticleStatus.INDEXED
    assert good.text_source is TextSource.PAGE
    assert PROSE[1][:50] in (good.text or "")
    assert first.summary.articles_pending == 0
    assert first.summary.articles_failed == 0
    assert all(a.status is ArticleStatus.INDEXED for a in first.articles)


def test_failing_feeds_back_off_and_the_second_run_goes_on(scenario: Scenario) -> None:
    first, second = scenario.first, scenario.second
    for case in FAILING:
        one, two = first.feeds[case.name], second.feeds[case.name]
        assert (one.consecutive_failures, two.consecutive_failures) == (1, 2), case.name
        assert two.error_count == 2
        assert wait(two) >= wait(one) >= timedelta(minutes=10), case.name
        if case.name != "HTTP 429 Retry-After":  # waits as long as the server asked, twice
            assert wait(two) > wait(one), case.name
    assert wait(second.feeds["HTTP 429 Retry-After"]) >= timedelta(seconds=7200)
    # the second run: conditional GETs for the fixture feeds, the new entry fetched and indexed,
    # nothing else fetched again
    assert second.summary.articles_new == 1
    growing = second.by_url[scenario.growing_url]
    assert growing.title == "Growing story number 2"
    assert growing.status is ArticleStatus.INDEXED
    assert growing.text_source is TextSource.PAGE
    assert {second.feeds[n].last_status for n in ("Nachrichten", "World News")} == {304}
    assert second.page_hits == first.page_hits
    assert second.summary.feeds_failed == len(FAILING)


def wait(state: FeedState) -> timedelta:
    """How long the feed waits after its last poll."""
    assert state.next_poll_at is not None
    assert state.last_polled_at is not None
    return state.next_poll_at - state.last_polled_at


def test_the_scheduler_keeps_a_poll_job_per_feed_at_its_backoff_time(scenario: Scenario) -> None:
    states = scenario.second.feeds
    for name, state in states.items():
        assert scenario.jobs[f"feed:{name}"] == state.next_poll_at, name


def test_the_runs_are_bounded_by_the_timeouts(scenario: Scenario) -> None:
    # everything hostile runs side by side: a run costs a few timeouts, not one per case
    assert scenario.first.seconds < 20 * TIMEOUT_S
    assert scenario.second.seconds < 20 * TIMEOUT_S


def test_big_bodies_are_abandoned_early(scenario: Scenario) -> None:
    for name in BIG_BODIES:
        for where in ("feed", "page"):
            sent = scenario.hostile.bytes_sent(f"/{where}/{slug(name)}")
            # what the socket buffers took before the fetcher gave up, not the 50 MB
            assert sent < HUGE // 3, (name, where, sent)


# -- feeds that parse, whatever they contain -------------------------------------------------


@pytest.mark.parametrize("case", SURVIVING, ids=lambda c: c.name)
def test_odd_but_readable_feeds_are_stored(scenario: Scenario, case: FaultCase) -> None:
    state = scenario.first.feeds[case.name]
    assert state.last_error is None
    assert state.items_seen == state.items_new == 1
    [article] = [a for a in scenario.first.articles if a.feed == case.name]
    assert article.status is ArticleStatus.INDEXED
    if case.feed_note:
        assert case.feed_note in (state.malformed_reason or ""), state.malformed_reason
        assert scenario.first.feeds_json[case.name]["malformed_reason"] == state.malformed_reason


def test_invalid_utf8_spoils_only_the_bad_bytes(scenario: Scenario) -> None:
    by_feed = {a.feed: a for a in scenario.first.articles}
    article = by_feed["invalid UTF-8"]
    assert article.title == "Переговори тривають у столиці"
    assert "Делегації зустрілися знову" in article.feed_text
    assert "\ufffd" in article.feed_text  # the bad bytes, marked
    assert scenario.first.feeds["invalid UTF-8"].title == "Кодування"
    # a windows-1251 document served as UTF-8 is decoded by its own declaration
    assert by_feed["charset conflict"].title == "Переговоры продолжаются в столице"


def test_entities_are_never_expanded_nor_fetched(scenario: Scenario) -> None:
    by_feed = {a.feed: a for a in scenario.first.articles}
    for name in ("billion laughs", "quadratic entity", "quadratic entity UTF-16",
                 "external entities"):  # fmt: skip
        article = by_feed[name]
        assert len(article.feed_text) < 100_000, name
        assert "lollol" not in article.feed_text
        assert QUADRATIC_ENTITY[:100] not in article.feed_text
    for page in ("XHTML with external entities", "XHTML billion laughs"):
        article = scenario.first.by_url[scenario.page_urls[page]]
        assert article.status is ArticleStatus.INDEXED
        assert len(article.text or "") < 10_000
        assert "lollol" not in (article.text or "")
    # nothing asked the server for the external DTD, entity or parameter entity
    assert [scenario.hostile.hits(path) for path in XXE_PATHS] == [0, 0, 0]


def test_local_files_never_reach_the_store(scenario: Scenario) -> None:
    secret_lines = [line for line in Path(PASSWD).read_text().splitlines() if line.strip()]
    assert secret_lines
    stored: list[str] = []
    for run in (scenario.first, scenario.second):
        for article in run.articles:
            stored += [article.title, article.feed_text, article.text or "", article.url]
        stored += [json.dumps(list(run.articles_json.values()), ensure_ascii=False)]
        stored += [json.dumps(list(run.feeds_json.values()), ensure_ascii=False)]
    blob = "\n".join(stored)
    for line in secret_lines:
        assert line not in blob
    assert "root:" not in blob


# -- article pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", PAGE_FAULTS, ids=lambda c: c.name)
def test_hostile_pages_cost_their_article_the_page_text_only(
    scenario: Scenario, case: FaultCase
) -> None:
    url = scenario.page_urls[case.name]
    article = scenario.first.by_url[url]
    shown = scenario.first.articles_json[url]
    assert article.status is ArticleStatus.INDEXED, article.last_error
    assert shown["last_error"] == article.last_error
    if case.page_error is not None:
        assert article.text_source is TextSource.FEED
        assert article.text == feed_text(case)
        assert case.page_error in (article.last_error or ""), article.last_error
    elif case.name == "PNG labelled HTML":
        assert article.text_source is TextSource.FEED
        assert "binary" in (article.last_error or "")
    else:  # a page that tried entity tricks on the extractor: extracted without them
        assert article.text_source is TextSource.PAGE
        assert PROSE[0][:50] in (article.text or "")


def test_transient_page_faults_get_one_more_attempt_and_permanent_ones_none(
    scenario: Scenario,
) -> None:
    hits = scenario.first.page_hits
    for name in ("HTTP 500", "HTTP 429 Retry-After", "connection reset", "reset mid-body",
                 "read timeout", "trickle"):  # fmt: skip
        assert name in RETRIED
        assert hits[name] == 2, name
    for name in ("HTTP 403", "HTTP 404", "HTTP 410", *BIG_BODIES, "PNG as feed"):
        assert name not in RETRIED
        assert hits[name] == 1, name
