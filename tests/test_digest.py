"""Digest assembly (``alerts.digest``): pure, from hand-made store values; plus the windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.digest import (
    Digest,
    DigestWindow,
    FeedProblem,
    build_digest,
    load_digest,
    previous_week,
    since_window,
    week_window,
)
from alerts.plan import plan_message
from alerts.types import (
    AlertArticle,
    AlertMessage,
    AlertRecord,
    Match,
    MessageKind,
    StoredMatch,
    Topic,
    alert_id_for,
    message_id_for,
)
from indexer.types import Story
from monitor.state import SqlStateStore
from monitor.types import FeedState
from tests.test_state import FEEDS, T0, _story, draft, page_text

BERLIN = "Europe/Berlin"
#: Mon 26 Jan 2026 00:00 CET .. Mon 2 Feb 2026 00:00 CET
WEEK = week_window("2026-W05", BERLIN)
NOW = datetime(2026, 2, 2, 6, 0, tzinfo=UTC)
TOPICS = (
    Topic(id="gaza", name="Gaza ceasefire", description="ceasefire talks"),
    Topic(id="energy", name="Энергетика", description="energy prices"),
)


def at(day: int, hour: float = 12.0) -> datetime:
    """``day`` days and ``hour`` hours after the week's start (Monday 00:00 Berlin)."""
    return WEEK.start + timedelta(days=day, hours=hour)


def match(
    article_id: str,
    story_id: str,
    *,
    published: datetime,
    matched: datetime | None = None,
    topic: str = "gaza",
    language: str = "en",
    source: str = "bbc-world",
    score: float = 0.5,
    title: str | None = None,
    passage: str | None = None,
    message_id: str | None = None,
    url: str | None = None,
) -> StoredMatch:
    return StoredMatch(
        topic_id=topic,
        story_id=story_id,
        article=AlertArticle(
            article_id=article_id,
            url=url or f"https://{source}.example/{article_id}",
            title=title or f"Title of {article_id}",
            language=language,
            source=source,
            published_at=published,
            score=score,
            passage=f"Passage of {article_id}." if passage is None else passage,
        ),
        alertable=True,
        matched_at=matched or published + timedelta(minutes=10),
        message_id=message_id,
    )


def story(story_id: str, headline: str, first: datetime, last: datetime) -> Story:
    return Story(
        id=story_id,
        headline=headline,
        first_seen=first,
        last_seen=last,
        article_count=1,
        languages=("en",),
        sources=("bbc-world",),
        representative_article_id="x",
    )


def alert(topic: str, story_id: str, *articles: StoredMatch) -> AlertRecord:
    alert_id = alert_id_for(topic, story_id)
    created = articles[0].matched_at if articles else at(0)
    message = AlertMessage(
        id=message_id_for(alert_id, 0),
        alert_id=alert_id,
        sequence=0,
        kind=MessageKind.NEW,
        topic_id=topic,
        topic_name=topic,
        story_id=story_id,
        headline="h",
        created_at=created,
        reason="new story",
        articles=tuple(m.article for m in articles),
    )
    return AlertRecord(
        id=alert_id,
        topic_id=topic,
        story_id=story_id,
        created_at=created,
        updated_at=created,
        articles=message.articles,
        messages=(message,),
    )


def feed(name: str, **changes: Any) -> FeedState:
    healthy = FeedState(
        name=name,
        url=f"https://{name}.example/rss",
        language="en",
        last_polled_at=at(6, 23),
        last_new_item_at=at(6, 20),
    )
    return replace(healthy, **changes)


def digest_of(matches: list[StoredMatch], **kwargs: Any) -> Digest:
    args: dict[str, Any] = {
        "topics": TOPICS,
        "window": WEEK,
        "matches": matches,
        "stories": {},
        "alerts": [],
        "feeds": [],
        "now": NOW,
    }
    return build_digest(**{**args, **kwargs})


# -- windows ----------------------------------------------------------------------------------


def test_iso_week_in_utc() -> None:
    window = week_window("2026-W05")
    assert (window.start, window.end) == (
        datetime(2026, 1, 26, tzinfo=UTC),
        datetime(2026, 2, 2, tzinfo=UTC),
    )
    assert window.label == "2026-W05"
    assert window.days() == tuple(date(2026, 1, 26) + timedelta(days=n) for n in range(7))


