"""Pure alerting decisions: keywords, matching arithmetic, alert planning, retry schedule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from alerts.dispatch import RetryPolicy, next_attempt
from alerts.keywords import found
from alerts.matching import (
    ArticleView,
    MatchPolicy,
    StoryMatch,
    TopicProfile,
    lends_support,
    match_article,
    match_topics,
    passage_scores,
    story_supported,
)
from alerts.plan import (
    AlertMember,
    Confirmation,
    FollowUpPolicy,
    confirmed,
    may_alert,
    plan_message,
    related_alert,
)
from alerts.types import (
    AlertArticle,
    MessageKind,
    StoredMatch,
    Topic,
    alert_id_for,
    message_from_json,
    message_to_json,
)
from indexer.types import Story
from monitor.errors import ChannelError
from monitor.types import Article, ArticleStatus

NOW = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)
TOPIC = Topic(id="abu-dhabi-talks", name="Abu Dhabi talks", description="talks", channels=("a",))


# -- keywords -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "text", "hit"),
    [
        ("Donbas", "Truppen im Donbass-Gebiet", True),  # word start: inflections and compounds
        ("Донбас", "вивести війська з Донбасу", True),
        ("Донбасс", "из Донбасса", True),
        ("Abu Dhabi", "talks in ABU  DHABI on Friday", True),  # case, spacing
        ("Abu Dhabi", "Abu-Dhabi-Gespräche", True),  # hyphenated
        ("UAE$", "the UAEs", False),  # `$`: whole word only
        ("UAE$", "the UAE hosted", True),
        ("ёлка", "Елка", True),  # ё counts as е
        ("guarantee", "bankguarantee", False),  # not inside a word
    ],
)
def test_keywords_match_at_word_starts(keyword: str, text: str, hit: bool) -> None:
    assert bool(found([keyword], text)) is hit


# -- matching -----------------------------------------------------------------------------------


def _unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _profile(**overrides: object) -> TopicProfile:
    values: dict[str, object] = {"topic": TOPIC, "queries": np.stack([_unit(1, 0, 0, 0)])}
    values.update(overrides)
    return TopicProfile(**values)  # type: ignore[arg-type]


ARTICLE = ArticleView("a1", "Talks in Abu Dhabi", "Delegations met.", "en", "wire")
PLAIN = MatchPolicy(threshold=0.5, contrast=0.0, agreeing=1, feedback_passages=0)


def test_the_best_passage_decides_and_is_reported() -> None:
    vectors = np.stack([_unit(0, 1, 0, 0), _unit(1, 0.2, 0, 0)])
    match = match_article(_profile(), ARTICLE, [(0, "lead"), (1, "body")], vectors, PLAIN)
    assert match.matched
    assert match.passage == "body"
    assert match.passage_index == 1
    assert match.score == pytest.approx(float(_unit(1, 0.2, 0, 0)[0]))
    assert "passage 1" in match.reason


def test_a_passage_matched_by_an_aspect_query_names_the_aspect() -> None:
    profile = _profile(
        queries=np.stack([_unit(1, 0, 0, 0), _unit(0, 0, 1, 0)]),
        query_labels=("the description", "a reassurance force"),
    )
    vectors = np.stack([_unit(0, 1, 0, 0), _unit(0.1, 0, 1, 0)])
    match = match_article(profile, ARTICLE, [(0, "lead"), (1, "body")], vectors, PLAIN)
    assert match.matched
    assert match.passage == "body"
    assert "best passage 1, on a reassurance force)" in match.reason
    # the description itself is not named: it is what every topic matches on
    lead = np.stack([_unit(1, 0, 0, 0)])
    assert match_article(profile, ARTICLE, [(0, "x")], lead, PLAIN).reason.endswith("passage 0)")


@pytest.mark.parametrize(
    ("description", "queries"),
    [
        (
            "Security guarantees: a reassurance force, Article 5 (collective defence, "
            "mutual aid); and ratification.",
            [
                "Security guarantees: a reassurance force",
                "Security guarantees: Article 5 (collective defence, mutual aid)",
                "Security guarantees: ratification",
            ],
        ),
        (
            "Переговоры в Абу-Даби: делегации, раунды и повестка, и роль ОАЭ",
            [
                "Переговоры в Абу-Даби: делегации",
                "Переговоры в Абу-Даби: раунды и повестка",
                "Переговоры в Абу-Даби: роль ОАЭ",
            ],
        ),
        ("Talks in Abu Dhabi between the delegations, rounds and agenda", []),  # no colon
        ("Donbas: the terms of a withdrawal", []),  # one aspect is the description itself
        ("Talks at 10:30 (see https://example.org/a, b), rounds, agenda", []),  # no list colon
    ],
)
def test_a_description_lists_aspects_after_its_colon(description: str, queries: list[str]) -> None:
    from alerts.profiles import query_labels, query_texts

    topic = replace(TOPIC, description=description)
    assert query_texts(topic) == [description, *queries]
    assert query_labels(topic) == ["the description", *(q.split(": ", 1)[1] for q in queries)]


def test_agreeing_passages_average_the_best_scores() -> None:
    vectors = np.stack([_unit(0, 1, 0, 0), _unit(1, 0, 0, 0), _unit(1, 1, 0, 0)])
    two = replace(PLAIN, agreeing=2)
    match = match_article(_profile(), ARTICLE, [(0, "a"), (1, "b"), (2, "c")], vectors, two)
    assert match.score == pytest.approx((1.0 + 0.7071) / 2, abs=1e-3)
    assert match.passage == "b"  # the best single passage is what the message shows
    one = match_article(_profile(), ARTICLE, [(0, "a")], vectors[1:2], two)
    assert one.score == pytest.approx(1.0)  # fewer passages than asked: all of them


def test_feedback_moves_the_query_towards_the_best_corrected_passages() -> None:
    from alerts.matching import refine_query

    query = _unit(1, 0, 0, 0)
    candidates = np.stack([_unit(1, 1, 0, 0), _unit(1, 0, 1, 0), _unit(0, 0, 0, 1)])
    # the second candidate's language has a large offset: the first one is the best
    offsets = np.array([0.0, 0.6, 0.0], dtype=np.float32)
    refined = refine_query(query, candidates, offsets, passages=1, weight=1.0)
    expected = (query + candidates[0]) / np.linalg.norm(query + candidates[0])
    assert np.allclose(refined, expected)
    assert refine_query(query, candidates, offsets, passages=0, weight=1.0) is query


def test_cross_language_anchors_pick_each_anchors_nearest_passage() -> None:
    from alerts.matching import best_passages, move_towards, nearest_rows

    query = _unit(1, 0, 0, 0)
    # other languages' passages: the best by corrected score are the anchors
    others = np.stack([_unit(1, 1, 0, 0), _unit(1, 0, 1, 0), _unit(0, 0, 0, 1)])
    offsets = np.array([0.0, 0.0, 0.0], dtype=np.float32)
    anchors = best_passages(query, others, offsets, 2)
    assert {tuple(np.round(a, 3)) for a in anchors} == {tuple(np.round(o, 3)) for o in others[:2]}
    # this language's passages: each anchor's nearest one, whatever its own cosine to the query
    pool = np.stack([_unit(0, 1, 0, 0.1), _unit(0, 0, 1, 0.1), _unit(0, 0, 0, 1)])
    nearest = nearest_rows(anchors, pool)
    assert {tuple(np.round(n, 3)) for n in nearest} == {tuple(np.round(p, 3)) for p in pool[:2]}
    moved = move_towards(query, nearest, 0.5)
    assert np.isclose(np.linalg.norm(moved), 1.0)
    assert moved @ pool[0] > query @ pool[0]
    assert moved @ pool[1] > query @ pool[1]
    # nothing to move towards, or no weight: the query itself
    assert move_towards(query, nearest[:0], 0.5) is query
    assert move_towards(query, nearest, 0.0) is query
    assert nearest_rows(anchors[:0], pool).shape[0] == 0


def test_language_offset_shifts_the_score_per_language() -> None:
    vectors = np.stack([_unit(1, 1, 0, 0)])  # cosine 0.707 with the query
    offsets = {"en": np.array([0.3], dtype=np.float32), "uk": np.array([0.1], dtype=np.float32)}
    profile = _profile(offsets=offsets)
    en = match_article(profile, ARTICLE, [(0, "x")], vectors, PLAIN)
    uk = match_article(profile, replace(ARTICLE, language="uk"), [(0, "x")], vectors, PLAIN)
    assert en.score == pytest.approx(0.707 - 0.3, abs=1e-3)
    assert not en.matched
    assert uk.score == pytest.approx(0.707 - 0.1, abs=1e-3)
    assert uk.matched
    # a language without an offset gets the mean offset
    de = match_article(profile, replace(ARTICLE, language="de"), [(0, "x")], vectors, PLAIN)
    assert de.score == pytest.approx(0.707 - 0.2, abs=1e-3)


def test_context_contrast_subtracts_the_broad_subject() -> None:
    vectors = np.stack([_unit(1, 1, 0, 0)])
    profile = _profile(context=_unit(0, 1, 0, 0))
    policy = MatchPolicy(threshold=0.5, contrast=0.5)
    match = match_article(profile, ARTICLE, [(0, "x")], vectors, policy)
    assert match.score == pytest.approx(0.707 - 0.5 * 0.707, abs=1e-3)
    assert not match.matched


def test_include_exclude_and_scope_are_explained() -> None:
    vectors = np.stack([_unit(1, 0, 0, 0)])
    include = _profile(topic=replace(TOPIC, include=("Emirates",)))
    miss = match_article(include, ARTICLE, [(0, "x")], vectors, PLAIN)
    assert not miss.matched
    assert "include" in miss.reason
    hit = match_article(
        _profile(topic=replace(TOPIC, include=("Abu Dhabi",))), ARTICLE, [(0, "x")], vectors,
        PLAIN,
    )  # fmt: skip
    assert hit.matched
    assert hit.keywords == ("Abu Dhabi",)
    assert "Abu Dhabi" in hit.reason
    excluded = _profile(topic=replace(TOPIC, exclude=("Delegation",)))
    out = match_article(excluded, ARTICLE, [(0, "x")], vectors, PLAIN)
    assert not out.matched
    assert "excluded keyword" in out.reason
    ru_only = _profile(topic=replace(TOPIC, languages=("ru",)))
    assert "language en" in match_article(ru_only, ARTICLE, [(0, "x")], vectors, PLAIN).reason
    assert match_article(_profile(topic=replace(TOPIC, threshold=0.99)), ARTICLE, [(0, "x")],
                         np.stack([_unit(1, 0.2, 0, 0)]), PLAIN).matched is False  # fmt: skip


def test_examples_pull_and_negatives_push() -> None:
    passage = _unit(0.6, 1, 0, 0)  # cosine 0.51 with the query
    vectors = np.stack([passage])
    policy = MatchPolicy(threshold=0.55, contrast=0.0, example_weight=1.0, negative_weight=1.0)
    assert not match_article(_profile(), ARTICLE, [(0, "x")], vectors, policy).matched
    with_example = _profile(positives=np.stack([passage]))
    assert match_article(with_example, ARTICLE, [(0, "x")], vectors, policy).matched
    with_negative = _profile(negatives=np.stack([passage]))
    low = match_article(with_negative, ARTICLE, [(0, "x")], vectors, policy)
    assert low.score < 0.51


RIVALS = MatchPolicy(threshold=0.6, contrast=0.0, agreeing=1, feedback_passages=0,
                     rival_contrast=0.5)  # fmt: skip
TERRITORY = replace(TOPIC, id="territory", name="Territory")


def _rivals() -> list[TopicProfile]:
    """The talks (query e0) and the territory (query e1) as neighbouring topics."""
    return [_profile(), _profile(topic=TERRITORY, queries=np.stack([_unit(0, 1, 0, 0)]))]


def test_an_article_another_topic_fits_better_loses_half_the_gap() -> None:
    vectors = np.stack([_unit(1, 0.8, 0, 0)])  # 0.781 with the talks, 0.625 with the territory
    talks, territory = match_topics(_rivals(), ARTICLE, [(0, "x")], vectors, RIVALS)
    assert talks == match_article(_profile(), ARTICLE, [(0, "x")], vectors, RIVALS)
    assert territory.score == pytest.approx(0.625 - 0.5 * (0.781 - 0.625), abs=1e-3)
    assert not territory.matched
    assert territory.reason == "score 0.547 < 0.600: abu-dhabi-talks fits it better (0.625 alone)"


def test_an_article_about_two_topics_keeps_each_topics_own_passages() -> None:
    vectors = np.stack([_unit(1, 0.2, 0, 0), _unit(0.5, 1, 0, 0)])  # one passage on each
    policy = replace(RIVALS, threshold=0.87)
    talks, territory = match_topics(_rivals(), ARTICLE, [(0, "a"), (1, "b")], vectors, policy)
    assert (talks.matched, talks.passage_index) == (True, 0)
    assert (territory.matched, territory.passage_index) == (True, 1)
    assert territory.score == pytest.approx(0.894, abs=1e-3)  # its passage is its own
    # competing by article scores instead would have cost it 0.5 x (0.981 - 0.894)
    assert territory.score - 0.5 * (talks.score - territory.score) < policy.threshold


def test_a_topic_set_not_to_compete_neither_loses_nor_takes_articles() -> None:
    vectors = np.stack([_unit(1, 0.8, 0, 0)])
    talks, territory = _rivals()
    broad = replace(territory, topic=replace(TERRITORY, compete=False))
    alone = [match_article(p, ARTICLE, [(0, "x")], vectors, RIVALS) for p in (talks, broad)]
    assert match_topics([talks, broad], ARTICLE, [(0, "x")], vectors, RIVALS) == alone
    # nor does a topic that fits the article better take it from a competing one
    above = replace(talks, topic=replace(TOPIC, compete=False))
    assert match_topics([above, territory], ARTICLE, [(0, "x")], vectors, RIVALS)[1].matched


def test_an_article_naming_what_only_one_topics_name_names_stays_that_topics() -> None:
    # the territory fits the passage better, and the article names Abu Dhabi ("Абу-Даби"),
    # which only the talks' name names: the talks keep their claim, as if scored alone
    vectors = np.stack([_unit(0.8, 1, 0, 0)])
    article = replace(ARTICLE, title="Территория осталась камнем преткновения в Абу-Даби")
    profiles = _rivals()
    alone = match_article(profiles[0], article, [(0, "x")], vectors, RIVALS)
    assert alone.matched
    named = replace(RIVALS, named_claims=True)
    talks, territory = match_topics(profiles, article, [(0, "x")], vectors, named)
    assert (talks.matched, talks.score) == (True, alone.score)
    assert talks.reason.endswith(
        "; it names 'Abu Dhabi', which only this topic's name names: territory takes nothing"
    )
    assert territory.matched
    # without the name, or with the rule off, the territory takes the passage
    unnamed = replace(ARTICLE, title="Territory remains the sticking point")
    assert not match_topics(profiles, unnamed, [(0, "x")], vectors, named)[0].matched
    assert not match_topics(profiles, article, [(0, "x")], vectors, RIVALS)[0].matched
    # a name the other topic names too sets neither apart
    shared = [profiles[0], replace(profiles[1], topic=replace(TERRITORY, description="Abu Dhabi"))]
    assert not match_topics(shared, article, [(0, "x")], vectors, named)[0].matched


@pytest.mark.parametrize(
    ("talks", "policy"),
    [
        ({"threshold": 0.79}, RIVALS),  # the talks score 0.781: under their own threshold
        ({"exclude": ("Delegations",)}, RIVALS),  # an exclude keyword rules the talks out
        ({"languages": ("ru",)}, RIVALS),  # the article is out of the talks' scope
        ({}, replace(RIVALS, rival_contrast=0.0)),  # competition off
    ],
)
def test_only_a_topic_that_matches_the_article_contests_it(
    talks: dict[str, object], policy: MatchPolicy
) -> None:
    vectors = np.stack([_unit(1, 0.8, 0, 0)])
    rival, territory = _rivals()
    rival = replace(rival, topic=replace(TOPIC, **talks))
    alone = match_article(territory, ARTICLE, [(0, "x")], vectors, policy)
    assert alone.matched
    assert match_topics([rival, territory], ARTICLE, [(0, "x")], vectors, policy)[1] == alone


# -- story support ------------------------------------------------------------------------------

STORY_POLICY = replace(PLAIN, story_margin=0.01, story_support=0.02)


def _scored(score: float, **overrides: Any) -> Any:
    """The verdict of an article scoring ``score`` against a 0.5 threshold (``PLAIN``)."""
    vectors = np.stack([_unit(1, 0, 0, 0)])
    match = match_article(_profile(), ARTICLE, [(0, "x")], vectors, PLAIN)
    return replace(match, matched=score >= 0.5, score=score, **overrides)


@pytest.mark.parametrize(
    ("score", "story", "matched"),
    [
        (0.495, [StoryMatch("a2", 0.53, 0.5)], True),  # just below; the story matched clearly
        (0.490, [StoryMatch("a2", 0.53, 0.5)], True),  # at the margin
        (0.485, [StoryMatch("a2", 0.53, 0.5)], False),  # further below: no support
        (0.495, [StoryMatch("a2", 0.515, 0.5)], False),  # the story's match is not clear
        (0.495, [StoryMatch("a1", 0.60, 0.5)], False),  # its own earlier match is no support
        (0.495, [], False),  # a story without matches
    ],
)
def test_a_near_miss_matches_when_its_story_matched_clearly(
    score: float, story: list[StoryMatch], matched: bool
) -> None:
    verdict = story_supported(_scored(score), story, STORY_POLICY)
    assert verdict.matched is matched
    assert verdict.score == score  # the score stays what it was: the reason says why it matched
    if matched:
        assert "its story matched clearly (article a2: 0.530)" in verdict.reason


def test_story_support_never_overrides_scope_or_keywords_and_is_off_by_default() -> None:
    clear = [StoryMatch("a2", 0.9, 0.5)]
    excluded = _scored(0.495, ruled_out=True, reason="excluded keyword 'x'")
    assert story_supported(excluded, clear, STORY_POLICY) == excluded
    out_of_scope = match_article(_profile(topic=replace(TOPIC, languages=("ru",))), ARTICLE,
                                 [(0, "x")], np.stack([_unit(1, 0, 0, 0)]), PLAIN)  # fmt: skip
    assert out_of_scope.ruled_out
    assert story_supported(out_of_scope, clear, STORY_POLICY) == out_of_scope
    assert not story_supported(_scored(0.495), clear, PLAIN).matched  # story_margin 0: off
    # a match lends support only when it clears the threshold by story_support
    assert lends_support(_scored(0.52), STORY_POLICY)
    assert not lends_support(_scored(0.51), STORY_POLICY)
    assert not lends_support(_scored(0.52), PLAIN)


# -- planning -----------------------------------------------------------------------------------

STORY = Story("st1", "Talks resume in Abu Dhabi", NOW, NOW, 3, ("de", "en"), ("a", "b"), "x")


def _match(aid: str, lang: str, source: str, *, alertable: bool = True,
           message: str | None = None, score: float = 0.6) -> StoredMatch:  # fmt: skip
    article = AlertArticle(aid, f"https://{source}.example/{aid}", f"title {aid}", lang, source,
                           NOW, score, "passage")  # fmt: skip
    return StoredMatch(TOPIC.id, STORY.id, article, alertable, NOW, "r", message)


def test_first_message_reports_every_match_best_first() -> None:
    matches = [_match("a1", "en", "wire", score=0.5), _match("a2", "de", "zeit", score=0.7)]
    planned = plan_message(TOPIC, STORY, matches, [], NOW)
    assert planned is not None
    message = planned.message
    assert message.kind is MessageKind.NEW
    assert message.sequence == 0
    assert message.alert_id == alert_id_for(TOPIC.id, STORY.id)
    assert [a.article_id for a in message.articles] == ["a2", "a1"]
    assert set(planned.article_ids) == {"a1", "a2"}
    assert message.headline == STORY.headline
    assert "2 matching articles (de, en)" in message.reason
    assert message_from_json(message_to_json(message)) == message  # the outbox round trip


def test_silent_backlog_never_opens_an_alert() -> None:
    assert plan_message(TOPIC, STORY, [_match("a1", "en", "wire", alertable=False)], [],
                        NOW) is None  # fmt: skip


def test_follow_up_only_when_the_story_grows_materially() -> None:
    first = plan_message(TOPIC, STORY, [_match("a1", "en", "wire")], [], NOW)
    assert first is not None
    sent = [first.message]
    reported = [_match("a1", "en", "wire", message=first.message.id)]
    same_language = [*reported, _match("a2", "en", "bbc"), _match("a3", "en", "wire")]
    assert plan_message(TOPIC, STORY, same_language, sent, NOW) is None  # waits for the digest
    new_language = [*same_language, _match("a4", "uk", "pravda")]
    assert plan_message(TOPIC, STORY, new_language, sent, NOW + timedelta(hours=1)) is None
    later = NOW + timedelta(hours=6)  # one message per alert per min_interval at most
    follow = plan_message(TOPIC, STORY, new_language, sent, later)
    assert follow is not None
    assert follow.message.kind is MessageKind.FOLLOW_UP
    assert follow.message.sequence == 1
    assert follow.message.reason == "first coverage in uk"
    assert set(follow.article_ids) == {"a2", "a3", "a4"}  # the waiting ones join it
    many_outlets = reported + [_match(f"b{i}", "en", f"outlet{i}") for i in range(3)]
    grown = plan_message(TOPIC, STORY, many_outlets, sent, later)
    assert grown is not None
    assert grown.message.reason.startswith("3 more outlets")


def test_follow_ups_are_capped() -> None:
    policy = FollowUpPolicy(max_follow_ups=1)
    first = plan_message(TOPIC, STORY, [_match("a1", "en", "wire")], [], NOW)
    assert first is not None
    later = NOW + timedelta(hours=7)
    second = plan_message(TOPIC, STORY, [_match("a2", "uk", "x")], [first.message], later, policy)
    assert second is not None
    third = plan_message(TOPIC, STORY, [_match("a3", "ru", "y")],
                         [first.message, second.message], later + timedelta(days=1),
                         policy)  # fmt: skip
    assert third is None


def _weak(aid: str, lang: str, source: str, *, story: str = STORY.id, score: float = -0.17,
          alertable: bool = True, message: str | None = None) -> StoredMatch:  # fmt: skip
    """A match of an uncertain topic just over its threshold (-0.18)."""
    return replace(_match(aid, lang, source, score=score, alertable=alertable, message=message),
                   story_id=story, threshold=-0.18)  # fmt: skip


def test_an_uncertain_topic_alerts_once_a_second_outlet_confirms_the_story() -> None:
    rule = Confirmation(margin=0.02, sources=2)
    one = [_weak("a1", "en", "wire")]
    assert not confirmed(one, rule)
    assert plan_message(TOPIC, STORY, one, [], NOW, confirm=rule) is None  # held
    assert plan_message(TOPIC, STORY, one, [], NOW) is not None  # a refined topic alerts
    same_outlet = [*one, _weak("a2", "de", "wire")]
    assert plan_message(TOPIC, STORY, same_outlet, [], NOW, confirm=rule) is None
    second = [*one, _weak("a3", "de", "zeit")]
    planned = plan_message(TOPIC, STORY, second, [], NOW, confirm=rule)
    assert planned is not None
    assert set(planned.article_ids) == {"a1", "a3"}  # the held match is reported too
    # a silent backlog entry of another outlet does not confirm
    silent = [*one, _weak("a4", "de", "zeit", alertable=False)]
    assert plan_message(TOPIC, STORY, silent, [], NOW, confirm=rule) is None


def test_one_clear_match_confirms_a_story_alone() -> None:
    rule = Confirmation(margin=0.02, sources=2)
    assert not confirmed([_weak("a1", "en", "wire", score=-0.161)], rule)
    assert confirmed([_weak("a1", "en", "wire", score=-0.16)], rule)  # threshold + 0.02
    # a match stored before thresholds were recorded counts as clear (never held for good)
    assert confirmed([_match("a1", "en", "wire")], rule)


def test_a_related_story_of_another_outlet_confirms_and_joins_the_alert() -> None:
    rule = Confirmation()
    held = [_weak("b1", "de", "zeit", story="st2")]
    planned = plan_message(TOPIC, STORY, [_weak("a1", "en", "wire")], [], NOW, confirm=rule,
                           related=held)  # fmt: skip
    assert planned is not None
    assert set(planned.article_ids) == {"a1", "b1"}
    assert planned.message.story_id == STORY.id
    reported = [_weak("b1", "de", "zeit", story="st2", message="m0")]
    assert plan_message(TOPIC, STORY, [_weak("a1", "en", "wire")], [], NOW, confirm=rule,
                        related=reported) is None  # fmt: skip


def test_confirmation_holds_only_a_first_alert() -> None:
    first = plan_message(TOPIC, STORY, [_weak("a1", "en", "wire")], [], NOW)
    assert first is not None
    later = NOW + timedelta(hours=7)
    grown = [_weak("a1", "en", "wire", message=first.message.id), _weak("a2", "uk", "pravda")]
    follow = plan_message(TOPIC, STORY, grown, [first.message], later, confirm=Confirmation())
    assert follow is not None
    assert follow.message.kind is MessageKind.FOLLOW_UP


def _member(alert: str, lang: str, vector: np.ndarray, hours: float = 0) -> AlertMember:
    return AlertMember(alert, lang, NOW + timedelta(hours=hours), vector)


def test_a_new_story_continues_a_close_earlier_alert_of_the_topic() -> None:
    policy = FollowUpPolicy(join_margin=0.0, window=timedelta(hours=72))

    def threshold(a: str, b: str) -> float:
        return 0.9 if a == b else 0.8

    lead = _unit(1, 0, 0, 0)
    close_uk = _unit(1, 0.6, 0, 0)  # cosine 0.857: above the cross-language 0.8, not 0.9
    members = [_member("al-1", "uk", close_uk), _member("al-2", "en", _unit(0, 1, 0, 0))]
    assert related_alert(lead, "en", NOW, members, threshold, policy) == "al-1"
    assert related_alert(lead, "uk", NOW, members, threshold, policy) is None  # same language
    late = [_member("al-1", "uk", close_uk, hours=80)]
    assert related_alert(lead, "en", NOW, late, threshold, policy) is None  # outside the window
    best = [*members, _member("al-3", "uk", _unit(1, 0.1, 0, 0))]
    assert related_alert(lead, "en", NOW, best, threshold, policy) == "al-3"  # the closest
    # the default margin: a lead a little under the pair threshold still continues the alert
    just_under = [_member("al-4", "en", _unit(1, 0.53, 0, 0))]  # cosine 0.884, threshold 0.9
    assert related_alert(lead, "en", NOW, just_under, threshold, policy) is None
    assert related_alert(lead, "en", NOW, just_under, threshold, FollowUpPolicy()) == "al-4"
    not_close_enough = [_member("al-6", "en", _unit(1, 0.56, 0, 0))]  # cosine 0.873: -0.027
    assert related_alert(lead, "en", NOW, not_close_enough, threshold, FollowUpPolicy()) is None
    far_under = [_member("al-5", "en", _unit(1, 0.6, 0, 0))]  # cosine 0.857
    assert related_alert(lead, "en", NOW, far_under, threshold, FollowUpPolicy()) is None


def _article(**overrides: object) -> Article:
    values: dict[str, object] = {
        "id": "a", "feed": "f", "url": "u", "canonical_url": "u", "guid": None, "title": "t",
        "feed_text": "", "feed_language": "en", "status": ArticleStatus.INDEXED,
        "discovered_at": NOW, "updated_at": NOW,
    }  # fmt: skip
    values.update(overrides)
    return Article(**values)  # type: ignore[arg-type]


def test_backfill_keeps_a_new_feeds_old_entries_silent() -> None:
    day = timedelta(hours=24)
    assert may_alert(_article(published_at=NOW - timedelta(days=30)), NOW, day)  # later poll
    assert may_alert(_article(first_poll=True, published_at=NOW - timedelta(hours=3)), NOW, day)
    assert not may_alert(_article(first_poll=True, published_at=NOW - timedelta(days=2)), NOW, day)
    assert not may_alert(_article(first_poll=True, published_at=None), NOW, day)


# -- retry schedule -----------------------------------------------------------------------------


def test_retry_backs_off_exponentially_then_gives_up() -> None:
    policy = RetryPolicy(first_delay=timedelta(seconds=30), max_delay=timedelta(minutes=10),
                         max_attempts=6, jitter=0.0)  # fmt: skip
    transient = ChannelError("slack", "HTTP 500")
    delays = [next_attempt(n, transient, NOW, policy) for n in range(1, 7)]
    assert [(d - NOW).total_seconds() if d else None for d in delays] == [
        30,
        60,
        120,
        240,
        480,
        None,
    ]
    capped = RetryPolicy(first_delay=timedelta(seconds=30), max_delay=timedelta(minutes=10),
                         max_attempts=50, jitter=0.0)  # fmt: skip
    assert next_attempt(20, transient, NOW, capped) == NOW + timedelta(minutes=10)


def test_retry_after_and_permanent_errors() -> None:
    policy = RetryPolicy(jitter=0.0)
    slow_down = ChannelError("slack", "HTTP 429", retry_after=120)
    assert next_attempt(1, slow_down, NOW, policy) == NOW + timedelta(seconds=120)
    assert next_attempt(1, ChannelError("mail", "535 auth", permanent=True), NOW, policy) is None
    jittered = next_attempt(1, ChannelError("x", "y"), NOW, RetryPolicy(jitter=0.1), rand=1.0)
    assert jittered == NOW + timedelta(seconds=33)


def test_a_topic_that_cannot_be_embedded_is_named_in_the_error() -> None:
    from alerts.profiles import build_profile
    from indexer.embed import EmbedderError, HashEmbedder
    from monitor.errors import TopicError

    class Broken(HashEmbedder):
        def embed_queries(self, texts: object) -> np.ndarray:  # type: ignore[override]
            raise EmbedderError("m", "engine crashed")

    with pytest.raises(TopicError, match="topic 'abu-dhabi-talks': cannot embed") as raised:
        build_profile(TOPIC, Broken(), means={}, context=None)
    assert isinstance(raised.value.__cause__, EmbedderError)


def _topic_bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """bench/topics.py as a module (it is a script, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "topics.py"
    spec = importlib.util.spec_from_file_location("bench_topics", path)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look themselves up
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)  # it sets it
    monkeypatch.setattr(sys, "path", list(sys.path))  # and puts the repository first
    spec.loader.exec_module(bench)
    return bench


