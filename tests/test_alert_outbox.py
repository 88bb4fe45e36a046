"""The alert outbox in the state store (SQLite and PostgreSQL) and the dispatcher working it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.channels import RecordingChannel
from alerts.dispatch import Dispatcher, RetryPolicy
from alerts.matching import MatchPolicy
from alerts.plan import plan_message
from alerts.types import DeliveryStatus, Match, Topic
from monitor.errors import ChannelError
from monitor.state import SqlStateStore
from tests.test_state import FEEDS, T0, _fetched, _story

TOPIC = Topic(id="abu-dhabi-talks", name="Abu Dhabi talks", description="d",
              channels=("mail", "slack"))  # fmt: skip


@pytest.fixture
def store(empty_store: SqlStateStore) -> SqlStateStore:
    empty_store.sync_feeds(FEEDS, T0)
    return empty_store


def _indexed(store: SqlStateStore, *ids: str, story: str = "s1") -> None:
    _fetched(store, *ids)
    for n, aid in enumerate(ids):
        store.mark_indexed(aid, model="m", story=_story(story, count=n + 1), near_duplicate_of=None,
                           now=T0)  # fmt: skip


def _match(aid: str, score: float = 0.61) -> Match:
    return Match(TOPIC.id, aid, True, score, 0.4, f"passage of {aid}", 0, ("Abu Dhabi",), "why")


#: one query, no feedback, no contrast: scores are plain language-corrected cosines, so a test
#: can set the threshold between two articles' scores
PLAIN = MatchPolicy(threshold=-1.0, contrast=0.0, agreeing=1, feedback_passages=0,
                    language_feedback_passages=0, anchor_passages=0)  # fmt: skip


def _arrive(
    store: SqlStateStore, vectors: Any, embedder: Any, aid: str, feed: str, story: str, text: str
) -> None:
    """An article of ``feed`` fetched, indexed into ``story`` and its lead stored as a vector."""
    from indexer.types import PassageKind, PassagePayload, Point, point_id
    from tests.test_state import draft, page_text

    url = f"https://{feed}.example/{aid}"
    store.save_drafts([draft(aid, feed=feed, url=url, canonical_url=url)], T0)
    store.save_text(aid, page_text(text=text), T0)
    store.mark_indexed(aid, model="m", story=_story(story), near_duplicate_of=None, now=T0)
    [vector] = embedder.embed_documents([text])
    payload = PassagePayload(
        article_id=aid, passage_index=0, kind=PassageKind.LEAD, text=text, url=url, title=text,
        language="uk", source=feed, published_at=T0 - timedelta(hours=1), story_id=story,
    )  # fmt: skip
    vectors.upsert("c", [Point(point_id(url, 0), vector, payload)])


#: the topic of the alert-stage tests below (articles stored by ``_arrive``)
TALKS = Topic(id="talks", name="Talks", description="peace talks delegations in Abu Dhabi",
              channels=("mail",))  # fmt: skip


def _talks_stage(
    store: SqlStateStore, vectors: Any, embedder: Any, policy: MatchPolicy, *,
    topic: Topic = TALKS, min_feedback_coverage: int = 500,
) -> Any:  # fmt: skip
    """A real ``AlertStage`` for ``topic`` over ``_arrive``'s collection, at ``T0``."""
    from alerts.stage import AlertStage

    return AlertStage(
        store=store, vectors=vectors, embedder=embedder, collection="c", topics=(topic,),
        channels=frozenset({"mail"}), languages=("uk",), backfill=timedelta(days=1),
        policy=policy, clock=lambda: T0, min_feedback_coverage=min_feedback_coverage,
    )  # fmt: skip


def _queue_first_message(store: SqlStateStore) -> str:
    _indexed(store, "a1", "a2")
    store.record_matches("a1", "s1", [_match("a1")], alertable=True, now=T0)
    store.record_matches("a2", "s1", [_match("a2", 0.7)], alertable=True, now=T0)
    planned = plan_message(TOPIC, _story("s1"), store.story_matches(TOPIC.id, "s1"), [], T0)
    assert planned is not None
    assert store.save_alert_message(planned.message, article_ids=planned.article_ids,
                                    channels=["mail", "slack"], now=T0)  # fmt: skip
    return planned.message.id


