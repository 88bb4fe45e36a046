"""Which stored passages refine a topic's queries (``AlertStage`` feedback, ``alerts.matching``).

A young store holds mostly unrelated news and the neighbouring topics' coverage; feedback on
them would draw a topic's query towards them. Screened: a passage must score near the topic's
threshold under the unrefined queries (``feedback_margin``), and, when the topics compete for
feedback, no other competing topic may fit it better (``owned_rows``). And a topic whose own
coverage has not started is refined little or not at all (``feedback_support``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from alerts.matching import MatchPolicy, claim_scores, owned_rows
from alerts.stage import GROWTH_CHECK_SECONDS, PROFILE_GROWTH, AlertStage
from alerts.types import Topic
from indexer.qdrant_edge import EdgeVectorStore
from indexer.types import Matrix, PassageKind, PassagePayload, Point, point_id
from monitor.state import open_state_store

DIM = 8
T0 = datetime(2026, 11, 30, 8, tzinfo=UTC)


def unit(*weights: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(weights)] = weights
    return (v / np.linalg.norm(v)).astype(np.float32)


TALKS, TERRITORY = unit(1), unit(0, 1)
#: stored passages: near the talks; between both topics, nearer the talks; between both,
#: nearer the territory; unrelated news
NEAR_TALKS = unit(1, 0, 0.3)
LEANING_TALKS = unit(0.8, 0.6)
BETWEEN = unit(0.6, 0.8)
UNRELATED = unit(0, 0, 0, 1)
STORED = (NEAR_TALKS, LEANING_TALKS, BETWEEN, UNRELATED)


class TableEmbedder:
    """Each topic description embeds to its axis (the stored passages are upserted directly)."""

    model_id = "test:table"
    dim = DIM
    max_tokens = 512
    table: ClassVar[dict[str, np.ndarray]] = {"the talks": TALKS, "the territory": TERRITORY}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed_queries(self, texts: Sequence[str]) -> Matrix:
        return np.stack([self.table[t] for t in texts])

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        return self.embed_queries(texts)


def _point(n: int, vector: np.ndarray) -> Point:
    url = f"https://x.example/{n}"
    payload = PassagePayload(
        article_id=f"a{n}", passage_index=0, kind=PassageKind.LEAD, text=f"passage {n}",
        url=url, title=f"passage {n}", language="en", source="x", published_at=T0,
    )  # fmt: skip
    return Point(point_id(url, 0), vector, payload)


@pytest.fixture
def vectors(tmp_path: Path) -> Iterator[EdgeVectorStore]:
    store = EdgeVectorStore(tmp_path / "vectors")
    store.ensure_collection("c", DIM)
    store.upsert("c", [_point(n, v) for n, v in enumerate(STORED)])
    yield store
    store.close()


def _refined(
    vectors: EdgeVectorStore,
    *,
    margin: float | None,
    competition: bool,
    compete: bool = True,
    confident_margin: float | None = None,
    confident_articles: int = 5,
) -> dict[str, np.ndarray]:
    """Each topic's refined query (plain cosines: no language means, no context contrast)."""
    policy = MatchPolicy(threshold=0.5, contrast=0.0, feedback_passages=20, feedback_weight=1.0,
                         language_feedback_passages=0, anchor_passages=0,
                         feedback_margin=margin, feedback_competition=competition,
                         confident_margin=confident_margin,
                         confident_articles=confident_articles)  # fmt: skip
    topics = (
        Topic(id="talks", name="Talks", description="the talks", channels=(), compete=compete),
        Topic(id="territory", name="Territory", description="the territory", channels=()),
    )
    state = open_state_store("sqlite://")
    try:
        stage = AlertStage(store=state, vectors=vectors, embedder=TableEmbedder(),  # type: ignore[arg-type]
                           collection="c", topics=topics, channels=frozenset(),
                           languages=("en",), backfill=timedelta(days=1), policy=policy,
                           min_feedback_coverage=0)  # fmt: skip
        refined = {tid: np.asarray(p.queries[0]) for tid, p in stage.profiles().items()}
        # how far each is refined, as `topics test` reports it
        refined.update({f"{t.id} refinement": np.float32(stage.refinement(t.id)) for t in topics})
        return refined
    finally:
        state.close()


def _towards(query: np.ndarray, *rows: np.ndarray, support: float = 1.0) -> np.ndarray:
    """The query moved by the sum of the rows over the 20 a full refinement draws on (fewer
    rows move it less: ``move_towards``' ``expected``), times the topic's feedback support."""
    moved = query + support * np.sum(np.stack(rows), axis=0) / 20
    return moved / np.linalg.norm(moved)


