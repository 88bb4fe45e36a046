"""The web page (monitor/web.py) through FastAPI's test client, over the fixture site indexed in
four languages with the real bundled model, a topic alerted through a local webhook and a feed
that answers 503. The pure parts (highlighting, the coverage chart) are tested on their own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from alerts.types import AlertArticle, StoredMatch
from indexer.types import SearchHit
from monitor.web import (
    coverage_svg,
    daily_coverage,
    highlight,
    passage_text,
    query_terms,
    safe_href,
    web_router,
)
from tests.support.website import BROKEN_FEED, TOPIC, Site, indexed_site, web_api

TALKS = "peace talks in Abu Dhabi"
TOPIC_PAGE = f"/ui/topics/{TOPIC['id']}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with indexed_site(tmp_path_factory.mktemp("web")) as site:
        yield site


@pytest.fixture(scope="module")
def client(site: Site) -> TestClient:
    return TestClient(web_api(site.app))


def languages(page: str) -> list[str]:
    """The languages of the passages shown, in page order."""
    return re.findall(r'<blockquote lang="([^"]*)">', page)


def marks(page: str) -> list[str]:
    return re.findall(r"<mark>(.*?)</mark>", page)


# -- search --------------------------------------------------------------------------------------


def test_the_search_page_shows_hits_in_every_language_with_the_query_marked(
    client: TestClient,
) -> None:
    empty = client.get("/")
    assert empty.status_code == 200
    assert '<input id="q" name="q" type="search" value=""' in empty.text
    assert 'id="results"' not in empty.text

    page = client.get("/", params={"q": TALKS})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert set(languages(page.text)[:4]) == {"de", "en", "ru", "uk"}
    assert "Abu Dhabi" in marks(page.text)
    assert "in" not in {m.lower() for m in marks(page.text)}  # short words are not marked
    assert f'value="{TALKS}"' in page.text  # the form keeps the query
    assert "World News" in page.text  # the outlet
    assert re.search(r"score 0\.\d{3}", page.text)
    assert re.search(r'<time datetime="2026-11-2\dT[\d:]+Z">2026-11-2\d \d\d:\d\d UTC</time>',
                     page.text)  # fmt: skip


def test_a_cyrillic_query_is_marked_whatever_the_case(client: TestClient) -> None:
    page = client.get("/", params={"q": "переговоры в Абу-Даби", "lang": "ru"})
    assert page.status_code == 200
    assert set(languages(page.text)) == {"ru"}
    assert {"Переговоры", "переговоры", "Абу-Даби"} <= set(marks(page.text))
    assert 'value="ru" checked' in page.text


def test_filters_by_outlet_and_date(client: TestClient) -> None:
    page = client.get("/", params={"q": "Abu Dhabi", "source": "Novyny"})
    assert set(languages(page.text)) == {"uk"}
    assert '<option value="Novyny" selected>' in page.text
    since = client.get("/", params={"q": "Abu Dhabi", "since": "2026-11-01"})
    assert since.status_code == 200
    assert len(set(languages(since.text))) == 4
    assert 'name="since" value="2026-11-01"' in since.text
    later = client.get("/", params={"q": "Abu Dhabi", "since": "2030-01-01"}).text
    assert "Nothing in the coverage matches this search." in later
    earlier = client.get("/", params={"q": "Abu Dhabi", "until": "2026-11-01T00:00"}).text
    assert "<blockquote" not in earlier
    assert client.get("/", params={"q": "Abu Dhabi", "lang": "fr"}).text.count("<blockquote") == 0


def test_hits_are_grouped_by_story_on_request(client: TestClient) -> None:
    page = client.get("/", params={"q": TALKS, "by_story": "1"})
    assert page.status_code == 200
    first = page.text.split('<section class="story">')[1]
    assert re.search(r"<p class=\"meta\">\s*\d+ articles?\s*· [a-z]{2}(, [a-z]{2})* ·", first)
    assert set(languages(first)) == {"de", "en", "ru", "uk"}
    assert '<h4 class="title"' in first  # articles sit under their story's heading
    assert 'name="by_story" value="1" checked' in page.text


def test_hostile_text_is_escaped_and_only_web_links_are_linked(
    client: TestClient, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = SearchHit(
        article_id="a1", score=0.9, url="javascript:alert(1)",
        title="<script>alert('title')</script>", language='en" onmouseover="alert(2)',
        source="<b>Outlet</b>", published_at=datetime(2026, 11, 28, tzinfo=UTC),
        passage="<img src=x onerror=alert(3)> talks in Abu Dhabi & more", passage_index=0,
        story_id=None,
    )  # fmt: skip
    monkeypatch.setattr(site.app.searcher, "search", lambda *a, **k: [hostile])
    page = client.get("/", params={"q": '"><script>x</script> Abu Dhabi'}).text
    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>Outlet" not in page
    assert 'onmouseover="' not in page
    assert "javascript:" not in page
    # the title escaped, and the query's "script" marked in it
    assert "&lt;<mark>script</mark>&gt;alert(&#39;title&#39;)&lt;/<mark>script</mark>&gt;" in page
    assert "&lt;img src=x onerror=alert(3)&gt; talks in <mark>Abu Dhabi</mark> &amp; more" in page
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt; Abu Dhabi"' in page


def test_a_bad_date_is_a_clear_message_and_422(client: TestClient) -> None:
    page = client.get("/", params={"q": "Abu Dhabi", "since": "soon"})
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert re.search(r'role="alert">.*Since: not a duration.*&#39;soon&#39;', page.text)
    assert "Traceback" not in page.text
    assert 'value="soon"' in page.text  # the form is shown again to correct it
    assert "<blockquote" not in page.text
    until = client.get("/", params={"q": "x", "until": "2026-13-45"})
    assert until.status_code == 422
    assert "Until: not a duration" in until.text
    too_long = client.get("/", params={"q": "x" * 2001})
    assert too_long.status_code == 422
    assert "at most 2000 characters" in too_long.text


# -- topics --------------------------------------------------------------------------------------


def test_the_topics_page_links_each_topic(client: TestClient) -> None:
    page = client.get("/ui/topics")
    assert page.status_code == 200
    assert f'<a href="{TOPIC_PAGE}">{TOPIC["name"]}</a>' in page.text


def test_the_topic_page_shows_alerts_deliveries_and_a_coverage_chart(client: TestClient) -> None:
    page = client.get(TOPIC_PAGE)
    assert page.status_code == 200
    text = page.text
    alerts = text.split('id="alerts-heading"')[1].split('id="backtest-heading"')[0]
    assert '<article class="alert">' in alerts
    assert re.search(r'<th scope="row">hook</th><td class="status-sent">sent</td>', alerts)
    assert {"de", "en", "ru"} <= set(languages(alerts))  # the alerted articles
    assert re.search(r"<li>new message, <time[^>]*>[^<]*</time>: new story", alerts)
    chart = text.split('<svg xmlns="http://www.w3.org/2000/svg"')[1].split("</svg>")[0]
    assert 'role="img"' in chart
    assert re.search(r"<title>2026-11-28: \d+ in de</title>", chart)
    assert "The chart as a table" in text
    assert chart.count("<title>2026-11-") >= 4  # one per language (the fixtures are one day)
    assert "<title>2026-10-30: " not in chart  # days without matches have no bar
    assert "articles matched in" not in text  # the backtest runs on demand only
    assert "Run backtest" in text


def test_the_backtest_runs_on_demand(client: TestClient) -> None:
    page = client.get(TOPIC_PAGE, params={"backtest": "3650d"})
    assert page.status_code == 200
    backtest = page.text.split('id="backtest-heading"')[1]
    summary = re.search(r"(\d+) articles? matched in (\d+) stor", backtest)
    assert summary
    assert int(summary[1]) >= 3
    assert "(threshold " in backtest
    assert 'value="3650d"' in backtest


@pytest.mark.parametrize(
    ("params", "message"),
    [({"backtest": "soon"}, "Backtest since: not a duration"),
     ({"days": "many"}, "Days: a whole number from 1 to 366")],
)  # fmt: skip
def test_bad_topic_page_input_is_a_clear_message_and_422(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    page = client.get(TOPIC_PAGE, params=params)
    assert page.status_code == 422
    assert message in page.text
    assert '<article class="alert">' in page.text  # the rest of the page is still there
    if "backtest" in params:
        assert 'name="backtest" value="soon"' in page.text  # kept, to be corrected


def test_an_unknown_topic_is_a_404_page(client: TestClient) -> None:
    page = client.get("/ui/topics/no-such-topic")
    assert page.status_code == 404
    assert "There is no topic &#39;no-such-topic&#39;" in page.text


def _label_urls(section: str) -> list[str]:
    return re.findall(r'<input type="hidden" name="url" value="([^"]*)">', section)


def test_an_article_is_judged_from_the_topic_page(client: TestClient, site: Site) -> None:
    page = client.get(TOPIC_PAGE, params={"backtest": "3650d"}).text
    alerts = page.split('id="alerts-heading"')[1].split('id="backtest-heading"')[0]
    urls = _label_urls(alerts)
    assert urls
    assert len(_label_urls(page.split('id="backtest-heading"')[1])) >= 3  # the backtest's too
    answer = client.post(f"{TOPIC_PAGE}/label", follow_redirects=False, data={
        "url": urls[0], "verdict": "not-relevant", "days": "30", "backtest": "3650d"})  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        f"{TOPIC_PAGE}?days=30&backtest=3650d&labelled=not-relevant#backtest"
    )
    article = site.app.store.find_article_by_canonical_url(urls[0])
    assert article is not None
    assert (TOPIC["id"], article.id, False) in site.app.store.topic_labels(TOPIC["id"])
    after = client.get(answer.headers["location"]).text
    assert "Saved: not relevant to this topic." in after
    judged = after.split(f'value="{urls[0]}">')[1].split("</form>")[0]
    assert "You judged it not relevant." in judged
    assert 'value="not-relevant" aria-pressed="true"' in judged
    # judged again: the last judgement counts
    client.post(f"{TOPIC_PAGE}/label", data={"url": urls[0], "verdict": "relevant"})
    assert (TOPIC["id"], article.id, True) in site.app.store.topic_labels(TOPIC["id"])


@pytest.mark.parametrize(
    ("path", "form", "status", "message"),
    [(f"{TOPIC_PAGE}/label", {"url": "https://nowhere.example/a", "verdict": "relevant"}, 404,
      "no stored article at https://nowhere.example/a"),
     (f"{TOPIC_PAGE}/label", {"url": "https://nowhere.example/a", "verdict": "maybe"}, 422,
      "A label is &#39;relevant&#39; or &#39;not-relevant&#39;, not &#39;maybe&#39;."),
     ("/ui/topics/no-such-topic/label", {"url": "x", "verdict": "relevant"}, 404,
      "topic &#39;no-such-topic&#39;: no such topic in the configuration")],
)  # fmt: skip
def test_a_judgement_that_cannot_be_saved_says_why(
    client: TestClient, path: str, form: dict[str, str], status: int, message: str
) -> None:
    answer = client.post(path, data=form, follow_redirects=False)
    assert answer.status_code == status
    assert message in answer.text


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://elsewhere.example"},
     {"Sec-Fetch-Site": "same-site", "Origin": "http://news.localhost"}, {"Origin": "null"},
     {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"}],
)  # fmt: skip
def test_another_sites_page_cannot_post_a_judgement(
    client: TestClient, site: Site, headers: dict[str, str]
) -> None:
    before = site.app.store.topic_labels()
    answer = client.post(f"{TOPIC_PAGE}/label", headers=headers, follow_redirects=False,
                         data={"url": "https://any.example/", "verdict": "relevant"})  # fmt: skip
    assert answer.status_code == 403
    assert site.app.store.topic_labels() == before
    # the page's own form, as a browser sends it, passes
    own = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    assert client.post(f"{TOPIC_PAGE}/label", headers=own, follow_redirects=False,
                       data={"url": "x", "verdict": "maybe"}).status_code == 422  # fmt: skip


def test_the_json_api_takes_and_lists_judgements(client: TestClient, site: Site) -> None:
    page = client.get(TOPIC_PAGE).text
    url = _label_urls(page.split('id="alerts-heading"')[1])[-1]
    answer = client.post(f"/topics/{TOPIC['id']}/labels", json={"url": url, "relevant": True})
    assert answer.status_code == 200
    article = site.app.store.find_article_by_canonical_url(url)
    assert article is not None
    assert answer.json() == {"topic": TOPIC["id"], "article_id": article.id,
                             "title": article.title, "url": url, "relevant": True}  # fmt: skip
    listed = client.get(f"/topics/{TOPIC['id']}/labels").json()
    assert {"url": url, "relevant": True} in listed
    missing = client.post(f"/topics/{TOPIC['id']}/labels",
                          json={"url": "https://nowhere.example/b", "relevant": False})  # fmt: skip
    assert missing.status_code == 404
    assert "no stored article at https://nowhere.example/b" in missing.json()["detail"]
    assert client.get("/topics/no-such-topic/labels").status_code == 404
    assert client.post(f"/topics/{TOPIC['id']}/labels", json={"url": url}).status_code == 422


# -- feeds, static files, mounting ---------------------------------------------------------------


def test_the_feeds_page_shows_health_errors_and_the_last_new_item(client: TestClient) -> None:
    page = client.get("/ui/feeds")
    assert page.status_code == 200
    rows = {
        re.search(r">([^<>]+)</a>", row)[1]: row  # type: ignore[index]
        for row in page.text.split("<tr class=")[1:]
    }
    assert set(rows) == {"Nachrichten", "World News", "Novosti", "Novyny", BROKEN_FEED}
    broken = rows[BROKEN_FEED]
    assert broken.startswith('"health-failing"')
    assert "HTTP 503" in broken
    assert "<td>503</td>" in broken
    ok = rows["Novyny"]
    assert ok.startswith('"health-ok"')
    times = re.findall(r"<time datetime=\"([^\"]*)\">", ok)
    assert len(times) == 3
    assert all(times)  # last poll, last new item, next poll


def test_the_pages_load_nothing_from_elsewhere(client: TestClient) -> None:
    for path in ("/", "/ui/topics", TOPIC_PAGE, "/ui/feeds"):
        page = client.get(path).text
        assert "<script" not in page
        assert not re.search(r'<(link|img|script|iframe)[^>]+(href|src)="(https?:)?//', page)
    css = client.get("/ui/static/web.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert "url(" not in css.text
    assert client.get("/ui/static/nope.css").status_code == 404
    assert client.get("/ui/static/..%2Fweb.py").status_code == 404


def test_the_json_api_is_unchanged_beside_the_pages(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    hits = client.get("/search", params={"q": TALKS}).json()
    assert hits
    assert hits[0]["language"]
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/ui/") for p in paths)


def test_the_router_is_guarded_by_the_given_dependency(site: Site) -> None:
    def authorised() -> None:
        raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    api = FastAPI()
    api.include_router(web_router(site.app, authorised))
    guarded = TestClient(api)
    for path in ("/", "/ui/topics", TOPIC_PAGE, "/ui/feeds", "/ui/static/web.css"):
        assert guarded.get(path).status_code == 401


def test_links_follow_a_mount_prefix(site: Site) -> None:
    api = FastAPI()
    api.include_router(web_router(site.app), prefix="/news")
    page = TestClient(api).get("/news/ui/topics").text
    assert 'href="/news/ui/static/web.css"' in page
    assert f'href="/news{TOPIC_PAGE}"' in page


# -- the pure parts ------------------------------------------------------------------------------


def test_query_terms_keep_words_and_acronyms() -> None:
    assert query_terms("peace talks in the EU, Abu Dhabi") == ["Dhabi", "peace", "talks", "Abu",
                                                                 "the", "EU"]  # fmt: skip
    assert query_terms("a in") == []


@pytest.mark.parametrize(
    ("text", "query", "expected"),
    [
        ("Talks in Abu Dhabi", "abu dhabi talks", "<mark>Talks</mark> in <mark>Abu Dhabi</mark>"),
        ("Переговори в Абу-Дабі", "переговори", "<mark>Переговори</mark> в Абу-Дабі"),
        ("Gespräche", "Gespräch", "Gespräche"),  # whole words only
        ("<b>Abu</b> & co", "abu", "&lt;b&gt;<mark>Abu</mark>&lt;/b&gt; &amp; co"),
        ("a <i>b</i>", "", "a &lt;i&gt;b&lt;/i&gt;"),
        ("x.y (Abu)", "x.y (abu", "x.y (<mark>Abu</mark>)"),  # regex characters are literal
    ],
)
def test_highlight_marks_query_words_and_escapes_the_rest(
    text: str, query: str, expected: str
) -> None:
    assert str(highlight(text, query)) == expected


def test_a_lead_passage_is_shown_without_the_title_above_it() -> None:
    assert passage_text("Talks go on\n\nDelegates met.", "Talks go on ") == "Delegates met."
    assert passage_text("Talks go on", "Talks go on") == "Talks go on"
    assert passage_text("Delegates met.", "Talks") == "Delegates met."


@pytest.mark.parametrize(
    ("url", "expected"),
    [("https://example.org/a?b=1", "https://example.org/a?b=1"), ("http://x/", "http://x/"),
     ("javascript:alert(1)", ""), (" JavaScript:alert(1)", ""), ("data:text/html,x", ""),
     ("//evil.example/", ""), ("", ""), (None, "")],
)  # fmt: skip
def test_only_web_urls_are_links(url: Any, expected: str) -> None:
    assert safe_href(url) == expected


def _match(article_id: str, language: str, day: int) -> StoredMatch:
    published = datetime(2026, 11, day, 9, tzinfo=UTC)
    article = AlertArticle(article_id, f"https://x/{article_id}", "t", language, "s", published,
                           0.7, "p")  # fmt: skip
    return StoredMatch("t", "s1", article, True, published)


def test_daily_coverage_counts_each_article_once_per_day_and_language() -> None:
    matches = [_match("a", "de", 27), _match("b", "uk", 27), _match("c", "uk", 29),
               _match("c", "uk", 29), _match("old", "en", 1)]  # fmt: skip
    rows = daily_coverage(matches, days=4)
    assert rows == [
        (date(2026, 11, 26), {}),
        (date(2026, 11, 27), {"de": 1, "uk": 1}),
        (date(2026, 11, 28), {}),
        (date(2026, 11, 29), {"uk": 1}),
    ]  # the article of 1 November lies before the window
    assert len(daily_coverage(matches, days=30)) == 30
    assert daily_coverage([], days=30) == []


def test_the_coverage_chart_is_an_svg_of_stacked_bars() -> None:
    rows = [(date(2026, 11, 27), {"de": 2, "<uk>": 1}), (date(2026, 11, 28), {})]
    svg = str(coverage_svg(rows))
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert svg.endswith("</svg>")
    assert svg.count("<rect") == 2 + 2  # the bar's two parts and a legend swatch per language
    assert "<title>2026-11-27: 2 in de</title>" in svg
    assert "&lt;uk&gt;" in svg
    assert "<uk>" not in svg
    assert 'aria-labelledby="chart-title"' in svg
    assert "2026-11-27 to 2026-11-28: 3" in svg
    assert str(coverage_svg([])) == ""