def test_matching_is_recorded_once_per_article(store: SqlStateStore) -> None:
    _indexed(store, "a1", "a2")
    assert store.due_for_matching(10) == ["a1", "a2"]
    store.record_matches("a1", "s1", [_match("a1"), Match(TOPIC.id, "a1", False, 0.1, 0.4, "",
                                                          -1)], alertable=True, now=T0)  # fmt: skip
    assert store.due_for_matching(10) == ["a2"]
    [stored] = store.story_matches(TOPIC.id, "s1")  # only positive matches are kept
    assert stored.article.article_id == "a1"
    assert stored.article.keywords == ("Abu Dhabi",)
    assert stored.article.url == "https://kyiv.example/a1"
    assert stored.article.language == "uk"
    assert stored.alertable
    assert stored.message_id is None
    # re-indexing (a new model) does not make an article due for matching again
    store.reset_index(None, T0)
    for aid in ("a1", "a2"):
        store.mark_indexed(aid, model="m2", story=_story("s1"), near_duplicate_of=None, now=T0)
    assert store.due_for_matching(10) == ["a2"]


def test_the_outbox_write_is_complete_and_idempotent(store: SqlStateStore) -> None:
    message_id = _queue_first_message(store)
    [record] = store.list_alerts()
    assert [m.id for m in record.messages] == [message_id]
    assert {a.article_id for a in record.articles} == {"a1", "a2"}
    assert {(d.channel, d.status) for d in record.deliveries} == {
        ("mail", DeliveryStatus.PENDING), ("slack", DeliveryStatus.PENDING)
    }  # fmt: skip
    assert all(m.message_id == message_id for m in store.story_matches(TOPIC.id, "s1"))
    again = record.messages[0]
    assert not store.save_alert_message(again, article_ids=["a1"], channels=["mail"], now=T0)
    assert len(store.due_deliveries(T0, 10)) == 2
    assert store.count_pending_deliveries() == 2


def test_delivery_outcomes_are_recorded(store: SqlStateStore) -> None:
    message_id = _queue_first_message(store)
    later = T0 + timedelta(minutes=5)
    store.record_delivery(message_id, "mail", status=DeliveryStatus.SENT, error=None,
                          next_attempt_at=None, now=T0)  # fmt: skip
    store.record_delivery(message_id, "slack", status=DeliveryStatus.PENDING, error="HTTP 500",
                          next_attempt_at=later, now=T0)  # fmt: skip
    assert store.due_deliveries(T0, 10) == []
    assert store.next_delivery_at() == later
    [(delivery, message)] = store.due_deliveries(later, 10)
    assert (delivery.channel, delivery.attempts, delivery.last_error) == ("slack", 1, "HTTP 500")
    assert message.id == message_id
    assert message.articles[0].article_id == "a2"
    [record] = store.list_alerts(topic_id=TOPIC.id)
    sent = next(d for d in record.deliveries if d.channel == "mail")
    assert sent.status is DeliveryStatus.SENT
    assert sent.sent_at == T0
    assert store.list_alerts(topic_id="other") == []


def test_labels_are_stored_and_replaced(store: SqlStateStore) -> None:
    _indexed(store, "a1", "a2")
    store.save_label(TOPIC.id, "a1", True, T0)
    store.save_label(TOPIC.id, "a2", False, T0)
    store.save_label(TOPIC.id, "a1", False, T0 + timedelta(seconds=1))
    assert sorted(store.topic_labels(TOPIC.id)) == [(TOPIC.id, "a1", False),
                                                    (TOPIC.id, "a2", False)]  # fmt: skip


# -- the dispatcher -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.now


