"""The alerting stage: indexed article -> topic matches -> alert messages in the outbox.

It runs right after an article is indexed (in the indexing worker's thread), reading the
passage vectors the indexer stored, so no text is embedded twice. Its progress is recorded on
the article (``matched_at``, set once its alerts are in the outbox): a crash between indexing
and the outbox is resumed by the service's sweep, and an article is matched once - re-indexing
with a new model never alerts again.
The decisions are pure (``alerts.matching``, ``alerts.plan``); this module sequences the I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from alerts.matching import (
    ArticleView,
    MatchPolicy,
    StoryMatch,
    TopicProfile,
    best_passages,
    feedback_support,
    lends_support,
    match_topics,
    move_towards,
    near_miss,
    refine_query,
    screen_feedback,
    story_supported,
)
from alerts.plan import (
    AlertMember,
    Confirmation,
    FollowUpPolicy,
    join_margin,
    may_alert,
    plan_message,
    related_alert,
)
from alerts.profiles import build_profile, query_texts, reference_means
from alerts.types import AlertMessage, AlertRecord, Match, StoredMatch, Topic
from indexer.means import language_means, overall_mean
from indexer.stories import StoryPolicy
from indexer.types import Matrix, SearchFilter, Vector
from monitor.types import Article, ArticleStatus, utcnow

if TYPE_CHECKING:
    from indexer.embed import Embedder
    from indexer.store import VectorStore
    from monitor.state import StateStore

log = logging.getLogger("newsmon.alerts")

#: profiles are rebuilt this often (the language means drift as coverage accumulates)
PROFILE_TTL_SECONDS = 600.0
#: profiles are rebuilt early once the stored coverage grew by this factor since their build
PROFILE_GROWTH = 1.25
#: how often (seconds) the stage checks whether the coverage grew
GROWTH_CHECK_SECONDS = 10.0
#: stored passages needed before feedback refines the topic queries: on a handful of passages
#: "the best ones" are simply all of them, and the query would drift to whatever is stored
MIN_FEEDBACK_COVERAGE = 500
#: screened feedback (``MatchPolicy.feedback_margin``, ``feedback_competition``) picks its
#: passages among this many times as many candidates
SCREENED_CANDIDATES = 4
#: passages a backtest considers per topic query (its candidates for exact scoring)
BACKTEST_CANDIDATES = 3000
#: a clear match lends support to at most this many of its story's other articles (the most
#: recent): a story of hundreds of articles is rescored in bounded time
STORY_SUPPORT_MEMBERS = 50


class HeldLead(NamedTuple):
    """An unreported match of an uncertain topic, as the join rule sees it (``Lead``)."""

    match: StoredMatch
    language: str
    published_at: datetime
    lead: Vector


class StoredPassage(NamedTuple):
    """A stored passage that may refine a topic's queries."""

    article_id: str
    language: str
    vector: Vector


@dataclass(frozen=True, slots=True)
class ArticleVerdict:
    """A backtest row: one article's match against a topic."""

    article: Article
    match: Match
    #: the verdict without the user's labels (``topics test`` shows what the labels changed)
    without_labels: Match | None = None


