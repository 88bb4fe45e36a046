"""The embedded vector store: the Qdrant engine in this process (qdrant-edge-py).

One ``EdgeShard`` per collection under ``path/<collection>/``; ``path/newsmon.lock`` (an
exclusive ``flock``) keeps a second process - or a second store in this one - from opening the
same files, which the engine does not allow either (its WAL lock) but reports obscurely.

The edge engine never optimises by itself: new points land in an appendable segment that is
searched brute force until ``optimize()`` builds HNSW (and merges, vacuums). And ``optimize()``
holds the GIL until it returns: every thread of the process - feed polling, the HTTP API -
stops meanwhile (measured: a 5 ms ticker thread stalls exactly as long as the optimise).

Measured with ``bench/search.py`` on the shared 2-core development machine (load 4-5 from other
work, so +-30 %), 384-d clustered vectors, realistic payloads; p50/p95 ms of a limit-10 search;
"narrow" = language + 3 sources + 7 days (~0.6 % of the points), "broad" = language + 7 days:

================  ===========  ===========  ===========  ============================
points            no filter    narrow       broad        optimise
================  ===========  ===========  ===========  ============================
10k, brute force  1.1 / 1.3    0.6 / 0.7    0.7 / 0.9    none needed
100k, brute       15.2 / 16.6  8.2 / 12.2   11.8 / 16.5
100k, 1 optimise  1.5 / 3.9    3.2 / 6.0    2.7 / 5.6    80 s frozen; broad recall .89
300k, brute       32.0 / 45.6  15.2 / 25.6  32.5 / 87.6
300k, 1 optimise  2.9 / 6.7    14.6 / 21.4  3.8 / 6.8    341 s frozen; broad recall .55
100k, policy      3.8 / 4.9    6.4 / 8.3    4.9 / 8.3    27.6 s in 6 calls, max 6.3 s
300k, policy      4.2 / 5.2    8.2 / 13.5   8.7 / 18.1   79 s in 16 calls, max 7.1 s
================  ===========  ===========  ===========  ============================

(recall@10 against exact search >= 0.99 everywhere else). So: brute force grows linearly
(~0.1 ms per 1,000 points) and is fine to ~20k points; one big optimise is a minutes-long freeze
and, on one huge segment, a filter keeping a few % of it is searched through the filtered graph
with poor recall. Engine defaults were worse still: float32, m 16, ef_construct 100 and all
segments merged into one made each optimise rebuild everything (20k: 7 s, 40k: 26 s).

The choices (``EdgeTuning``):

* policy - ``maintain()`` optimises a shard only when >= 20,000 of its points are unindexed
  (~3 ms of brute force a search), so each freeze indexes one ~20k segment (5-7 s here); every
  call also flushes (the edge engine has no flush timer; the WAL would otherwise only grow).
  ``upsert()`` itself optimises beyond 40,000 unindexed points, so a backfill without
  ``maintain()`` calls never builds the 300k case above.
* segments - indexing threshold half the trigger, merged segments <= 50k points, 16 segments
  before merging: optimising never rebuilds old segments, and a filter keeping < ~6,600 points of
  a segment (the full-scan threshold) is searched exactly through the payload indexes.
* int8 scalar quantisation in RAM, rescored with the float32 originals (oversampling 2): HNSW
  builds ~3x faster, scores stay exact cosines.
* HNSW m 16, ef_construct 48: with 16 instead of 8 segments, it halved the optimise time at
  300k (104 s instead of 207 s with ef_construct 64) at equal recall. Search ef 64, or 256 with a
  filter (one keeping 40 % of the points: recall 0.88 at ef 64, 0.98 at 256).
* payload on disk (mmap, read for the hits only), payload indexes in RAM, WAL on.

The bench spreads published_at over all segments, the worst case; news arrive in time order, so
a "last days" filter selects mostly the newest segments and matches next to nothing in the others.

Footprint at 300k points: 816 MiB on disk (~2.8 KB a point: vector, int8 copy, graph, ~1 KB
payload, WAL in 32 MiB files), 884 MiB RSS (the whole process; 205 MiB at 10k points).
Inserting runs at 5-10k points/s.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np
import qdrant_edge as qe

from indexer.store import (
    PAYLOAD_INDEXES,
    IndexKind,
    VectorStoreError,
    check_limit,
    filter_terms,
    payload_from_dict,
    payload_to_dict,
)
from indexer.types import PassagePayload, Point, ScoredPoint, SearchFilter, Vector

log = logging.getLogger(__name__)

LOCK_FILE = "newsmon.lock"
_CONFIG_FILE = "edge_config.json"  # written by the engine; holds the vector size
_NAME = re.compile(r"[a-z0-9_-]{1,200}")
_UPSERT_BATCH = 512  # points per engine call: bounds the payload dicts built at once
_SCROLL_PAGE = 256
_SCHEMA: dict[IndexKind, qe.PayloadSchemaType] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "datetime": qe.PayloadSchemaType.Datetime,
    "integer": qe.PayloadSchemaType.Integer,
}


@dataclass(frozen=True, slots=True)
class EdgeTuning:
    """Shard configuration and the ``maintain()`` policy (the defaults are the measured choice,
    see the module docstring; tests shrink them to exercise optimisation on a few points)."""

    #: maintain() optimises when at least this many points are outside any HNSW index: below
    #: it a brute-force scan of them costs a few ms a query, and skipping spares a GIL freeze
    optimize_min_points: int = 20_000
    #: upsert() optimises by itself beyond this many unindexed points, so that a caller that
    #: never calls maintain() (a backfill) cannot grow one huge segment whose optimise would
    #: freeze the process for minutes (measured: 340 s for 300k points at once)
    force_optimize_points: int = 40_000
    #: upper bound on the points of a merged segment: bounds the freeze of one optimise
    segment_points: int = 50_000
    #: segments tolerated before the optimiser merges the smallest ones (a merge rebuilds the
    #: merged segments; more segments mean more graphs for each search to walk)
    segment_number: int = 16
    hnsw_m: int = 16
    hnsw_ef_construct: int = 48
    #: candidates a search explores per segment (the engine's default is ef_construct)
    hnsw_ef: int = 64
    #: the same when a filter applies: a broad filter (one language) discards most candidates
    #: the graph offers, so more are needed for the same recall (measured at 40 % selectivity:
    #: recall@10 0.88 at ef 64, 0.94 at 128, 0.98 at 256); selective filters scan exactly
    hnsw_ef_filtered: int = 256
    #: int8 scalar quantisation (rescored with the originals): builds HNSW ~3x faster
    quantize: bool = True

    def search_params(self, *, filtered: bool) -> qe.SearchParams:
        """Rescore with the float32 originals: scores stay exact cosines (story thresholds
        compare them), and the oversampled int8 candidates keep recall up."""
        quantization = (
            qe.QuantizationSearchParams(rescore=True, oversampling=2.0) if self.quantize else None
        )
        ef = self.hnsw_ef_filtered if filtered else self.hnsw_ef
        return qe.SearchParams(hnsw_ef=ef, quantization=quantization)

    def config(self, dim: int) -> qe.EdgeConfig:
        kb_per_point = dim * 4 / 1024  # float32 vectors: what the engine's KB thresholds count
        quantization = (
            qe.ScalarQuantizationConfig(
                type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
            )
            if self.quantize
            else None
        )
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            # full_scan_threshold (KB; ~6,600 384-d vectors): a filter keeping fewer points of a
            # segment is answered exactly from the payload indexes instead of the graph
            hnsw_config=qe.HnswIndexConfig(
                m=self.hnsw_m, ef_construct=self.hnsw_ef_construct, full_scan_threshold=10_000
            ),
            quantization_config=quantization,
            optimizers=qe.EdgeOptimizersConfig(
                # half the trigger, so that the segment maintain() found big enough is indexed
                indexing_threshold=max(1, int(self.optimize_min_points * kb_per_point / 2)),
                max_segment_size=max(1, int(self.segment_points * kb_per_point)),
                default_segment_number=self.segment_number,
            ),
            payload_memory=qe.Memory.Cold,  # read for the top hits only; the indexes stay in RAM
            wal_enabled=True,  # updates survive a crash between flushes
        )


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """One shard's state, for diagnostics and the benchmark."""

    points: int
    indexed: int  # points in an HNSW index; the others are searched brute-force
    segments: int


