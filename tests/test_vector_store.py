"""One contract for both vector stores: the embedded Qdrant edge shard and the Qdrant server
(through qdrant-client's local mode, ``QdrantClient(":memory:")``, which speaks the server API)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import QdrantClient

from indexer.qdrant_edge import LOCK_FILE, EdgeTuning, EdgeVectorStore
from indexer.qdrant_server import ServerVectorStore
from indexer.store import VectorStore, VectorStoreError, collection_name
from indexer.types import PassageKind, PassagePayload, Point, SearchFilter, Vector, point_id

# local mode has no payload indexes and says so each time one is created
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 8
NAME = "newsmon__test-model"
T0 = datetime(2024, 5, 6, 9, 10, tzinfo=UTC)
DAY = timedelta(days=1)
#: optimise at a few dozen points, so that maintain() really builds segments in a test
SMALL = EdgeTuning(
    optimize_min_points=40, force_optimize_points=1_000, segment_points=100, segment_number=2
)


def unit(angle: float, axis: int = 1) -> Vector:
    """cos(angle) * e0 + sin(angle) * e_axis: its cosine with e0 is cos(angle)."""
    v = np.zeros(DIM, dtype=np.float32)
    v[0], v[axis] = math.cos(angle), math.sin(angle)
    return v


QUERY = unit(0.0)


@dataclass(frozen=True)
class Doc:
    article: str
    index: int
    language: str
    source: str
    day: int
    story: str | None = None

    @property
    def kind(self) -> PassageKind:
        return PassageKind.LEAD if self.index == 0 else PassageKind.BODY


# in the order of their similarity to QUERY (rank r has angle 0.15 * (r + 1))
CORPUS = [
    Doc("a1", 0, "en", "BBC", 0, "s1"),
    Doc("a3", 0, "ru", "Meduza", 2),
    Doc("a2", 1, "de", "Spiegel", 1),
    Doc("a4", 0, "uk", "Pravda", 3, "s1"),
    Doc("a1", 1, "en", "BBC", 0, "s1"),
    Doc("a2", 0, "de", "Spiegel", 1),
    Doc("a5", 0, "en", "Reuters", 4),
    Doc("a3", 1, "ru", "Meduza", 2),
]


def url(article: str) -> str:
    return f"https://example.org/{article}"


def payload(doc: Doc, **changes: object) -> PassagePayload:
    base = PassagePayload(
        article_id=doc.article,
        passage_index=doc.index,
        kind=doc.kind,
        text=f"text of {doc.article}#{doc.index}",
        url=url(doc.article),
        title=f"title of {doc.article}",
        language=doc.language,
        source=doc.source,
        published_at=T0 + doc.day * DAY,
        story_id=doc.story,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def pid(doc: Doc) -> str:
    return point_id(url(doc.article), doc.index)


def corpus_points() -> list[Point]:
    return [Point(pid(d), unit(0.15 * (r + 1)), payload(d)) for r, d in enumerate(CORPUS)]


def open_store(backend: str, path: Path) -> VectorStore:
    vectors: VectorStore
    if backend == "edge":
        vectors = EdgeVectorStore(path, tuning=SMALL)
    else:
        vectors = ServerVectorStore(":memory:", client=QdrantClient(":memory:"))
    vectors.ensure_collection(NAME, DIM)
    return vectors


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    vectors = open_store(request.param, tmp_path / "vectors")
    yield vectors
    vectors.close()


@pytest.fixture
def filled(store: VectorStore) -> VectorStore:
    store.upsert(NAME, corpus_points())
    return store


@pytest.fixture(scope="module", params=["edge", "server"])
def searchable(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VectorStore]:
    """The corpus, shared by the tests that only read (creating a store costs ~0.5 s)."""
    vectors = open_store(request.param, tmp_path_factory.mktemp("vectors"))
    vectors.upsert(NAME, corpus_points())
    yield vectors
    vectors.close()


NO_FILTER = SearchFilter()


def search_ids(store: VectorStore, flt: SearchFilter = NO_FILTER, limit: int = 20) -> list[str]:
    return [hit.id for hit in store.search(NAME, QUERY, filter=flt, limit=limit)]


def expected_ids(keep: Callable[[Doc], bool]) -> list[str]:
    return [pid(d) for d in CORPUS if keep(d)]


# -- collections -----------------------------------------------------------------------------


def test_ensure_collection_is_idempotent_and_keeps_data(filled: VectorStore) -> None:
    filled.ensure_collection(NAME, DIM)
    assert filled.count(NAME) == len(CORPUS)
    assert filled.collections() == [NAME]


def test_a_dimension_mismatch_is_a_clear_error(store: VectorStore) -> None:
    with pytest.raises(VectorStoreError, match=f"{NAME}.*dimension {DIM}, not {DIM + 1}"):
        store.ensure_collection(NAME, DIM + 1)


def test_collections_are_listed_and_separate(filled: VectorStore) -> None:
    other = "newsmon__other-model"
    filled.ensure_collection(other, 4)
    assert filled.collections() == sorted([NAME, other])
    assert filled.count(other) == 0
    assert filled.count(NAME) == len(CORPUS)


def test_a_missing_collection_is_an_error_naming_it(store: VectorStore) -> None:
    with pytest.raises(VectorStoreError, match="newsmon__missing"):
        store.search("newsmon__missing", QUERY, filter=SearchFilter(), limit=3)


def test_collection_name_is_per_model_and_safe() -> None:
    name = collection_name("newsmon", "bundled:intfloat/multilingual-e5-small")
    assert name == "newsmon__bundled-intfloat-multilingual-e5-small"
    assert collection_name("newsmon", "BAAI/bge-m3") == "newsmon__baai-bge-m3"
    long_a, long_b = collection_name("n", "m" * 300 + "a"), collection_name("n", "m" * 300 + "b")
    assert long_a != long_b
    assert len(long_a) <= 200
    assert all(c.isalnum() or c in "_-" for c in long_a + name)
    with pytest.raises(ValueError, match="model id"):
        collection_name("newsmon", "///")


# -- writes ----------------------------------------------------------------------------------


def test_upserting_an_id_again_replaces_the_point(store: VectorStore) -> None:
    doc = CORPUS[0]
    store.upsert(NAME, [Point(pid(doc), unit(0.9), payload(doc, title="old"))])
    store.upsert(NAME, [Point(pid(doc), unit(0.1), payload(doc, title="new"))])
    assert store.count(NAME) == 1
    [hit] = store.search(NAME, QUERY, filter=SearchFilter(), limit=5)
    assert hit.payload.title == "new"
    assert hit.score == pytest.approx(math.cos(0.1), abs=1e-5)


def test_set_story_updates_every_point_of_the_articles(filled: VectorStore) -> None:
    filled.set_story(NAME, ["a2", "a3"], "s2")
    filled.set_story(NAME, [], "s3")  # nothing to do
    assert search_ids(filled, SearchFilter(story_id="s2")) == expected_ids(
        lambda d: d.article in {"a2", "a3"}
    )
    assert {p.story_id for p, _ in filled.article_points(NAME, "a3")} == {"s2"}
    assert {p.story_id for p, _ in filled.article_points(NAME, "a5")} == {None}


def test_delete_articles_removes_all_their_points(filled: VectorStore) -> None:
    filled.delete_articles(NAME, ["a1", "a3", "never-stored"])
    filled.delete_articles(NAME, [])
    assert filled.count(NAME) == len(CORPUS) - 4
    assert filled.article_points(NAME, "a1") == []
    assert search_ids(filled) == expected_ids(lambda d: d.article not in {"a1", "a3"})


# -- reads -----------------------------------------------------------------------------------


def test_search_ranks_by_cosine_similarity(searchable: VectorStore) -> None:
    hits = searchable.search(NAME, QUERY, filter=SearchFilter(), limit=5)
    assert [h.id for h in hits] == expected_ids(lambda d: True)[:5]
    assert [h.score for h in hits] == pytest.approx(
        [math.cos(0.15 * (r + 1)) for r in range(5)], abs=1e-5
    )
    assert hits[0].payload == payload(CORPUS[0])
    assert all(h.vector is None for h in hits)  # not asked for


def test_search_returns_the_stored_vectors_when_asked(searchable: VectorStore) -> None:
    hits = searchable.search(NAME, QUERY, filter=SearchFilter(), limit=5, with_vectors=True)
    stored = {p.id: p.vector for p in corpus_points()}
    assert [h.id for h in hits] == expected_ids(lambda d: True)[:5]
    for hit in hits:
        assert hit.vector is not None
        assert hit.vector.dtype == np.float32
        np.testing.assert_allclose(hit.vector, stored[hit.id], atol=1e-6)
        assert float(hit.vector @ QUERY) == pytest.approx(hit.score, abs=1e-5)


FILTERS: dict[str, tuple[SearchFilter, Callable[[Doc], bool]]] = {
    "languages": (SearchFilter(languages=("ru", "uk")), lambda d: d.language in {"ru", "uk"}),
    "sources": (SearchFilter(sources=("BBC", "Reuters")), lambda d: d.source in {"BBC", "Reuters"}),
    "since": (SearchFilter(since=T0 + 2 * DAY), lambda d: d.day >= 2),
    "until": (SearchFilter(until=T0 + DAY), lambda d: d.day <= 1),
    "since-until-inclusive": (
        SearchFilter(since=T0 + DAY, until=T0 + 3 * DAY),
        lambda d: 1 <= d.day <= 3,
    ),
    "story": (SearchFilter(story_id="s1"), lambda d: d.story == "s1"),
    "exclude": (SearchFilter(exclude_article_ids=("a1", "a2")), lambda d: d.article > "a2"),
    "kinds": (SearchFilter(kinds=(PassageKind.LEAD,)), lambda d: d.index == 0),
    "combined": (
        SearchFilter(
            languages=("en", "ru"),
            sources=("BBC", "Meduza", "Reuters"),
            since=T0,
            until=T0 + 3 * DAY,
            exclude_article_ids=("a1",),
        ),
        lambda d: d.article == "a3",
    ),
    "nothing-matches": (SearchFilter(languages=("fr",)), lambda d: False),
}


@pytest.mark.parametrize("case", FILTERS)
def test_filters(searchable: VectorStore, case: str) -> None:
    flt, keep = FILTERS[case]
    assert search_ids(searchable, flt) == expected_ids(keep)


def test_article_points_come_in_passage_order(store: VectorStore) -> None:
    points = corpus_points()
    store.upsert(NAME, points[::-1])
    without = store.article_points(NAME, "a2")
    assert [(p.passage_index, v) for p, v in without] == [(0, None), (1, None)]
    with_vectors = store.article_points(NAME, "a2", with_vectors=True)
    by_index = {p.payload.passage_index: p.vector for p in points if p.payload.article_id == "a2"}
    for stored, vector in with_vectors:
        assert vector is not None
        assert vector.dtype == np.float32
        np.testing.assert_allclose(vector, by_index[stored.passage_index], atol=1e-6)
    assert store.article_points(NAME, "nope") == []


def test_sample_vectors_respects_filter_and_limit(filled: VectorStore) -> None:
    points = corpus_points()
    for language in {p.payload.language for p in points}:
        wanted = [p.vector for p in points if p.payload.language == language]
        sample = filled.sample_vectors(NAME, SearchFilter(languages=(language,)), limit=500)
        assert len(sample) == len(wanted)
        for vector in sample:
            assert any(np.allclose(vector, w, atol=1e-6) for w in wanted)
    assert len(filled.sample_vectors(NAME, NO_FILTER, limit=2)) == 2
    assert filled.sample_vectors(NAME, SearchFilter(languages=("fr",)), limit=5) == []


def test_payload_round_trips_cyrillic_and_datetimes(store: VectorStore) -> None:
    kyiv = timezone(timedelta(hours=3))
    doc = Doc("uk-1", 0, "uk", "Українська правда", 0)
    original = payload(
        doc,
        title="Переговори у Стамбулі: «перемир'я» — ёлка, ґанок, їжак",
        text="Делегації зустрілися в понеділок. Переговоры продолжатся.",
        published_at=datetime(2024, 5, 6, 12, 10, 30, 123456, tzinfo=kyiv),
    )
    store.upsert(NAME, [Point(pid(doc), unit(0.2), original)])
    [(stored, _)] = store.article_points(NAME, "uk-1")
    assert stored == original
    assert stored.published_at.tzinfo == UTC
    assert stored.published_at == datetime(2024, 5, 6, 9, 10, 30, 123456, tzinfo=UTC)
    [hit] = store.search(NAME, QUERY, filter=SearchFilter(sources=(doc.source,)), limit=3)
    assert hit.payload == original


def random_points(n: int) -> tuple[list[Doc], npt.NDArray[np.float32]]:
    vectors = np.random.default_rng(n).standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [Doc(f"r{i // 3}", i % 3, ("en", "de")[i % 2], "src", i % 5) for i in range(n)]
    return docs, vectors


def test_maintain_keeps_results_correct(store: VectorStore) -> None:
    docs, vectors = random_points(120)
    store.upsert(NAME, [Point(pid(d), v, payload(d)) for d, v in zip(docs, vectors, strict=True)])
    flt = SearchFilter(languages=("de",), since=T0 + DAY)

    def results() -> list[list[tuple[str, float]]]:
        hits = [store.search(NAME, QUERY, filter=f, limit=10) for f in (SearchFilter(), flt)]
        return [[(h.id, round(h.score, 5)) for h in found] for found in hits]

    before = results()
    store.maintain()
    assert results() == before  # same points, same exact cosines (rescored after quantisation)
    best = np.argsort(-(vectors @ QUERY))[:10]
    assert before[0] == [(pid(docs[i]), round(float(vectors[i] @ QUERY), 5)) for i in best]
    assert store.count(NAME) == 120
    if isinstance(store, EdgeVectorStore):
        assert store.stats(NAME).indexed >= 40  # the optimiser really ran


# -- the embedded store: one process at a time, data on disk ------------------------------------


def test_edge_store_reopens_with_its_data(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path, tuning=SMALL) as first:
        first.ensure_collection(NAME, DIM)
        first.upsert(NAME, corpus_points())
    with EdgeVectorStore(tmp_path, tuning=SMALL) as again:
        assert again.collections() == [NAME]
        assert again.count(NAME) == len(CORPUS)  # loaded on first use, no ensure_collection
        assert search_ids(again, SearchFilter(story_id="s1")) == expected_ids(
            lambda d: d.story == "s1"
        )
        again.ensure_collection(NAME, DIM)
        with pytest.raises(VectorStoreError, match="dimension 8, not 16"):
            again.ensure_collection(NAME, 16)


def test_edge_store_admits_one_owner(tmp_path: Path) -> None:
    in_use = pytest.raises(VectorStoreError, match=r"in use by another process.*newsmon run")
    with EdgeVectorStore(tmp_path, tuning=SMALL), in_use:
        EdgeVectorStore(tmp_path)
    assert (tmp_path / LOCK_FILE).exists()
    EdgeVectorStore(tmp_path).close()  # free again once the owner closed


def test_edge_store_refuses_use_after_close_and_bad_names(tmp_path: Path) -> None:
    vectors = EdgeVectorStore(tmp_path, tuning=SMALL)
    with pytest.raises(ValueError, match="invalid collection name"):
        vectors.ensure_collection("../escape", DIM)
    vectors.close()
    vectors.close()  # idempotent
    with pytest.raises(VectorStoreError, match="closed"):
        vectors.count(NAME)


def test_edge_upsert_optimises_when_maintain_is_never_called(tmp_path: Path) -> None:
    docs, vectors = random_points(180)
    points = [Point(pid(d), v, payload(d)) for d, v in zip(docs, vectors, strict=True)]
    with EdgeVectorStore(tmp_path, tuning=replace(SMALL, force_optimize_points=100)) as edge:
        edge.ensure_collection(NAME, DIM)
        edge.upsert(NAME, points[:90])
        assert edge.stats(NAME).indexed == 0
        edge.upsert(NAME, points[90:])  # 180 unindexed >= 100: optimised in passing
        assert edge.stats(NAME).indexed == 180
        assert search_ids(edge, limit=3) == [
            pid(docs[i]) for i in np.argsort(-(vectors @ QUERY))[:3]
        ]