@dataclass
class AlertStage:
    store: StateStore
    vectors: VectorStore
    embedder: Embedder
    collection: str
    topics: tuple[Topic, ...]
    #: channels that are configured and enabled (a Slack channel without URL is not)
    channels: frozenset[str]
    languages: tuple[str, ...]
    backfill: timedelta
    policy: MatchPolicy
    follow_up: FollowUpPolicy = field(default_factory=FollowUpPolicy)
    #: a first alert waits for confirmation while the topic's queries are not fully refined on
    #: its own coverage (``alerts.plan.Confirmation``, its margin the policy's:
    #: ``confirmation_for``; False: alert on any match)
    confirm_uncertain: bool = True
    story_policy: StoryPolicy = field(default_factory=StoryPolicy)
    clock: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic
    #: stored passages needed before feedback refines the topic queries (a benchmark of a
    #: small labelled split models a service that has long passed it with 0)
    min_feedback_coverage: int = MIN_FEEDBACK_COVERAGE
    _profiles: dict[str, TopicProfile] | None = field(default=None, init=False, repr=False)
    _profiles_key: object = field(default=None, init=False, repr=False)
    _built_at: float = field(default=0.0, init=False, repr=False)
    _feedback_on: bool = field(default=False, init=False, repr=False)
    _means: Mapping[str, Vector] = field(default_factory=dict, init=False, repr=False)
    #: the topics' unrefined queries, while the profiles are built (``_own``)
    _claims: dict[str, Matrix] = field(default_factory=dict, init=False, repr=False)
    _context: Vector | None = field(default=None, init=False, repr=False)
    #: per topic, the share of the feedback weights the last build's refinement got: 0 before
    #: the feedback floor, else its ``_support`` (``refinement``)
    _refinement: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _built_count: int = field(default=0, init=False, repr=False)
    _checked_at: float = field(default=float("-inf"), init=False, repr=False)
    #: per topic, the articles a story's clear match rescored with the profiles built at
    #: ``_rescored_at``: the same profiles give the same verdict, so a big story's near misses
    #: are not rescored at every clear match of it (``_support_story``)
    _rescored: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)
    _rescored_at: float = field(default=-1.0, init=False, repr=False)
    #: store searches of the profile build under way (see _best_stored)
    _searched: dict[tuple[bytes, tuple[str, ...], int], list[StoredPassage]] = field(
        default_factory=dict, init=False, repr=False
    )

    # -- the stage

    def process(self, article_id: str, *, again: bool = False) -> list[AlertMessage]:
        """Match one indexed article against every topic; returns the messages it queued.

        ``again``: match an article that was matched before (its passages changed, e.g. its
        body was embedded after its lead); stored matches keep which message reported them."""
        article = self.store.get_article(article_id)
        if article is None or article.status is not ArticleStatus.INDEXED:
            return []
        if article.matched_at and not again:
            return []
        now = self.clock()
        alertable = may_alert(article, now, self.backfill)
        matches = self.match(article) if self.topics else []
        if article.story_id is not None:
            matches = [self._with_story_support(m, article.story_id) for m in matches]
        # marked matched only once its alerts are in the outbox: a crash (or a store error) in
        # between leaves it due, and the sweep plans again (saving a message is idempotent)
        self.store.record_matches(article.id, article.story_id, matches, alertable=alertable,
                                  now=now, mark_matched=False)  # fmt: skip
        self._support_story(article, matches, now)
        messages: list[AlertMessage] = []
        if alertable and article.story_id is not None:
            planned = (self._plan(m.topic_id, article, now) for m in matches if m.matched)
            messages = [message for message in planned if message is not None]
        self.store.record_matches(article.id, article.story_id, [], alertable=alertable,
                                  now=now)  # fmt: skip
        return messages

    def match(self, article: Article, *, labels: bool = True) -> list[Match]:
        """The article against every topic (an article without vectors matches nothing: a
        near-duplicate is represented by its original)."""
        passages, vectors = self._passages(article.id)
        if not passages:
            return []
        profiles = list(self.profiles(labels=labels).values())
        return match_topics(profiles, _view(article), passages, vectors, self.current_policy)

    def _with_story_support(self, match: Match, story_id: str) -> Match:
        """``match``, matched if it just missed and its story holds a clear match of the topic
        (``alerts.matching.story_supported``)."""
        policy = self.current_policy
        if not near_miss(match, policy):
            return match
        # a match stored without its threshold (an older store) is measured against this one's
        story = [StoryMatch(m.article.article_id, m.article.score,
                            match.threshold if m.threshold is None else m.threshold)
                 for m in self.store.story_matches(match.topic_id, story_id)]  # fmt: skip
        return story_supported(match, story, policy)

    def _support_story(self, article: Article, matches: Sequence[Match], now: datetime) -> None:
        """The other way round: the article's clear matches lend support to the articles of its
        story matched before it (published within the follow-up window, the most recent
        ``STORY_SUPPORT_MEMBERS``) that just missed the topic; those join the story's matches,
        and so its alert or its next message."""
        policy = self.current_policy
        clear = {m.topic_id: m for m in matches if lends_support(m, policy)}
        if not clear or article.story_id is None:
            return
        story_id = article.story_id
        self.profiles()  # current, so that what was rescored with them is known
        if self._rescored_at != self._built_at:
            self._rescored, self._rescored_at = {}, self._built_at
        # per topic, the story's articles that need no verdict under these profiles
        done = {
            topic_id: {m.article.article_id for m in self.store.story_matches(topic_id, story_id)}
            | self._rescored.get(topic_id, set())
            for topic_id in clear
        }
        supporters = {t: [StoryMatch(article.id, m.score, m.threshold)] for t, m in clear.items()}
        since = now - self.follow_up.window  # what a follow-up may still report
        members = [a for a in self.store.story_articles(story_id)
                   if a.id != article.id and a.matched_at is not None
                   and (a.published_at or a.discovered_at) >= since
                   and any(a.id not in ids for ids in done.values())]  # fmt: skip
        members.sort(key=lambda a: a.published_at or a.discovered_at, reverse=True)
        for member in members[:STORY_SUPPORT_MEMBERS]:
            due = {topic_id for topic_id, ids in done.items() if member.id not in ids}
            for topic_id in due:
                self._rescored.setdefault(topic_id, set()).add(member.id)
            supported = [story_supported(verdict, supporters[verdict.topic_id], policy)
                         for verdict in self.match(member) if verdict.topic_id in due]  # fmt: skip
            joined = [m for m in supported if m.matched]
            if joined:
                self.store.record_matches(member.id, story_id, joined,
                                          alertable=may_alert(member, now, self.backfill),
                                          now=now, mark_matched=False)  # fmt: skip
                log.info("story %r: article %s joins the matches of %s (its story matched "
                         "clearly)", story_id, member.id,
                         ", ".join(repr(m.topic_id) for m in joined))  # fmt: skip

    @property
    def refined(self) -> bool:
        """Whether the current profiles' queries are refined on stored coverage."""
        return self._feedback_on

    def refinement(self, topic_id: str) -> float:
        """How far the topic's profile last built (by ``match``, ``backtest``) is refined on
        stored coverage: 0 (its description alone: a young store, or no confident coverage of
        the topic yet) to 1 (all the feedback; ``alerts.matching.feedback_support``)."""
        if self._profiles is None:
            self.profiles()
        return self._refinement.get(topic_id, 0.0)

    @property
    def current_policy(self) -> MatchPolicy:
        """The policy for the current profiles: a young store's unrefined queries have their
        own default threshold."""
        return self.policy if self._feedback_on else self.policy.before_feedback()

    def _plan(self, topic_id: str, article: Article, now: datetime) -> AlertMessage | None:
        topic = next(t for t in self.topics if t.id == topic_id)
        story_id = article.story_id
        assert story_id is not None
        alert_id = self.store.alert_of_story(topic_id, story_id)
        if alert_id is None:
            alert_id = self._related_alert(topic_id, article, now)
            if alert_id is not None:
                self.store.join_alert(alert_id, topic_id, story_id)
                log.info("topic %r: story %r continues alert %s", topic_id, story_id, alert_id)
        record = self.store.get_alert(alert_id) if alert_id else None
        if record is None:
            matches = self.store.story_matches(topic_id, story_id)
            uncertain = self.confirm_uncertain and topic.confirm and self.refinement(topic_id) < 1
            confirm = confirmation_for(self.policy) if uncertain else None
            related = self._held_related(topic_id, article, now) if confirm else []
            return self._plan_alert(topic, story_id, None, matches, now, confirm, related)
        # the alert's own story names it (and its id)
        matches = self.store.alert_matches(record.id)
        return self._plan_alert(topic, record.story_id, record, matches, now)

    def _plan_alert(
        self,
        topic: Topic,
        story_id: str,
        record: AlertRecord | None,
        matches: Sequence[StoredMatch],
        now: datetime,
        confirm: Confirmation | None = None,
        related: Sequence[StoredMatch] = (),
    ) -> AlertMessage | None:
        story = self.store.get_stories([story_id]).get(story_id)
        if story is None:
            return None
        previous = record.messages if record else ()
        planned = plan_message(topic, story, matches, previous, now, self.follow_up,
                               confirm=confirm, related=related)  # fmt: skip
        if planned is None:
            if confirm is not None and not previous:
                log.info("topic %r, story %r: held until a second outlet or a clearer match "
                         "confirms it (the topic's queries are %.0f%% refined)", topic.id,
                         story.headline, 100 * self.refinement(topic.id))  # fmt: skip
            return None
        channels = [c for c in topic.channels if c in self.channels]
        saved = self.store.save_alert_message(planned.message, article_ids=planned.article_ids,
                                              channels=channels, now=now)  # fmt: skip
        if not saved:
            return None
        log.info("alert %s: topic %r, story %r: %s", planned.message.id, topic.id,
                 story.headline, planned.message.reason)  # fmt: skip
        return planned.message

    def follow_ups_due(self) -> list[AlertMessage]:
        """Plan the follow-ups that waited for ``min_interval`` (the service runs this
        periodically): without it, a story that grew right after its alert would report its
        growth only with its next match or in the digest."""
        now = self.clock()
        messages = []
        for record in self.store.list_alerts(since=now - self.follow_up.window):
            topic = next((t for t in self.topics if t.id == record.topic_id), None)
            if topic is None:
                continue  # a topic removed from the config
            matches = self.store.alert_matches(record.id)
            if any(m.message_id is None and m.alertable for m in matches):
                message = self._plan_alert(topic, record.story_id, record, matches, now)
                if message is not None:
                    messages.append(message)
        return messages

    def _related_alert(self, topic_id: str, article: Article, now: datetime) -> str | None:
        """An earlier alert of the topic this article's story continues (alerts.plan)."""
        lead = self._vector(article.id, 0)
        if lead is None:
            return None
        since = now - self.follow_up.window
        members = [
            AlertMember(record.id, member.language, member.published_at, vector)
            for record in self.store.list_alerts(topic_id=topic_id, since=since)
            for member in record.articles
            if member.article_id != article.id
            and (vector := self._vector(member.article_id, 0)) is not None
        ]
        published = article.published_at or article.discovered_at
        language = article.language or article.feed_language
        return related_alert(lead, language, published, members, self.story_policy.threshold,
                             self.follow_up)  # fmt: skip

    def _held_related(self, topic_id: str, article: Article, now: datetime) -> list[StoredMatch]:
        """The topic's unreported matches in other stories, not part of any alert, that the
        join rule relates to this article (``alerts.plan.Confirmation``)."""
        lead = self._lead_vector(article.id)
        if lead is None:
            return []
        since = now - self.follow_up.window
        held = [m for m in self.store.list_matches(topic_id=topic_id, since=since)
                if m.message_id is None and m.alertable
                and m.story_id != article.story_id]  # fmt: skip
        unalerted = {story for story in {m.story_id for m in held}
                     if self.store.alert_of_story(topic_id, story) is None}  # fmt: skip
        leads = [
            HeldLead(m, m.article.language, m.article.published_at, vector)
            for m in held
            if m.story_id in unalerted
            and (vector := self._lead_vector(m.article.article_id)) is not None
        ]
        published = article.published_at or article.discovered_at
        language = article.language or article.feed_language
        threshold = self.story_policy.threshold
        return [other.match for other in leads
                if join_margin(lead, language, published, other, threshold, self.follow_up)
                is not None]  # fmt: skip

    # -- profiles

    def profiles(self, *, labels: bool = True) -> dict[str, TopicProfile]:
        """The topics' profiles, rebuilt when stale or when the labels changed."""
        stored = self.store.topic_labels() if labels else []
        key = (tuple(stored), labels)
        fresh = self.monotonic() - self._built_at < PROFILE_TTL_SECONDS
        # rebuilt as soon as the coverage grew enough to refine them better (_grown)
        fresh = fresh and not self._grown()
        if self._profiles is not None and fresh and key == self._profiles_key:
            return self._profiles
        # the reference means (fixed, what the threshold was calibrated with); the stored
        # coverage's only for languages the reference lacks
        stored_means = language_means(self.vectors, self.collection, self.languages)
        means = {**stored_means, **reference_means(self.embedder.model_id)}
        self._means = means
        context = self._context = overall_mean(means)
        self._built_count = self.vectors.count(self.collection)
        self._feedback_on = self._built_count >= self.min_feedback_coverage
        profiles = {}
        self._searched = {}
        try:
            self._claims = self._claim_queries()
            self._refinement = {t.id: self._support(t) if self._feedback_on else 0.0
                                for t in self.topics}  # fmt: skip
            for topic in self.topics:
                relevant, not_relevant = self._label_vectors(topic.id, stored)
                profiles[topic.id] = build_profile(
                    topic, self.embedder, means=means, context=context,
                    queries=self._claims.get(topic.id),
                    relevant=relevant, not_relevant=not_relevant,
                    feedback=partial(self._feedback, topic_id=topic.id),
                    language_feedback=partial(self._language_feedback, topic_id=topic.id),
                )  # fmt: skip
        finally:
            self._searched = {}  # the coverage moves on: valid for this build only
            self._claims = {}
        self._profiles, self._profiles_key, self._built_at = profiles, key, self.monotonic()
        return profiles

    def _claim_queries(self) -> dict[str, Matrix]:
        """The topics' unrefined queries, when stored passages are screened before they refine
        a topic's queries (``_own``) or the feedback depends on the topic's confident coverage
        (``_support``)."""
        policy = self.policy
        screened = policy.feedback_competition or policy.feedback_margin is not None
        if not self._feedback_on or not (screened or policy.confident_margin is not None):
            return {}
        return {t.id: self.embedder.embed_queries(query_texts(t)) for t in self.topics}

    def _own(
        self, topic_id: str, rows: list[StoredPassage], policy: MatchPolicy | None = None
    ) -> list[StoredPassage]:
        """``rows`` that may refine the topic's queries: those its unrefined queries score
        near its threshold at least (``feedback_margin`` of ``policy``, the stage's by
        default), and, when the topics compete for feedback, that no other competing topic
        fits better (``alerts.matching.owned_rows``)."""
        if topic_id not in self._claims or not rows:
            return rows
        topic = next(t for t in self.topics if t.id == topic_id)
        competing = [t.id for t in self.topics if t.compete]
        keep = screen_feedback(topic, policy or self.policy, self._claims,
                               np.stack([r.vector for r in rows]), [r.language for r in rows],
                               self._means, self._context, competing)  # fmt: skip
        return [row for row, kept in zip(rows, keep, strict=True) if kept]

    def _support(self, topic: Topic) -> float:
        """The share of the feedback weights the topic's refinement gets
        (``alerts.matching.feedback_support``): how many stored articles its unrefined queries
        match with confidence, among the candidates its feedback searches anyway."""
        policy = self.policy
        queries = self._claims.get(topic.id)
        if policy.confident_margin is None or queries is None:
            return 1.0
        every: list[tuple[str, ...]] = [(lang,) for lang in self.languages] or [()]
        limit = policy.feedback_passages * SCREENED_CANDIDATES
        found = {(row.article_id, row.vector.tobytes()): row
                 for query in queries for languages in every
                 for row in self._best_stored(query, languages, limit)}  # fmt: skip
        strict = replace(policy, feedback_margin=-policy.confident_margin)
        confident = {row.article_id for row in self._own(topic.id, list(found.values()), strict)}
        return feedback_support(len(confident), policy)

    def _grown(self) -> bool:
        """Whether the stored coverage grew enough since the profiles were built to rebuild
        them before their lifetime ends: once it reaches the feedback floor, then by a quarter.
        A first poll brings hundreds of articles within minutes, and profiles refined on the
        first few hundred passages would otherwise match the next few hundred. Checked at most
        every ``GROWTH_CHECK_SECONDS``; a grown store rarely grows by a quarter."""
        now = self.monotonic()
        if now - self._checked_at < GROWTH_CHECK_SECONDS:
            return False
        self._checked_at = now
        count = self.vectors.count(self.collection)
        if not self._feedback_on:
            return count >= self.min_feedback_coverage
        return count >= self._built_count * PROFILE_GROWTH

    def _feedback(self, query: Vector, means: Mapping[str, Vector], *, topic_id: str) -> Vector:
        """The query refined on the stored coverage: the best passages of each language by raw
        cosine are the best by corrected score too (the offset is constant per language)."""
        k = self.policy.feedback_passages
        # 0 below the feedback floor (``_refinement``)
        weight = self.policy.feedback_weight * self._refinement.get(topic_id, 0.0)
        if not k or not weight:
            return query
        rows: list[Vector] = []
        offsets: list[float] = []
        every: list[tuple[str, ...]] = [(lang,) for lang in self.languages] or [()]
        for languages in every:
            for row in self._screened(topic_id, query, languages, k):
                rows.append(row.vector)
                mean = means.get(row.language)
                offsets.append(float(query @ mean) if mean is not None else 0.0)
        if not rows:
            return query
        return refine_query(query, np.stack(rows), np.array(offsets, dtype=np.float32), k,
                            weight)  # fmt: skip

    def _language_feedback(self, query: Vector, language: str, *, topic_id: str) -> Vector:
        """The query refined on one language's best stored passages, then towards that
        language's nearest passages to the other languages' best ones (alerts.matching)."""
        k = self.policy.language_feedback_passages
        support = self._refinement.get(topic_id, 0.0)
        if not k or not self.policy.language_feedback_weight * support:
            return query
        rows = [row.vector for row in self._per_language(query, language, topic_id)[:k]]
        if not rows:
            return query
        offsets = np.zeros(len(rows), dtype=np.float32)  # one language: ranking is by cosine
        refined = refine_query(query, np.stack(rows), offsets, k,
                               self.policy.language_feedback_weight * support)  # fmt: skip
        return move_towards(refined, self._anchor_neighbours(query, language, topic_id),
                            self.policy.anchor_weight * support,
                            expected=self.policy.anchor_passages)  # fmt: skip

    def _anchor_neighbours(self, query: Vector, language: str, topic_id: str) -> Matrix:
        """``language``'s nearest stored passage to each of the best passages (by corrected
        score) of the other languages."""
        k = self.policy.anchor_passages
        others = [lang for lang in self.languages if lang != language]
        if not k or not self.policy.anchor_weight or not others:
            return np.zeros((0, len(query)), dtype=np.float32)
        rows: list[Vector] = []
        offsets: list[float] = []
        for other in others:
            mean = self._means.get(other)
            for row in self._per_language(query, other, topic_id)[:k]:
                rows.append(row.vector)
                offsets.append(float(query @ mean) if mean is not None else 0.0)
        if not rows:
            return np.zeros((0, len(query)), dtype=np.float32)
        anchors = best_passages(query, np.stack(rows), np.array(offsets, dtype=np.float32), k)
        nearest = [row.vector for anchor in anchors
                   for row in self._best_stored(anchor, (language,), 1)]  # fmt: skip
        return np.stack(nearest) if nearest else np.zeros((0, len(query)), dtype=np.float32)

    def _per_language(self, query: Vector, language: str, topic_id: str) -> list[StoredPassage]:
        """One language's best stored passages for ``query``, as many as the per-language
        feedback or the anchors take: each language's query asks for every other language's
        anchors, so one search (memoised for the profile build) serves them all."""
        limit = max(self.policy.language_feedback_passages, self.policy.anchor_passages)
        return self._screened(topic_id, query, (language,), limit)

    def _screened(
        self, topic_id: str, query: Vector, languages: tuple[str, ...], limit: int
    ) -> list[StoredPassage]:
        """The best stored passages for ``query`` that may refine the topic's queries
        (``_own``): screened out of a few times as many candidates, so that screening leaves
        ``limit`` where the coverage has them."""
        if topic_id not in self._claims:
            return self._best_stored(query, languages, limit)
        candidates = self._best_stored(query, languages, limit * SCREENED_CANDIDATES)
        return self._own(topic_id, candidates)[:limit]

    def _best_stored(
        self, query: Vector, languages: tuple[str, ...], limit: int
    ) -> list[StoredPassage]:
        """(language, vector) of the stored passages most similar to ``query`` (in
        ``languages``; any when empty), memoised while the profiles are built."""
        key = (query.tobytes(), languages, limit)
        if key not in self._searched:
            flt = SearchFilter(languages=languages)
            hits = self.vectors.search(self.collection, query, filter=flt, limit=limit,
                                       with_vectors=True)  # fmt: skip
            self._searched[key] = [
                StoredPassage(hit.payload.article_id, hit.payload.language, hit.vector)
                for hit in hits
                if hit.vector is not None
            ]
        return self._searched[key]

    def _vector(self, article_id: str, passage_index: int) -> Vector | None:
        points = self.vectors.article_points(self.collection, article_id, with_vectors=True)
        return next((v for p, v in points if v is not None and p.passage_index == passage_index),
                    None)  # fmt: skip

    def _label_vectors(
        self, topic_id: str, stored: Sequence[tuple[str, str, bool]]
    ) -> tuple[list[Vector], list[Vector]]:
        relevant: list[Vector] = []
        not_relevant: list[Vector] = []
        for label_topic, article_id, is_relevant in stored:
            if label_topic != topic_id:
                continue
            lead = self._lead_vector(article_id)
            if lead is not None:
                (relevant if is_relevant else not_relevant).append(lead)
        return relevant, not_relevant

    def _lead_vector(self, article_id: str) -> Vector | None:
        return self._vector(article_id, 0)

    def _passages(self, article_id: str) -> tuple[list[tuple[int, str]], Matrix]:
        points = self.vectors.article_points(self.collection, article_id, with_vectors=True)
        rows = [(p.passage_index, p.text, v) for p, v in points if v is not None]
        if not rows:
            return [], np.zeros((0, self.embedder.dim), dtype=np.float32)
        return [(i, t) for i, t, _ in rows], np.stack([v for _, _, v in rows])

    # -- backtest (``newsmon topics test``)

    def backtest(
        self, topic_id: str, *, since: datetime | None, until: datetime | None = None
    ) -> list[ArticleVerdict]:
        """Every stored article the topic matches (or nearly does) in the window, with and
        without the user's labels, best first."""
        profiles = self.profiles()
        plains = self.profiles(labels=False)
        candidates = self._candidates(profiles[topic_id], since, until)
        articles = self.store.get_articles(candidates)
        verdicts: list[ArticleVerdict] = []
        for article_id in candidates:
            article = articles.get(article_id)
            if article is None:
                continue
            passages, vectors = self._passages(article_id)
            if not passages:
                continue
            view = _view(article)
            with_labels = self._verdict(topic_id, profiles, view, passages, vectors)
            without = self._verdict(topic_id, plains, view, passages, vectors)
            verdicts.append(ArticleVerdict(article, with_labels, without))
        verdicts = _supported_by_stories(verdicts, self.current_policy)
        return sorted(verdicts, key=lambda v: (-v.match.score, v.article.id))

    def _verdict(
        self,
        topic_id: str,
        profiles: Mapping[str, TopicProfile],
        view: ArticleView,
        passages: list[tuple[int, str]],
        vectors: Matrix,
    ) -> Match:
        """The topic's verdict once every topic competed for the article (``match_topics``)."""
        verdicts = match_topics(
            list(profiles.values()), view, passages, vectors, self.current_policy
        )
        return next(m for m in verdicts if m.topic_id == topic_id)

    def _candidates(
        self, profile: TopicProfile, since: datetime | None, until: datetime | None
    ) -> list[str]:
        """Articles worth scoring exactly: each query's best passages in each language (one
        search per language, since the score corrects for language and raw cosine does not)."""
        found: dict[str, None] = {}
        every: list[tuple[str, ...]] = [(lang,) for lang in self.languages] or [()]
        for languages in every:
            flt = SearchFilter(languages=languages, since=since, until=until)
            for query in profile.queries:
                for hit in self.vectors.search(self.collection, query, filter=flt,
                                               limit=BACKTEST_CANDIDATES):  # fmt: skip
                    found.setdefault(hit.payload.article_id)
        return list(found)


