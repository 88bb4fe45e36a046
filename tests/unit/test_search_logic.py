from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from indexer.search import best_per_article, feedback_query, group_by_story
from indexer.types import PassageKind, PassagePayload, ScoredPoint, Story

T = datetime(2026, 11, 28, tzinfo=UTC)


def point(article: str, index: int, score: float, story: str | None = None) -> ScoredPoint:
    payload = PassagePayload(
        article_id=article, passage_index=index, kind=PassageKind.BODY, text=f"{article}#{index}",
        url=f"https://x/{article}", title=article, language="uk", source="S", published_at=T,
        story_id=story,
    )  # fmt: skip
    return ScoredPoint(id=f"{article}-{index}", score=score, payload=payload)


def test_best_per_article_keeps_each_articles_best_passage_in_score_order() -> None:
    hits = best_per_article([point("a", 0, 0.5), point("b", 2, 0.9), point("a", 3, 0.7)])
    assert [(h.article_id, h.passage_index) for h in hits] == [("b", 2), ("a", 3)]


def test_group_by_story_keeps_the_order_of_each_storys_best_hit() -> None:
    hits = best_per_article(
        [point("a", 0, 0.9, "s1"), point("b", 0, 0.8), point("c", 0, 0.7, "s1")]
    )
    story = Story("s1", "H", T, T, 2, ("uk",), ("S",), "a")
    grouped = group_by_story(hits, {"s1": story}, limit=5)
    assert [g.story for g in grouped] == [story, None]
    assert [h.article_id for h in grouped[0].hits] == ["a", "c"]


def test_feedback_moves_the_query_towards_the_passages_and_stays_normalised() -> None:
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    passages = [np.array([0.0, 1.0, 0.0], dtype=np.float32)] * 3
    moved = feedback_query(query, passages)
    assert abs(float(np.linalg.norm(moved)) - 1.0) < 1e-6
    assert moved[1] > 0.5
    assert feedback_query(query, []) is query
