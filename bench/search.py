"""Benchmark of the embedded vector store (indexer.qdrant_edge) on synthetic news passages.

    .venv/bin/python bench/search.py                          # 10k, 100k, 300k points
    .venv/bin/python bench/search.py --sizes 10000,100000     # other sizes
    .venv/bin/python bench/search.py --bulk                   # fill, search, one maintain, search
    .venv/bin/python bench/search.py --server                 # + qdrant-client ":memory:" at 10k

Per size, in a fresh process (so that RSS is that size's alone): 384-d normalised vectors in
clusters (a story's articles lie near its centre, so neighbours exist) with realistic payloads
(4 languages, 30 sources, published_at over 30 days, 1-9 passages an article, Cyrillic text for
ru/uk) are upserted in batches of 1,000, calling maintain() after every 20,000 points as the
service does at quiet moments. Then 200 searches (limit 10) per filter:

* none   - no filter
* narrow - one language + 3 sources + a 7-day range (~0.6 % of the points)
* broad  - one language + a 7-day range (~6 %)

--bulk fills without maintain() and without upsert()'s own optimise beyond 40,000 unindexed
points, searches (brute force over everything: "before"), calls maintain() once - one optimise of
everything, what the safety valve prevents - and searches again.

recall@10 is against exact numpy search under the same filter. "longest stall" is the longest
time another Python thread could not run (a ticker thread every 5 ms): optimize() holds the GIL.
Disk is the collection directory, RSS the process's resident memory after the bench dropped its
own copy of the vectors. Writes only to a temporary directory (and no bytecode).
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep the repository untouched

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.qdrant_edge import EdgeTuning, EdgeVectorStore  # noqa: E402
from indexer.qdrant_server import ServerVectorStore  # noqa: E402
from indexer.store import VectorStore  # noqa: E402
from indexer.types import (  # noqa: E402
    PassageKind,
    PassagePayload,
    Point,
    SearchFilter,
    Vector,
    point_id,
)

DIM = 384
NAME = "bench__synthetic-384"
BATCH = 1_000
QUERIES = 200
SERVER_QUERIES = 30  # qdrant-client's local mode scans in Python: ~0.3 s a filtered search
WARM_UP = 10
STORY_SIZE = 40  # passages per cluster
T0 = datetime(2024, 5, 1, tzinfo=UTC)
DAYS = 30
LANGUAGES = ("en", "de", "ru", "uk")
LANGUAGE_SHARE = (0.4, 0.2, 0.25, 0.15)
SOURCES = tuple(f"outlet-{i:02d}" for i in range(30))
TEXT = {
    "en": "Negotiators met again on Monday to discuss a ceasefire and a prisoner exchange. ",
    "de": "Die Unterhändler trafen sich am Montag erneut, um über eine Waffenruhe zu sprechen. ",
    "ru": "Переговорщики снова встретились в понедельник, чтобы обсудить прекращение огня. ",
    "uk": "Переговорники знову зустрілися в понеділок, щоб обговорити припинення вогню. ",
}
Ints = npt.NDArray[np.int64]


@dataclass
class Corpus:
    """Per point: vector and the payload fields filtered on (arrays, for exact search)."""

    vectors: npt.NDArray[np.float32]
    centres: npt.NDArray[np.float32]
    article: Ints
    passage: Ints
    language: Ints
    source: Ints
    seconds: Ints  # published_at - T0

    def __len__(self) -> int:
        return len(self.article)

    def url(self, i: int) -> str:
        return f"https://outlet.example/{self.article[i]}"

    def point_id(self, i: int) -> str:
        return point_id(self.url(i), int(self.passage[i]))

    def point(self, i: int) -> Point:
        article = self.url(i)
        language = LANGUAGES[self.language[i]]
        published = T0 + timedelta(seconds=int(self.seconds[i]))
        payload = PassagePayload(
            article_id=str(uuid.uuid5(uuid.NAMESPACE_URL, article)),
            passage_index=int(self.passage[i]),
            kind=PassageKind.LEAD if self.passage[i] == 0 else PassageKind.BODY,
            text=TEXT[language] * 6,
            url=article,
            title=TEXT[language][:60],
            language=language,
            source=SOURCES[self.source[i]],
            published_at=published,
        )
        return Point(point_id(article, int(self.passage[i])), self.vectors[i], payload)


def make_corpus(n: int, rng: np.random.Generator) -> Corpus:
    passages = rng.integers(1, 10, size=n)  # per article; more than enough articles
    article = np.repeat(np.arange(n), passages)[:n]
    passage = np.concatenate([np.arange(k) for k in passages])[:n]
    centres = _unit(rng.standard_normal((max(1, n // STORY_SIZE), DIM)).astype(np.float32))
    story = rng.integers(0, len(centres), size=n)[article]
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * (0.8 / np.sqrt(DIM))
    per_article = rng.choice(len(LANGUAGES), size=n, p=LANGUAGE_SHARE)
    return Corpus(
        vectors=_unit(centres[story] + noise),
        centres=centres,
        article=article,
        passage=passage,
        language=per_article[article],
        source=rng.integers(0, len(SOURCES), size=n)[article],
        seconds=rng.integers(0, DAYS * 86_400, size=n)[article],
    )


def _unit(m: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    normed: npt.NDArray[np.float32] = m / np.linalg.norm(m, axis=1, keepdims=True)
    return normed


# -- queries with their exact answers -------------------------------------------------------------


@dataclass
class Query:
    vector: Vector
    filter: SearchFilter
    exact: set[str]


def make_queries(corpus: Corpus, kind: str, count: int, rng: np.random.Generator) -> list[Query]:
    queries = []
    for q in range(count + WARM_UP):
        centre = corpus.centres[rng.integers(0, len(corpus.centres))]
        vector = _unit((centre + rng.standard_normal(DIM) * 0.03).astype(np.float32)[None])[0]
        flt, mask = _filter(corpus, kind, q, rng)
        scores = corpus.vectors @ vector
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        best = [int(i) for i in np.argsort(-scores)[:10] if np.isfinite(scores[i])]
        queries.append(Query(vector, flt, {corpus.point_id(i) for i in best}))
    return queries


def _filter(
    corpus: Corpus, kind: str, q: int, rng: np.random.Generator
) -> tuple[SearchFilter, npt.NDArray[np.bool_] | None]:
    if kind == "none":
        return SearchFilter(), None
    language = q % len(LANGUAGES)
    start = int(rng.integers(0, DAYS - 7)) * 86_400
    end = start + 7 * 86_400
    mask = (corpus.language == language) & (corpus.seconds >= start) & (corpus.seconds <= end)
    flt = SearchFilter(
        languages=(LANGUAGES[language],),
        since=T0 + timedelta(seconds=start),
        until=T0 + timedelta(seconds=end),
    )
    if kind == "narrow":
        sources = rng.choice(len(SOURCES), size=3, replace=False)
        mask &= np.isin(corpus.source, sources)
        flt = SearchFilter(
            languages=flt.languages,
            sources=tuple(SOURCES[s] for s in sources),
            since=flt.since,
            until=flt.until,
        )
    return flt, mask


# -- one size in one process -----------------------------------------------------------------------


@dataclass
class SearchStats:
    p50_ms: float
    p95_ms: float
    recall: float


@dataclass
class Result:
    backend: str
    size: int
    insert_per_s: float
    maintain_total_s: float
    maintain_max_s: float
    longest_stall_s: float
    segments: int
    indexed: int
    disk_mib: float
    rss_mib: float
    search: dict[str, SearchStats] = field(default_factory=dict)


class StallMeter:
    """A thread ticking every 5 ms; the longest gap between ticks is the longest GIL stall."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StallMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.005):
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - 0.005)
            last = now