class EdgeVectorStore:
    """Implements ``indexer.store.VectorStore`` on qdrant-edge-py shards under ``path``.

    Thread-safe: the engine synchronises access to a shard itself (checked with writers, a
    reader and maintain() in parallel threads); a lock here guards only the table of open
    shards. Close it after the threads using it have stopped.
    """

    def __init__(self, path: Path, *, tuning: EdgeTuning | None = None) -> None:
        self._path = path
        self._tuning = tuning or EdgeTuning()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VectorStoreError(f"cannot create the vector store at {path}: {e}") from e
        self._lock_file: IO[str] | None = _lock(path)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._mutex = threading.Lock()
        self._params = {f: self._tuning.search_params(filtered=f) for f in (False, True)}
        self._unchecked: dict[str, int] = {}  # points upserted since the last optimise check

    @property
    def path(self) -> Path:
        return self._path

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    # -- collections -----------------------------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        directory = self._directory(name)
        with self._mutex:
            self._check_open()
            shard = self._shards.get(name)
            if shard is None:
                shard = self._open_or_create(name, directory, dim)
                self._shards[name] = shard
            elif (existing := _stored_dim(directory)) not in (None, dim):
                raise _dim_mismatch(name, directory, existing, dim)
        with self._calling(name, "creating payload indexes"):
            present = set(shard.info().payload_schema)
            for field, kind in PAYLOAD_INDEXES.items():
                if field not in present:
                    shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMA[kind]))

    def collections(self) -> list[str]:
        self._check_open()
        try:
            return sorted(
                entry.name
                for entry in self._path.iterdir()
                if _NAME.fullmatch(entry.name) and (entry / _CONFIG_FILE).is_file()
            )
        except OSError as e:
            raise VectorStoreError(f"cannot list the collections at {self._path}: {e}") from e

    def count(self, name: str) -> int:
        with self._calling(name, "counting points") as shard:
            return int(shard.count(qe.CountRequest(exact=True)))

    def stats(self, name: str) -> EdgeStats:
        with self._calling(name, "reading shard info") as shard:
            info = shard.info()
            return EdgeStats(info.points_count, info.indexed_vectors_count, info.segments_count)

    # -- writes ----------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        with self._calling(name, f"upserting {len(points)} points") as shard:
            for start in range(0, len(points), _UPSERT_BATCH):
                batch = [
                    qe.Point(p.id, _floats(p.vector), payload_to_dict(p.payload))
                    for p in points[start : start + _UPSERT_BATCH]
                ]
                shard.update(qe.UpdateOperation.upsert_points(batch))
                self._bound_unindexed(name, shard, len(batch))

    def delete_articles(self, name: str, article_ids: Sequence[str]) -> None:
        if not article_ids:
            return
        with self._calling(name, f"deleting {len(article_ids)} articles") as shard:
            shard.update(qe.UpdateOperation.delete_points_by_filter(_articles(article_ids)))

    def set_story(self, name: str, article_ids: Sequence[str], story_id: str) -> None:
        if not article_ids:
            return
        with self._calling(name, f"setting story {story_id}") as shard:
            shard.update(
                qe.UpdateOperation.set_payload_by_filter(
                    _articles(article_ids), {"story_id": story_id}
                )
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
        conditions = _filter(filter)
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(_floats(vector)),
            filter=conditions,
            params=self._params[conditions is not None],
            with_payload=True,
            with_vector=with_vectors,
        )
        with self._calling(name, "searching") as shard:
            hits = shard.query(request)
            return [
                ScoredPoint(
                    id=str(hit.id),
                    score=float(hit.score),
                    payload=_payload(hit),
                    vector=_vector(hit.vector) if with_vectors else None,
                )
                for hit in hits
            ]

    def article_points(
        self, name: str, article_id: str, *, with_vectors: bool = False
    ) -> list[tuple[PassagePayload, Vector | None]]:
        found: list[tuple[PassagePayload, Vector | None]] = []
        offset: Any = None
        with self._calling(name, f"reading article {article_id}") as shard:
            while True:
                records, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=_SCROLL_PAGE,
                        filter=_articles([article_id]),
                        with_payload=True,
                        with_vector=with_vectors,
                    )
                )
                found.extend((_payload(r), _vector(r.vector) if with_vectors else None)
                             for r in records)  # fmt: skip
                if offset is None:
                    break
        return sorted(found, key=lambda item: item[0].passage_index)

    def sample_vectors(self, name: str, filter: SearchFilter, limit: int) -> list[Vector]:
        check_limit(limit)
        with self._calling(name, "sampling vectors") as shard:
            request = qe.ScrollRequest(
                limit=limit, filter=_filter(filter), with_payload=False, with_vector=True
            )
            records, _ = shard.scroll(request)
        return [_vector(r.vector) for r in records]

    # -- housekeeping ----------------------------------------------------------------------------

    def maintain(self) -> None:
        """Flush every shard; optimise (build HNSW, merge, vacuum) the ones with at least
        ``optimize_min_points`` unindexed points.

        ``optimize()`` holds the GIL until it returns - the whole process stops meanwhile - so
        it runs only when the brute-force share of a search has grown enough to matter.
        """
        for name in self._open_names():
            with self._calling(name, "maintaining") as shard:
                self._optimize_beyond(name, shard, self._tuning.optimize_min_points)
                shard.flush()

    def _bound_unindexed(self, name: str, shard: qe.EdgeShard, added: int) -> None:
        """The safety valve of ``force_optimize_points``; looks at the shard only now and then
        (every that many upserted points)."""
        unchecked = self._unchecked.get(name, 0) + added
        if unchecked >= self._tuning.force_optimize_points:
            self._optimize_beyond(name, shard, self._tuning.force_optimize_points)
            unchecked = 0
        self._unchecked[name] = unchecked

    def _optimize_beyond(self, name: str, shard: qe.EdgeShard, threshold: int) -> None:
        info = shard.info()
        unindexed = info.points_count - info.indexed_vectors_count
        if unindexed >= threshold:
            log.info("optimising vector collection %s (%d unindexed points of %d)",
                     name, unindexed, info.points_count)  # fmt: skip
            shard.optimize()
            self._unchecked[name] = 0

    def close(self) -> None:
        with self._mutex:
            shards, self._shards = self._shards, {}
            lock, self._lock_file = self._lock_file, None
        first: VectorStoreError | None = None
        for name, shard in shards.items():
            try:
                self._close_shard(name, shard)
            except VectorStoreError as e:  # close the others all the same
                first = first or e
        if lock is not None:
            lock.close()  # releases the flock
        if first is not None:
            raise first

    def _close_shard(self, name: str, shard: qe.EdgeShard) -> None:
        try:
            shard.flush()
            shard.close()
        except Exception as e:
            raise VectorStoreError(
                f"closing collection {name!r} at {self._path / name}: {e}"
            ) from e

    # -- plumbing --------------------------------------------------------------------------------

    def _directory(self, name: str) -> Path:
        if not _NAME.fullmatch(name):  # a name is a directory: no separators, no dots
            raise ValueError(f"invalid collection name {name!r} (only [a-z0-9_-])")
        return self._path / name

    def _check_open(self) -> None:
        if self._lock_file is None:
            raise VectorStoreError(f"vector store at {self._path} is closed")

    def _open_names(self) -> list[str]:
        with self._mutex:
            self._check_open()
            return list(self._shards)

    def _open_or_create(self, name: str, directory: Path, dim: int) -> qe.EdgeShard:
        existing = _stored_dim(directory)
        if existing is not None and existing != dim:
            raise _dim_mismatch(name, directory, existing, dim)
        config = self._tuning.config(dim)
        try:
            if (directory / _CONFIG_FILE).is_file():
                # the current tuning replaces the stored one; a changed HNSW or quantisation
                # configuration can make the next optimise rebuild the indexed segments (a freeze)
                return qe.EdgeShard.load(str(directory), config)
            return qe.EdgeShard.create(str(directory), config)
        except Exception as e:
            raise VectorStoreError(f"cannot open collection {name!r} at {directory}: {e}") from e

    def _shard(self, name: str) -> qe.EdgeShard:
        """The open shard, loading one that exists on disk (ensure_collection creates)."""
        directory = self._directory(name)
        with self._mutex:
            self._check_open()
            shard = self._shards.get(name)
            if shard is not None:
                return shard
            if not (directory / _CONFIG_FILE).is_file():
                raise VectorStoreError(
                    f"collection {name!r} does not exist at {directory} (ensure_collection first)"
                )
            try:
                shard = qe.EdgeShard.load(str(directory))
            except Exception as e:
                raise VectorStoreError(
                    f"cannot open collection {name!r} at {directory}: {e}"
                ) from e
            self._shards[name] = shard
            return shard

    @contextmanager
    def _calling(self, name: str, what: str) -> Iterator[qe.EdgeShard]:
        """The shard, with the engine's errors turned into VectorStoreError naming it."""
        shard = self._shard(name)
        try:
            yield shard
        except VectorStoreError:
            raise
        except Exception as e:
            raise VectorStoreError(
                f"{what} in collection {name!r} at {self._path / name} failed: {e}"
            ) from e


