"""The digest, assembled: per topic, the stories of a window ranked by coverage, what alerted
and what did not, daily coverage per language, and the feeds the digest could not see.

``build_digest`` is pure (already-loaded store data in, a frozen ``Digest`` out), so every rule
here is tested without a database; ``load_digest`` is the thin layer that reads the store.

Which articles belong to a window
---------------------------------
An article counts in the window that contains its *coverage time*: when it was published
(discovery time when the feed gave none, as ``StoredMatch`` already reports it), but never later
than when newsmon matched it. That is the time a reader means by "this week's stories" and the
one the chart is drawn over; it is also the convention of ``indexer.stories`` (a story's
``first_seen``/``last_seen`` are ``min(published, now)`` of its articles).

The store's ``list_matches`` filters on ``matched_at`` instead, which would be wrong twice over:
a feed's first poll brings in weeks of old entries, matched today (they would crowd this week's
digest), and an article whose body is indexed later is matched again, which moves its
``matched_at`` (it would appear in two digests). Since the coverage time is never later than
``matched_at``, ``list_matches(since=window.start)`` with no upper bound returns every article
of the window, and ``build_digest`` keeps those whose coverage time falls inside it. The price:
an article discovered after the digest was sent (a feed that publishes late, a failing feed
that recovers) is in no scheduled digest; an on-demand run later shows it.

Feed health is the stored *current* state (``FeedState`` keeps no history): exact for the
scheduled run just after the window, approximate for an on-demand run about an older window.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alerts.types import AlertRecord, StoredMatch
from indexer.types import Story
from monitor.types import FeedState, as_utc

__all__ = [
    "Digest",
    "DigestArticle",
    "DigestSource",
    "DigestStory",
    "DigestWindow",
    "FeedNote",
    "FeedProblem",
    "NamedTopic",
    "TopicDigest",
    "build_digest",
    "coverage_time",
    "feed_notes",
    "load_digest",
    "previous_week",
    "since_window",
    "week_window",
]

#: consecutive failed polls before a feed counts as failing: one failure is a blip the next
#: poll usually repairs, and would cry wolf in every digest
FAILING_AFTER = 2
UNKNOWN_LANGUAGE = "und"  # ISO 639-2 "undetermined"

_ISO_WEEK = re.compile(r"(\d{4})-?W(\d{1,2})")


# -- windows ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestWindow:
    """``[start, end)`` in aware UTC; ``timezone`` decides where days begin (chart, labels)."""

    start: datetime
    end: datetime
    timezone: str = "UTC"
    label: str = ""  # "2026-W05" for an ISO week; empty for an ad-hoc window

    def __post_init__(self) -> None:
        start, end = as_utc(self.start), as_utc(self.end)
        if end <= start:
            raise ValueError(f"a digest window must end after it starts: {start} .. {end}")
        _check_zone(self.timezone)  # fail here, not in a renderer
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def slug(self) -> str:
        """What identifies the window in a digest id: the ISO week, else both ends in UTC."""
        if self.label:
            return self.label
        return f"{self.start:%Y%m%dT%H%MZ}-{self.end:%Y%m%dT%H%MZ}"

    def contains(self, when: datetime) -> bool:
        return self.start <= as_utc(when) < self.end

    def local_date(self, when: datetime) -> date:
        return as_utc(when).astimezone(self.zone).date()

    def days(self) -> tuple[date, ...]:
        """Every local day the window touches, first to last."""
        first = self.local_date(self.start)
        last = self.local_date(self.end - timedelta(microseconds=1))
        return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))


def _zone_name(zone: ZoneInfo | str) -> str:
    name = zone.key if isinstance(zone, ZoneInfo) else zone
    _check_zone(name)
    return name


def _check_zone(name: str) -> None:
    """A ``ValueError`` (what the CLI reports) instead of zoneinfo's ``KeyError``."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """Midnight of ``day`` in ``zone``, as UTC (in a gap, the first instant after it)."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def week_window(iso_week: str, zone: ZoneInfo | str = "UTC") -> DigestWindow:
    """``2026-W05``: Monday 00:00 to the next Monday 00:00 in ``zone``.

    Computed from local midnights, not as start + 7 days, so a week with a DST change is
    167 or 169 hours long and still ends at midnight.
    """
    found = _ISO_WEEK.fullmatch(iso_week.strip().upper())
    if found is None:
        raise ValueError(f"not an ISO week like 2026-W05: {iso_week!r}")
    year, week = int(found[1]), int(found[2])
    try:
        monday = date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ValueError(f"{iso_week!r}: {year} has no ISO week {week}") from None
    name = _zone_name(zone)
    tz = ZoneInfo(name)
    return DigestWindow(
        start=_local_midnight(monday, tz),
        end=_local_midnight(monday + timedelta(days=7), tz),
        timezone=name,
        label=f"{year}-W{week:02d}",
    )