def _dispatcher(store: SqlStateStore, clock: Clock, **channels: RecordingChannel) -> Dispatcher:
    policy = RetryPolicy(first_delay=timedelta(seconds=30), max_attempts=3, jitter=0.0)
    return Dispatcher(store=store, channels=channels, policy=policy, clock=clock)


def test_a_failing_channel_never_blocks_another_and_is_retried(store: SqlStateStore) -> None:
    message_id = _queue_first_message(store)
    mail, slack = RecordingChannel("mail"), RecordingChannel("slack")
    slack.fail_next(1, ChannelError("slack", "HTTP 500"))
    clock = Clock()
    dispatcher = _dispatcher(store, clock, mail=mail, slack=slack)
    report = asyncio.run(dispatcher.deliver_due())
    assert (report.sent, report.retrying, report.failed) == (1, 1, 0)
    assert [m.id for m in mail.sent] == [message_id]
    assert slack.sent == []
    assert asyncio.run(dispatcher.deliver_due()).sent == 0  # not due before its backoff
    clock.now = T0 + timedelta(seconds=31)
    assert asyncio.run(dispatcher.deliver_due()).sent == 1
    assert [m.id for m in slack.sent] == [message_id]
    assert len(mail.sent) == 1  # an acknowledged delivery is never sent again
    assert store.count_pending_deliveries() == 0


def test_permanent_errors_and_exhausted_retries_fail_with_the_error(store: SqlStateStore) -> None:
    _queue_first_message(store)
    mail, slack = RecordingChannel("mail"), RecordingChannel("slack")
    mail.fail_next(1, ChannelError("mail", "535 authentication failed", permanent=True))
    slack.fail_next(10, ChannelError("slack", "HTTP 503"))
    clock = Clock()
    dispatcher = _dispatcher(store, clock, mail=mail, slack=slack)
    for _ in range(4):
        asyncio.run(dispatcher.deliver_due())
        clock.now += timedelta(hours=1)
    [record] = store.list_alerts()
    states = {d.channel: (d.status, d.attempts, d.last_error) for d in record.deliveries}
    assert states["mail"] == (DeliveryStatus.FAILED, 1,
                              "channel 'mail': 535 authentication failed")  # fmt: skip
    assert states["slack"][:2] == (DeliveryStatus.FAILED, 3)
    assert len(slack.attempts) == 3


def test_retry_after_pauses_the_whole_channel(store: SqlStateStore) -> None:
    first = _queue_first_message(store)
    _indexed(store, "b1", story="s2")
    store.record_matches("b1", "s2", [_match("b1")], alertable=True, now=T0)
    later = T0 + timedelta(seconds=1)
    planned = plan_message(TOPIC, _story("s2"), store.story_matches(TOPIC.id, "s2"), [], later)
    assert planned is not None
    store.save_alert_message(planned.message, article_ids=planned.article_ids, channels=["slack"],
                             now=later)  # fmt: skip
    slack = RecordingChannel("slack")
    slack.fail_next(1, ChannelError("slack", "HTTP 429", retry_after=120))
    clock = Clock()
    dispatcher = _dispatcher(store, clock, mail=RecordingChannel("mail"), slack=slack)
    asyncio.run(dispatcher.deliver_due())
    assert [m.id for m in slack.attempts] == [first]  # the second message waits for the pause
    clock.now = T0 + timedelta(seconds=60)
    asyncio.run(dispatcher.deliver_due())
    assert len(slack.attempts) == 1
    clock.now = T0 + timedelta(seconds=121)
    asyncio.run(dispatcher.deliver_due())
    assert [m.id for m in slack.sent] == [first, planned.message.id]  # in order


def test_a_channel_removed_from_the_config_fails_its_deliveries(store: SqlStateStore) -> None:
    _queue_first_message(store)
    dispatcher = _dispatcher(store, Clock(), mail=RecordingChannel("mail"))
    asyncio.run(dispatcher.deliver_due())
    [record] = store.list_alerts()
    slack = next(d for d in record.deliveries if d.channel == "slack")
    assert slack.status is DeliveryStatus.FAILED
    assert "not configured" in (slack.last_error or "")


