"""The indexing stage: fetched article -> passages -> vectors -> near-duplicate / story -> indexed.

Cost first: embedding is the most expensive step of the whole pipeline, so an article is not
embedded when that would add nothing:

* an exact copy (same text hash as an indexed original: a syndicated wire story) joins the
  original's story as a near-duplicate without vectors of its own;
* an update whose passages are unchanged (only the feed title or metadata changed) keeps its
  vectors; only their payload is rewritten;
* a near-duplicate by meaning (same language, lead cosine above the policy's threshold: the
  same article with an edited headline) is recorded as such, and its vectors are not stored.
  The lead is embedded first and decides alone, so a near-duplicate's body is never embedded;
* during a backlog the caller may defer the body (``defer_body``): the lead's point alone is
  stored - the article is searchable, in its story and matchable at once - and ``index_body``
  embeds the other passages later, when the worker has nothing newer to do.

``index_batch`` indexes several waiting articles with two embedding calls in all - their leads,
then the bodies of those that still need one - instead of two per article: an engine embeds a
length-sorted batch with little padding far faster than a few texts at a time (1.6x with the
torch engine). The decisions still run one article at a time, in arrival order, on the leads;
each article is stored with its body pending first, so a crash before its body is written
leaves the body to the deferred-body sweep rather than losing it.

The decisions are pure (``indexer.stories``, ``indexer.passages``); this module sequences the
I/O. Vectors are written before the state says ``indexed``: a crash in between re-runs the
article, and deterministic point ids make the re-run overwrite instead of duplicate.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from indexer.passages import split_passages
from indexer.stories import (
    JoinStory,
    NearDuplicate,
    Neighbour,
    NewStory,
    StoryMember,
    StoryPolicy,
    better_story,
    decide,
    grow_story,
    new_story,
    rehome_candidates,
    story_from_members,
    story_id_for,
)
from indexer.types import (
    Passage,
    PassageKind,
    PassagePayload,
    Point,
    SearchFilter,
    Story,
    Vector,
    point_id,
)
from monitor.types import Article, ArticleStatus, utcnow

if TYPE_CHECKING:
    from indexer.embed import Embedder
    from indexer.store import VectorStore
    from monitor.state import StateStore

log = logging.getLogger("newsmon.indexer")

#: articles whose passages are kept between indexing their lead and their body (~12 MB)
SPLITS_KEPT = 1024
#: how many earlier leads to compare a new article with when deciding its story
NEIGHBOURS = 20
#: how many of a new article's close neighbours in other stories are checked for a move into
#: its story (each check is one more lead search)
REHOME_CHECKS = 5


@dataclass(frozen=True, slots=True)
class IndexReport:
    article_id: str
    outcome: str  # new-story | joined | near-duplicate | copy | unchanged | kept-story | empty
    story_id: str | None
    passages: int = 0
    embedded: int = 0
    detail: str | None = None
    #: the lead alone was stored; ``Indexer.index_body`` embeds the rest
    body_pending: bool = False


@dataclass(frozen=True, slots=True)
class BodyReport:
    article_id: str
    embedded: int
    #: its topic match saw the lead alone: it is due for matching again
    rematch: bool


@dataclass
class Indexer:
    store: StateStore
    vectors: VectorStore
    embedder: Embedder
    collection: str
    policy: StoryPolicy
    passage_tokens: int = 256
    clock: Callable[[], datetime] = utcnow

    def __post_init__(self) -> None:
        self._collection_ready = False
        # an article's passages from its lead's indexing until its body's (a deferred body is
        # embedded minutes later; splitting again cost ~4% of a burst's indexing time)
        self._splits: OrderedDict[tuple[str, str, str], list[Passage]] = OrderedDict()
        self._splits_lock = threading.Lock()

    def ensure_collection(self) -> None:
        if not self._collection_ready:
            self.vectors.ensure_collection(self.collection, self.embedder.dim)
            self._collection_ready = True

    # -- the stage

    def index_article(self, article: Article, *, defer_body: bool = False) -> IndexReport:
        """Index one fetched article (blocking: call it from a worker thread). ``defer_body``:
        store only the lead's vector of an article that needs embedding, and mark its body
        pending for ``index_body``."""
        result = self.index_batch([article], defer_body=defer_body)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def index_batch(
        self, articles: Sequence[Article], *, defer_body: bool = False
    ) -> list[IndexReport | Exception]:
        """Index fetched articles in the given order (blocking), one result per article: its
        report, or the error that left it ``fetched`` for a retry (one article's failure never
        stops the others). Leads are embedded in one call, then bodies in one call."""
        self.ensure_collection()
        now = self.clock()
        split: dict[str, list[Passage] | Exception] = {}
        for article in articles:
            try:
                split[article.id] = self._split(article)
            except Exception as e:  # reported for this article alone
                split[article.id] = e
        leads = self._embed_leads(articles, split)
        results: list[IndexReport | Exception] = []
        for article in articles:
            passages = split[article.id]
            if isinstance(passages, Exception):
                results.append(passages)
                continue
            try:
                lead = leads.get(article.id)
                results.append(self._index_one(article, passages, lead, now, defer_body=True))
            except Exception as e:  # it stays fetched; the caller logs it
                results.append(e)
        if defer_body:
            return results
        return self._complete_bodies(results)

    def _embed_leads(
        self, articles: Sequence[Article], split: dict[str, list[Passage] | Exception]
    ) -> dict[str, Vector]:
        """The leads that need a vector, in one call: not for an exact copy (of a stored
        article, or of an earlier one in the batch), nor for an article indexed before with
        this model (its vectors may be kept; ``_index_one`` embeds its lead if they are not)."""
        wanted: dict[str, Passage] = {}
        hashes: set[str] = set()
        for article in articles:
            passages = split[article.id]
            if isinstance(passages, Exception) or not passages:
                continue
            if article.index_model == self.embedder.model_id or self._exact_copy_of(article):
                continue
            if article.text_hash and article.text_hash in hashes:
                continue
            if article.text_hash:
                hashes.add(article.text_hash)
            wanted[article.id] = passages[0]
        if len(wanted) < 2:
            return {}  # nothing to gain: _index_one embeds the lead itself when it must
        vectors = self._embed(list(wanted.values()))
        return dict(zip(wanted, vectors, strict=True))

    def _index_one(
        self,
        article: Article,
        passages: list[Passage],
        lead: Vector | None,
        now: datetime,
        *,
        defer_body: bool,
    ) -> IndexReport:
        copy_of = self._exact_copy_of(article)
        if copy_of is not None:
            return self._record_copy(article, copy_of, now)
        if not passages:
            self.store.mark_indexed(article.id, model=self.embedder.model_id, story=None,
                                    near_duplicate_of=None, now=now)  # fmt: skip
            return IndexReport(article.id, "empty", None)
        unchanged = self._stored_vectors_if_unchanged(article, passages)
        if unchanged is not None:
            return self._rewrite_payloads(article, passages, unchanged, now)
        if lead is None:
            lead = self._embed(passages[:1])[0]
        return self._place(article, passages, lead, now, defer_body=defer_body)

    def _complete_bodies(
        self, results: list[IndexReport | Exception]
    ) -> list[IndexReport | Exception]:
        """Embed, in one call, the bodies that ``index_batch`` left pending."""
        pending = [r for r in results if isinstance(r, IndexReport) and r.body_pending]
        if not pending:
            return results
        try:
            fresh = [self.store.get_article(r.article_id) for r in pending]  # stories may move
            bodies = self.index_bodies([a for a in fresh if a is not None])
        except Exception:  # the bodies stay pending: the deferred-body sweep embeds them
            log.exception("embedding the bodies of %d articles failed; deferred", len(pending))
            return results
        done = {report.article_id: report for report in bodies if report is not None}
        return [
            replace(r, body_pending=False, embedded=r.embedded + done[r.article_id].embedded)
            if isinstance(r, IndexReport) and r.article_id in done
            else r
            for r in results
        ]

    def index_body(self, article: Article) -> BodyReport | None:
        """Embed and store the passages after the lead of an article indexed by its lead alone
        (blocking). None when its body is not pending (any more), or when it was indexed with
        another model: ``newsmon reindex`` embeds it whole."""
        return self.index_bodies([article])[0]

    def index_bodies(self, articles: Sequence[Article]) -> list[BodyReport | None]:
        """``index_body`` for several articles, with one embedding call. Their passages come
        from the split their leads were cut from (``_split`` keeps it) unless it was evicted."""
        due = [a for a in articles if a.body_pending and a.status is ArticleStatus.INDEXED
               and a.index_model == self.embedder.model_id]  # fmt: skip
        if not due:
            return [None] * len(articles)
        self.ensure_collection()
        # the text is the one indexed (a new version goes back to `fetched` first), so the
        # split is too: the stored lead stays, the body's points are added beside it
        bodies = {a.id: self._split(a)[1:] for a in due}
        vectors = iter(self._embed([p for body in bodies.values() for p in body]))
        reports: dict[str, BodyReport] = {}
        for article in due:
            body = bodies[article.id]
            if body:
                embedded = [next(vectors) for _ in body]
                points = self._points(article, body, embedded, article.story_id)
                self.vectors.upsert(self.collection, points)
            rematch = _matched_on_lead(article)
            self.store.mark_body_indexed(article.id, rematch=rematch, now=self.clock())
            reports[article.id] = BodyReport(article.id, len(body), rematch)
        return [reports.get(a.id) for a in articles]

    def _split(self, article: Article) -> list[Passage]:
        """The article's passages; kept per text version (id, text hash, title)."""
        key = (article.id, article.text_hash or "", article.title)
        with self._splits_lock:
            known = self._splits.get(key) if article.text_hash else None
        if known is not None:
            return known
        passages = split_passages(
            article.title, article.text or "", count_tokens=self.embedder.count_tokens,
            max_tokens=self.passage_tokens,
        )  # fmt: skip
        if article.text_hash:
            with self._splits_lock:
                self._splits[key] = passages
                while len(self._splits) > SPLITS_KEPT:
                    self._splits.popitem(last=False)
        return passages

    def _embed(self, passages: Sequence[Passage]) -> list[Vector]:
        if not passages:
            return []
        return list(self.embedder.embed_documents([p.text for p in passages]))

    def _exact_copy_of(self, article: Article) -> Article | None:
        """The original this article repeats: as decided before (re-indexing keeps the
        verdict), or an indexed article with exactly the same text."""
        if article.near_duplicate_of:
            return self.store.get_article(article.near_duplicate_of)
        if not article.text_hash:
            return None
        return self.store.find_indexed_by_text_hash(article.text_hash, exclude_id=article.id)

    def _record_copy(self, article: Article, original: Article, now: datetime) -> IndexReport:
        if article.story_id:  # re-indexing: the copy is already counted in its story
            story = self._grow(article.story_id, article, now, count=False)
        else:
            story = self._grow(original.story_id, article, now)
        self.vectors.delete_articles(self.collection, [article.id])
        self.store.mark_indexed(article.id, model=self.embedder.model_id, story=story,
                                near_duplicate_of=original.id, now=now)  # fmt: skip
        return IndexReport(article.id, "copy", story.id if story else None, detail=original.id)

    def _stored_vectors_if_unchanged(
        self, article: Article, passages: Sequence[Passage]
    ) -> list[Vector] | None:
        """The article's stored vectors, when its passages are exactly the ones stored."""
        if article.index_model != self.embedder.model_id:
            return None
        stored = self.vectors.article_points(self.collection, article.id, with_vectors=True)
        by_index = {payload.passage_index: (payload, vector) for payload, vector in stored}
        if len(by_index) != len(passages):
            return None
        vectors: list[Vector] = []
        for passage in passages:
            payload, vector = by_index.get(passage.index, (None, None))
            if payload is None or vector is None or payload.text != passage.text:
                return None
            vectors.append(vector)
        return vectors

    def _rewrite_payloads(
        self, article: Article, passages: Sequence[Passage], vectors: list[Vector], now: datetime
    ) -> IndexReport:
        story = self._grow(article.story_id, article, now, count=False)
        self._write_points(article, passages, vectors, story.id if story else None)
        self.store.mark_indexed(article.id, model=self.embedder.model_id, story=story,
                                near_duplicate_of=article.near_duplicate_of, now=now)  # fmt: skip
        return IndexReport(article.id, "unchanged", story.id if story else None, len(passages))

    def _place(
        self,
        article: Article,
        passages: Sequence[Passage],
        lead: Vector,
        now: datetime,
        *,
        defer_body: bool,
    ) -> IndexReport:
        if article.story_id:  # re-indexing (new model, changed text): the story stays
            story = self._grow(article.story_id, article, now, count=False)
            return self._store(article, passages, lead, story, "kept-story", now,
                               defer_body=defer_body)  # fmt: skip
        neighbours = self._neighbours(article.id, _published(article), lead)
        decision = decide(
            article.language or article.feed_language, _published(article), neighbours,
            self.policy, now,
        )  # fmt: skip
        if isinstance(decision, NearDuplicate):
            story = self._grow(decision.story_id, article, now)
            self.vectors.delete_articles(self.collection, [article.id])
            self._mark(article, story, decision.of_article_id, now)
            return IndexReport(article.id, "near-duplicate", story.id if story else None,
                               len(passages), 1, f"{decision.of_article_id} "
                               f"({decision.score:.3f})")  # fmt: skip
        if isinstance(decision, JoinStory):
            story = self._grow(decision.story_id, article, now)
            outcome = "joined"
        else:
            assert isinstance(decision, NewStory)
            story = self._found_story(article, now)
            outcome = "new-story"
        report = self._store(article, passages, lead, story, outcome, now, defer_body=defer_body)
        if story is not None:
            self._rehome(article, story, neighbours, now)
        return report

    def _store(
        self,
        article: Article,
        passages: Sequence[Passage],
        lead: Vector,
        story: Story | None,
        outcome: str,
        now: datetime,
        *,
        defer_body: bool,
    ) -> IndexReport:
        """Write the lead's point and, unless deferred, the body's; then mark it indexed."""
        pending = defer_body and len(passages) > 1
        stored = passages[:1] if pending else passages
        vectors = [lead, *self._embed(stored[1:])]
        story_id = story.id if story else None
        self._write_points(article, stored, vectors, story_id)
        self._mark(article, story, None, now, body_pending=pending)
        return IndexReport(article.id, outcome, story_id, len(passages), len(stored),
                           body_pending=pending)  # fmt: skip

    # -- helpers

    def _rehome(
        self, article: Article, story: Story, neighbours: Sequence[Neighbour], now: datetime
    ) -> None:
        """Move earlier articles that now fit the article's story better than their own.

        Only stories that no alert has reported are reshaped: an alert told its readers what
        the story was (the alert stage joins a split story to the earlier alert instead)."""
        language = article.language or article.feed_language
        candidates = rehome_candidates(
            story.id, language, _published(article), neighbours, self.policy, now
        )[:REHOME_CHECKS]
        alerted = self.store.alerted_stories([c.story_id for c in candidates if c.story_id])
        for candidate in candidates:
            if candidate.story_id is None or candidate.story_id in alerted:
                continue
            points = self.vectors.article_points(
                self.collection, candidate.article_id, with_vectors=True
            )
            lead = next((v for p, v in points if p.kind is PassageKind.LEAD), None)
            if lead is None:
                continue
            own = self._neighbours(candidate.article_id, candidate.published_at, lead)
            move = better_story(
                candidate.language, candidate.published_at, candidate.story_id, story.id, own,
                self.policy, now,
            )  # fmt: skip
            if move is not None:
                self._move(candidate, story.id, move, now)

    def _move(self, member: Neighbour, story_id: str, move: JoinStory, now: datetime) -> None:
        left = member.story_id
        assert left is not None
        # the member and its near-duplicates (they have no vectors, they follow their original)
        members = self.store.story_articles(left)
        leaving = [a for a in members if member.article_id in (a.id, a.near_duplicate_of)]
        moved = [a.id for a in leaving]
        if not moved:
            return  # moved or removed meanwhile
        stays = [a for a in members if a.id not in moved]
        joined = [*self.store.story_articles(story_id), *leaving]
        stories = self.store.get_stories([left, story_id])
        target = self._summary(story_id, joined, stories.get(story_id), now)
        assert target is not None
        self.vectors.set_story(self.collection, moved, story_id)
        self.store.move_to_story(
            moved, target, left=left, left_story=self._summary(left, stays, stories.get(left), now)
        )
        log.info("article %s moved from story %s to %s (mean margin %+.3f via %s)",
                 member.article_id, left, story_id, move.support, move.via_article_id)  # fmt: skip

    def _summary(
        self, story_id: str, members: Sequence[Article], story: Story | None, now: datetime
    ) -> Story | None:
        summaries = [
            StoryMember(a.id, a.title, a.language or a.feed_language, a.feed, _published(a))
            for a in members
        ]
        representative = story.representative_article_id if story else None
        return story_from_members(
            story_id, summaries, representative=representative, now=now, policy=self.policy
        )

    def _neighbours(self, article_id: str, published: datetime, lead: Vector) -> list[Neighbour]:
        """Recent articles whose lead is closest to this one's (the story candidates)."""
        window = self.policy.window
        hits = self.vectors.search(
            self.collection,
            lead,
            filter=SearchFilter(
                kinds=(PassageKind.LEAD,),
                since=published - window,
                until=published + window,
                exclude_article_ids=(article_id,),
            ),
            limit=NEIGHBOURS,
        )
        story_ids = [h.payload.story_id for h in hits if h.payload.story_id]
        stories = self.store.get_stories(story_ids) if story_ids else {}
        return [
            Neighbour(
                article_id=h.payload.article_id,
                story_id=h.payload.story_id,
                score=h.score,
                language=h.payload.language,
                source=h.payload.source,
                published_at=h.payload.published_at,
                story_started=_first_seen(stories, h.payload.story_id),
            )
            for h in hits
        ]

    def _grow(
        self, story_id: str | None, article: Article, now: datetime, *, count: bool = True
    ) -> Story | None:
        if story_id is None:
            return None
        story = self.store.get_stories([story_id]).get(story_id)
        if story is None:
            return self._found_story(article, now, story_id)
        if not count:
            return story
        return grow_story(
            story,
            headline_candidate=article.title,
            language=article.language or article.feed_language,
            source=article.feed,
            published_at=_published(article),
            now=now,
            policy=self.policy,
        )

    def _found_story(self, article: Article, now: datetime, story_id: str | None = None) -> Story:
        return new_story(
            story_id or story_id_for(article.id),
            article_id=article.id,
            headline=article.title,
            language=article.language or article.feed_language,
            source=article.feed,
            published_at=_published(article),
            now=now,
        )

    def _write_points(
        self,
        article: Article,
        passages: Sequence[Passage],
        vectors: Sequence[Vector],
        story_id: str | None,
    ) -> None:
        # an updated article may have fewer passages now: drop the old ones first
        self.vectors.delete_articles(self.collection, [article.id])
        self.vectors.upsert(self.collection, self._points(article, passages, vectors, story_id))

    def _points(
        self,
        article: Article,
        passages: Sequence[Passage],
        vectors: Sequence[Vector],
        story_id: str | None,
    ) -> list[Point]:
        return [
            Point(
                id=point_id(article.canonical_url or article.id, p.index),
                vector=v,
                payload=PassagePayload(
                    article_id=article.id,
                    passage_index=p.index,
                    kind=p.kind,
                    text=p.text,
                    url=article.canonical_url or article.url,
                    title=article.title,
                    language=article.language or article.feed_language,
                    source=article.feed,
                    published_at=_published(article),
                    story_id=story_id,
                ),
            )
            for p, v in zip(passages, vectors, strict=True)
        ]

    def _mark(
        self,
        article: Article,
        story: Story | None,
        near_duplicate_of: str | None,
        now: datetime,
        *,
        body_pending: bool = False,
    ) -> None:
        self.store.mark_indexed(article.id, model=self.embedder.model_id, story=story,
                                near_duplicate_of=near_duplicate_of, now=now,
                                body_pending=body_pending)  # fmt: skip


def _matched_on_lead(article: Article) -> bool:
    """Whether its topic match came after this indexing, i.e. saw the lead alone. A match from
    before (the article was re-indexed) stays: an article is matched once, re-indexing never
    alerts again."""
    if article.matched_at is None or article.indexed_at is None:
        return False  # not matched yet: the service's sweep matches the whole article
    return article.matched_at >= article.indexed_at


def _first_seen(stories: dict[str, Story], story_id: str | None) -> datetime | None:
    story = stories.get(story_id) if story_id else None
    return story.first_seen if story else None


def _published(article: Article) -> datetime:
    """The article's time for windows and filters: published, else when we discovered it."""
    return article.published_at or article.discovered_at