def previous_week(now: datetime, zone: ZoneInfo | str = "UTC") -> DigestWindow:
    """The last complete ISO week before ``now`` in ``zone``: what the scheduled run sends."""
    name = _zone_name(zone)
    today = as_utc(now).astimezone(ZoneInfo(name)).date()
    monday = today - timedelta(days=today.weekday() + 7)
    year, week, _ = monday.isocalendar()
    return week_window(f"{year}-W{week:02d}", name)


def since_window(now: datetime, delta: timedelta, zone: ZoneInfo | str = "UTC") -> DigestWindow:
    """The ``delta`` up to ``now`` (``--since 7d``)."""
    if delta <= timedelta(0):
        raise ValueError(f"the digest period must be positive, not {delta}")
    end = as_utc(now)
    return DigestWindow(start=end - delta, end=end, timezone=_zone_name(zone))


# -- the digest -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestArticle:
    article_id: str
    url: str
    title: str
    language: str
    source: str  # the outlet (feed name)
    published: datetime  # the coverage time (see the module docstring)
    score: float
    passage: str  # best-matching passage, original language
    alerted: bool  # an alert message reported it


@dataclass(frozen=True, slots=True)
class DigestStory:
    """One story of a topic as the window saw it (counts cover the window's articles only)."""

    story_id: str
    headline: str
    first_seen: datetime  # of the story as a whole: earlier than the window means continuing
    last_seen: datetime
    per_language: Mapping[str, int]  # articles per language, most first
    sources: tuple[str, ...]  # outlets, most articles first
    best: DigestArticle  # the best-scoring article: its passage is the story's best passage
    articles: tuple[DigestArticle, ...]  # oldest first
    alerted: bool  # an alert message reported the story (in this window or before)

    @property
    def article_count(self) -> int:
        return len(self.articles)

    @property
    def best_passage(self) -> str:
        return self.best.passage


class FeedProblem(enum.StrEnum):
    SILENT = "silent"  # no new item in the window
    FAILING = "failing"  # its last polls failed


@dataclass(frozen=True, slots=True)
class FeedNote:
    """A feed whose coverage the digest may lack."""

    feed: str
    problem: FeedProblem
    detail: str  # one line for a reader (may quote a server's error: render it escaped)
    last_new_item_at: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class TopicDigest:
    topic_id: str
    topic_name: str
    window: DigestWindow
    stories: tuple[DigestStory, ...]  # ranked by coverage
    #: every local day of the window -> every language of the topic -> articles (zeros kept)
    daily: Mapping[date, Mapping[str, int]]
    per_language: Mapping[str, int]  # articles per language in the window, most first

    @property
    def article_count(self) -> int:
        return sum(self.per_language.values())

    @property
    def alerted_stories(self) -> tuple[DigestStory, ...]:
        return tuple(s for s in self.stories if s.alerted)

    @property
    def digest_only_stories(self) -> tuple[DigestStory, ...]:
        return tuple(s for s in self.stories if not s.alerted)


@dataclass(frozen=True, slots=True)
class Digest:
    window: DigestWindow
    topics: tuple[TopicDigest, ...]
    feeds: tuple[FeedNote, ...]  # failing first, then silent
    generated_at: datetime

    @property
    def id(self) -> str:
        """Stable for a window and a set of topics, so a re-send can be de-duplicated (it is
        the email Message-ID's local part and the webhook payload's ``id``)."""
        topic_ids = sorted(t.topic_id for t in self.topics)
        key = "\x00".join([self.window.start.isoformat(), self.window.end.isoformat(), *topic_ids])
        return f"digest-{self.window.slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    @property
    def story_count(self) -> int:
        return sum(len(t.stories) for t in self.topics)

    @property
    def article_count(self) -> int:
        return sum(t.article_count for t in self.topics)