def test_drain_waits_for_retries_within_its_bound(store: SqlStateStore) -> None:
    _queue_first_message(store)
    slack = RecordingChannel("slack")
    slack.fail_next(1, ChannelError("slack", "HTTP 500"))
    dispatcher = Dispatcher(store=store, channels={"mail": RecordingChannel("mail"),
                            "slack": slack}, policy=RetryPolicy(
                            first_delay=timedelta(milliseconds=200), jitter=0.0))  # fmt: skip
    assert asyncio.run(dispatcher.drain(timeout=5.0)) == 0
    assert len(slack.sent) == 1
    slack.fail_next(100, ChannelError("slack", "HTTP 500"))
    _indexed(store, "c1", story="s3")
    store.record_matches("c1", "s3", [_match("c1")], alertable=True, now=T0)
    planned = plan_message(TOPIC, _story("s3"), store.story_matches(TOPIC.id, "s3"), [], T0)
    assert planned is not None
    store.save_alert_message(planned.message, article_ids=planned.article_ids, channels=["slack"],
                             now=T0)  # fmt: skip
    assert asyncio.run(dispatcher.drain(timeout=0.5)) == 1  # bounded: gives up waiting, keeps it


def test_held_back_follow_ups_go_out_once_the_interval_passed(
    store: SqlStateStore, tmp_path: Path
) -> None:
    from alerts.matching import BUNDLED_POLICY
    from alerts.stage import AlertStage
    from indexer.embed import HashEmbedder
    from indexer.qdrant_edge import EdgeVectorStore
    from tests.test_state import draft, page_text

    message_id = _queue_first_message(store)  # a1, a2 (uk) reported at T0
    store.save_drafts([draft("e1")], T0)
    store.save_text("e1", page_text(language="en"), T0)
    store.mark_indexed("e1", model="m", story=_story("s1", count=3), near_duplicate_of=None,
                       now=T0)  # fmt: skip
    store.record_matches("e1", "s1", [_match("e1")], alertable=True, now=T0 + timedelta(hours=1))
    clock = Clock()
    vectors = EdgeVectorStore(tmp_path / "vectors")
    stage = AlertStage(
        store=store, vectors=vectors, embedder=HashEmbedder(), collection="c", topics=(TOPIC,),
        channels=frozenset({"mail"}), languages=("en", "uk"), backfill=timedelta(days=1),
        policy=BUNDLED_POLICY, clock=clock,
    )  # fmt: skip
    try:
        clock.now = T0 + timedelta(hours=2)
        assert stage.follow_ups_due() == []  # within the alert's minimum interval
        clock.now = T0 + timedelta(hours=7)
        [follow_up] = stage.follow_ups_due()
        assert follow_up.reason == "first coverage in en"
        assert [a.article_id for a in follow_up.articles] == ["e1"]
        assert follow_up.alert_id == message_id.rsplit(".", 1)[0]
        assert stage.follow_ups_due() == []  # planned once
        [record] = store.list_alerts()
        assert [m.sequence for m in record.messages] == [0, 1]
    finally:
        vectors.close()


def test_moving_articles_between_stories_takes_their_matches_along(store: SqlStateStore) -> None:
    """The indexer's re-homing (indexer.index.Indexer._rehome) in the store: one transaction
    moves the articles and their topic matches, saves both summaries, drops an emptied story."""
    _indexed(store, "a1", story="s1")
    _indexed(store, "a2", "a3", story="s2")
    store.record_matches("a1", "s1", [_match("a1")], alertable=True, now=T0)
    assert store.alerted_stories(["s1", "s2"]) == set()

    store.move_to_story(["a1"], _story("s2", count=3), left="s1", left_story=None)

    assert [a.id for a in store.story_articles("s2")] == ["a1", "a2", "a3"]
    assert store.get_stories(["s1", "s2"]) == {"s2": _story("s2", count=3)}
    [moved] = store.story_matches(TOPIC.id, "s2")
    assert moved.article.article_id == "a1"
    assert store.story_matches(TOPIC.id, "s1") == []

    store.move_to_story(["a3"], _story("s3"), left="s2", left_story=_story("s2", count=2))
    assert store.get_stories(["s2", "s3"]) == {"s2": _story("s2", count=2), "s3": _story("s3")}