def test_the_topic_benchmarks_take_policy_fields_with_clear_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--set FIELD=VALUE`` (bench/topics.py, bench/topics_live.py): each value read as its
    field's type; a wrong name or value stops the run saying which."""
    bench = _topic_bench(monkeypatch)
    base = MatchPolicy(threshold=0.3, confident_margin=0.02)
    changed = bench.with_fields(base, ["confident_margin=none", "confident_articles=4",
                                       "threshold=-0.2", "feedback_competition=on"])  # fmt: skip
    assert changed == replace(base, confident_margin=None, confident_articles=4, threshold=-0.2,
                              feedback_competition=True)  # fmt: skip
    with pytest.raises(SystemExit, match="MatchPolicy has no field 'treshold'"):
        bench.with_fields(base, ["treshold=0.1"])
    with pytest.raises(SystemExit, match="confident_articles takes a value of type int"):
        bench.with_fields(base, ["confident_articles=many"])
    # --story-set: the story thresholds, by the same rules
    from indexer.stories import DEFAULT_POLICY

    lower = bench.with_fields(DEFAULT_POLICY, ["cross_language_threshold=0.75"], "--story-set")
    assert lower == replace(DEFAULT_POLICY, cross_language_threshold=0.75)
    with pytest.raises(SystemExit, match="--story-set window=3: window is not a number"):
        bench.with_fields(DEFAULT_POLICY, ["window=3"], "--story-set")


