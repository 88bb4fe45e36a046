"""The vector store: one Protocol, two Qdrant backends, one payload schema.

* ``indexer.qdrant_edge.EdgeVectorStore`` - the Qdrant engine in this process (qdrant-edge-py),
  one shard per collection under ``data_dir/vectors``; the default, needs no server.
* ``indexer.qdrant_server.ServerVectorStore`` - a Qdrant server or cluster (``qdrant.url``).

Both keep the same payload (``PassagePayload`` as a flat JSON object, see ``payload_to_dict``)
and the same payload indexes, so a collection can move between them point for point.

Conventions every backend honours:

* similarity is cosine; scores are in [-1, 1], best first;
* ``published_at`` is stored as an RFC 3339 UTC string with microseconds
  ("2024-05-06T09:10:00.000000Z") - Qdrant's datetime index parses it - and comes back as an
  aware UTC datetime;
* ``SearchFilter``: ``languages``, ``sources`` and ``kinds`` match any of their values, ``since``
  and ``until`` are both inclusive (``since <= published_at <= until``), ``story_id`` matches
  exactly, ``exclude_article_ids`` drops those articles; an empty field does not filter;
* point ids are the UUID strings of ``indexer.types.point_id``; upserting an id again replaces
  that point.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol

from indexer.types import PassageKind, PassagePayload, Point, ScoredPoint, SearchFilter, Vector
from monitor.errors import NewsmonError

IndexKind = Literal["keyword", "datetime", "integer"]

#: the payload fields filtered on (or looked up by), and the index each gets in every backend
PAYLOAD_INDEXES: Mapping[str, IndexKind] = {
    "article_id": "keyword",
    "language": "keyword",
    "source": "keyword",
    "story_id": "keyword",
    "kind": "keyword",
    "published_at": "datetime",
    "passage_index": "integer",
}

#: Qdrant allows 255 characters; the edge backend also uses the name as a directory name
_MAX_NAME = 200
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class VectorStoreError(NewsmonError):
    """A vector-store operation failed; the message names the collection and the path or URL."""


class VectorStore(Protocol):
    """Passages as vectors with ``PassagePayload``s, in named collections (one per model)."""

    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection and its payload indexes unless they exist (idempotent).

        An existing collection with another dimension is a ``VectorStoreError``."""
        ...

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id."""
        ...

    def delete_articles(self, name: str, article_ids: Sequence[str]) -> None:
        """Delete every point of these articles."""
        ...

    def search(
        self,
        name: str,
        vector: Vector,
        *,
        filter: SearchFilter,
        limit: int,
        with_vectors: bool = False,
    ) -> list[ScoredPoint]:
        """The ``limit`` points most cosine-similar to ``vector`` that pass ``filter`` (with
        their vectors when asked: the alert stage's feedback reads them)."""
        ...

    def set_story(self, name: str, article_ids: Sequence[str], story_id: str) -> None:
        """Set ``story_id`` on every point of these articles."""
        ...

    def article_points(
        self, name: str, article_id: str, *, with_vectors: bool = False
    ) -> list[tuple[PassagePayload, Vector | None]]:
        """One article's points in passage order, with their vectors when asked."""
        ...

    def sample_vectors(self, name: str, filter: SearchFilter, limit: int) -> list[Vector]:
        """Up to ``limit`` stored vectors matching ``filter`` (in storage order, not random):
        enough to estimate a language's mean direction."""
        ...

    def count(self, name: str) -> int:
        """Number of points in the collection."""
        ...

    def collections(self) -> list[str]:
        """Names of the existing collections, sorted."""
        ...

    def maintain(self) -> None:
        """Housekeeping (index building, flushing); call from a worker thread at quiet times."""
        ...

    def close(self) -> None:
        """Flush and release the store; idempotent."""
        ...


def collection_name(prefix: str, model_id: str) -> str:
    """The collection for ``model_id``'s vectors: one per model, so that changing the model
    never mixes two vector spaces in one collection.

    Only ``[a-z0-9_-]``: "newsmon" + "bundled:intfloat/multilingual-e5-small" gives
    "newsmon__bundled-intfloat-multilingual-e5-small".
    """
    parts = [_UNSAFE.sub("-", part.lower()).strip("-_") for part in (prefix, model_id)]
    if not all(parts):
        raise ValueError(f"collection name needs a prefix and a model id: {prefix!r}, {model_id!r}")
    name = "__".join(parts)
    if len(name) > _MAX_NAME:  # keep it unique when cut: the hash covers the whole model id
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
        name = f"{name[: _MAX_NAME - 13]}-{digest}"
    return name


# -- payload schema shared by the backends ------------------------------------------------------


def format_datetime(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: sorts as text and parses in Qdrant's datetime index."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the vector store needs aware UTC")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def payload_to_dict(payload: PassagePayload) -> dict[str, Any]:
    return {
        "article_id": payload.article_id,
        "passage_index": payload.passage_index,
        "kind": payload.kind.value,
        "text": payload.text,
        "url": payload.url,
        "title": payload.title,
        "language": payload.language,
        "source": payload.source,
        "published_at": format_datetime(payload.published_at),
        "story_id": payload.story_id,
    }


def payload_from_dict(data: Mapping[str, Any]) -> PassagePayload:
    """The payload as stored; a malformed one (not written by newsmon) is a ValueError."""
    try:
        return PassagePayload(
            article_id=str(data["article_id"]),
            passage_index=int(data["passage_index"]),
            kind=PassageKind(data["kind"]),
            text=str(data["text"]),
            url=str(data["url"]),
            title=str(data["title"]),
            language=str(data["language"]),
            source=str(data["source"]),
            published_at=parse_datetime(str(data["published_at"])),
            story_id=None if data.get("story_id") is None else str(data["story_id"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a newsmon passage payload ({e!r}): {dict(data)!r:.300}") from e


class FilterTerms(NamedTuple):
    """A ``SearchFilter`` as the conditions both backends build: every ``match_any`` field must
    hold one of its values, ``published_at`` lies in [since, until], no ``exclude`` article."""

    match_any: dict[str, list[str]]
    since: str | None
    until: str | None
    exclude_article_ids: list[str]

    @property
    def empty(self) -> bool:
        return not (self.match_any or self.since or self.until or self.exclude_article_ids)


def filter_terms(flt: SearchFilter) -> FilterTerms:
    candidates = {
        "language": list(flt.languages),
        "source": list(flt.sources),
        "kind": [kind.value for kind in flt.kinds],
        "story_id": [flt.story_id] if flt.story_id is not None else [],
    }
    return FilterTerms(
        match_any={key: values for key, values in candidates.items() if values},
        since=format_datetime(flt.since) if flt.since else None,
        until=format_datetime(flt.until) if flt.until else None,
        exclude_article_ids=list(flt.exclude_article_ids),
    )


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"search limit must be >= 1, not {limit}")