def confirmation_for(policy: MatchPolicy) -> Confirmation:
    """What an uncertain topic's first alert waits for under ``policy``: one match clears
    the threshold by the margin that makes a stored article confident coverage
    (``MatchPolicy.confident_margin``), so the two notions of "a clear match" stay one; a
    policy without that margin (other models) keeps ``Confirmation``'s default."""
    if policy.confident_margin is None:
        return Confirmation()
    return Confirmation(margin=policy.confident_margin)


def _supported_by_stories(
    verdicts: Sequence[ArticleVerdict], policy: MatchPolicy
) -> list[ArticleVerdict]:
    """A backtest's verdicts as the stage decides them live: a near miss matches when its story
    holds a clear match (``alerts.matching.story_supported``), with and without labels."""
    stories: dict[str, list[ArticleVerdict]] = {}
    for verdict in verdicts:
        if verdict.article.story_id is not None:
            stories.setdefault(verdict.article.story_id, []).append(verdict)

    out = []
    for verdict in verdicts:
        members = stories.get(verdict.article.story_id or "", [])
        with_labels = [StoryMatch(v.article.id, v.match.score, v.match.threshold)
                       for v in members if v.match.matched]  # fmt: skip
        without = [StoryMatch(v.article.id, v.without_labels.score, v.without_labels.threshold)
                   for v in members if v.without_labels and v.without_labels.matched]  # fmt: skip
        out.append(replace(
            verdict,
            match=story_supported(verdict.match, with_labels, policy),
            without_labels=verdict.without_labels
            and story_supported(verdict.without_labels, without, policy),
        ))  # fmt: skip
    return out


def _view(article: Article) -> ArticleView:
    return ArticleView(
        id=article.id,
        title=article.title,
        text=article.text or article.feed_text,
        language=article.language or article.feed_language,
        source=article.feed,
    )