@pytest.mark.parametrize("named_claims", [False, True])
def test_the_topic_benchmark_competes_as_the_matcher_does(
    monkeypatch: pytest.MonkeyPatch, named_claims: bool
) -> None:
    """bench/topics.py scores thousands of threshold candidates on passage scores: its
    ``competed`` must give the scores ``match_topics`` gives (the same rivals, the same
    arithmetic, the same articles kept by a name only one topic names), or the benchmark
    calibrates another matcher."""
    bench = _topic_bench(monkeypatch)
    rng = np.random.default_rng(7)
    policy = MatchPolicy(threshold=0.3, contrast=0.0, agreeing=2, feedback_passages=0,
                         rival_contrast=0.5, named_claims=named_claims)  # fmt: skip
    topics = [TOPIC, replace(TOPIC, id="t1", name="Territory", description="Donbas"),
              replace(TOPIC, id="t2", name="Guarantees", description="Ukraine")]  # fmt: skip
    directions = [(1, 0, 0, 0), (0.8, 1, 0, 0), (0, 0.3, 1, 0)]
    profiles = [_profile(topic=t, queries=np.stack([_unit(*q)]))
                for t, q in zip(topics, directions, strict=True)]  # fmt: skip
    articles = {f"a{n}": rng.normal(size=(int(rng.integers(1, 5)), 4)).astype(np.float32)
                for n in range(40)}  # fmt: skip
    articles = {a: v / np.linalg.norm(v, axis=1, keepdims=True) for a, v in articles.items()}
    # every other article names Abu Dhabi, which only the talks' name names
    views = {a: replace(ARTICLE, id=a, title="Talks" if n % 2 else "Talks in Абу-Даби")
             for n, a in enumerate(articles)}  # fmt: skip
    items = [bench.Item(a, "en", "S", datetime(2026, 1, 1, tzinfo=UTC), v.title, v.text, a,
                        frozenset()) for a, v in views.items()]  # fmt: skip
    kept = bench.named_articles(topics, items) if named_claims else {}
    assert not named_claims or kept[TOPIC.id] == {a for n, a in enumerate(articles) if n % 2 == 0}
    scores = {p.topic.id: {a: passage_scores(p, v, policy, "en") for a, v in articles.items()}
              for p in profiles}  # fmt: skip
    expected = bench.competed(scores, policy.threshold, policy.rival_contrast, policy.agreeing,
                              kept)  # fmt: skip
    contested = kept_claims = 0
    for article, vectors in articles.items():
        passages = [(i, "x") for i in range(len(vectors))]
        for match in match_topics(profiles, views[article], passages, vectors, policy):
            assert match.score == pytest.approx(expected[match.topic_id][article], abs=1e-6)
            contested += "fits it better" in match.reason
            kept_claims += "takes nothing" in match.reason
    assert contested > 5  # the data exercises the competition
    assert (kept_claims > 3) is named_claims  # and the names, when the rule is on


