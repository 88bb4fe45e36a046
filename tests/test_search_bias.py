"""Query-time removal of the language bias, on the real embedded store with synthetic vectors:
a multilingual model puts every text of a language a little towards that language's direction,
so same-language off-topic passages outrank on-topic ones in other languages."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from indexer.qdrant_edge import EdgeVectorStore
from indexer.search import Searcher
from indexer.types import (
    Matrix,
    PassageKind,
    PassagePayload,
    Point,
    ScoredPoint,
    SearchFilter,
    Vector,
    point_id,
)
from monitor.state import open_state_store

DIM = 16
RNG = np.random.default_rng(7)
TOPIC = np.eye(DIM, dtype=np.float32)[0]
BIAS = {"de": np.eye(DIM, dtype=np.float32)[1], "uk": np.eye(DIM, dtype=np.float32)[2]}


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


class FixedQuery:
    """An embedder whose every query is 'the topic, asked in German'."""

    model_id = "test:fixed"
    dim = DIM
    max_tokens = 512

    def embed_queries(self, texts: Sequence[str]) -> Matrix:
        return np.stack([unit(TOPIC + 0.6 * BIAS["de"]) for _ in texts])

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def point(article: str, language: str, vector: np.ndarray) -> Point:
    payload = PassagePayload(
        article_id=article, passage_index=0, kind=PassageKind.LEAD, text=article,
        url=f"https://x/{article}", title=article, language=language, source=language,
        published_at=datetime(2026, 11, 28, tzinfo=UTC),
    )  # fmt: skip
    return Point(point_id(payload.url, 0), vector, payload)


@pytest.fixture
def searcher(tmp_path: Path) -> Iterator[Searcher]:
    vectors = EdgeVectorStore(tmp_path / "vectors")
    vectors.ensure_collection("c", DIM)
    points = [
        point("uk-on-topic", "uk", unit(TOPIC + 0.6 * BIAS["uk"])),
        point("de-off-topic", "de", unit(0.75 * TOPIC + 0.9 * BIAS["de"]
                                         + 0.3 * np.eye(DIM, dtype=np.float32)[5])),
    ]  # fmt: skip
    for lang, bias in BIAS.items():  # ordinary coverage that gives each language its mean
        for n in range(40):
            noise = RNG.normal(size=DIM).astype(np.float32) * 0.5
            noise[0] = 0.0
            points.append(point(f"{lang}-{n}", lang, unit(noise + 1.2 * bias)))
    vectors.upsert("c", points)
    store = open_state_store("sqlite://")
    yield Searcher(vectors=vectors, embedder=FixedQuery(), collection="c", store=store,  # type: ignore[arg-type]
                   feedback=0, languages=("de", "uk"))  # fmt: skip
    vectors.close()
    store.close()


def test_without_the_correction_the_query_language_wins(searcher: Searcher) -> None:
    searcher.languages = ()
    hits = searcher.search("x", limit=2)
    assert hits[0].article_id == "de-off-topic"


def test_the_correction_ranks_the_on_topic_passage_of_another_language_first(
    searcher: Searcher,
) -> None:
    hits = searcher.search("x", limit=2)
    assert hits[0].article_id == "uk-on-topic"
    # the score shown is still the plain cosine of the passage
    expected = float(unit(TOPIC + 0.6 * BIAS["de"]) @ unit(TOPIC + 0.6 * BIAS["uk"]))
    assert hits[0].score == pytest.approx(expected, abs=1e-4)


def test_a_language_filter_still_applies(searcher: Searcher) -> None:
    hits = searcher.search("x", filter=SearchFilter(languages=("de",)), limit=5)
    assert {h.language for h in hits} == {"de"}


# -- the searches behind one query: fewer of them, the same results ------------------------------

LANGUAGES = ("de", "en", "ru", "uk")


class CountingStore(EdgeVectorStore):
    """The embedded store, recording the (languages, limit) of every search."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.searches: list[tuple[tuple[str, ...], int]] = []

    def search(self, name: str, vector: Vector, *, filter: SearchFilter, limit: int,
               with_vectors: bool = False) -> list[ScoredPoint]:  # fmt: skip
        self.searches.append((filter.languages, limit))
        return super().search(name, vector, filter=filter, limit=limit, with_vectors=with_vectors)


class GivenQuery:
    """An embedder returning the vector it was last given."""

    model_id = "test:given"
    dim = DIM
    max_tokens = 512
    vector = unit(TOPIC)

    def embed_queries(self, texts: Sequence[str]) -> Matrix:
        return np.stack([self.vector for _ in texts])