def test_iso_week_starts_at_local_midnight() -> None:
    assert WEEK.start == datetime(2026, 1, 25, 23, tzinfo=UTC)
    assert WEEK.end == datetime(2026, 2, 1, 23, tzinfo=UTC)
    assert WEEK.start.tzinfo is UTC
    assert WEEK.days()[0] == date(2026, 1, 26)
    assert len(WEEK.days()) == 7
    assert week_window("2026w5", ZoneInfo(BERLIN)) == WEEK  # lenient spelling, ZoneInfo too


@pytest.mark.parametrize(
    ("week", "start", "end", "hours"),
    [
        # clocks go forward on Sunday 29 March 2026: the week is an hour short
        (
            "2026-W13",
            datetime(2026, 3, 22, 23, tzinfo=UTC),
            datetime(2026, 3, 29, 22, tzinfo=UTC),
            167,
        ),
        # and back on Sunday 25 October 2026: an hour long
        (
            "2026-W43",
            datetime(2026, 10, 18, 22, tzinfo=UTC),
            datetime(2026, 10, 25, 23, tzinfo=UTC),
            169,
        ),
    ],
)
def test_iso_week_across_a_dst_change(
    week: str, start: datetime, end: datetime, hours: int
) -> None:
    window = week_window(week, BERLIN)
    assert (window.start, window.end) == (start, end)
    assert window.end - window.start == timedelta(hours=hours)
    assert len(window.days()) == 7
    assert window.days()[-1].weekday() == 6  # Sunday, though its last hour moved


def test_dst_week_buckets_sunday_evening_on_sunday() -> None:
    window = week_window("2026-W13", BERLIN)
    late_sunday = datetime(2026, 3, 29, 21, 30, tzinfo=UTC)  # 23:30 CEST, Sunday
    digest = digest_of([match("a", "s", published=late_sunday)], window=window)
    assert digest.topics[0].daily[date(2026, 3, 29)] == {"en": 1}


@pytest.mark.parametrize("text", ["2026-05", "W05", "2026-W54", "2025-W53", "2026-W00", ""])
def test_bad_iso_weeks_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO week"):
        week_window(text)


def test_a_53rd_week_exists_where_the_calendar_has_one() -> None:
    assert week_window("2026-W53").start == datetime(2026, 12, 28, tzinfo=UTC)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="Mars"):
        week_window("2026-W05", "Mars/Olympus")


def test_previous_week_is_the_last_complete_week_in_the_digest_zone() -> None:
    monday_morning = datetime(2026, 2, 2, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    assert previous_week(monday_morning, BERLIN) == WEEK
    # Sunday 23:30 UTC is already Monday 00:30 in Berlin: the week just ended there, not in UTC
    late_sunday = datetime(2026, 2, 1, 23, 30, tzinfo=UTC)
    assert previous_week(late_sunday, BERLIN).label == "2026-W05"
    assert previous_week(late_sunday, "UTC").label == "2026-W04"
    # the year boundary: Monday 4 January 2027 reports 2026-W53
    assert previous_week(datetime(2027, 1, 4, 8, tzinfo=UTC)).label == "2026-W53"


def test_since_window() -> None:
    window = since_window(NOW, timedelta(days=7), BERLIN)
    assert (window.start, window.end) == (NOW - timedelta(days=7), NOW)
    assert window.label == ""
    assert len(window.days()) == 8  # a partial day at each end
    with pytest.raises(ValueError, match="positive"):
        since_window(NOW, timedelta(0))


def test_window_normalises_to_utc_and_refuses_empty_spans() -> None:
    naive = DigestWindow(datetime(2026, 1, 1), datetime(2026, 1, 2))
    assert naive.start == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="end after"):
        DigestWindow(NOW, NOW)


# -- stories ----------------------------------------------------------------------------------


def test_stories_rank_by_articles_then_languages_then_last_seen() -> None:
    matches = [
        *(match(f"a{i}", "one-language", published=at(1, i)) for i in range(3)),
        *(
            match(f"b{i}", "two-languages", published=at(1, i), language=("en", "de")[i % 2])
            for i in range(3)
        ),
        *(match(f"c{i}", "most-articles", published=at(0, i)) for i in range(5)),
        *(
            match(f"d{i}", "two-languages-later", published=at(2, i), language=("uk", "ru")[i % 2])
            for i in range(3)
        ),
    ]
    topic = digest_of(matches).topics[0]
    assert [s.story_id for s in topic.stories] == [
        "most-articles",
        "two-languages-later",
        "two-languages",
        "one-language",
    ]
    assert [s.article_count for s in topic.stories] == [5, 3, 3, 3]


