"""Indexing and cross-lingual search with the real bundled model and the embedded Qdrant store.

One module-scoped run ingests and indexes the fixture site (nine articles in de/en/ru/uk, plus a
syndicated copy); the tests then query it through the CLI as a user would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from indexer.store import collection_name
from monitor.cli import main
from monitor.config import load_config
from monitor.service import make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import ArticleStatus
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import (
    article_page,
    fixture_articles,
    run_once,
    serve_site,
    site_feeds,
)
from tests.support.newsfixtures import write_config as write_site_config

TALKS = {
    "/ausland/abu-dhabi-gespraeche-100.html",
    "/world/2026/nov/28/abu-dhabi-talks-ceasefire",
    "/politics/20261128/abu-dabi.html",
    "/news/2026/11/28/abu-dabi/",
}
#: the Ukrainian talks article and its wire copy: fetched concurrently, either may be indexed
#: first and become the original, so the copy's URL carries the same date (the extractor takes
#: the date from a dated URL): either way the article is dated 2026-11-28 00:00
WIRE_COPY = "/wire/2026/11/28/copy.html"
UK_TALKS = {"/news/2026/11/28/abu-dabi/", WIRE_COPY}


def talks(found: list[str]) -> set[str]:
    """The talks articles among ``found``, the Ukrainian one under whichever URL was kept."""
    return {"/news/2026/11/28/abu-dabi/" if f in UK_TALKS else f for f in found} & TALKS


GRAND_PRIX = "/sport/formel1-abu-dhabi-103.html"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("search")
    with LocalServer() as server:
        urls = serve_site(server)
        # a wire copy: the Ukrainian talks article, word for word, under another outlet's URL
        original = next(a for a in fixture_articles() if a.path == "/news/2026/11/28/abu-dabi/")
        server.route(WIRE_COPY, Response(article_page(original, server.url(WIRE_COPY))))
        wire = (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title><item>'
            f"<title>{original.title}</title><link>{server.url(WIRE_COPY)}</link>"
            "<description>copy</description></item></channel></rss>"
        )
        feeds = site_feeds(urls)
        feeds["Wire"] = (server.route("/wire.rss", Response(wire.encode(),
                                                            content_type="application/rss+xml")),
                         "uk")  # fmt: skip
        # one request at a time: articles arrive (and are clustered) in much the same order
        # every run. Online clustering alone put the talks into one story in 93% of 20,000
        # random orders of these nine articles; with re-homing (indexer.stories.better_story,
        # tests/test_rehome.py) in all of 5,000 simulated ones
        config_path = write_site_config(tmp, feeds, fetch={"per_host_concurrency": 1})
        config = load_config(config_path)
        app = make_app(config)

        summary = run_once(app)
        yield {"config": config_path, "summary": summary, "base": server.base_url,
               "data_dir": config.data_dir}  # fmt: skip


def search(indexed: dict[str, Any], capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main(["--config", str(indexed["config"]), "search", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def paths(indexed: dict[str, Any], hits: list[dict[str, Any]]) -> list[str]:
    return [h["url"].removeprefix(indexed["base"]) for h in hits]


def test_every_article_is_indexed_and_the_wire_copy_is_not_embedded_again(
    indexed: dict[str, Any],
) -> None:
    store = open_state_store(sqlite_url(indexed["data_dir"]))
    articles = {a.canonical_url.removeprefix(indexed["base"]): a for a in store.list_articles()}
    store.close()
    assert {a.status for a in articles.values()} == {ArticleStatus.INDEXED}
    # the two are fetched concurrently: whichever is indexed first is the original
    pair = [articles[WIRE_COPY], articles["/news/2026/11/28/abu-dabi/"]]
    copies = [a for a in pair if a.near_duplicate_of]
    assert len(copies) == 1
    original = next(a for a in pair if not a.near_duplicate_of)
    assert copies[0].near_duplicate_of == original.id
    assert copies[0].story_id == original.story_id
    assert indexed["summary"].near_duplicates == 1
    assert all(a.index_model == "bundled:intfloat/multilingual-e5-small" for a in articles.values())


def test_a_query_finds_the_talks_in_every_language_before_the_grand_prix(
    indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    hits = search(indexed, capsys, "peace talks in Abu Dhabi")
    found = paths(indexed, hits)
    assert talks(found[:4]) == TALKS
    assert {h["language"] for h in hits[:4]} == {"de", "en", "ru", "uk"}
    assert found.index(GRAND_PRIX) > 3
    assert len(found) == len(set(found))  # one hit per article


def test_a_german_query_finds_the_ukrainian_and_russian_reports(
    indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # measured: the German Grand Prix report ranks third here (same language and "Abu Dhabi"
    # outweigh the topic for this small model); the talks in all four languages are still in
    # the top six, above every article about other subjects of the war
    hits = search(indexed, capsys, "Verhandlungen über einen Waffenstillstand in Abu Dhabi")
    found = paths(indexed, hits)
    assert found[0] == "/ausland/abu-dhabi-gespraeche-100.html"
    assert talks(found[:6]) == TALKS
    # the copy has no vectors of its own: one of the two texts is found, not both
    assert (WIRE_COPY in found) != ("/news/2026/11/28/abu-dabi/" in found)
    top = hits[0]
    assert top["passage"]
    assert top["score"] > 0.8
    assert top["story_id"]


def test_filters_by_language_source_and_time(
    indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    uk = search(indexed, capsys, "security guarantees", "--lang", "uk")
    assert uk
    assert {h["language"] for h in uk} == {"uk"}
    two = search(indexed, capsys, "Donbas", "--lang", "ru,en", "--source", "Novosti")
    assert two
    assert {h["source"] for h in two} == {"Novosti"}
    # the fixture pages say 2026-11-28 08:30 UTC; the Ukrainian ones only give the date
    late = search(indexed, capsys, "Abu Dhabi", "--since", "2026-11-28T06:00:00+00:00")
    assert late
    assert all(h["published"] >= "2026-11-28T06:00" for h in late)
    assert "uk" not in {h["language"] for h in late}
    early = search(indexed, capsys, "Abu Dhabi", "--until", "2026-11-28T01:00")
    assert early
    assert {h["language"] for h in early} == {"uk"}
    assert search(indexed, capsys, "Abu Dhabi", "--lang", "fr") == []


def test_by_story_folds_the_talks_into_one_story(
    indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    stories = search(indexed, capsys, "peace talks in Abu Dhabi", "--by-story", "--limit", "3")
    first = stories[0]
    assert first["story"] is not None
    members = paths(indexed, first["articles"])
    assert len(members) == 4
    assert talks(members) == TALKS
    assert first["story"]["article_count"] == 5  # four outlets + the wire copy
    assert set(first["story"]["languages"]) == {"de", "en", "ru", "uk"}


def test_bad_search_arguments_are_a_clear_error(
    indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(indexed["config"]), "search", "x", "--since", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


def test_vectors_are_kept_per_model() -> None:
    a = collection_name("newsmon", "bundled:intfloat/multilingual-e5-small")
    b = collection_name("newsmon", "st:/models/EmbeddingGemma-300M")
    assert a != b
    assert a.startswith("newsmon")


def test_reindex_with_the_same_model_reuses_unchanged_vectors(
    indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["--config", str(indexed["config"]), "reindex", "--all"]) == 0
    out = capsys.readouterr().out
    assert "10 articles re-embedded" in out
    hits = search(indexed, capsys, "peace talks in Abu Dhabi")
    assert talks(paths(indexed, hits)[:4]) == TALKS