def test_the_topic_benchmark_bootstraps_f1_over_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/topics.py's F1 intervals resample whole events: one event missed whole widens
    the interval more than the same number of misses spread over three events; a perfect
    matcher's interval is exactly 1."""
    from datetime import UTC, datetime

    bench = _topic_bench(monkeypatch)
    published = datetime(2026, 1, 1, tzinfo=UTC)

    def item(n: int, story: str, relevant: bool) -> Any:
        return bench.Item(f"a{n}", "en", "S", published, "t", "x", story,
                          frozenset({"talks"} if relevant else ()))  # fmt: skip

    # ten relevant events of three articles, ten events of three unrelated articles
    items = [item(10 * e + k, f"e{e}", e < 10) for e in range(20) for k in range(3)]
    relevant = {i.id for i in items if "talks" in i.topics}
    assert bench.event_interval(relevant, items, "talks") == (1.0, 1.0)

    missed = relevant - {"a0", "a1", "a2"}  # event e0 missed whole: F1 = 2 * 27 / 57
    low, high = bench.event_interval(missed, items, "talks", rounds=4000)
    point = bench.prf(missed, relevant).f1
    assert point == pytest.approx(54 / 57)
    assert 0.7 < low < point < high == 1.0  # draws that hold e0 twice or more are common
    # the same number of misses, one in each of three events, resample more tightly
    spread = relevant - {"a0", "a11", "a22"}
    assert bench.event_interval(spread, items, "talks", rounds=4000)[0] > low
    # nothing relevant and nothing chosen: a perfect, empty sample
    assert bench.event_interval(set(), items, "other") == (1.0, 1.0)
