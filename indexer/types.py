"""Frozen domain types of the indexer: passages, vector points, stories, search hits.

Every datetime is timezone-aware UTC. Vectors are float32 numpy arrays, L2-normalised, so the
dot product is the cosine similarity.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]  # shape (dim,)
Matrix = npt.NDArray[np.float32]  # shape (n, dim)

#: namespace of point ids: uuid5(POINT_NAMESPACE, f"{canonical_url}#{passage_index}")
POINT_NAMESPACE = uuid.UUID("6f1c1a52-8e0b-4d55-9a43-2a1d3c9b7e10")


def point_id(canonical_url: str, passage_index: int) -> str:
    """Deterministic point id: re-indexing an article overwrites its points, never adds."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{canonical_url}#{passage_index}"))


class PassageKind(enum.StrEnum):
    LEAD = "lead"  # title + first paragraph(s): what the article is about
    BODY = "body"


@dataclass(frozen=True, slots=True)
class Passage:
    index: int  # 0 = lead
    kind: PassageKind
    text: str
    start: int  # character offset of the passage in the article text (lead: 0)


@dataclass(frozen=True, slots=True)
class PassagePayload:
    """What the vector store keeps with each point (one schema for every backend)."""

    article_id: str
    passage_index: int
    kind: PassageKind
    text: str
    url: str
    title: str
    language: str
    source: str  # feed name
    published_at: datetime  # published, else discovered: every point has a time to filter on
    story_id: str | None = None


@dataclass(frozen=True, slots=True)
class Point:
    id: str
    vector: Vector
    payload: PassagePayload


@dataclass(frozen=True, slots=True)
class SearchFilter:
    languages: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    story_id: str | None = None
    exclude_article_ids: tuple[str, ...] = ()
    kinds: tuple[PassageKind, ...] = ()  # e.g. (LEAD,): compare articles by what they are about


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    id: str
    score: float
    payload: PassagePayload
    vector: Vector | None = None  # when the search was asked for vectors


@dataclass(frozen=True, slots=True)
class Story:
    """A group of articles about one event, across outlets and languages."""

    id: str
    headline: str
    first_seen: datetime
    last_seen: datetime
    article_count: int
    languages: tuple[str, ...]
    sources: tuple[str, ...]
    #: the article whose lead vector represents the story in clustering
    representative_article_id: str


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One article in a result list: its best passage and how well it matched."""

    article_id: str
    score: float
    url: str
    title: str
    language: str
    source: str
    published_at: datetime
    passage: str
    passage_index: int
    story_id: str | None


@dataclass(frozen=True, slots=True)
class StoryHit:
    story: Story | None  # None when the article has no story yet
    score: float  # best article score
    hits: tuple[SearchHit, ...] = field(default_factory=tuple)
