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
from indexer.types import Matrix, PassageKind, PassagePayload, Point, SearchFilter, point_id
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