def test_alerted_stories_are_the_ones_an_alert_reported(store: SqlStateStore) -> None:
    _queue_first_message(store)
    _indexed(store, "b1", story="s2")
    assert store.alerted_stories(["s1", "s2", "nope"]) == {"s1"}
    assert store.alerted_stories([]) == set()


def _queue_story_message(store: SqlStateStore, n: int, channels: list[str]) -> str:
    """One more alert message, on a story of its own, queued ``n`` seconds after T0."""
    aid, story = f"c{n}", f"sc{n}"
    _indexed(store, aid, story=story)
    at = T0 + timedelta(seconds=n)
    store.record_matches(aid, story, [_match(aid)], alertable=True, now=at)
    planned = plan_message(TOPIC, _story(story), store.story_matches(TOPIC.id, story), [], at)
    assert planned is not None
    store.save_alert_message(planned.message, article_ids=planned.article_ids, channels=channels,
                             now=at)  # fmt: skip
    return planned.message.id


def test_a_channel_backlog_never_hides_another_channels_due_deliveries(
    store: SqlStateStore,
) -> None:
    backlog = [_queue_story_message(store, n, ["mail"]) for n in range(1, 5)]
    later = _queue_story_message(store, 9, ["slack"])
    due = store.due_deliveries(T0 + timedelta(minutes=1), 2)
    assert [(d.channel, m.id) for d, m in due] == [
        ("mail", backlog[0]), ("mail", backlog[1]), ("slack", later)
    ]  # fmt: skip


def test_failed_deliveries_can_be_retried_once_the_cause_is_fixed(store: SqlStateStore) -> None:
    first = _queue_first_message(store)
    dispatcher = _dispatcher(store, Clock(), mail=RecordingChannel("mail"))  # slack: removed
    asyncio.run(dispatcher.deliver_due())
    assert store.count_failed_deliveries() == 1
    assert store.retry_failed_deliveries("mail", T0) == 0  # mail's went out
    assert store.retry_failed_deliveries("slack", T0 + timedelta(hours=1)) == 1
    assert store.count_failed_deliveries() == 0
    slack = RecordingChannel("slack")
    clock = Clock()
    clock.now = T0 + timedelta(hours=1)
    asyncio.run(_dispatcher(store, clock, mail=RecordingChannel("mail"), slack=slack).deliver_due())
    assert [m.id for m in slack.sent] == [first]
    [record] = store.list_alerts()
    assert {d.channel: d.status for d in record.deliveries} == {
        "mail": DeliveryStatus.SENT, "slack": DeliveryStatus.SENT
    }  # fmt: skip


def test_a_pause_holds_the_channels_other_deliveries_across_a_restart(
    store: SqlStateStore,
) -> None:
    first = _queue_first_message(store)
    second = _queue_story_message(store, 1, ["slack"])
    slack = RecordingChannel("slack")
    slack.fail_next(1, ChannelError("slack", "HTTP 429", retry_after=120))
    asyncio.run(_dispatcher(store, Clock(), mail=RecordingChannel("mail"), slack=slack)
                .deliver_due())  # fmt: skip
    assert [m.id for m in slack.attempts] == [first]
    # a restart 60 s later: a new dispatcher knows nothing of the pause, the store does
    restarted = RecordingChannel("slack")
    clock = Clock()
    clock.now = T0 + timedelta(seconds=60)
    dispatcher = _dispatcher(store, clock, mail=RecordingChannel("mail"), slack=restarted)
    asyncio.run(dispatcher.deliver_due())
    assert restarted.attempts == []
    clock.now = T0 + timedelta(seconds=121)
    asyncio.run(dispatcher.deliver_due())
    assert [m.id for m in restarted.sent] == [first, second]


