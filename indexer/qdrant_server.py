"""The vector store on a Qdrant server or cluster, through qdrant-client (``qdrant.url`` set).

Running it against a real server::

    docker run -p 6333:6333 -v "$PWD/qdrant_storage:/qdrant/storage" \\
        -e QDRANT__SERVICE__API_KEY=change-me qdrant/qdrant

    # feeds.yaml
    qdrant:
      url: http://localhost:6333
      api_key: ${QDRANT_API_KEY}     # omit when the server has no key; use https off localhost
      collection: newsmon            # prefix: the collection is newsmon__<model id>

* Collections are named by ``indexer.store.collection_name`` (prefix + model id), so several
  models - or several newsmon instances with different prefixes - share one server safely.
  ``ensure_collection`` creates the collection (cosine, the model's dimension) and its payload
  indexes; it never changes an existing one, and a dimension mismatch is an error.
* Sharding and replication are the server's business: create the collection yourself before the
  first start (``PUT /collections/newsmon__...`` with ``shard_number``, ``replication_factor``,
  ``write_consistency_factor``, same vector size and ``"distance": "Cosine"``) and newsmon uses
  it as it is, adding only the missing payload indexes.
* The server optimises (HNSW, vacuum) in the background, so ``maintain()`` does nothing here.
* Errors name the collection and the URL, never the API key.

Tests run this class against ``QdrantClient(":memory:")`` - qdrant-client's local mode, the same
API without payload indexes (it warns that they have no effect) and much slower.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import numpy as np
from qdrant_client import QdrantClient, models

from indexer.store import (
    PAYLOAD_INDEXES,
    IndexKind,
    VectorStoreError,
    check_limit,
    filter_terms,
    parse_datetime,
    payload_from_dict,
    payload_to_dict,
)
from indexer.types import PassagePayload, Point, ScoredPoint, SearchFilter, Vector

_TIMEOUT_S = 30
_UPSERT_BATCH = 256  # points per request: keeps a request well under the server's 32 MiB limit
_SCROLL_PAGE = 256
_SCHEMA: dict[IndexKind, models.PayloadSchemaType] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "datetime": models.PayloadSchemaType.DATETIME,
    "integer": models.PayloadSchemaType.INTEGER,
}


class ServerVectorStore:
    """Implements ``indexer.store.VectorStore`` on a Qdrant server at ``url``.

    ``client`` replaces the client built from ``url``/``api_key`` (tests pass
    ``QdrantClient(":memory:")``); ``url`` then only names the store in messages.
    """

    def __init__(
        self, url: str, api_key: str | None = None, *, client: QdrantClient | None = None
    ) -> None:
        self._url = url
        self._client = client or QdrantClient(url=url, api_key=api_key, timeout=_TIMEOUT_S)

    @property
    def url(self) -> str:
        return self._url

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    # -- collections -----------------------------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        with self._calling(name, "creating the collection"):
            if self._client.collection_exists(name):
                info = self._client.get_collection(name)
                self._check_vectors(name, info.config.params.vectors, dim)
                present = set(info.payload_schema)
            else:
                self._client.create_collection(
                    name,
                    vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                )
                present = set()
            for field, kind in PAYLOAD_INDEXES.items():
                if field not in present:
                    self._client.create_payload_index(name, field, _SCHEMA[kind], wait=True)

    def collections(self) -> list[str]:
        with self._calling(None, "listing collections"):
            return sorted(c.name for c in self._client.get_collections().collections)

    def count(self, name: str) -> int:
        with self._calling(name, "counting points"):
            return self._client.count(name, exact=True).count

    # -- writes ----------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        with self._calling(name, f"upserting {len(points)} points"):
            for start in range(0, len(points), _UPSERT_BATCH):
                batch = [
                    models.PointStruct(
                        id=p.id, vector=_floats(p.vector), payload=payload_to_dict(p.payload)
                    )
                    for p in points[start : start + _UPSERT_BATCH]
                ]
                self._client.upsert(name, batch, wait=True)

    def delete_articles(self, name: str, article_ids: Sequence[str]) -> None:
        if not article_ids:
            return
        with self._calling(name, f"deleting {len(article_ids)} articles"):
            selector = models.FilterSelector(filter=_articles(article_ids))
            self._client.delete(name, points_selector=selector, wait=True)

    def set_story(self, name: str, article_ids: Sequence[str], story_id: str) -> None:
        if not article_ids:
            return
        with self._calling(name, f"setting story {story_id}"):
            self._client.set_payload(
                name, payload={"story_id": story_id}, points=_articles(article_ids), wait=True
            )

    # -- reads -----------------------------------------------------------------------------------

    def search(
        self,
        name: str,
        vector: Vector,
        *,
        filter: SearchFilter,
        limit: int,
        with_vectors: bool = False,
    ) -> list[ScoredPoint]:
        check_limit(limit)
        with self._calling(name, "searching"):
            response = self._client.query_points(
                name, query=_floats(vector), query_filter=_filter(filter), limit=limit,
                with_payload=True, with_vectors=with_vectors,
            )  # fmt: skip
            return [
                ScoredPoint(
                    id=str(hit.id),
                    score=float(hit.score),
                    payload=_payload(hit),
                    vector=_vector(hit.vector) if with_vectors else None,
                )
                for hit in response.points
            ]

    def article_points(
        self, name: str, article_id: str, *, with_vectors: bool = False
    ) -> list[tuple[PassagePayload, Vector | None]]:
        found: list[tuple[PassagePayload, Vector | None]] = []
        offset: Any = None
        with self._calling(name, f"reading article {article_id}"):
            while True:
                records, offset = self._client.scroll(
                    name, scroll_filter=_articles([article_id]), limit=_SCROLL_PAGE,
                    offset=offset, with_payload=True, with_vectors=with_vectors,
                )  # fmt: skip
                found.extend((_payload(r), _vector(r.vector) if with_vectors else None)
                             for r in records)  # fmt: skip
                if offset is None:
                    break
        return sorted(found, key=lambda item: item[0].passage_index)

    def sample_vectors(self, name: str, filter: SearchFilter, limit: int) -> list[Vector]:
        check_limit(limit)
        with self._calling(name, "sampling vectors"):
            records, _ = self._client.scroll(
                name, scroll_filter=_filter(filter), limit=limit, with_payload=False,
                with_vectors=True,
            )  # fmt: skip
        return [_vector(r.vector) for r in records]

    # -- housekeeping ----------------------------------------------------------------------------

    def maintain(self) -> None:
        """Nothing to do: the server optimises in the background and flushes on its own."""

    def close(self) -> None:
        with self._calling(None, "closing the client"):
            self._client.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _check_vectors(self, name: str, vectors: Any, dim: int) -> None:
        """An existing collection must hold one unnamed cosine vector of size ``dim``."""
        if not isinstance(vectors, models.VectorParams):
            raise VectorStoreError(
                f"collection {name!r} at {self._url} uses named vectors: not a newsmon collection"
            )
        if vectors.size != dim:
            raise VectorStoreError(
                f"collection {name!r} at {self._url} holds vectors of dimension {vectors.size}, "
                f"not {dim}: a different model needs its own collection"
            )
        if vectors.distance != models.Distance.COSINE:
            raise VectorStoreError(
                f"collection {name!r} at {self._url} uses {vectors.distance.value} distance, "
                "not Cosine"
            )

    @contextmanager
    def _calling(self, name: str | None, what: str) -> Iterator[None]:
        """Turns the client's errors into VectorStoreError naming the collection and URL."""
        try:
            yield
        except VectorStoreError:
            raise
        except Exception as e:
            where = f"collection {name!r} at {self._url}" if name else f"Qdrant at {self._url}"
            raise VectorStoreError(f"{what} in {where} failed: {e}") from e


