"""Turning topics into matching profiles: the I/O half of matching (embedding, stored vectors).

A profile is rebuilt when its inputs change: the topics in the config, the language means of
the stored coverage (refreshed every ``PROFILE_TTL``) and the user's relevance labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from alerts.matching import TopicProfile
from alerts.types import Topic
from indexer.models import BUNDLED, model_family
from indexer.types import Matrix, Vector
from monitor.errors import TopicError

if TYPE_CHECKING:
    from indexer.embed import Embedder
    from monitor.config import TopicConfig


REFERENCE_MEANS = Path(__file__).with_name("reference-means.npz")


def reference_means_path(model_id: str) -> Path | None:
    """Where the reference means of this model's family are shipped (None: nothing was
    calibrated for it): ``reference-means.npz`` for the bundled model,
    ``reference-means-<family>.npz`` for another calibrated one (``indexer.models``)."""
    family = model_family(model_id)
    if family is None:
        return None
    return (
        REFERENCE_MEANS
        if family == BUNDLED
        else REFERENCE_MEANS.with_name(f"reference-means-{family}.npz")
    )


@lru_cache(maxsize=4)
def reference_means(model_id: str) -> dict[str, Vector]:
    """Fixed per-language mean vectors the default threshold was calibrated with (written by
    ``bench/topics.py --write-reference-means`` from the retrieval fixtures), for the model
    family they belong to (the bundled model; EmbeddingGemma-300M wherever its folder lies);
    empty for any other model.

    Fixed rather than taken from the stored coverage: measured, the mean of the stored coverage
    shifts with what it is about (coverage heavy on a topic lowers that topic's scores), and a
    fresh installation has no coverage at all; a fixed reference keeps one threshold valid.
    """
    path = reference_means_path(model_id)
    if path is None or not path.exists():
        return {}
    with np.load(path) as data:
        if model_family(str(data["model"])) != model_family(model_id):
            return {}
        return {key: data[key].astype(np.float32) for key in data.files if key != "model"}


def topic_from_config(config: TopicConfig) -> Topic:
    return Topic(
        id=config.id,
        name=config.name,
        description=config.description,
        channels=config.channels,
        languages=config.languages,
        sources=config.sources,
        include=config.include,
        exclude=config.exclude,
        threshold=config.threshold,
        examples=config.examples,
        negatives=config.negatives,
        compete=config.compete,
        confirm=config.confirm,
    )


#: the colon that opens a description's list: one before a space ("https://", "10:30" are not)
_LIST_COLON = re.compile(r":\s")
#: a list's conjunction before its last item, in the four languages ("a, b and c")
_CONJUNCTION = re.compile(r"^(?:and|or|und|oder|и|или|або|і|й|та)\s+", re.IGNORECASE)


def query_texts(topic: Topic) -> list[str]:
    """What a topic is searched for: its description, then one query per aspect it lists.

    An article about one aspect ("the deployment of a reassurance force") is far from the
    whole description in the model's space - the description's other aspects pull the query
    elsewhere - and close to "<subject>: <that aspect>". Measured in bench/topics.py (the
    scoring table's default row, max over the queries): calibration F1 0.952 -> 0.957, report
    split 0.897 -> 0.928. (Adding the name as another query lowered F1: a short name matches
    too broadly.)"""
    return [topic.description, *(f"{subject}: {aspect}" for subject, aspect in _aspects(topic))]


def _aspects(topic: Topic) -> list[tuple[str, str]]:
    """``(subject, aspect)`` for each item of the list after the description's first colon,
    split at commas and semicolons outside brackets; none without a colon or a list."""
    colon = _LIST_COLON.search(topic.description)
    if colon is None:
        return []
    subject, listed = topic.description[: colon.start()], topic.description[colon.end() :]
    items, depth, start = [], 0, 0
    for at, char in enumerate(listed + ","):
        depth += (char in "([") - (char in ")]")
        if char in ",;" and depth <= 0:
            items.append(_CONJUNCTION.sub("", listed[start:at].strip()).rstrip(" ."))
            start = at + 1
    aspects = [item for item in items if item]
    return [(subject.strip(), a) for a in aspects] if len(aspects) > 1 else []


def query_labels(topic: Topic) -> list[str]:
    """What each of ``query_texts`` stands for, as a match's reason names it."""
    return ["the description", *(aspect for _, aspect in _aspects(topic))]


def build_profile(
    topic: Topic,
    embedder: Embedder,
    *,
    means: Mapping[str, Vector],
    context: Vector | None,
    relevant: Sequence[Vector] = (),
    not_relevant: Sequence[Vector] = (),
    feedback: Callable[[Vector, Mapping[str, Vector]], Vector] | None = None,
    language_feedback: Callable[[Vector, str], Vector] | None = None,
    queries: Matrix | None = None,
) -> TopicProfile:
    """Embed the topic's texts; ``relevant`` / ``not_relevant`` are vectors of articles the
    user labelled, joining the topic's examples and negatives. ``feedback`` refines each query
    against the stored coverage (see ``AlertStage``); it gets the query and the means.
    ``language_feedback`` then refines it once more per language, on that language's coverage
    only, giving each language its own query (see ``alerts.matching``). ``queries``: the
    topic's ``query_texts`` already embedded (the stage embeds them to screen feedback)."""
    try:
        if queries is None:
            queries = embedder.embed_queries(query_texts(topic))
        if feedback is not None:
            queries = np.stack([feedback(q, means) for q in queries])
        examples = embedder.embed_documents(list(topic.examples)) if topic.examples else None
        negatives = embedder.embed_documents(list(topic.negatives)) if topic.negatives else None
    except Exception as e:
        raise TopicError(topic.id, f"cannot embed the topic's texts: {e}") from e
    per_language = {
        lang: np.stack([language_feedback(q, lang) for q in queries])
        for lang in means
        if language_feedback is not None
    }
    offsets = {
        lang: (per_language.get(lang, queries) @ mean).astype(np.float32)
        for lang, mean in means.items()
    }
    return TopicProfile(
        topic=topic,
        queries=queries,
        query_labels=tuple(query_labels(topic)),
        language_queries=per_language,
        offsets=offsets,
        context=context,
        positives=_rows(examples, relevant),
        negatives=_rows(negatives, not_relevant),
    )


def _rows(embedded: Matrix | None, extra: Sequence[Vector]) -> Matrix:
    parts = [m for m in (embedded, np.stack(extra) if extra else None) if m is not None]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)