def run_size(backend: str, size: int, bulk: bool, workdir: str) -> Result:
    rng = np.random.default_rng(size)
    corpus = make_corpus(size, rng)
    count = QUERIES if backend == "edge" else SERVER_QUERIES
    queries = {k: make_queries(corpus, k, count, rng) for k in ("none", "narrow", "broad")}
    path = Path(workdir) / f"{backend}-{size}"
    # --bulk switches the store's safety valve off too, to measure the unbounded case
    tuning = EdgeTuning(force_optimize_points=sys.maxsize) if bulk else EdgeTuning()
    store: VectorStore = (
        EdgeVectorStore(path, tuning=tuning)
        if backend == "edge"
        else ServerVectorStore(":memory:", client=_memory_client())
    )
    store.ensure_collection(NAME, DIM)
    search: dict[str, SearchStats] = {}
    with StallMeter() as stalls:
        insert_s, maintains = _fill(store, corpus, 0 if bulk else EdgeTuning().optimize_min_points)
        del corpus  # RSS below is the store's, not the bench's copy of the data
        if bulk:  # brute force over everything, then one optimise of it all (a backfill)
            search |= {f"{k} (before)": _search(store, qs) for k, qs in queries.items()}
            maintains.append(_timed(store.maintain))
        search |= {k: _search(store, qs) for k, qs in queries.items()}
        if backend == "edge":  # what `newsmon search` runs: per-language searches + feedback
            search |= {f"Searcher, {k}": _search_like_newsmon(store, queries[k])
                       for k in ("none", "broad")}  # fmt: skip
            # the same without pruning: every language searched in both rounds, as real
            # multilingual vectors mostly need (these synthetic ones have no language bias)
            search["Searcher, none, every language"] = _search_like_newsmon(
                store, queries["none"], prune=False
            )
    stats = store.stats(NAME) if isinstance(store, EdgeVectorStore) else None
    result = Result(
        backend=backend,
        size=size,
        insert_per_s=size / insert_s,
        maintain_total_s=sum(maintains),
        maintain_max_s=max(maintains, default=0.0),
        longest_stall_s=stalls.longest,
        segments=stats.segments if stats else 0,
        indexed=stats.indexed if stats else 0,
        disk_mib=_du(path) / 2**20,
        rss_mib=_rss_mib(),
        search=search,
    )
    store.close()
    return result


def _memory_client() -> QdrantClient:
    warnings.filterwarnings("ignore", "Payload indexes have no effect")  # local mode has none
    return QdrantClient(":memory:")