def test_topic_queries_are_refined_once_enough_coverage_is_stored(
    store: SqlStateStore, tmp_path: Path
) -> None:
    """Feedback waits for ``min_feedback_coverage`` stored passages (on a handful, "the best"
    are all of them); a benchmark of a small split sets 0, as a service past it."""
    import numpy as np

    from alerts.matching import BUNDLED_POLICY
    from alerts.stage import MIN_FEEDBACK_COVERAGE, AlertStage
    from indexer.embed import HashEmbedder
    from indexer.qdrant_edge import EdgeVectorStore
    from indexer.types import PassageKind, PassagePayload, Point, point_id

    embedder = HashEmbedder()
    topic = Topic(id="talks", name="Talks", description="peace talks in Abu Dhabi", channels=())
    texts = ["peace talks resume in Abu Dhabi", "talks in the Emirates", "a football match"]
    vectors = EdgeVectorStore(tmp_path / "vectors")
    vectors.ensure_collection("c", embedder.dim)
    vectors.upsert("c", [
        Point(point_id(f"https://x.example/{n}", 0), vector, PassagePayload(
            article_id=f"a{n}", passage_index=0, kind=PassageKind.LEAD, text=text,
            url=f"https://x.example/{n}", title=text, language="en", source="x",
            published_at=T0, story_id=None))
        for n, (text, vector) in enumerate(
            zip(texts, embedder.embed_documents(texts), strict=True))
    ])  # fmt: skip

    def queries(min_feedback_coverage: int) -> np.ndarray:
        stage = AlertStage(
            store=store, vectors=vectors, embedder=embedder, collection="c", topics=(topic,),
            channels=frozenset(), languages=("en",), backfill=timedelta(days=1),
            policy=BUNDLED_POLICY, min_feedback_coverage=min_feedback_coverage,
        )  # fmt: skip
        return np.asarray(stage.profiles()[topic.id].queries)

    try:
        description = embedder.embed_queries([topic.description])
        assert len(texts) < MIN_FEEDBACK_COVERAGE
        np.testing.assert_allclose(queries(MIN_FEEDBACK_COVERAGE), description, atol=1e-6)
        refined = queries(0)
        assert not np.allclose(refined, description, atol=1e-3)  # moved towards the coverage
    finally:
        vectors.close()


def test_topics_compete_for_an_article_live_and_in_the_backtest(
    store: SqlStateStore, tmp_path: Path
) -> None:
    """``AlertStage.match`` and ``topics test`` give the same verdicts once the topics competed:
    the article about the talks leaves the territory topic, which it matched on its own."""
    from dataclasses import replace

    from alerts.stage import AlertStage
    from indexer.embed import HashEmbedder
    from indexer.qdrant_edge import EdgeVectorStore
    from indexer.types import PassageKind, PassagePayload, Point, point_id

    embedder = HashEmbedder()
    talks = Topic(id="talks", name="Talks", description="peace talks delegations in Abu Dhabi",
                  channels=())  # fmt: skip
    territory = Topic(id="territory", name="Territory", description="territory withdrawal talks",
                      channels=())  # fmt: skip
    text = "peace talks delegations met in Abu Dhabi"
    _indexed(store, "a1")
    vectors = EdgeVectorStore(tmp_path / "vectors")
    vectors.ensure_collection("c", embedder.dim)
    [vector] = embedder.embed_documents([text])
    vectors.upsert("c", [Point(point_id("https://kyiv.example/a1", 0), vector, PassagePayload(
        article_id="a1", passage_index=0, kind=PassageKind.LEAD, text=text,
        url="https://kyiv.example/a1", title=text, language="uk", source="kyiv",
        published_at=T0 - timedelta(hours=1), story_id="s1"))])  # fmt: skip

    def stage(policy: MatchPolicy) -> AlertStage:
        return AlertStage(
            store=store, vectors=vectors, embedder=embedder, collection="c",
            topics=(talks, territory), channels=frozenset(), languages=("uk",),
            backfill=timedelta(days=1), policy=policy,
        )  # fmt: skip

    try:
        article = store.get_article("a1")
        assert article is not None
        first = {m.topic_id: m.score for m in stage(PLAIN).match(article)}
        assert first["talks"] > first["territory"] + 0.01  # the talks fit it better
        # a threshold both topics reach on their own; then they compete
        competing = replace(PLAIN, threshold=first["territory"] - 0.001, rival_contrast=0.5)
        verdicts = {m.topic_id: m for m in stage(competing).match(article)}
        assert verdicts["talks"].matched
        assert not verdicts["territory"].matched
        assert "talks fits it better" in verdicts["territory"].reason
        [backtested] = stage(competing).backtest("territory", since=None)
        assert backtested.match == verdicts["territory"]
    finally:
        vectors.close()