def test_per_language_counts_and_sources() -> None:
    matches = [
        match("a", "s", published=at(0), language="de", source="tagesschau"),
        match("b", "s", published=at(1), language="uk", source="ukrinform"),
        match("c", "s", published=at(2), language="uk", source="ukrinform"),
        match("d", "s", published=at(3), language="en", source="bbc-world"),
        match("e", "s", published=at(3), language="", source="bbc-world"),
    ]
    (story_,) = digest_of(matches).topics[0].stories
    assert story_.per_language == {"uk": 2, "de": 1, "en": 1, "und": 1}
    assert list(story_.per_language) == ["uk", "de", "en", "und"]  # most first, then by name
    assert story_.sources == ("bbc-world", "ukrinform", "tagesschau")
    assert [a.article_id for a in story_.articles] == ["a", "b", "c", "d", "e"]  # oldest first


def test_daily_counts_cover_every_day_in_the_digest_time_zone() -> None:
    matches = [
        match("a", "s", published=at(0, 1), language="en"),
        # 23:30 UTC on Monday is 00:30 on Tuesday in Berlin
        match("b", "s", published=datetime(2026, 1, 26, 23, 30, tzinfo=UTC), language="uk"),
        match("c", "t", published=at(6, 22), language="uk"),
        match("x", "u", published=at(2), topic="energy", language="ru"),
    ]
    gaza, energy = digest_of(matches).topics
    assert list(gaza.daily) == list(WEEK.days())
    assert gaza.daily[date(2026, 1, 26)] == {"uk": 0, "en": 1}
    assert gaza.daily[date(2026, 1, 27)] == {"uk": 1, "en": 0}
    assert gaza.daily[date(2026, 1, 28)] == {"uk": 0, "en": 0}
    assert gaza.daily[date(2026, 2, 1)] == {"uk": 1, "en": 0}
    assert gaza.per_language == {"uk": 2, "en": 1}
    assert gaza.article_count == 3
    assert energy.per_language == {"ru": 1}


def test_best_passage_is_the_best_scoring_article_with_a_passage() -> None:
    matches = [
        match("a", "s", published=at(0), score=0.9, passage=""),
        match("b", "s", published=at(1), score=0.7, passage="Переговоры возобновились."),
        match("c", "s", published=at(2), score=0.2),
    ]
    (story_,) = digest_of(matches).topics[0].stories
    assert story_.best.article_id == "b"
    assert story_.best_passage == "Переговоры возобновились."


def test_headline_and_span_come_from_the_stored_story() -> None:
    matches = [match("a", "s", published=at(2)), match("b", "s", published=at(3))]
    stored = story("s", "Talks resume in Cairo", at(-3), at(3))
    (with_story,) = digest_of(matches, stories={"s": stored}).topics[0].stories
    assert with_story.headline == "Talks resume in Cairo"
    assert (with_story.first_seen, with_story.last_seen) == (at(-3), at(3))  # continuing story
    (without,) = digest_of(matches).topics[0].stories
    assert without.headline == "Title of a"  # the best article's title (a tie: the earliest)
    assert (without.first_seen, without.last_seen) == (at(2), at(3))


# -- which articles are the window's ----------------------------------------------------------


def test_window_is_by_published_time_not_matched_time() -> None:
    matches = [
        # a first poll's backlog: published weeks ago, matched this week: not this week's news
        match("old", "s1", published=at(-20), matched=at(1)),
        # published on Sunday evening, matched after the week ended: this week's news
        match("late", "s2", published=at(6, 22), matched=at(7, 3)),
        # published next week
        match("next", "s3", published=at(7, 1)),
        # a feed dating its item in the future: counts when it was matched
        match("future", "s4", published=at(30), matched=at(4)),
        # another topic
        match("other", "s5", published=at(1), topic="elsewhere"),
    ]
    topic = digest_of(matches).topics[0]
    assert {s.story_id for s in topic.stories} == {"s2", "s4"}
    (future,) = [s for s in topic.stories if s.story_id == "s4"]
    assert future.articles[0].published == at(4)


def test_same_article_twice_counts_once() -> None:
    twice = match("a", "s", published=at(1))
    (story_,) = digest_of([twice, twice]).topics[0].stories
    assert story_.article_count == 1