def _fill(store: VectorStore, corpus: Corpus, maintain_every: int) -> tuple[float, list[float]]:
    """Upsert in batches, maintain() after every ``maintain_every`` points (and at the end)."""
    insert_s, maintains, since_maintain = 0.0, [], 0
    for start in range(0, len(corpus), BATCH):
        points = [corpus.point(i) for i in range(start, min(len(corpus), start + BATCH))]
        insert_s += _timed(partial(store.upsert, NAME, points))
        since_maintain += len(points)
        if maintain_every and since_maintain >= maintain_every:
            maintains.append(_timed(store.maintain))
            since_maintain = 0
    if maintain_every:
        maintains.append(_timed(store.maintain))
    return insert_s, maintains


def _search(store: VectorStore, queries: list[Query]) -> SearchStats:
    latencies, recalls = [], []
    for n, q in enumerate(queries):
        started = time.perf_counter()
        hits = store.search(NAME, q.vector, filter=q.filter, limit=10)
        if n >= WARM_UP:
            latencies.append(time.perf_counter() - started)
            if q.exact:
                recalls.append(len({h.id for h in hits} & q.exact) / len(q.exact))
    ms = np.array(latencies) * 1000
    return SearchStats(
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        recall=float(np.mean(recalls)) if recalls else float("nan"),
    )


class _GivenVector:
    """An embedder stand-in that returns the bench query's own vector."""

    dim = DIM
    model_id = "bench"
    vector: npt.NDArray[np.float32] | None = None

    def embed_queries(self, texts: object) -> npt.NDArray[np.float32]:
        assert self.vector is not None
        return self.vector[None, :]


def _search_like_newsmon(
    store: VectorStore, queries: list[Query], *, prune: bool = True
) -> SearchStats:
    """p50/p95 of ``indexer.search.Searcher.search`` (language-bias correction over the four
    languages and pseudo-relevance feedback), 10 hits; recall is not comparable here.

    The synthetic vectors have no language bias, so the feedback round's pruning (a language
    is not searched when the unfiltered search bounds its passages below the best ones) spares
    every language there; ``prune=False`` times the worst case."""
    from indexer.search import Searcher

    embedder = _GivenVector()
    searcher = Searcher(vectors=store, embedder=embedder, collection=NAME,  # type: ignore[arg-type]
                        store=None, languages=LANGUAGES, prune=prune)  # type: ignore[arg-type]  # fmt: skip
    latencies = []
    for n, q in enumerate(queries):
        embedder.vector = q.vector
        started = time.perf_counter()
        searcher.search("bench", filter=q.filter, limit=10)
        if n >= WARM_UP:
            latencies.append(time.perf_counter() - started)
    ms = np.array(latencies) * 1000
    return SearchStats(p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)),
                       recall=float("nan"))  # fmt: skip


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _du(path: Path) -> int:
    def files() -> Iterator[int]:
        for root, _, names in os.walk(path):
            for name in names:
                yield os.stat(os.path.join(root, name)).st_blocks * 512  # allocated, not apparent

    return sum(files())


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- report ----------------------------------------------------------------------------------------


def print_tables(results: list[Result]) -> None:
    print(
        f"\n{'backend':<7} {'points':>8} {'insert/s':>9} {'maintain s':>11} {'max maint s':>12} "
        f"{'longest stall s':>16} {'segments':>9} {'indexed':>8} {'disk MiB':>9} {'RSS MiB':>8}"
    )
    for r in results:
        print(
            f"{r.backend:<7} {r.size:>8,} {r.insert_per_s:>9,.0f} {r.maintain_total_s:>11.1f} "
            f"{r.maintain_max_s:>12.1f} {r.longest_stall_s:>16.2f} {r.segments:>9} "
            f"{r.indexed:>8,} {r.disk_mib:>9.0f} {r.rss_mib:>8.0f}"
        )
    width = max([16, *(len(kind) for r in results for kind in r.search)])
    header = f"{'backend':<7} {'points':>8} {'filter':<{width}} {'p50 ms':>7} {'p95 ms':>7}"
    print(f"\n{header} {'recall@10':>10}")
    for r in results:
        for kind, s in r.search.items():
            print(
                f"{r.backend:<7} {r.size:>8,} {kind:<{width}} {s.p50_ms:>7.1f} {s.p95_ms:>7.1f} "
                f"{s.recall:>10.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,300000", help="comma-separated counts")
    parser.add_argument(
        "--bulk", action="store_true", help="no maintain() while filling; search; maintain once"
    )
    parser.add_argument("--server", action="store_true", help='also qdrant-client ":memory:"')
    args = parser.parse_args()
    runs = [("edge", int(s)) for s in args.sizes.split(",")]
    if args.server:
        runs.append(("server", min(10_000, runs[0][1])))
    results = []
    with tempfile.TemporaryDirectory(prefix="newsmon-bench-") as workdir:
        for backend, size in runs:
            print(f"{backend} {size:,} points ...", flush=True)
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                run = pool.submit(run_size, backend, size, args.bulk, workdir)
                results.append(run.result())
    print_tables(results)


if __name__ == "__main__":
    main()