def _lock(path: Path) -> IO[str]:
    """The open, exclusively flock-ed lock file (the lock lasts while it stays open)."""
    lock_path = path / LOCK_FILE
    try:
        handle = lock_path.open("a+", encoding="utf-8")
    except OSError as e:
        raise VectorStoreError(f"cannot open the lock file {lock_path}: {e}") from e
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise VectorStoreError(
            f"vector store at {path} is in use by another process{pid} (is `newsmon run` running?)"
        ) from e
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _stored_dim(directory: Path) -> int | None:
    """The vector size a shard was created with, read from the engine's config file."""
    try:
        config = json.loads((directory / _CONFIG_FILE).read_text(encoding="utf-8"))
        return int(config["vectors"][""]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: the engine checks the size again on load


def _dim_mismatch(name: str, directory: Path, existing: int, dim: int) -> VectorStoreError:
    return VectorStoreError(
        f"collection {name!r} at {directory} holds vectors of dimension {existing}, not {dim}: "
        "a different model needs its own collection"
    )


def _articles(article_ids: Sequence[str]) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition("article_id", match=qe.MatchAny(list(article_ids)))])


def _filter(flt: SearchFilter) -> qe.Filter | None:
    terms = filter_terms(flt)
    if terms.empty:
        return None
    must: list[Any] = [  # Any: the stub's condition union is not importable at run time
        qe.FieldCondition(key, match=qe.MatchAny(values)) for key, values in terms.match_any.items()
    ]
    if terms.since or terms.until:
        when = qe.RangeDateTime(gte=terms.since, lte=terms.until)
        must.append(qe.FieldCondition("published_at", range=when))
    exclude = terms.exclude_article_ids
    return qe.Filter(
        must=must or None,
        must_not=[qe.FieldCondition("article_id", match=qe.MatchAny(exclude))] if exclude else None,
    )


def _payload(point: qe.ScoredPoint | qe.Record) -> PassagePayload:
    if point.payload is None:
        raise ValueError(f"point {point.id} has no payload")
    return payload_from_dict(point.payload)


def _floats(vector: Vector) -> list[float]:
    floats: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return floats


def _vector(raw: Any) -> Vector:
    return np.asarray(raw, dtype=np.float32)