# -- alerted or digest only -------------------------------------------------------------------


def test_alerted_versus_digest_only() -> None:
    reported = match("a1", "alerted-now", published=at(1), message_id="al_x.0")
    follow = match("a2", "alerted-now", published=at(2))
    earlier = match("b0", "alerted-before", published=at(-2))  # reported last week
    continuing = match("b1", "alerted-before", published=at(3))
    quiet = match("c1", "digest-only", published=at(3))
    digest = digest_of(
        [reported, follow, continuing, quiet],
        alerts=[alert("gaza", "alerted-before", earlier), alert("energy", "digest-only")],
    )
    topic = digest.topics[0]
    flags = {s.story_id: s.alerted for s in topic.stories}
    assert flags == {"alerted-now": True, "alerted-before": True, "digest-only": False}
    articles = {a.article_id: a.alerted for s in topic.stories for a in s.articles}
    assert articles == {"a1": True, "a2": False, "b1": False, "c1": False}
    assert [s.story_id for s in topic.digest_only_stories] == ["digest-only"]
    assert len(topic.alerted_stories) == 2


def test_an_article_in_an_alert_message_is_alerted_without_a_message_id() -> None:
    article = match("a1", "s", published=at(1))
    (story_,) = digest_of([article], alerts=[alert("gaza", "s", article)]).topics[0].stories
    assert story_.alerted
    assert story_.articles[0].alerted


# -- feeds ------------------------------------------------------------------------------------


def test_silent_and_failing_feeds() -> None:
    feeds = [
        feed("healthy"),
        feed("one-blip", consecutive_failures=1, last_error="HTTP 503"),
        feed("quiet", last_new_item_at=at(-3)),
        feed("new", last_polled_at=None, last_new_item_at=None),
        feed("empty", last_new_item_at=None),
        feed("broken", consecutive_failures=5, last_error="HTTP 404\n<html>", last_status=404),
        feed("dead", consecutive_failures=2, last_error=None, last_new_item_at=at(-10, 0)),
    ]
    notes = {note.feed: note for note in digest_of([], feeds=feeds).feeds}
    assert [n.feed for n in digest_of([], feeds=feeds).feeds] == [
        "broken",
        "dead",
        "empty",
        "new",
        "quiet",
    ]
    assert notes["broken"].problem is FeedProblem.FAILING
    assert notes["broken"].detail == "5 failed polls in a row; last error: HTTP 404 <html>"
    assert notes["dead"].detail == (
        "2 failed polls in a row; last error: unknown error; no new item since 2026-01-15 23:00 UTC"
    )
    assert notes["quiet"].problem == "silent"
    assert notes["quiet"].detail == "no new item since 2026-01-23 11:00 UTC"
    assert notes["quiet"].last_new_item_at == at(-3)
    assert notes["new"].detail == "not polled yet"
    assert notes["empty"].detail == "no new item yet"


# -- the digest -------------------------------------------------------------------------------


def test_empty_week() -> None:
    digest = digest_of([], feeds=[feed("healthy")])
    assert [t.topic_id for t in digest.topics] == ["gaza", "energy"]
    for topic in digest.topics:
        assert topic.stories == ()
        assert topic.article_count == 0
        assert topic.per_language == {}
        assert list(topic.daily) == list(WEEK.days())
        assert all(counts == {} for counts in topic.daily.values())
    assert (digest.story_count, digest.article_count) == (0, 0)
    assert digest.feeds == ()
    assert digest.generated_at == NOW


def test_digest_id_is_stable_per_window_and_topics() -> None:
    first = digest_of([])
    again = digest_of([match("a", "s", published=at(1))], now=NOW + timedelta(hours=1))
    assert first.id == again.id
    assert first.id.startswith("digest-2026-W05-")
    assert digest_of([], topics=TOPICS[:1]).id != first.id
    assert digest_of([], topics=TOPICS[::-1]).id == first.id
    utc_week = digest_of([], window=week_window("2026-W05"))
    assert utc_week.id != first.id
    since = digest_of([], window=since_window(NOW, timedelta(days=7)))
    assert since.id.startswith("digest-20260126T0600Z-20260202T0600Z-")


def test_repeated_topics_appear_once() -> None:
    digest = digest_of([match("a", "s", published=at(1))], topics=[TOPICS[0], *TOPICS])
    assert [t.topic_id for t in digest.topics] == ["gaza", "energy"]