def test_without_screening_every_best_passage_refines(vectors: EdgeVectorStore) -> None:
    refined = _refined(vectors, margin=None, competition=False)
    np.testing.assert_allclose(refined["talks"], _towards(TALKS, *STORED), atol=1e-5)
    assert refined["talks refinement"] == 1.0  # no confident-coverage rule: all the feedback


def test_passages_far_below_the_threshold_do_not_refine(vectors: EdgeVectorStore) -> None:
    """Threshold 0.5, margin 0.1: the unrelated passage (cosine 0) is left out, the passages
    between the topics (0.6 and 0.8) stay."""
    refined = _refined(vectors, margin=0.1, competition=False)
    everything_near = _towards(TALKS, NEAR_TALKS, LEANING_TALKS, BETWEEN)
    np.testing.assert_allclose(refined["talks"], everything_near, atol=1e-5)
    np.testing.assert_allclose(refined["territory"], _towards(TERRITORY, LEANING_TALKS, BETWEEN),
                               atol=1e-5)  # fmt: skip


def test_a_passage_a_neighbour_fits_better_refines_only_the_neighbour(
    vectors: EdgeVectorStore,
) -> None:
    refined = _refined(vectors, margin=0.1, competition=True)
    np.testing.assert_allclose(refined["talks"], _towards(TALKS, NEAR_TALKS, LEANING_TALKS),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(refined["territory"], _towards(TERRITORY, BETWEEN), atol=1e-5)


def test_a_topic_that_does_not_compete_keeps_its_neighbours_passages(
    vectors: EdgeVectorStore,
) -> None:
    """``compete: false`` (a broad topic containing the others) takes feedback from every
    passage near it, and contests none of its neighbours' passages either."""
    refined = _refined(vectors, margin=0.1, competition=True, compete=False)
    everything_near = _towards(TALKS, NEAR_TALKS, LEANING_TALKS, BETWEEN)
    np.testing.assert_allclose(refined["talks"], everything_near, atol=1e-5)
    np.testing.assert_allclose(refined["territory"], _towards(TERRITORY, LEANING_TALKS, BETWEEN),
                               atol=1e-5)  # fmt: skip


def test_feedback_moves_a_topic_in_proportion_to_its_confident_articles(
    vectors: EdgeVectorStore,
) -> None:
    """Confident: scored at least 0.2 above the threshold 0.5 by the unrefined queries, and
    owned. The talks have two such articles (0.96 and 0.8) of the four that earn full weight;
    the territory one (0.8: the passage between the topics)."""
    refined = _refined(vectors, margin=0.1, competition=True, confident_margin=0.2,
                       confident_articles=4)  # fmt: skip
    np.testing.assert_allclose(
        refined["talks"], _towards(TALKS, NEAR_TALKS, LEANING_TALKS, support=0.5), atol=1e-5
    )
    np.testing.assert_allclose(refined["territory"], _towards(TERRITORY, BETWEEN, support=0.25),
                               atol=1e-5)  # fmt: skip
    assert refined["talks refinement"] == pytest.approx(0.5)
    assert refined["territory refinement"] == pytest.approx(0.25)


def test_a_topic_without_confident_coverage_keeps_its_unrefined_queries(
    vectors: EdgeVectorStore,
) -> None:
    """Its coverage has not started: what is stored near it is other news, and feedback on it
    would draw the query away from the topic's first articles."""
    refined = _refined(vectors, margin=0.1, competition=True, confident_margin=0.5)
    np.testing.assert_allclose(refined["talks"], TALKS, atol=1e-6)
    assert refined["talks refinement"] == 0.0
    np.testing.assert_allclose(refined["territory"], TERRITORY, atol=1e-6)
    # the same without any screening of the passages that refine
    unscreened = _refined(vectors, margin=None, competition=False, confident_margin=0.5)
    np.testing.assert_allclose(unscreened["talks"], TALKS, atol=1e-6)


def test_feedback_support_grows_with_the_confident_articles_up_to_full() -> None:
    from alerts.matching import feedback_support

    policy = MatchPolicy(threshold=0.5, confident_margin=0.02, confident_articles=10)
    assert [feedback_support(n, policy) for n in (0, 3, 10, 25)] == [0.0, 0.3, 1.0, 1.0]
    assert feedback_support(0, MatchPolicy(threshold=0.5)) == 1.0  # off: always full


def test_claim_scores_take_the_best_query_less_its_language_offset() -> None:
    queries = np.stack([TALKS, TERRITORY])
    rows = np.stack([NEAR_TALKS, BETWEEN])
    offsets = np.array([[0.1, 0.0], [0.0, 0.5]], dtype=np.float32)  # per row and query
    expected = [max(NEAR_TALKS @ TALKS - 0.1, NEAR_TALKS @ TERRITORY),
                max(BETWEEN @ TALKS, BETWEEN @ TERRITORY - 0.5)]  # fmt: skip
    np.testing.assert_allclose(claim_scores(queries, offsets, rows), expected, atol=1e-6)


def test_fewer_rows_than_expected_move_a_query_less() -> None:
    from alerts.matching import move_towards

    full = move_towards(TALKS, np.stack([BETWEEN] * 4), 1.0, expected=4)
    scarce = move_towards(TALKS, np.stack([BETWEEN]), 1.0, expected=4)
    np.testing.assert_allclose(full, _unit(TALKS + BETWEEN), atol=1e-6)
    np.testing.assert_allclose(scarce, _unit(TALKS + BETWEEN / 4), atol=1e-6)
    np.testing.assert_allclose(move_towards(TALKS, np.stack([BETWEEN]), 1.0), full, atol=1e-6)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_owned_rows_keep_ties_and_everything_without_rivals() -> None:
    own = np.array([0.5, 0.3, 0.4], dtype=np.float32)
    rival = np.array([0.4, 0.35, 0.4], dtype=np.float32)
    assert owned_rows(own, [rival]).tolist() == [True, False, True]
    assert owned_rows(own, []).tolist() == [True, True, True]


def test_unrefined_profiles_are_refined_as_soon_as_the_coverage_reaches_the_floor(
    vectors: EdgeVectorStore,
) -> None:
    """Not a profile lifetime later: a first poll stores hundreds of articles in minutes, and
    they would all be matched with the unrefined queries."""
    policy = MatchPolicy(threshold=0.5, contrast=0.0, language_feedback_passages=0,
                         anchor_passages=0)  # fmt: skip
    topic = Topic(id="talks", name="Talks", description="the talks", channels=())
    state = open_state_store("sqlite://")
    clock = [0.0]
    try:
        stage = AlertStage(store=state, vectors=vectors, embedder=TableEmbedder(),  # type: ignore[arg-type]
                           collection="c", topics=(topic,), channels=frozenset(),
                           languages=("en",), backfill=timedelta(days=1), policy=policy,
                           min_feedback_coverage=len(STORED) + 1,
                           monotonic=lambda: clock[0])  # fmt: skip
        young = stage.profiles()["talks"]
        np.testing.assert_allclose(young.queries[0], TALKS, atol=1e-6)
        assert not stage.refined
        assert stage.current_policy == policy  # no cold threshold set: the same policy
        assert stage.profiles()["talks"] is young  # still below the floor: kept
        vectors.upsert("c", [_point(len(STORED), unit(1, 0, 0, 0, 0.2))])
        clock[0] += GROWTH_CHECK_SECONDS  # far within the profiles' lifetime
        refined = stage.profiles()["talks"]
        assert stage.refined
        assert not np.allclose(refined.queries[0], TALKS, atol=1e-3)
        # then rebuilt once the coverage grew by a quarter (5 -> 7 passages), not before
        assert 5 * PROFILE_GROWTH > 6
        vectors.upsert("c", [_point(len(STORED) + 1, unit(1, 0, 0, 0, 0, 0.2))])
        clock[0] += GROWTH_CHECK_SECONDS
        assert stage.profiles()["talks"] is refined
        vectors.upsert("c", [_point(len(STORED) + 2, unit(1, 0, 0, 0, 0, 0, 0.2))])
        clock[0] += GROWTH_CHECK_SECONDS
        assert stage.profiles()["talks"] is not refined
    finally:
        state.close()


def test_a_young_store_matches_with_the_cold_threshold() -> None:
    from dataclasses import replace

    from alerts.matching import BUNDLED_POLICY

    cold = replace(BUNDLED_POLICY, cold_threshold=BUNDLED_POLICY.threshold + 0.02)
    assert cold.before_feedback().threshold == pytest.approx(BUNDLED_POLICY.threshold + 0.02)
    assert replace(cold, cold_threshold=None).before_feedback() == replace(
        cold, cold_threshold=None
    )


def test_a_clear_match_for_confirmation_is_the_policys_confident_margin() -> None:
    # the two notions of "clearly above the threshold" stay one: the service's confirmation
    # takes the margin that makes a stored article confident coverage
    from dataclasses import replace

    from alerts.matching import BUNDLED_POLICY, GENERIC_POLICY
    from alerts.plan import Confirmation
    from alerts.stage import confirmation_for

    assert confirmation_for(replace(BUNDLED_POLICY, confident_margin=0.05)).margin == 0.05
    assert confirmation_for(BUNDLED_POLICY).margin == BUNDLED_POLICY.confident_margin
    assert GENERIC_POLICY.confident_margin is None
    assert confirmation_for(GENERIC_POLICY) == Confirmation()
