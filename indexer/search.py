"""Semantic search over all coverage: a query in any language, one hit per article.

The vector store ranks passages; an article is represented by its best passage (so a hit can
show the sentence that matters), and ``--by-story`` folds the articles of one story together.
Hybrid retrieval (sparse / BM25 fused with dense) was measured in ``bench/quality.py``; see the
README for why it is or is not used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
#: how much deeper a search that may hold more of the best articles is asked again
DEEPEN = 4
#: stored vectors sampled per language to estimate its mean direction, and the least that
#: makes an estimate; the means are refreshed this often
LANGUAGE_SAMPLE = 2000
MIN_LANGUAGE_SAMPLE = 20
MEANS_TTL_SECONDS = 600.0
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True, slots=True)
class _Sub:
    """One vector-store search for a query, and how its passages are scored."""

    filter: SearchFilter
    #: the one language it searches, or None: the languages without a mean (or no correction)
    language: str | None
    offsets: Mapping[str, float]  # the query's affinity to each language's mean
    default: float  # the offset of a language without a mean

    def scored(
        self, points: Sequence[ScoredPoint]
    ) -> Iterator[tuple[str, tuple[float, ScoredPoint]]]:
        """(id, (corrected score, point)) of each point."""
        for p in points:
            yield p.id, (p.score - self.offsets.get(p.payload.language, self.default), p)

    def floor(self, points: Sequence[ScoredPoint]) -> float:
        """The best corrected score a passage this search did not return can have: its
        language's offset from the lowest cosine returned; -inf where that bounds nothing."""
        if self.language is None or not points:
            return -math.inf
        return min(p.score for p in points) - self.offsets[self.language]


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
        wanted = min(MAX_PASSAGES, limit * OVERSAMPLE)
        if self.feedback:
            subs = self._sub_searches(vector, flt, means)
            best = self._best_passages(vector, subs, self.feedback, wanted)
            if best:
                vector = self._with_feedback(vector, best)
        # the offsets are the moved query's affinities to the means
        ranked = self._best_articles(vector, self._sub_searches(vector, flt, means), limit, wanted)
        # ranked by the corrected score; shown with the passage's plain cosine, which is what a
        # reader (and a threshold) understands
        return [replace(hit, score=cosine) for cosine, hit in ranked[:limit]]

    def _sub_searches(
        self, vector: Vector, flt: SearchFilter, means: dict[str, Vector]
    ) -> list[_Sub]:
        """The searches whose union holds the best passages by corrected score: one per wanted
        language with a mean (filtered to it), plus one for the languages without a mean.

        The corrected score is the cosine minus the query's affinity to the passage's language's
        mean (a constant per language and query). Measured (bench/quality.py, P@min(10,|R|),
        report split): with feedback 0.729 without this correction, 0.912 with it: the model
        otherwise prefers the query's own language. Since the offset is constant within a
        language, a language's best passages by corrected score are its best by cosine, which
        its own filtered search finds however far the other languages outrank it.
        """
        if not means:
            return [_Sub(flt, None, {}, 0.0)]
        offsets = {lang: float(mean @ vector) for lang, mean in means.items()}
        default = sum(offsets.values()) / len(offsets)
        wanted_languages = flt.languages or tuple(means)
        subs = [_Sub(replace(flt, languages=(lang,)), lang, offsets, default)
                for lang in wanted_languages if lang in means]  # fmt: skip
        other = tuple(lang for lang in wanted_languages if lang not in means)
        if other or not flt.languages:  # languages without a mean: one unfiltered search
            subs.append(_Sub(replace(flt, languages=other), None, offsets, default))
        return subs

    def _best_passages(
        self, vector: Vector, subs: Sequence[_Sub], count: int, wanted: int
    ) -> list[ScoredPoint]:
        """The ``count`` best passages by corrected score (for feedback): a language's ``count``
        best by cosine are its ``count`` best by corrected score, so each language's search asks
        for ``count`` only; the search for languages without a mean asks for ``wanted`` as in
        the second round (their offsets differ, so their cosine order is not the corrected one).
        """
        pool: dict[str, tuple[float, ScoredPoint]] = {}
        for sub in subs:
            depth = count if sub.language is not None else wanted
            pool.update(sub.scored(self._search(vector, sub, depth)))
        ranked = sorted(pool.values(), key=lambda item: (-item[0], item[1].id))
        return [p for _, p in ranked[:count]]

    def _best_articles(
        self, vector: Vector, subs: Sequence[_Sub], limit: int, wanted: int
    ) -> list[tuple[float, SearchHit]]:
        """The best articles by corrected score (each with its best passage), as (cosine, hit)
        pairs; at least ``limit`` of them unless fewer match.

        Every search asks for ``wanted`` passages first. A language's search is asked for more
        only when its last passage still outscores the ``limit``-th article (then one of its
        unseen passages might too); every search is when fewer than ``limit`` articles came
        back (passages of one article crowd the top). That makes the articles the same as the
        top of the exact union of per-language rankings, without re-running every search
        deeper: before, too few articles in the first ``wanted`` passages (5 % of the
        unfiltered bench queries) re-ran all five searches at 4x the depth - the p95.
        The search for languages without a mean is deepened only for too few articles, as before.
        """
        depth = dict.fromkeys(range(len(subs)), wanted)
        found = {i: self._search(vector, sub, wanted) for i, sub in enumerate(subs)}
        while True:
            pool: dict[str, tuple[float, ScoredPoint]] = {}
            for i, sub in enumerate(subs):
                pool.update(sub.scored(found[i]))
            hits = best_per_article([replace(p, score=adjusted) for adjusted, p in pool.values()])
            bar = hits[limit - 1].score if len(hits) >= limit else -math.inf
            deeper = [
                i
                for i, sub in enumerate(subs)
                if len(found[i]) >= depth[i] < MAX_PASSAGES  # not exhausted
                and (bar == -math.inf or sub.floor(found[i]) > bar)
            ]
            if not deeper:
                cosine = {(p.payload.article_id, p.payload.passage_index): p.score
                          for _, p in pool.values()}  # fmt: skip
                return [(cosine[(h.article_id, h.passage_index)], h) for h in hits]
            for i in deeper:
                depth[i] = min(MAX_PASSAGES, depth[i] * DEEPEN)
                found[i] = self._search(vector, subs[i], depth[i])

    def _search(self, vector: Vector, sub: _Sub, depth: int) -> list[ScoredPoint]:
        return self.vectors.search(self.collection, vector, filter=sub.filter, limit=depth)

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