def test_an_uncertain_topic_alerts_once_a_second_outlet_confirms_the_story(
    store: SqlStateStore, tmp_path: Path
) -> None:
    """A young store's topic (queries not refined) holds a single weak match; the same event
    from another outlet - in the same story, or in a story the join rule relates - confirms it,
    and the alert reports both. A refined topic, or a clear match, alerts at once."""
    from dataclasses import replace

    from indexer.embed import HashEmbedder
    from indexer.qdrant_edge import EdgeVectorStore

    embedder = HashEmbedder()
    topic = TALKS
    text = "peace talks delegations met in Abu Dhabi"
    vectors = EdgeVectorStore(tmp_path / "vectors")
    vectors.ensure_collection("c", embedder.dim)

    def arrive(aid: str, feed: str, story: str) -> None:
        _arrive(store, vectors, embedder, aid, feed, story, text)

    def stage(policy: MatchPolicy, *, min_feedback_coverage: int = 500) -> Any:
        return _talks_stage(store, vectors, embedder, policy, topic=topic,
                            min_feedback_coverage=min_feedback_coverage)  # fmt: skip

    try:
        arrive("a1", "kyiv", "s1")
        article = store.get_article("a1")
        assert article is not None
        [first] = stage(PLAIN).match(article)
        weak = replace(PLAIN, threshold=first.score - 0.001)  # matches, but not by 0.02
        young = stage(weak)
        assert young.process("a1") == []  # held: one outlet, a weak match
        assert young.refinement("talks") == 0.0
        [held] = store.list_matches(topic_id="talks")
        assert held.message_id is None
        assert held.threshold == pytest.approx(weak.threshold)
        assert store.list_alerts() == []
        # the same event from another outlet, clustered as a story of its own: related by the
        # join rule, it confirms the first and the alert reports both
        arrive("a2", "world", "s2")
        [message] = young.process("a2")
        assert {a.article_id for a in message.articles} == {"a1", "a2"}
        assert store.alert_of_story("talks", "s1") == message.alert_id  # the held story joined
        assert all(m.message_id == message.id for m in store.list_matches(topic_id="talks"))
        # a refined topic (feedback on, no confident-coverage rule) alerts on one weak match
        arrive("a3", "kyiv", "s3")
        vectors.delete_articles("c", ["a1", "a2"])  # else the join rule relates s3 to the alert
        refined = stage(weak, min_feedback_coverage=0)
        assert refined.process("a3") != []
        assert refined.refinement("talks") == 1.0
        # and so does an uncertain topic's clear match
        arrive("a4", "kyiv", "s4")
        vectors.delete_articles("c", ["a3"])
        assert stage(replace(PLAIN, threshold=first.score - 0.03)).process("a4") != []
        # and an uncertain topic set not to wait (`confirm: false`)
        arrive("a5", "kyiv", "s5")
        vectors.delete_articles("c", ["a4"])
        topic = replace(topic, confirm=False)
        assert stage(weak).process("a5") != []
    finally:
        vectors.close()