# -- loading ----------------------------------------------------------------------------------


class FakeStore:
    """The four reads ``load_digest`` makes, recorded."""

    def __init__(self, matches: list[StoredMatch], stories: dict[str, Story]) -> None:
        self.matches, self.stories = matches, stories
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def list_matches(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[StoredMatch]:
        self.calls.append(("list_matches", {"topic_id": topic_id, "since": since, "until": until}))
        return [
            m
            for m in self.matches
            if m.topic_id == topic_id and (since is None or m.matched_at >= since)
        ]

    def get_stories(self, story_ids: Sequence[str]) -> dict[str, Story]:
        self.calls.append(("get_stories", {"story_ids": list(story_ids)}))
        return {i: self.stories[i] for i in story_ids if i in self.stories}

    def list_alerts(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[AlertRecord]:
        self.calls.append(("list_alerts", {"topic_id": topic_id, "since": since}))
        return [alert("gaza", "s")] if topic_id == "gaza" else []

    def list_feeds(self) -> list[FeedState]:
        self.calls.append(("list_feeds", {}))
        return [feed("quiet", last_new_item_at=at(-3))]


def test_load_digest_reads_from_the_window_start_without_an_upper_bound() -> None:
    matches = [
        match("a", "s", published=at(6, 22), matched=at(8)),  # matched after the window
        match("b", "s", published=at(-20), matched=at(1)),  # backlog: dropped
    ]
    store = FakeStore(matches, {"s": story("s", "Headline", at(-1), at(6, 22))})
    digest = load_digest(store, TOPICS, WEEK, NOW)
    assert ("list_matches", {"topic_id": "gaza", "since": WEEK.start, "until": None}) in store.calls
    assert ("get_stories", {"story_ids": ["s"]}) in store.calls
    # alerts from the earliest start of the window's stories; none read for an idle topic
    assert [c for c in store.calls if c[0] == "list_alerts"] == [
        ("list_alerts", {"topic_id": "gaza", "since": at(-1)})
    ]
    (story_,) = digest.topics[0].stories
    assert [a.article_id for a in story_.articles] == ["a"]
    assert story_.alerted
    assert story_.headline == "Headline"
    assert [n.feed for n in digest.feeds] == ["quiet"]


def test_load_digest_reads_every_alert_when_a_story_is_unknown() -> None:
    store = FakeStore([match("a", "gone", published=at(1))], {})
    load_digest(store, TOPICS[:1], WEEK, NOW)
    assert ("list_alerts", {"topic_id": "gaza", "since": None}) in store.calls


def test_load_digest_from_a_real_store(empty_store: SqlStateStore) -> None:
    """The store's own semantics (``since`` on matched time, aware datetimes) end to end."""
    store = empty_store
    store.sync_feeds(FEEDS, T0)
    store.save_drafts([draft("a1"), draft("old", published_at=T0 - timedelta(days=20))], T0)
    topic = Topic(id="talks", name="Переговори", description="d")
    for n, article_id in enumerate(("a1", "old")):
        store.save_text(article_id, page_text(), T0)
        store.mark_indexed(article_id, model="m", story=_story("s1", count=n + 1),
                           near_duplicate_of=None, now=T0)  # fmt: skip
        found = Match(topic.id, article_id, True, 0.6, 0.4, f"passage {article_id}", 0)
        store.record_matches(article_id, "s1", [found], alertable=True, now=T0)
    planned = plan_message(topic, _story("s1"), store.story_matches(topic.id, "s1")[:1], [], T0)
    assert planned is not None
    store.save_alert_message(planned.message, article_ids=planned.article_ids, channels=["m"],
                             now=T0)  # fmt: skip
    window = previous_week(T0 + timedelta(days=3))  # 2025-W09, Saturday 1 March is in it
    digest = load_digest(store, [topic], window, T0 + timedelta(days=3))
    (s1,) = digest.topics[0].stories
    assert [a.article_id for a in s1.articles] == ["a1"]  # the 20-day-old entry is not this week's
    assert s1.alerted
    assert s1.headline == "Переговори в Абу-Дабі"
    assert s1.per_language == {"uk": 1}
    assert {(n.feed, n.problem) for n in digest.feeds} == {
        ("kyiv", FeedProblem.SILENT), ("world", FeedProblem.SILENT)
    }  # fmt: skip
