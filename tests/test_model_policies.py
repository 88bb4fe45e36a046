"""Which calibrated thresholds a vector space gets, by its model (``indexer.models``), and that
the app built from config wires them into the indexer's story clustering and the alert stage."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from alerts.matching import (
    BUNDLED_POLICY,
    EMBEDDINGGEMMA_POLICY,
    EXAMPLE_BASELINE,
    GENERIC_POLICY,
    ArticleView,
    MatchPolicy,
    TopicProfile,
    match_article,
    policy_for,
)
from alerts.types import Topic
from indexer.embed import HashEmbedder, SentenceTransformersEmbedder
from indexer.models import BUNDLED, EMBEDDINGGEMMA, model_family
from indexer.stories import DEFAULT_POLICY, story_policy_for
from indexer.stories import EMBEDDINGGEMMA_POLICY as GEMMA_STORIES
from monitor.config import load_config
from monitor.service import make_app
from tests.support.newsfixtures import write_config

GEMMA_IDS = (
    "st:google/embeddinggemma-300m",
    "st:/srv/models/embeddinggemma-300m",
    "st:/srv/models/embeddinggemma-300m/",
    "st:C:\\models\\EmbeddingGemma-300M",
)
OTHER_IDS = (
    "st:sentence-transformers/all-MiniLM-L6-v2",
    "st:google/embeddinggemma-300m-qat-q4_0-unquantized",  # other weights, other scores
    "st:/srv/embeddinggemma-300m/other-model",
    "hash:64",
)


def test_the_bundled_model_is_its_own_family() -> None:
    assert model_family("bundled:intfloat/multilingual-e5-small") == BUNDLED


@pytest.mark.parametrize("model_id", GEMMA_IDS)
def test_embeddinggemma_is_recognised_by_its_hub_name_or_local_folder(model_id: str) -> None:
    assert model_family(model_id) == EMBEDDINGGEMMA
    assert policy_for(model_id) == EMBEDDINGGEMMA_POLICY
    assert story_policy_for(model_id) == GEMMA_STORIES


@pytest.mark.parametrize("model_id", OTHER_IDS)
def test_a_model_nothing_was_calibrated_for_gets_the_generic_policies(model_id: str) -> None:
    assert model_family(model_id) is None
    assert policy_for(model_id) == GENERIC_POLICY
    assert story_policy_for(model_id) == DEFAULT_POLICY


def test_the_bundled_model_keeps_its_policies() -> None:
    model_id = "bundled:intfloat/multilingual-e5-small"
    assert policy_for(model_id) == BUNDLED_POLICY
    assert story_policy_for(model_id) == DEFAULT_POLICY


def test_embeddinggemma_thresholds_sit_in_its_own_units() -> None:
    # its cosines spread wider than the bundled model's: every story threshold lower, the
    # matching threshold above 0 (the bundled model's sits below), the same scoring weights
    assert GEMMA_STORIES.same_language_threshold < DEFAULT_POLICY.same_language_threshold
    assert GEMMA_STORIES.cross_language_threshold < DEFAULT_POLICY.cross_language_threshold
    assert GEMMA_STORIES.duplicate_threshold < DEFAULT_POLICY.duplicate_threshold
    assert EMBEDDINGGEMMA_POLICY.threshold > 0 > BUNDLED_POLICY.threshold
    assert EMBEDDINGGEMMA_POLICY.example_baseline < BUNDLED_POLICY.example_baseline
    assert EMBEDDINGGEMMA_POLICY.contrast == BUNDLED_POLICY.contrast
    assert EMBEDDINGGEMMA_POLICY.rival_contrast == BUNDLED_POLICY.rival_contrast


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_an_example_counts_only_above_the_policys_baseline() -> None:
    topic = Topic(id="t", name="T", description="d", channels=("a",))
    query, passage = _unit(1, 0, 0, 0), _unit(0.6, 1, 0, 0)  # cosine 0.51
    example = _unit(0.6, 1, 0.9, 0)  # cosine 0.74 with the passage
    profile = TopicProfile(topic=topic, queries=np.stack([query]), positives=np.stack([example]))
    article = ArticleView("a", "x", "x", "en", "s")
    policy = MatchPolicy(threshold=0.0, contrast=0.0, agreeing=1, feedback_passages=0,
                         example_weight=1.0)  # fmt: skip
    vectors = np.stack([passage])
    likeness = float(passage @ example)

    def score(baseline: float) -> float:
        with_baseline = replace(policy, example_baseline=baseline)
        return match_article(profile, article, [(0, "x")], vectors, with_baseline).score

    assert likeness < EXAMPLE_BASELINE  # the bundled model's baseline: no pull
    assert score(EXAMPLE_BASELINE) == pytest.approx(float(passage @ query), abs=1e-4)
    assert score(likeness - 0.1) == pytest.approx(float(passage @ query) + 0.1, abs=1e-4)


def test_the_app_wires_the_models_policies_into_stories_and_alerts(tmp_path: Path) -> None:
    feeds = {"Wire": ("http://127.0.0.1:9/rss", "en")}
    for name in ("gemma", "other"):
        (tmp_path / name).mkdir()
    gemma_config = load_config(write_config(tmp_path / "gemma", feeds))
    # the sentence-transformers model loads on first use only: building the app loads nothing
    embedder = SentenceTransformersEmbedder(str(tmp_path / EMBEDDINGGEMMA))
    gemma = make_app(gemma_config, embedder=embedder)
    assert gemma.indexer.policy == GEMMA_STORIES
    assert gemma.alerts.story_policy == GEMMA_STORIES
    assert gemma.alerts.policy == EMBEDDINGGEMMA_POLICY
    other = make_app(load_config(write_config(tmp_path / "other", feeds)), embedder=HashEmbedder())
    assert other.indexer.policy == other.alerts.story_policy == DEFAULT_POLICY
    assert other.alerts.policy == GENERIC_POLICY
    for app in (gemma, other):
        asyncio.run(app.aclose())


def test_reference_means_are_shipped_for_each_calibrated_family() -> None:
    # the language means the thresholds were calibrated with: a stored coverage heavy on a
    # topic would shift them (the pipeline's recall for EmbeddingGemma fell from 0.86 to 0.61
    # on one topic of the report split without them)
    from alerts.profiles import reference_means

    bundled = reference_means("bundled:intfloat/multilingual-e5-small")
    assert sorted(bundled) == ["de", "en", "ru", "uk"]
    assert {v.shape for v in bundled.values()} == {(384,)}
    for model_id in GEMMA_IDS:
        gemma = reference_means(model_id)
        assert sorted(gemma) == ["de", "en", "ru", "uk"]
        assert {v.shape for v in gemma.values()} == {(768,)}
        assert all(abs(float(np.linalg.norm(v))) > 0 for v in gemma.values())
    for model_id in OTHER_IDS:
        assert reference_means(model_id) == {}