class NamedTopic(Protocol):
    """What the digest needs of a topic: ``alerts.types.Topic`` and ``TopicConfig`` both fit."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


# -- assembly (pure) --------------------------------------------------------------------------


def coverage_time(match: StoredMatch) -> datetime:
    """When the article counts as covered: published, but never after it was matched."""
    return min(as_utc(match.article.published_at), as_utc(match.matched_at))


def build_digest(
    topics: Sequence[NamedTopic],
    window: DigestWindow,
    matches: Iterable[StoredMatch],
    stories: Mapping[str, Story],
    alerts: Iterable[AlertRecord],
    feeds: Iterable[FeedState],
    now: datetime,
) -> Digest:
    """The digest of ``topics`` (in their order) over ``window``.

    ``matches`` may be a superset (other topics, other times): only the topics' matches whose
    coverage time is inside the window count. ``alerts`` tell which stories and articles an
    alert message reported; ``stories`` give headlines and first/last seen (a missing story
    falls back to its articles).
    """
    by_topic: dict[str, list[StoredMatch]] = defaultdict(list)
    for match in matches:
        if window.contains(coverage_time(match)):
            by_topic[match.topic_id].append(match)
    reported = _Reported.of(alerts)
    names: dict[str, str] = {}
    for topic in topics:  # config order; the first of a repeated id wins
        names.setdefault(topic.id, topic.name)
    digests = tuple(
        _topic_digest(topic_id, name, window, by_topic[topic_id], stories, reported)
        for topic_id, name in names.items()
    )
    return Digest(window, digests, feed_notes(feeds, window), as_utc(now))


@dataclass(frozen=True, slots=True)
class _Reported:
    """(topic, story) and (topic, article) pairs some alert message reported."""

    stories: frozenset[tuple[str, str]]
    articles: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, alerts: Iterable[AlertRecord]) -> _Reported:
        stories: set[tuple[str, str]] = set()
        articles: set[tuple[str, str]] = set()
        for record in alerts:
            stories.add((record.topic_id, record.story_id))  # stored with its first message
            for message in record.messages:
                stories.add((message.topic_id, message.story_id))
                articles.update((message.topic_id, a.article_id) for a in message.articles)
        return cls(frozenset(stories), frozenset(articles))

    def article(self, match: StoredMatch) -> bool:
        return match.message_id is not None or (
            (match.topic_id, match.article.article_id) in self.articles
        )


def _topic_digest(
    topic_id: str,
    topic_name: str,
    window: DigestWindow,
    matches: Sequence[StoredMatch],
    stories: Mapping[str, Story],
    reported: _Reported,
) -> TopicDigest:
    groups: dict[str, dict[str, StoredMatch]] = defaultdict(dict)
    for match in matches:  # one entry per article, should a caller pass a match twice
        groups[match.story_id][match.article.article_id] = match
    ranked = sorted(
        (
            _story(topic_id, story_id, list(group.values()), stories.get(story_id), reported)
            for story_id, group in groups.items()
        ),
        key=_coverage_rank,
    )
    articles = [a for story in ranked for a in story.articles]
    per_language = _ranked(Counter(a.language for a in articles))
    return TopicDigest(
        topic_id=topic_id,
        topic_name=topic_name,
        window=window,
        stories=tuple(ranked),
        daily=_daily(window, articles, per_language),
        per_language=per_language,
    )


def _coverage_rank(story: DigestStory) -> tuple[int, int, float, str]:
    """Most articles first, then most languages, then the most recent, then a stable id."""
    return (
        -story.article_count,
        -len(story.per_language),
        -story.last_seen.timestamp(),
        story.story_id,
    )


def _story(
    topic_id: str,
    story_id: str,
    matches: Sequence[StoredMatch],
    story: Story | None,
    reported: _Reported,
) -> DigestStory:
    articles = sorted(
        (_article(m, reported.article(m)) for m in matches),
        key=lambda a: (a.published, a.article_id),
    )
    # ties go to the earliest report
    best = min(articles, key=lambda a: (not a.passage.strip(), -a.score, a.published, a.article_id))
    first, last = articles[0].published, articles[-1].published
    if story is not None:  # the story's own span, which may reach beyond the window
        first, last = min(first, as_utc(story.first_seen)), max(last, as_utc(story.last_seen))
    headline = story.headline if story is not None and story.headline.strip() else best.title
    alerted = (topic_id, story_id) in reported.stories or any(a.alerted for a in articles)
    return DigestStory(
        story_id=story_id,
        headline=headline,
        first_seen=first,
        last_seen=last,
        per_language=_ranked(Counter(a.language for a in articles)),
        sources=tuple(_ranked(Counter(a.source for a in articles))),
        best=best,
        articles=tuple(articles),
        alerted=alerted,
    )


def _article(match: StoredMatch, alerted: bool) -> DigestArticle:
    article = match.article
    return DigestArticle(
        article_id=article.article_id,
        url=article.url,
        title=article.title,
        language=article.language.strip().lower() or UNKNOWN_LANGUAGE,
        source=article.source,
        published=coverage_time(match),
        score=article.score,
        passage=article.passage,
        alerted=alerted,
    )


def _ranked(counts: Counter[str]) -> dict[str, int]:
    """Most first, ties by name: the order every renderer shows."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _daily(
    window: DigestWindow, articles: Iterable[DigestArticle], languages: Iterable[str]
) -> dict[date, dict[str, int]]:
    """Every day of the window, every language of the topic, zeros included: a full table."""
    daily = {day: dict.fromkeys(languages, 0) for day in window.days()}
    for article in articles:
        daily[window.local_date(article.published)][article.language] += 1
    return daily


