"""Semantic search over all coverage: a query in any language, one hit per article.

The vector store ranks passages; an article is represented by its best passage (so a hit can
show the sentence that matters), and ``--by-story`` folds the articles of one story together.
Hybrid retrieval (sparse / BM25 fused with dense) was measured in ``bench/quality.py``; see the
README for why it is or is not used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from indexer.types import ScoredPoint, SearchFilter, SearchHit, Story, StoryHit, Vector
from monitor.types import as_utc

if TYPE_CHECKING:
    from indexer.embed import Embedder
    from indexer.store import VectorStore
    from monitor.state import StateStore

#: passages fetched per wanted article: several passages of one article crowd the top
OVERSAMPLE = 5
#: pseudo-relevance feedback: the query vector plus the mean of its best passages' vectors,
#: searched again. Measured in bench/quality.py (report split, P@min(10,|R|)): 0.664 -> 0.729,
#: mostly by pulling in other languages' coverage of the same event.
FEEDBACK_PASSAGES = 3
MAX_PASSAGES = 1000
#: stored vectors sampled per language to estimate its mean direction, and the least that
#: makes an estimate; the means are refreshed this often
LANGUAGE_SAMPLE = 2000
MIN_LANGUAGE_SAMPLE = 20
MEANS_TTL_SECONDS = 600.0
MAX_QUERY_CHARS = 2000


@dataclass
class Searcher:
    vectors: VectorStore
    embedder: Embedder
    collection: str
    store: StateStore
    feedback: int = FEEDBACK_PASSAGES
    #: the languages whose bias is removed at query time (the configured feeds' languages)
    languages: tuple[str, ...] = ()
    clock: Callable[[], float] = time.monotonic
    _ready: bool = field(default=False, init=False, repr=False)
    _means: dict[str, Vector] = field(default_factory=dict, init=False, repr=False)
    _means_at: float | None = field(default=None, init=False, repr=False)

    def search(
        self, query: str, *, filter: SearchFilter | None = None, limit: int = 10
    ) -> list[SearchHit]:
        """The ``limit`` best articles for ``query`` (best first), each with its best passage."""
        query = query.strip()[:MAX_QUERY_CHARS]
        if not query or limit <= 0:
            return []
        flt = filter or SearchFilter()
        if not self._ready:  # before the first article is indexed: no hits rather than an error
            self.vectors.ensure_collection(self.collection, self.embedder.dim)
            self._ready = True
        vector = self.embedder.embed_queries([query])[0]
        means = self._language_means()
        wanted = limit * OVERSAMPLE
        ranked = self._ranked(vector, flt, wanted, means)
        if self.feedback and ranked:
            vector = self._with_feedback(vector, [p for _, p in ranked[: self.feedback]])
            ranked = self._ranked(vector, flt, wanted, means)
        while True:
            # ranked by the corrected score; shown with the passage's plain cosine, which is
            # what a reader (and a threshold) understands
            hits = best_per_article([replace(p, score=adjusted) for adjusted, p in ranked])
            if len(hits) >= limit or len(ranked) < wanted or wanted >= MAX_PASSAGES:
                cosine = {(p.payload.article_id, p.payload.passage_index): p.score
                          for _, p in ranked}  # fmt: skip
                return [replace(h, score=cosine[(h.article_id, h.passage_index)])
                        for h in hits[:limit]]  # fmt: skip
            wanted = min(MAX_PASSAGES, wanted * 4)
            ranked = self._ranked(vector, flt, wanted, means)

    def _ranked(
        self, vector: Vector, flt: SearchFilter, wanted: int, means: dict[str, Vector]
    ) -> list[tuple[float, ScoredPoint]]:
        """Passages ranked by cosine minus the query's affinity to their language's mean.

        Measured (bench/quality.py, P@min(10,|R|), report split): with feedback 0.729 without
        this correction, 0.915 with it: the model otherwise prefers the query's own language.
        One search per language keeps every language's best passages among the candidates.
        """
        if not means:
            points = self.vectors.search(self.collection, vector, filter=flt, limit=wanted)
            return [(p.score, p) for p in points]
        offsets = {lang: float(mean @ vector) for lang, mean in means.items()}
        default = sum(offsets.values()) / len(offsets)
        wanted_languages = flt.languages or tuple(means)
        known = [lang for lang in wanted_languages if lang in means]
        searches = [replace(flt, languages=(lang,)) for lang in known]
        other = [lang for lang in wanted_languages if lang not in means]
        if other or not flt.languages:  # languages without a mean: one unfiltered search
            searches.append(replace(flt, languages=tuple(other)))
        ranked: dict[str, tuple[float, ScoredPoint]] = {}
        for sub in searches:
            for p in self.vectors.search(self.collection, vector, filter=sub, limit=wanted):
                adjusted = p.score - offsets.get(p.payload.language, default)
                ranked[p.id] = (adjusted, p)
        return sorted(ranked.values(), key=lambda item: (-item[0], item[1].id))[:wanted]

    def _language_means(self) -> dict[str, Vector]:
        """Each language's mean passage direction, from a sample of stored vectors (cached)."""
        now = self.clock()
        if self._means_at is not None and now - self._means_at < MEANS_TTL_SECONDS:
            return self._means
        means: dict[str, Vector] = {}
        for lang in self.languages:
            sample = self.vectors.sample_vectors(
                self.collection, SearchFilter(languages=(lang,)), LANGUAGE_SAMPLE
            )
            if len(sample) >= MIN_LANGUAGE_SAMPLE:
                means[lang] = np.mean(np.stack(sample), axis=0).astype(np.float32)
        # with fewer than two languages there is no bias between languages to remove
        self._means = means if len(means) >= 2 else {}
        self._means_at = now
        return self._means

    def _with_feedback(self, query: Vector, best: Sequence[ScoredPoint]) -> Vector:
        """The query moved towards its best passages (their stored vectors)."""
        vectors: list[Vector] = []
        for point in best:
            stored = self.vectors.article_points(self.collection, point.payload.article_id,
                                                 with_vectors=True)  # fmt: skip
            index = point.payload.passage_index
            vectors.extend(v for p, v in stored if v is not None and p.passage_index == index)
        return feedback_query(query, vectors)

    def search_stories(
        self, query: str, *, filter: SearchFilter | None = None, limit: int = 10
    ) -> list[StoryHit]:
        """Hits folded into stories, best story first; an article without story stands alone."""
        hits = self.search(query, filter=filter, limit=limit * OVERSAMPLE)
        story_ids = [h.story_id for h in hits if h.story_id]
        stories = self.store.get_stories(story_ids) if story_ids else {}
        return group_by_story(hits, stories, limit)