def _articles(article_ids: Sequence[str]) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="article_id", match=models.MatchAny(any=list(article_ids)))]
    )


def _filter(flt: SearchFilter) -> models.Filter | None:
    terms = filter_terms(flt)
    if terms.empty:
        return None
    must: list[models.Condition] = [
        models.FieldCondition(key=key, match=models.MatchAny(any=values))
        for key, values in terms.match_any.items()
    ]
    if terms.since or terms.until:
        when = models.DatetimeRange(
            gte=parse_datetime(terms.since) if terms.since else None,
            lte=parse_datetime(terms.until) if terms.until else None,
        )
        must.append(models.FieldCondition(key="published_at", range=when))
    exclude = terms.exclude_article_ids
    must_not: list[models.Condition] = (
        [models.FieldCondition(key="article_id", match=models.MatchAny(any=exclude))]
        if exclude
        else []
    )
    return models.Filter(must=must or None, must_not=must_not or None)


def _payload(point: models.ScoredPoint | models.Record) -> PassagePayload:
    if point.payload is None:
        raise ValueError(f"point {point.id} has no payload")
    return payload_from_dict(point.payload)


def _floats(vector: Vector) -> list[float]:
    floats: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return floats


def _vector(raw: Any) -> Vector:
    return np.asarray(raw, dtype=np.float32)