# -- feed health ------------------------------------------------------------------------------


def feed_notes(
    feeds: Iterable[FeedState], window: DigestWindow, *, failing_after: int = FAILING_AFTER
) -> tuple[FeedNote, ...]:
    """The feeds whose coverage the digest may lack: failing ones first, then silent ones."""
    notes = [note for feed in feeds if (note := _feed_note(feed, window, failing_after))]
    return tuple(sorted(notes, key=lambda n: (n.problem is not FeedProblem.FAILING, n.feed)))


def _feed_note(feed: FeedState, window: DigestWindow, failing_after: int) -> FeedNote | None:
    last_new = as_utc(feed.last_new_item_at) if feed.last_new_item_at else None
    silent = last_new is None or last_new < window.start
    failing = feed.consecutive_failures >= failing_after
    if not (silent or failing):
        return None
    quiet = _quiet_since(feed, last_new)
    if failing:
        error = " ".join((feed.last_error or "unknown error").split())
        detail = f"{feed.consecutive_failures} failed polls in a row; last error: {error}"
        detail += f"; {quiet}" if silent else ""
    else:
        detail = quiet
    return FeedNote(
        feed=feed.name,
        problem=FeedProblem.FAILING if failing else FeedProblem.SILENT,
        detail=detail,
        last_new_item_at=last_new,
        consecutive_failures=feed.consecutive_failures,
        last_error=feed.last_error,
    )


def _quiet_since(feed: FeedState, last_new: datetime | None) -> str:
    if last_new is not None:
        return f"no new item since {last_new:%Y-%m-%d %H:%M} UTC"
    return "not polled yet" if feed.last_polled_at is None else "no new item yet"


# -- loading (I/O) ----------------------------------------------------------------------------


class DigestSource(Protocol):
    """The part of ``monitor.state.StateStore`` the digest reads (any store satisfies it)."""

    def list_matches(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[StoredMatch]: ...

    def get_stories(self, story_ids: Sequence[str]) -> dict[str, Story]: ...

    def list_alerts(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[AlertRecord]: ...

    def list_feeds(self) -> list[FeedState]: ...


def load_digest(
    store: DigestSource, topics: Sequence[NamedTopic], window: DigestWindow, now: datetime
) -> Digest:
    """Read what ``build_digest`` needs: one query per topic for matches and one for alerts.

    Matches are read from ``window.start`` on with no upper bound (see the module docstring).
    Alerts are read from the earliest ``first_seen`` of the window's stories: a message about
    a story is saved after the story began, so nothing older can report one of them.
    """
    matches = [
        match
        for topic in topics
        for match in store.list_matches(topic_id=topic.id, since=window.start)
        if window.contains(coverage_time(match))
    ]
    story_ids = sorted({m.story_id for m in matches})
    stories = store.get_stories(story_ids) if story_ids else {}
    alerts: list[AlertRecord] = []
    for topic in topics:
        if own := [m for m in matches if m.topic_id == topic.id]:
            alerts += store.list_alerts(topic_id=topic.id, since=_earliest_start(own, stories))
    return build_digest(topics, window, matches, stories, alerts, store.list_feeds(), now)


def _earliest_start(
    matches: Sequence[StoredMatch], stories: Mapping[str, Story]
) -> datetime | None:
    """The earliest ``first_seen`` of the matches' stories; None (read every alert) when a
    story is unknown, since its start is then unknown too."""
    if any(m.story_id not in stories for m in matches):
        return None
    return min(as_utc(stories[m.story_id].first_seen) for m in matches)


if TYPE_CHECKING:
    from monitor.state import SqlStateStore

    def _reads_a_state_store(store: SqlStateStore) -> DigestSource:
        # mypy proves here that the real store satisfies DigestSource
        return store