def feedback_query(query: Vector, passages: Sequence[Vector]) -> Vector:
    """Rocchio-style pseudo-relevance feedback: query + mean of the passages, renormalised
    (pure)."""
    if not passages:
        return query
    moved = query + np.mean(np.stack(passages), axis=0)
    norm = float(np.linalg.norm(moved))
    return (moved / norm).astype(np.float32) if norm > 0 else query


def best_per_article(points: Sequence[ScoredPoint]) -> list[SearchHit]:
    """One hit per article: its best-scoring passage; best first (pure)."""
    best: dict[str, ScoredPoint] = {}
    for point in points:
        current = best.get(point.payload.article_id)
        if current is None or point.score > current.score:
            best[point.payload.article_id] = point
    ranked = sorted(best.values(), key=lambda p: (-p.score, p.payload.article_id))
    return [_hit(p) for p in ranked]


def _hit(point: ScoredPoint) -> SearchHit:
    p = point.payload
    return SearchHit(
        article_id=p.article_id,
        score=point.score,
        url=p.url,
        title=p.title,
        language=p.language,
        source=p.source,
        published_at=p.published_at,
        passage=p.text,
        passage_index=p.passage_index,
        story_id=p.story_id,
    )


def group_by_story(
    hits: Sequence[SearchHit], stories: Mapping[str, Story], limit: int
) -> list[StoryHit]:
    """Fold article hits into stories, keeping the order of each story's best hit (pure)."""
    groups: dict[str, list[SearchHit]] = {}
    for hit in hits:
        groups.setdefault(hit.story_id or f"article:{hit.article_id}", []).append(hit)
    folded = []
    for key, members in groups.items():
        story = stories.get(key)
        folded.append(StoryHit(story=story, score=members[0].score, hits=tuple(members)))
    return folded[:limit]


# -- the result schema shared by the CLI (--json) and the HTTP API ----------


def hit_json(hit: SearchHit) -> dict[str, object]:
    return {
        "url": hit.url,
        "title": hit.title,
        "language": hit.language,
        "source": hit.source,
        "published": hit.published_at.isoformat(timespec="seconds"),
        "score": round(hit.score, 4),
        "passage": hit.passage,
        "passage_index": hit.passage_index,
        "story_id": hit.story_id,
        "article_id": hit.article_id,
    }


def story_json(story: Story) -> dict[str, object]:
    return {
        "id": story.id,
        "headline": story.headline,
        "first_seen": story.first_seen.isoformat(timespec="seconds"),
        "last_seen": story.last_seen.isoformat(timespec="seconds"),
        "article_count": story.article_count,
        "languages": list(story.languages),
        "sources": list(story.sources),
    }


def story_hit_json(hit: StoryHit) -> dict[str, object]:
    return {
        "story": story_json(hit.story) if hit.story else None,
        "score": round(hit.score, 4),
        "articles": [hit_json(h) for h in hit.hits],
    }


def parse_when(text: str, now: datetime) -> datetime:
    """A time bound from the user: a duration back from now (``7d``, ``12h``) or an ISO date or
    datetime (``2026-11-01``, ``2026-11-01T08:00+01:00``; naive means UTC)."""
    from monitor.config import parse_duration

    text = text.strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"not a duration (7d, 12h) or ISO date (2026-11-01): {text!r}") from e
    return as_utc(value)