def test_a_near_miss_joins_its_storys_clear_match_in_either_order(
    store: SqlStateStore, tmp_path: Path
) -> None:
    """An article just below the threshold matches once another article of its story matches
    clearly (``MatchPolicy.story_margin``): arriving after the clear match, or before it (then
    the clear match brings it in); the alert reports both, and ``topics test`` agrees. An
    article further below, in the same story, stays out."""
    from dataclasses import replace

    from indexer.embed import HashEmbedder
    from indexer.qdrant_edge import EdgeVectorStore
    from monitor.types import Article

    embedder = HashEmbedder()
    clear_text = TALKS.description
    vectors = EdgeVectorStore(tmp_path / "vectors")
    vectors.ensure_collection("c", embedder.dim)

    def arrive(aid: str, feed: str, story: str, text: str) -> None:
        _arrive(store, vectors, embedder, aid, feed, story, text)

    def stage(policy: MatchPolicy) -> Any:
        return _talks_stage(store, vectors, embedder, policy, min_feedback_coverage=0)

    try:
        texts = {"a1": "peace talks delegations in the Gulf", "a2": clear_text,
                 "a3": "talks on grain exports"}  # fmt: skip
        for aid, text in texts.items():
            arrive(aid, "kyiv" if aid != "a2" else "world", "s1", text)
        scores = {m.article_id: m.score for aid in texts
                  for m in stage(PLAIN).match(store.get_article(aid))}  # type: ignore[arg-type]  # fmt: skip
        assert scores["a2"] > scores["a1"] + 0.03 > scores["a3"] + 0.06  # clear / near / far
        # a1 misses by 0.005, a3 by far more; a2 clears the threshold by more than 0.01
        policy = replace(PLAIN, threshold=scores["a1"] + 0.005, story_margin=0.01,
                         story_support=0.01)  # fmt: skip
        assert scores["a2"] >= policy.threshold + policy.story_support
        live = stage(policy)
        assert live.process("a1") == []  # a near miss, and its story has no match yet
        assert live.process("a3") == []
        assert store.list_matches(topic_id="talks") == []
        [message] = live.process("a2")  # the clear match brings the near miss in
        assert {a.article_id for a in message.articles} == {"a1", "a2"}
        joined = {m.article.article_id: m for m in store.list_matches(topic_id="talks")}
        assert set(joined) == {"a1", "a2"}
        assert "its story matched clearly (article a2" in joined["a1"].reason
        # another clear match of the story rescores nothing: a3's verdict under these
        # profiles is known (a big story is not rescored at every clear match)
        arrive("a8", "world", "s1", clear_text)
        rescored: list[str] = []
        match = live.match

        def counting(article: Article, *, labels: bool = True) -> list[Match]:
            rescored.append(article.id)
            return match(article, labels=labels)

        live.match = counting  # type: ignore[method-assign]
        live.process("a8")
        assert rescored == ["a8"]
        del live.match
        backtested = {v.article.id: v.match for v in live.backtest("talks", since=None)}
        assert backtested["a1"].matched
        assert "its story matched clearly" in backtested["a1"].reason
        assert not backtested["a3"].matched
        # the other order: the clear match first, then a near miss of the same story joins it
        vectors.delete_articles("c", [*texts, "a8"])  # else the join rule relates s2 to s1's alert
        arrive("a4", "world", "s2", clear_text)
        [first] = live.process("a4")
        arrive("a5", "kyiv", "s2", texts["a1"])
        live.process("a5")
        members = {m.article.article_id for m in store.story_matches("talks", "s2")}
        assert members == {"a4", "a5"}
        assert store.alert_of_story("talks", "s2") == first.alert_id
        # off (the policy's story_margin 0): the near miss stays out
        arrive("a6", "kyiv", "s3", texts["a1"])
        arrive("a7", "world", "s3", clear_text)
        off = stage(replace(policy, story_margin=0.0))
        off.process("a6")
        off.process("a7")
        assert {m.article.article_id for m in store.story_matches("talks", "s3")} == {"a7"}
    finally:
        vectors.close()