@pytest.fixture
def coverage(tmp_path: Path) -> Iterator[tuple[Searcher, CountingStore, list[Point]]]:
    """Four languages, each with its own bias direction; articles of 1-6 passages, and one
    Ukrainian article of 30 near-identical on-topic passages."""
    rng = np.random.default_rng(11)
    bias = {lang: unit(rng.normal(size=DIM)) for lang in LANGUAGES}
    points: list[Point] = []
    for n in range(120):
        lang = LANGUAGES[n % 4]
        centre = rng.normal(size=DIM)
        for index in range(1 + n % 6):
            vector = unit(centre + 0.4 * rng.normal(size=DIM) + 2.0 * bias[lang])
            points.append(passage(f"{lang}-{n}", lang, index, vector))
    for index in range(30):
        vector = unit(2 * TOPIC + 0.05 * rng.normal(size=DIM) + 1.5 * bias["uk"])
        points.append(passage("uk-crowd", "uk", index, vector))
    vectors = CountingStore(tmp_path / "vectors")
    vectors.ensure_collection("c", DIM)
    vectors.upsert("c", points)
    store = open_state_store("sqlite://")
    yield (Searcher(vectors=vectors, embedder=GivenQuery(), collection="c", store=store,  # type: ignore[arg-type]
                    languages=LANGUAGES), vectors, points)  # fmt: skip
    vectors.close()
    store.close()


def passage(article: str, language: str, index: int, vector: np.ndarray) -> Point:
    payload = PassagePayload(
        article_id=article, passage_index=index, kind=PassageKind.BODY, text=article,
        url=f"https://x/{article}", title=article, language=language, source=language,
        published_at=datetime(2026, 11, 28, tzinfo=UTC),
    )  # fmt: skip
    return Point(point_id(payload.url, index), vector.astype(np.float32), payload)


def exact(points: Sequence[Point], query: np.ndarray, limit: int, feedback: int) -> list[str]:
    """What the search means, by brute force: the corrected score (cosine minus the query's
    affinity to the passage's language's mean), one feedback round, the best articles."""
    matrix = np.stack([p.vector for p in points])
    language = np.array([p.payload.language for p in points])
    means = {lang: matrix[language == lang].mean(axis=0) for lang in LANGUAGES}

    def corrected(q: np.ndarray) -> np.ndarray:
        return matrix @ q - np.array([float(means[lang] @ q) for lang in language])

    if feedback:
        best = np.argsort(-corrected(query))[:feedback]
        query = query + matrix[best].mean(axis=0)
    order = np.argsort(-corrected(query / np.linalg.norm(query)))
    return list(dict.fromkeys(points[i].payload.article_id for i in order))[:limit]


@pytest.mark.parametrize("seed", range(6))
def test_the_hits_are_the_best_articles_by_corrected_score(
    coverage: tuple[Searcher, CountingStore, list[Point]], seed: int
) -> None:
    searcher, _, points = coverage
    rng = np.random.default_rng(seed)
    query = unit(points[int(rng.integers(len(points)))].vector + 0.3 * rng.normal(size=DIM))
    searcher.embedder.vector = query  # type: ignore[attr-defined]
    for limit in (3, 10):
        hits = searcher.search("x", limit=limit)
        assert [h.article_id for h in hits] == exact(points, query, limit, searcher.feedback)
        assert {h.language for h in hits} != {"uk"} or limit < 4  # other languages' coverage


def test_a_crowding_article_does_not_hide_the_next_ones(
    coverage: tuple[Searcher, CountingStore, list[Point]],
) -> None:
    searcher, vectors, points = coverage
    searcher.feedback = 0
    query = unit(TOPIC)
    searcher.embedder.vector = query  # type: ignore[attr-defined]
    hits = searcher.search("x", limit=4)  # 20 passages a search: only the crowd's in Ukrainian
    assert [h.article_id for h in hits] == exact(points, query, 4, feedback=0)
    assert hits[0].article_id == "uk-crowd"
    # only the Ukrainian search was asked again, deeper
    assert sorted(vectors.searches) == [((), 20), (("de",), 20), (("en",), 20), (("ru",), 20),
                                        (("uk",), 20), (("uk",), 80)]  # fmt: skip


def test_pruning_spares_searches_not_results(
    coverage: tuple[Searcher, CountingStore, list[Point]],
) -> None:
    searcher, vectors, points = coverage
    query = unit(points[7].vector)
    searcher.embedder.vector = query  # type: ignore[attr-defined]
    pruned = searcher.search("x", limit=10)
    pruned_searches = len(vectors.searches)
    vectors.searches.clear()
    searcher.prune = False
    every = searcher.search("x", limit=10)
    assert every == pruned
    # without pruning every language is searched in both rounds; with it, not in the first
    assert all(vectors.searches.count(((lang,), 3)) == 1 for lang in LANGUAGES)
    assert pruned_searches < len(vectors.searches)
