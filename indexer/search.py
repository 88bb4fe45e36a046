"""Semantic search over all coverage: a query in any language, one hit per article.

The vector store ranks passages; an article is represented by its best passage (so a hit can
show the sentence that matters), and ``--by-story`` folds the articles of one story together.
Hybrid retrieval (sparse / BM25 fused with dense) was measured in ``bench/quality.py``; see the
README for why it is or is not used.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    #: skip (or stop deepening) a language's search once the searches made bound its unseen
    #: passages below the results - the results are the same either way; False searches every
    #: language (what real multilingual vectors come close to; the bench's worst case)
    prune: bool = True
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
        # Measured (bench/search.py, 300k points, no filter, one run each on this machine): the
        # old shape - the unfiltered search and one per language, each of `wanted` passages, in
        # both rounds, all five re-run 4x deeper when the top `wanted` passages held fewer than
        # `limit` articles (5 % of the queries: the p95) - p50/p95 49/68 ms; this one 30/35 ms,
        # 42/46 ms with every language searched in both rounds (``prune=False``: what real
        # multilingual vectors mostly need; the synthetic ones have no language bias). Same
        # hits: top 10 identical on all 420 bench queries and the quality fixtures. Not kept:
        # qdrant-edge's query_batch (five searches 16.1 ms instead of 16.8), threads (no gain
        # on 2 cores), shallower first asks (a language-filtered search costs 2-5 ms at any
        # limit up to 50, so a deepening costs a whole search), one unfiltered search re-scored
        # (not exact: the offsets differ by 0.03-0.05 between languages, the cosines of 50
        # passages span as little, so a language can need thousands of candidates).
        if self.feedback:
            count = self.feedback
            pool = self._candidates(vector, flt, means, wanted=wanted, depth=count,
                                    bar=_passage_bar(count), prune=self.prune)  # fmt: skip
            best = sorted(pool.values(), key=lambda item: (-item[0], item[1].id))[:count]
            if best:
                vector = self._with_feedback(vector, [p for _, p in best])
        # every language is searched here: pruning this round too on the unfiltered search's
        # bound changed results (bench/search.py, 300k: top-10 recall against exact search
        # 0.952 instead of 0.996) - the 10th article can lie where the approximate (HNSW)
        # ranking misses passages; the feedback passages lie far above that
        pool = self._candidates(vector, flt, means, wanted=wanted, depth=wanted,
                                bar=_article_bar(limit), prune=False)  # fmt: skip
        # ranked by the corrected score; shown with the passage's plain cosine, which is what a
        # reader (and a threshold) understands
        hits = best_per_article([replace(p, score=adjusted) for adjusted, p in pool.values()])
        cosine = {(p.payload.article_id, p.payload.passage_index): p.score
                  for _, p in pool.values()}  # fmt: skip
        return [replace(h, score=cosine[(h.article_id, h.passage_index)]) for h in hits[:limit]]

    def _candidates(
        self,
        vector: Vector,
        flt: SearchFilter,
        means: dict[str, Vector],
        *,
        wanted: int,
        depth: int,
        bar: Callable[[Iterable[tuple[float, ScoredPoint]]], float],
        prune: bool,
    ) -> dict[str, tuple[float, ScoredPoint]]:
        """Passages by id with their corrected score: a superset of the best ones by it.

        The corrected score is the cosine minus the query's affinity to the passage's language's
        mean. Measured (bench/quality.py, P@min(10,|R|), report split): with feedback 0.729
        without this correction, 0.912 with it: the model otherwise prefers the query's own
        language. The offset is one number per language and query, so a language's best
        passages by corrected score are its best by cosine, which a search filtered to the
        language finds however far other languages outrank it.

        ``bar(pool)`` is the corrected score an unseen passage must beat to matter (-inf while
        too few results). The search without a language filter (``wanted`` passages; it holds
        the languages without a mean) runs first, then each language's (``depth`` passages).
        A language's search is asked again, ``DEEPEN`` times deeper, while its lowest returned
        cosine minus the language's offset beats the bar (an unseen passage might too); too few
        results deepen every search, once each has been asked. With ``prune``, the unfiltered
        search's lowest cosine bounds every language's unseen passages as well, so a language is
        searched only while that bound beats the bar, the most promising first (its results
        raise the bar)."""
        if means:
            offsets = {lang: float(mean @ vector) for lang, mean in means.items()}
            default = sum(offsets.values()) / len(offsets)
        else:
            offsets, default = {}, 0.0
        searches: dict[str | None, SearchFilter] = {
            lang: replace(flt, languages=(lang,))
            for lang in flt.languages or means
            if lang in means
        }
        other = tuple(lang for lang in flt.languages if lang not in means)
        if other or not flt.languages:  # languages without a mean (or no correction)
            searches[None] = replace(flt, languages=other)
        covered = prune and not flt.languages  # the unfiltered search bounds every language
        pool: dict[str, tuple[float, ScoredPoint]] = {}
        asked: dict[str | None, int] = {}
        lowest: dict[str | None, float] = {}  # the lowest cosine returned; -inf: no more points

        def run(key: str | None, limit: int) -> None:
            points = self.vectors.search(self.collection, vector, filter=searches[key],
                                         limit=limit)  # fmt: skip
            asked[key] = limit
            lowest[key] = min(p.score for p in points) if len(points) >= limit else -math.inf
            for p in points:
                pool[p.id] = (p.score - offsets.get(p.payload.language, default), p)

        if None in searches:
            run(None, wanted)
        while True:
            threshold = bar(pool.values())
            todo: list[tuple[float, str | None]] = []  # (how far above the bar, search)
            for key in searches:
                if asked.get(key, 0) >= MAX_PASSAGES or lowest.get(key) == -math.inf:
                    continue  # nothing more to ask of it
                if key is None:  # languages without a mean: deepened only for too few results
                    if threshold == -math.inf:
                        todo.append((math.inf, key))
                    continue
                bound = lowest.get(key, math.inf)
                if covered:
                    bound = min(bound, lowest[None])
                if bound - offsets[key] > threshold:
                    todo.append((bound - offsets[key] - threshold, key))
            if not todo:
                return pool
            todo = [item for item in todo if item[1] not in asked] or todo  # first asks first
            chosen = todo if threshold == -math.inf or not prune else [max(todo, key=_first)]
            for _, key in chosen:
                previous = asked.get(key)
                run(key, depth if previous is None else min(MAX_PASSAGES, previous * DEEPEN))

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


def _first(item: tuple[float, str | None]) -> float:
    return item[0]


def _passage_bar(count: int) -> Callable[[Iterable[tuple[float, ScoredPoint]]], float]:
    """The score to beat to be among the ``count`` best passages (-inf while fewer)."""

    def bar(scored: Iterable[tuple[float, ScoredPoint]]) -> float:
        best = heapq.nlargest(count, (score for score, _ in scored))
        return best[-1] if len(best) >= count else -math.inf

    return bar


def _article_bar(limit: int) -> Callable[[Iterable[tuple[float, ScoredPoint]]], float]:
    """The score to beat to be among the ``limit`` best articles, an article scoring with its
    best passage (-inf while fewer)."""

    def bar(scored: Iterable[tuple[float, ScoredPoint]]) -> float:
        articles: dict[str, float] = {}
        for score, p in scored:
            article = p.payload.article_id
            articles[article] = max(score, articles.get(article, -math.inf))
        best = heapq.nlargest(limit, articles.values())
        return best[-1] if len(best) >= limit else -math.inf

    return bar


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
