"""Soak benchmark: the real service polls 1,000 local feeds for 10 minutes while they publish.

    .venv/bin/python bench/soak.py                              # 1,000 feeds, 10.5 minutes
    .venv/bin/python bench/soak.py --duration 60 --feeds 100    # a quick check
    .venv/bin/python bench/soak.py --rate 60 --json soak.json   # heavier; results as JSON too

What runs: ``make_app(config)`` and ``App.run_forever`` - the scheduler loop of ``newsmon run``,
its HTTP API included - on the embedded defaults (SQLite and Qdrant Edge in a temporary
data_dir, the bundled model, 2 extraction processes, the shipped fetch limits). Changed from the
shipped configuration: the schedule is compressed so that 10 minutes see many polls (60 s
default interval, adaptive within 20 s - 120 s, backoff up to 5 min, instead of 15 min,
2 min - 6 h and 12 h), private addresses are allowed (the outlets are on loopback), and the three
seed topics of feeds.yaml alert to a webhook (a signed JSON POST to the outlet process, which
timestamps it). The default run lasts 10.5 minutes so that the service's 10-minute jobs (vector
flush, follow-up alerts) run once before it stops.

The outlets (``bench/soak_server.py``, a separate process): ``--feeds`` RSS feeds on loopback
hosts 127.0.0.1, 127.0.0.2, ... (20 feeds a host), in de/en/ru/uk. A ``--failing`` share fails
in 13 ways: 500, flaky 503, 404, 410, 429 with Retry-After, timeout, slow body, TCP reset,
disconnect, oversized, gzip bomb, invalid XML, truncated XML. Items appear over time - a Poisson
process of ``--rate`` items a minute spread over the feeds that publish, stopping ``--quiet``
seconds before the end so that the backlog can drain - with their appearance time as pubDate.
A ``--topical`` share of them are the labelled topic fixtures (tests/fixtures/topics: a relevant
story - talks in Abu Dhabi, Donbas withdrawal, security guarantees - and a hard negative unfold
side by side, about one article per language each first), the rest
real news pages and texts of ../shared/corpus (extraction sets, RIA, ner-uk), of which
``--page-faults`` answer 404 (the feed text is used) or 503 once (retried later).

Measured: polls, articles through each stage, the errors recorded per feed (the state store's
fields that ``newsmon feeds`` shows), RSS and CPU every ``--sample`` seconds (service process,
extraction workers, outlet server, whole machine), the backlogs over time, the index worker's
busy time, and the latency from an item's appearance on its feed to the webhook POST that
reports it. Prints tables; ``--json PATH`` also writes the numbers and every sample.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import gzip  # noqa: E402
import html  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import urllib.request  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "corpus"
TOPIC_FIXTURES = ROOT / "tests" / "fixtures" / "topics"

from soak_server import (  # noqa: E402 - bench/ is the script's directory
    FAULTS,
    PUBLISHING_FAULTS,
    Feed,
    Item,
    Page,
    ServerPlan,
    feed_path,
    serve,
)

from monitor.memory import release_free_memory  # noqa: E402
from tests.support.newsfixtures import free_port  # noqa: E402

LANGS = ("de", "en", "ru", "uk")
FEEDS_PER_HOST = 20
CHANNEL = "soak-webhook"
#: the compressed schedule (see the module docstring)
SCHEDULE: dict[str, object] = {
    "default_interval": "60s",
    "min_interval": "20s",
    "max_interval": "120s",
    "jitter": 0.1,
    "max_backoff": "5m",
}
#: faults after which a poll must record an error on the feed
ALWAYS_FAILING = frozenset(FAULTS) - PUBLISHING_FAULTS
INDEX_STEP = "index a batch (leads, or whole articles)"
#: memory is judged after this: the model, the extraction workers, the first round of polls
WARM_UP = 60.0
_CLK = os.sysconf("SC_CLK_TCK")
_URL_ITEM = re.compile(r"/a/(\d+)\.html")


# -- content ----------------------------------------------------------------------------------


def topic_pages(rng: random.Random, per_story: int = 4) -> list[Page]:
    """The labelled topic fixtures as news arrives: stories unfold two at a time, each first
    with ``per_story`` articles (about one per language) in the order of their dates; the rest
    of every story's coverage follows in a second round."""
    stories: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for file in sorted(TOPIC_FIXTURES.glob("*.jsonl")):
        for line in file.read_text("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                stories[row["story"]].append(row)
    # a relevant story and a hard negative unfold side by side, each kind in a seeded order
    relevant = [s for s in sorted(stories) if any(r["topics"] for r in stories[s])]
    negative = [s for s in sorted(stories) if s not in relevant]
    rng.shuffle(relevant)
    rng.shuffle(negative)
    order = [s for pair in itertools.zip_longest(relevant, negative) for s in pair if s]
    rows: list[dict[str, Any]] = []
    for first_round in (True, False):
        batches = []
        for story in order:
            coverage = sorted(stories[story], key=lambda r: (r["published"], r["id"]))
            batch = coverage[:per_story] if first_round else coverage[per_story:]
            if batch:
                batches.append(batch)
        # two at a time (an odd count leaves the last story alone)
        none: list[dict[str, Any]] = []
        for a, b in itertools.zip_longest(batches[::2], batches[1::2], fillvalue=none):
            rows += [r for pair in itertools.zip_longest(a, b) for r in pair if r is not None]
    pages = []
    for r in rows:
        paragraphs = tuple(p.strip() for p in r["text"].split("\n\n") if p.strip())
        pages.append(Page(origin=r["id"], language=r["language"], title=r["title"],
                          summary=_trim(paragraphs[0], 300), paragraphs=paragraphs,
                          topics=tuple(r["topics"])))  # fmt: skip
    return pages


def corpus_pages() -> dict[str, list[Page]]:
    """Real pages (extraction sets) and texts (RIA, ner-uk) of ../shared/corpus, per language."""
    pages: dict[str, list[Page]] = defaultdict(list)
    for folder in sorted(CORPUS.glob("extraction_*")):
        manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
        for f in manifest["files"]:
            kind, lang, name = str(f.get("kind", "")), f.get("lang"), str(f["file"])
            if lang not in LANGS or "expected" in name:
                continue
            if not (kind.startswith("html") or name.endswith("source.html")):
                continue
            path = folder / name
            raw = path.read_bytes()
            title = _html_title(gzip.decompress(raw) if name.endswith(".gz") else raw)
            page = Page(origin=f"{folder.name}/{name}", language=lang, title=title or path.stem,
                        summary="", path=str(path))  # fmt: skip
            pages[lang].append(page)
    ria = CORPUS / "topics_ru_ria" / "ria_topics_sample.csv"
    if ria.exists():
        with ria.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                paragraphs = tuple(p.strip() for p in row["content"].split("\n") if p.strip())
                if paragraphs:
                    pages["ru"].append(Page(origin=f"ria/{row['id']}", language="ru",
                                            title=row["title"], summary=row["subtitle"],
                                            paragraphs=paragraphs))  # fmt: skip
    for path in sorted((CORPUS / "texts_uk_ner-uk").glob("*.txt")):
        lines = [ln.strip() for ln in path.read_text("utf-8").splitlines() if ln.strip()]
        if len(lines) >= 2:
            pages["uk"].append(Page(origin=f"ner-uk/{path.name}", language="uk",
                                    title=_trim(lines[0], 110), summary=_trim(lines[1], 300),
                                    paragraphs=tuple(lines[1:])))  # fmt: skip
    return dict(pages)


def _html_title(data: bytes) -> str:
    match = re.search(rb"<title[^>]*>(.*?)</title>", data[:200_000], re.S | re.I)
    if not match:
        return ""
    return _trim(" ".join(html.unescape(match[1].decode("utf-8", "replace")).split()), 150)


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


# -- the plan -----------------------------------------------------------------------------------


def make_plan(args: argparse.Namespace) -> ServerPlan:
    """Feeds, their faults, and every item with the time it appears (seeded: reproducible)."""
    rng = random.Random(args.seed)
    n_hosts = max(1, min(250, math.ceil(args.feeds / FEEDS_PER_HOST)))
    hosts = tuple(f"127.0.0.{h + 1}" for h in range(n_hosts))
    failing = sorted(rng.sample(range(args.feeds), round(args.feeds * args.failing)))
    kinds = list(FAULTS)
    fault_of = {f: kinds[i % len(kinds)] for i, f in enumerate(failing)}
    feeds = tuple(
        Feed(index=i, name=f"soak-{i:04d}", language=LANGS[i % len(LANGS)], host=i % n_hosts,
             fault=fault_of.get(i))
        for i in range(args.feeds)
    )  # fmt: skip
    publishers: dict[str, list[int]] = defaultdict(list)
    for feed in feeds:
        if feed.fault is None or feed.fault in PUBLISHING_FAULTS:
            publishers[feed.language].append(feed.index)
    anyone = [i for p in publishers.values() for i in p]

    topical = _cycle(topic_pages(rng))
    corpus = corpus_pages() if CORPUS.exists() else {}
    filler = {lang: _cycle(rng.sample(p, len(p))) for lang, p in sorted(corpus.items()) if p}
    window = max(0.0, args.duration - args.quiet)
    items: list[Item] = []
    at = rng.expovariate(args.rate / 60.0) if args.rate > 0 and anyone else math.inf
    while at < window:
        page_fault = None
        if filler and rng.random() >= args.topical:
            page = next(filler[rng.choice(list(filler))])
            if rng.random() < args.page_faults:
                page_fault = rng.choice(("404", "503-once"))
        else:
            page = next(topical)
        publisher = rng.choice(publishers.get(page.language) or anyone)
        items.append(Item(n=len(items), feed=publisher, at=at, page=page, page_fault=page_fault))
        at += rng.expovariate(args.rate / 60.0)
    return ServerPlan(hosts=hosts, feeds=feeds, items=tuple(items))


def _cycle(pages: Sequence[Page]) -> Iterator[Page]:
    """Every page once, then again (a copy under another URL: an exact duplicate)."""
    while pages:
        yield from pages


# -- configuration --------------------------------------------------------------------------------


def configured_topics() -> dict[str, Any]:
    """The seed topics of feeds.yaml, by id."""
    seed = yaml.safe_load((ROOT / "feeds.yaml").read_text("utf-8"))
    return {t["id"]: t for t in seed.get("topics") or []}


def write_config(
    tmp: Path,
    plan: ServerPlan,
    ports: list[int],
    api_port: int,
    topic_options: dict[str, Any] | None = None,
) -> Path:
    def url(f: Feed) -> str:
        return f"http://{plan.hosts[f.host]}:{ports[f.host]}{feed_path(f.index)}"

    config = {
        "data_dir": str(tmp / "data"),
        "fetch": {"allow_private_addresses": True},
        "schedule": SCHEDULE,
        "feeds": [{"name": f.name, "language": f.language, "url": url(f)} for f in plan.feeds],
        "topics": [{**t, **(topic_options or {}), "channels": [CHANNEL]}
                   for t in configured_topics().values()],
        "channels": {
            CHANNEL: {"type": "webhook", "url": f"http://127.0.0.1:{ports[0]}/hook",
                      "secret": "soak"},
        },
        "api": {"host": "127.0.0.1", "port": api_port},
    }  # fmt: skip
    path = tmp / "feeds.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), "utf-8")
    return path


# -- measuring ------------------------------------------------------------------------------------


def proc_rss_mib(pid: int | str = "self", field: str = "VmRSS") -> float:
    """Resident memory in MiB: VmRSS, or its parts RssAnon (heap) and RssFile (mapped files)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(rf"{field}:\s+(\d+)", text)
    return int(match[1]) / 1024 if match else 0.0


def proc_cpu_s(pid: int | str = "self") -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK  # utime + stime


def children(exclude: set[int]) -> list[int]:
    """This process's children (the extraction workers), except ``exclude``."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me:
            pids.append(int(entry.name))
    return pids


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


@dataclass
class Sample:
    t: float  # seconds since the service started
    rss: float  # MiB, the service process
    rss_workers: float  # MiB, its children (extraction workers)
    rss_anon: float  # MiB, the service's anonymous memory (heap: Python, numpy, native libs)
    rss_file: float  # MiB, its resident file mappings (model weights, Qdrant and SQLite files)
    traced: float  # MiB allocated through Python (tracemalloc; 0 without --tracemalloc)
    cpu: float  # CPU seconds since the start: service, workers, outlet server
    cpu_workers: float
    cpu_server: float
    machine_busy: float  # jiffies since the start
    machine_total: float
    load1: float
    published: int  # items on the feeds so far
    discovered: int  # articles in the store
    pending: int
    fetched: int  # text stored, not indexed yet
    indexed: int
    bodies_pending: int
    deliveries_pending: int
    polls: int


@dataclass
class StageTimes:
    """Wall time of the index worker's steps (each runs alone in the worker's thread)."""

    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def wrap(self, owner: Any, method: str, label: str) -> None:
        original = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.durations[label].append(time.perf_counter() - started)

        setattr(owner, method, timed)

    def busy(self) -> float:
        return sum(sum(v) for v in self.durations.values())


@dataclass
class PollStats:
    ok: int = 0
    failed: int = 0
    raised: int = 0  # poll_feed raised: the service logs it and retries in 5 min
    cancelled: int = 0  # in flight when the service stopped
    durations: list[float] = field(default_factory=list)
    per_feed: Counter[str] = field(default_factory=Counter)
    in_flight: set[str] = field(default_factory=set)


class LogCounter(logging.Handler):
    """Counts the service's warnings and errors; keeps the first errors with their traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.levels: Counter[str] = Counter()
        self.by_logger: Counter[str] = Counter()
        self.errors: list[str] = []
        self.phase = "run"  # "shutdown" once the benchmark stopped the service

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[f"{record.levelname} ({self.phase})"] += 1
        self.by_logger[f"{record.levelname} {record.name} ({self.phase})"] += 1
        if record.levelno >= logging.ERROR and len(self.errors) < 5:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" [{type(exc).__name__}: {exc}]"
            self.errors.append(f"[{self.phase}] {record.name}: {_trim(text, 400)}")


@dataclass
class Outcome:
    samples: list[Sample]
    polls: PollStats
    stages: StageTimes
    feeds: list[Any]  # FeedState
    articles: list[Any]  # Article
    alerts: list[Any]  # AlertRecord
    dropped_feeds: list[str]  # neither scheduled nor being polled, in two samples in a row
    started: float  # wall clock, = t0 of the outlets
    run_s: float
    retained: dict[str, int]  # reports the app keeps in memory
    retained_kib: float
    data_mib: dict[str, float]
    rss_trim: tuple[float, float]  # RSS before and after malloc_trim(0) at the end
    traced_growth: list[str]  # where Python-level memory grew after the warm-up (--tracemalloc)


async def soak(args: argparse.Namespace, config_path: Path, plan: ServerPlan, t0: Any,
               server_pid: int, logs: LogCounter) -> Outcome:  # fmt: skip
    """Run the service for ``args.duration`` seconds, sampling it; what it stored at the end."""
    from monitor.config import load_config
    from monitor.service import make_app
    from monitor.types import ArticleStatus

    config = load_config(config_path)
    app = make_app(config)
    polls = PollStats()
    poll_feed = app.pipeline.poll_feed

    async def counted_poll(feed: Any) -> Any:
        started = time.perf_counter()
        polls.in_flight.add(feed.name)
        try:
            report = await poll_feed(feed)
        except asyncio.CancelledError:
            polls.cancelled += 1
            raise
        except Exception:
            polls.raised += 1
            raise
        finally:
            polls.in_flight.discard(feed.name)
        polls.durations.append(time.perf_counter() - started)
        polls.per_feed[feed.name] += 1
        polls.ok += report.ok
        polls.failed += not report.ok
        return report

    setattr(app.pipeline, "poll_feed", counted_poll)  # noqa: B010 - on the instance only
    stages = StageTimes()
    stages.wrap(app.indexer, "index_batch", INDEX_STEP)
    stages.wrap(app.indexer, "index_bodies", "embed deferred bodies (a batch)")
    stages.wrap(app.alerts, "process", "match topics, plan alerts")
    stop = asyncio.Event()
    samples: list[Sample] = []
    names = {f.name for f in plan.feeds}
    unscheduled: list[set[str]] = [set()]  # feeds with neither a poll job nor a poll running
    dropped: set[str] = set()  # ... in two samples in a row: the service lost them
    times = sorted(i.at for i in plan.items)
    not_workers = {server_pid}
    warm_snapshot: list[tracemalloc.Snapshot] = []

    def sample(started: float, base: tuple[float, ...]) -> Sample:
        store = app.store
        busy, total = machine_cpu()
        elapsed = time.time() - started
        workers = children(not_workers)
        return Sample(
            t=elapsed,
            rss=proc_rss_mib(),
            rss_anon=proc_rss_mib(field="RssAnon"),
            rss_file=proc_rss_mib(field="RssFile"),
            traced=tracemalloc.get_traced_memory()[0] / 2**20,
            rss_workers=sum(proc_rss_mib(p) for p in workers),
            cpu=proc_cpu_s() - base[0],
            cpu_workers=sum(proc_cpu_s(p) for p in workers) - base[1],
            cpu_server=proc_cpu_s(server_pid) - base[2],
            machine_busy=busy - base[3],
            machine_total=total - base[4],
            load1=os.getloadavg()[0],
            published=sum(1 for at in times if at <= elapsed),
            discovered=store.count_articles(),
            pending=store.count_articles(ArticleStatus.PENDING),
            fetched=store.count_articles(ArticleStatus.FETCHED),
            indexed=store.count_articles(ArticleStatus.INDEXED),
            bodies_pending=store.count_bodies_pending(),
            deliveries_pending=store.count_pending_deliveries(),
            polls=polls.ok + polls.failed,
        )

    async def sampler(started: float) -> None:
        busy, total = machine_cpu()
        workers = children(not_workers)
        base = (proc_cpu_s(), sum(proc_cpu_s(p) for p in workers), proc_cpu_s(server_pid),
                busy, total)  # fmt: skip
        next_line = 0.0
        while not stop.is_set():
            if app.scheduler is not None:  # in the loop: polls start and end only here
                jobs = {str(j.id).removeprefix("feed:") for j in app.scheduler.get_jobs()}
                missing = names - jobs - polls.in_flight
                dropped.update(missing & unscheduled[0])
                unscheduled[0] = missing
            s = await asyncio.to_thread(sample, started, base)
            samples.append(s)
            if tracemalloc.is_tracing() and not warm_snapshot and s.t >= WARM_UP:
                warm_snapshot.append(tracemalloc.take_snapshot())
            if s.t >= next_line:
                next_line += 60.0
                print(f"[soak] {s.t:4.0f} s: polls {s.polls}, published {s.published}, "
                      f"stored {s.discovered}, indexed {s.indexed}, waiting "
                      f"{s.pending + s.fetched}, bodies deferred {s.bodies_pending}, RSS "
                      f"{s.rss:.0f} + {s.rss_workers:.0f} MiB, load {s.load1:.1f}",
                      file=sys.stderr, flush=True)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.sample)

    async def stopper() -> None:
        await asyncio.sleep(args.duration)
        logs.phase = "shutdown"
        stop.set()

    try:
        started = time.time()
        t0.value = started  # the outlets start publishing now
        helpers = [asyncio.create_task(sampler(started)), asyncio.create_task(stopper())]
        await app.run_forever(stop)
        run_s = time.time() - started
        stop.set()
        await asyncio.gather(*helpers, return_exceptions=True)
        # memory the allocator keeps after it was freed is returned by malloc_trim; what stays
        # is in use (or fragmented)
        rss_trim = (proc_rss_mib(), proc_rss_mib() if release_free_memory() else math.nan)
        growth = []
        if warm_snapshot:
            stats = tracemalloc.take_snapshot().compare_to(warm_snapshot[0], "lineno")
            growth = [str(stat) for stat in stats[:12]]
        kept = {name: getattr(app, name, []) for name in
                ("_reports", "_index_reports", "_body_reports", "_messages")}  # fmt: skip
        return Outcome(
            samples=samples,
            polls=polls,
            stages=stages,
            feeds=app.store.list_feeds(),
            articles=app.store.list_articles(),
            alerts=app.store.list_alerts(),
            dropped_feeds=sorted(dropped),
            started=started,
            run_s=run_s,
            retained={k.strip("_"): len(v) for k, v in kept.items()},
            retained_kib=sum(deep_size(v) for v in kept.values()) / 1024,
            data_mib={
                "state db + WAL": sum(p.stat().st_size for p in config.data_dir.glob("*.db*"))
                / 2**20,
                "vectors": dir_mib(config.data_dir / "vectors"),
            },
            rss_trim=rss_trim,
            traced_growth=growth,
        )
    finally:
        await app.aclose()


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and what it references (lists, tuples, dicts, slotted objects)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        return size + sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    if isinstance(obj, list | tuple | set | frozenset):
        return size + sum(deep_size(v, seen) for v in obj)
    refs = [getattr(obj, s) for s in getattr(type(obj), "__slots__", ()) if hasattr(obj, s)]
    refs += list(getattr(obj, "__dict__", {}).values())
    return size + sum(deep_size(v, seen) for v in refs)


# -- analysis -------------------------------------------------------------------------------------


def pct(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else math.nan


def thirds(samples: Sequence[Sample], key: str, start: float, end: float) -> tuple[float, ...]:
    """Means of the first and the last third of [start, end] and the growth between them per
    minute."""
    third = (end - start) / 3
    first = [s for s in samples if start <= s.t <= start + third]
    last = [s for s in samples if s.t >= end - third]
    if not first or not last:
        return math.nan, math.nan, math.nan
    a = sum(getattr(s, key) for s in first) / len(first)
    b = sum(getattr(s, key) for s in last) / len(last)
    ta = sum(s.t for s in first) / len(first)
    tb = sum(s.t for s in last) / len(last)
    return a, b, (b - a) / max(tb - ta, 1e-9) * 60


def slope(samples: Sequence[Sample], key: str) -> float:
    """Least-squares slope per minute."""
    if len(samples) < 3:
        return math.nan
    xs = [s.t for s in samples]
    ys = [float(getattr(s, key)) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return math.nan if var == 0 else cov / var * 60


def error_text(message: str | None) -> str:
    """A feed's error without its URL (``newsmon feeds`` shows ``<url>: <message>``)."""
    return re.sub(r"^https?://\S+?: ", "", message or "")


def analyse(args: argparse.Namespace, plan: ServerPlan, out: Outcome, stats: dict[str, Any],
            logs: LogCounter) -> dict[str, Any]:  # fmt: skip
    """Every number the report shows (JSON-able)."""
    duration, items, t0 = out.run_s, plan.items, out.started
    window = max(min(args.duration - args.quiet, duration), 1.0)
    published = [i for i in items if i.at <= duration]
    kind_of = {f.name: f.fault or "ok" for f in plan.feeds}
    by_item: dict[int, Any] = {}
    for a in out.articles:
        if match := _URL_ITEM.search(a.url or ""):
            by_item[int(match[1])] = a
    status = Counter(str(a.status) for a in out.articles)
    r: dict[str, Any] = {
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "feeds": len(plan.feeds),
        "hosts": len(plan.hosts),
        "failing_feeds": sum(1 for f in plan.feeds if f.fault),
        "duration_s": duration,
        "published": len(published),
        "published_per_min": len(published) / window * 60,
        "published_with_page_fault": sum(1 for i in published if i.page_fault),
        "machine_cores": os.cpu_count() or 1,
        "mean_load": sum(s.load1 for s in out.samples) / max(len(out.samples), 1),
    }

    # -- polls and articles
    polls = out.polls
    requests: dict[str, Counter[int]] = defaultdict(Counter)
    for kind, code, n in stats["requests"]:
        requests[kind][int(code)] += int(n)
    healthy = [f for f in out.feeds if kind_of.get(f.name) == "ok"]
    r["polls"] = {
        "done": polls.ok + polls.failed, "ok": polls.ok, "failed": polls.failed,
        "raised": polls.raised, "cancelled_at_stop": polls.cancelled,
        "per_min": (polls.ok + polls.failed) / duration * 60,
        "p50_ms": pct(polls.durations, 0.5) * 1000, "p95_ms": pct(polls.durations, 0.95) * 1000,
        "max_ms": pct(polls.durations, 1.0) * 1000,
        "per_healthy_feed": sum(polls.per_feed[f.name] for f in healthy) / max(len(healthy), 1),
        "healthy_interval_median_s": pct([f.interval_seconds for f in healthy
                                          if f.interval_seconds], 0.5),
        "answered": sum(sum(c.values()) for c in requests.values()),
        "not_modified": sum(c.get(304, 0) for c in requests.values()),
    }  # fmt: skip
    r["articles"] = {
        "stored": len(out.articles),
        "not_polled_yet": len(published) - len(by_item),
        "by_status": dict(status),
        "text_stored": sum(1 for a in out.articles if a.fetched_at),
        "from_feed_text": sum(1 for a in out.articles if str(a.text_source or "") == "feed"),
        "near_duplicates": sum(1 for a in out.articles if a.near_duplicate_of),
        "stories": len({a.story_id for a in out.articles if a.story_id}),
        "bodies_deferred_at_end": sum(1 for a in out.articles if a.body_pending),
    }

    # -- errors per fault kind
    states: dict[str, list[Any]] = defaultdict(list)
    for f in out.feeds:
        states[kind_of.get(f.name, "?")].append(f)
    rows = []
    for kind in ["ok", *FAULTS]:
        group = states.get(kind, [])
        if not group:
            continue
        messages = Counter(error_text(f.last_error) for f in group if f.last_error)
        rows.append({
            "fault": kind,
            "feeds": len(group),
            "polls": sum(polls.per_feed[f.name] for f in group),
            "answers": dict(sorted(requests.get(kind, Counter()).items())),
            "errors_recorded": sum(f.error_count for f in group),
            "feeds_with_errors": sum(1 for f in group if f.error_count > 0),
            "malformed": sum(1 for f in group if f.malformed_reason),
            "last_error": messages.most_common(1)[0][0] if messages else "",
        })  # fmt: skip
    r["errors"] = rows
    never = [f.name for f in out.feeds if f.last_polled_at is None]
    r["checks"] = {
        "feeds_dropped": out.dropped_feeds,
        "feeds_never_polled": dict(Counter(kind_of.get(n, "?") for n in never)),
        "failing_polled_without_error": [
            f.name for f in out.feeds
            if kind_of.get(f.name) in ALWAYS_FAILING and f.last_polled_at and f.error_count == 0
        ],
        "healthy_feed_errors": sum(f.error_count for f in healthy),
        "log": dict(logs.levels),
        "log_by_logger": dict(logs.by_logger),
        "errors_logged": logs.errors,
    }  # fmt: skip

    # -- latency: appearance -> stored stages, and -> the first webhook POST naming the item
    first_post: dict[int, float] = {}
    posts: Counter[str] = Counter()
    false_alarms: list[dict[str, Any]] = []  # messages none of whose items carry their topic
    for received, body in stats["hooks"]:
        payload = json.loads(body)
        if payload.get("type") != "alert":
            continue
        topic = payload["topic"]["id"]
        posts[topic] += 1
        reported = []
        for art in payload.get("articles", []):
            if match := _URL_ITEM.search(art.get("url", "")):
                n = int(match[1])
                first_post[n] = min(first_post.get(n, math.inf), received)
                reported.append(n)
        if reported and not any(topic in items[n].page.topics for n in reported):
            false_alarms.append({"topic": topic,
                                 "titles": [items[n].page.title for n in reported]})  # fmt: skip

    def since_appearance(n: int, when: Any) -> float:
        return float(when.timestamp() if hasattr(when, "timestamp") else when) - (t0 + items[n].at)

    # each alerted item's path: appearance -> discovered -> text stored -> indexed -> matched
    # -> webhook POST received (the time of each step since the previous one)
    steps = ("discovered_at", "fetched_at", "indexed_at", "matched_at")
    names = ("poll found it", "text stored", "indexed (lead)", "matched", "POST received")
    alert_lat = {n: since_appearance(n, at) for n, at in first_post.items()}
    breakdown: dict[str, list[float]] = {name: [] for name in names}
    for n, total in alert_lat.items():
        article = by_item.get(n)
        marks = [getattr(article, s, None) for s in steps] if article else []
        if not marks or any(m is None for m in marks):
            continue
        points = [0.0, *(since_appearance(n, m) for m in marks), total]
        for name, a, b in zip(names, points, points[1:], strict=False):
            breakdown[name].append(b - a)
    indexed_lat = [since_appearance(n, a.indexed_at) for n, a in by_item.items() if a.indexed_at]
    topics = set(configured_topics())
    relevant = [i for i in published if set(i.page.topics) & topics]
    r["alerts"] = {
        "decided": len(out.alerts),
        "posts": sum(posts.values()),
        "posts_per_topic": dict(posts),
        "deliveries_pending_at_end": out.samples[-1].deliveries_pending if out.samples else 0,
        "items_alerted": len(alert_lat),
        "items_alerted_labelled_relevant": sum(1 for i in relevant if i.n in alert_lat),
        "items_labelled_relevant": len(relevant),
        "false_alarms": false_alarms,
    }
    r["latency_s"] = {
        "to_webhook": sorted(alert_lat.values()),
        "alerted_breakdown": {k: sorted(v) for k, v in breakdown.items()},
        "to_indexed_all": sorted(indexed_lat),
    }

    # -- index worker, memory, CPU, backlog
    busy = out.stages.busy()
    # the worker indexes batches: count articles, not calls
    n_indexed = out.samples[-1].indexed if out.samples else 0
    r["index_worker"] = {
        "steps": {k: {"n": len(v), "mean_s": sum(v) / len(v), "p95_s": pct(v, 0.95),
                      "total_s": sum(v)} for k, v in out.stages.durations.items() if v},
        "busy_s": busy,
        "busy_share": busy / duration,
        "s_per_article": busy / max(n_indexed, 1),
        "capacity_per_min": n_indexed / busy * 60 if busy else math.nan,
    }  # fmt: skip
    last = out.samples[-1] if out.samples else None
    warm = min(WARM_UP, duration / 4)
    steady = [s for s in out.samples if s.t >= warm]
    rss = thirds(out.samples, "rss", 0.0, duration)
    rss_steady = thirds(out.samples, "rss", warm, duration)
    workers = thirds(out.samples, "rss_workers", warm, duration)
    traced = thirds(out.samples, "traced", warm, duration)
    anon = thirds(out.samples, "rss_anon", warm, duration)
    mapped = thirds(out.samples, "rss_file", warm, duration)
    r["memory"] = {
        "warm_up_s": warm,
        "rss_start_mib": out.samples[0].rss if out.samples else math.nan,
        "rss_peak_mib": max((s.rss for s in out.samples), default=math.nan),
        "rss_first_third_mib": rss[0], "rss_last_third_mib": rss[1],
        "rss_growth_mib_per_min": rss[2],
        "rss_steady_first_third_mib": rss_steady[0], "rss_steady_last_third_mib": rss_steady[1],
        "rss_steady_growth_mib_per_min": rss_steady[2],
        "rss_steady_slope_mib_per_min": slope(steady, "rss"),
        "rss_second_half_slope_mib_per_min": slope(
            [s for s in out.samples if s.t >= duration / 2], "rss"
        ),
        "anon_first_third_mib": anon[0], "anon_last_third_mib": anon[1],
        "anon_growth_mib_per_min": anon[2],
        "file_first_third_mib": mapped[0], "file_last_third_mib": mapped[1],
        "file_growth_mib_per_min": mapped[2],
        "workers_first_third_mib": workers[0], "workers_last_third_mib": workers[1],
        "workers_growth_mib_per_min": workers[2],
        "reports_kept": out.retained, "reports_kept_kib": out.retained_kib,
        "rss_before_trim_mib": out.rss_trim[0], "rss_after_trim_mib": out.rss_trim[1],
        "traced_first_third_mib": traced[0], "traced_last_third_mib": traced[1],
        "traced_growth_mib_per_min": traced[2], "traced_growth_top": out.traced_growth,
        "data_mib": out.data_mib,
    }  # fmt: skip
    cpu = {
        "service": last.cpu / duration * 100 if last else math.nan,
        "workers": last.cpu_workers / duration * 100 if last else math.nan,
        "server": last.cpu_server / duration * 100 if last else math.nan,
        "machine": last.machine_busy / max(last.machine_total, 1) * 100 if last else math.nan,
    }
    ours = cpu["service"] + cpu["workers"] + cpu["server"]
    cpu["others"] = max(0.0, cpu["machine"] * r["machine_cores"] - ours)
    r["cpu_percent_of_one_core"] = cpu
    waiting = [s.pending + s.fetched for s in out.samples]
    end = waiting[-1] if waiting else 0
    r["backlog"] = {
        "waiting_max": max(waiting, default=0),
        "waiting_at_end": end,
        "waiting_mean_first_third": thirds(out.samples, "pending", 0.0, duration)[0]
        + thirds(out.samples, "fetched", 0.0, duration)[0],
        "waiting_mean_last_third": thirds(out.samples, "pending", 0.0, duration)[1]
        + thirds(out.samples, "fetched", 0.0, duration)[1],
        "bodies_deferred_at_end": last.bodies_pending if last else 0,
        "bounded": end <= max(5, 0.2 * max(waiting, default=0)),
    }
    r["samples"] = [asdict(s) for s in out.samples]
    return r


# -- the report -----------------------------------------------------------------------------------


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [f"\n**{title}**\n", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def secs(values: Sequence[float]) -> list[str]:
    return ["-" if not values else f"{pct(values, q):.1f} s" for q in (0.5, 0.95, 1.0)]


def render(r: dict[str, Any]) -> str:
    a, p, al, mem = r["articles"], r["polls"], r["alerts"], r["memory"]
    st, args = a["by_status"], r["args"]
    parts = [table("Setup", ["setting", "value"], [
        ("feeds", f"{r['feeds']} on {r['hosts']} loopback hosts; {r['failing_feeds']} failing "
                  f"({args['failing']:.0%}) in {len(FAULTS)} ways"),
        ("service", "make_app + run_forever (as `newsmon run`): SQLite, Qdrant Edge, bundled "
                    "model, 2 extraction processes, HTTP API"),
        ("schedule (compressed)", ", ".join(f"{k} {v}" for k, v in SCHEDULE.items())),
        ("run", f"{r['duration_s']:.0f} s; items appear during the first "
                f"{args['duration'] - args['quiet']:.0f} s"),
        ("items published", f"{r['published']} ({r['published_per_min']:.1f}/min; "
                            f"{al['items_labelled_relevant']} labelled relevant to a topic, "
                            f"{r['published_with_page_fault']} with a faulty page)"),
        ("machine", f"{r['machine_cores']} cores, mean load average {r['mean_load']:.1f}"),
    ])]  # fmt: skip

    parts.append(table("Polls and articles", ["metric", "value"], [
        ("polls done by the service", f"{p['done']} ({p['ok']} ok, {p['failed']} failed; "
                                      f"{p['per_min']:.0f}/min); {p['raised']} raised"),
        ("feed requests answered by the outlets", f"{p['answered']} "
                                                  f"({p['not_modified']} x 304 Not Modified)"),
        ("poll duration p50 / p95 / max", f"{p['p50_ms']:.0f} / {p['p95_ms']:.0f} / "
                                          f"{p['max_ms']:.0f} ms"),
        ("polls per healthy feed", f"{p['per_healthy_feed']:.1f} (interval reached: median "
                                   f"{p['healthy_interval_median_s']:.0f} s)"),
        ("articles stored", f"{a['stored']} of {r['published']} published "
                            f"({a['not_polled_yet']} not polled yet at the end)"),
        ("text stored", f"{a['text_stored']} ({a['from_feed_text']} from the feed's text)"),
        ("indexed", f"{st.get('indexed', 0)} ({a['near_duplicates']} near-duplicates, "
                    f"{a['stories']} stories; {a['bodies_deferred_at_end']} bodies still "
                    "deferred)"),
        ("left at the end", f"{st.get('pending', 0)} pending, {st.get('fetched', 0)} waiting "
                            f"for the index, {st.get('failed', 0)} failed, "
                            f"{st.get('duplicate', 0)} duplicates"),
        ("alerts", f"{al['decided']} decided, {al['posts']} webhook POSTs received ("
                   + (", ".join(f"{k} {v}" for k, v in sorted(al["posts_per_topic"].items()))
                      or "none")
                   + f"), {al['deliveries_pending_at_end']} deliveries pending"),
    ]))  # fmt: skip

    parts.append(table(
        "Errors recorded per feed (state store, the fields `newsmon feeds` shows)",
        ["fault", "feeds", "polls", "answers (status: n; 0 = none)", "errors recorded",
         "feeds with errors", "malformed", "last_error (most common)"],
        [(e["fault"], e["feeds"], e["polls"],
          ", ".join(f"{k}: {v}" for k, v in e["answers"].items()) or "-",
          e["errors_recorded"], f"{e['feeds_with_errors']}/{e['feeds']}", e["malformed"],
          _trim(e["last_error"], 72) or "-") for e in r["errors"]],
    ))  # fmt: skip

    lat = r["latency_s"]
    rows = [("webhook POST received (alerted items)", len(lat["to_webhook"]),
             *secs(lat["to_webhook"]))]  # fmt: skip
    rows += [(f"- step: {k}", len(v), *secs(v))
             for k, v in lat["alerted_breakdown"].items()]  # fmt: skip
    rows.append(("indexed (every article)", len(lat["to_indexed_all"]),
                 *secs(lat["to_indexed_all"])))  # fmt: skip
    parts.append(table("Latency from an item's appearance on its feed",
                       ["to", "n", "p50", "p95", "max"], rows))  # fmt: skip
    parts.append(
        f"\nAlerted items: {al['items_alerted']}, {al['items_alerted_labelled_relevant']} of them "
        f"labelled relevant (of {al['items_labelled_relevant']} labelled relevant items "
        "published). One alert per (topic, story): later coverage of an alerted story waits "
        "for a follow-up (at least 6 h later) or the digest."
    )
    alarms = [f"\n- {f['topic']}: {'; '.join(_trim(t, 80) for t in f['titles'])}"
              for f in al["false_alarms"]]  # fmt: skip
    parts.append(
        f"\nFalse alarms (messages none of whose items is labelled with their topic; the items "
        f"of the real corpus carry no labels): {len(al['false_alarms'])} of {al['posts']}"
        + "".join(alarms)
    )

    iw = r["index_worker"]
    rows = [(k, v["n"], f"{v['mean_s']:.2f} s", f"{v['p95_s']:.2f} s", f"{v['total_s']:.0f} s")
            for k, v in iw["steps"].items()]  # fmt: skip
    rows.append(("busy", "", "", "", f"{iw['busy_s']:.0f} s = {iw['busy_share']:.0%} of the run"))
    parts.append(table("Index worker (one thread: embedding, stories, topic matching)",
                       ["step", "n", "mean", "p95", "total"], rows))  # fmt: skip
    parts.append(
        f"\nAt this mix the index worker spends {iw['s_per_article']:.2f} s per article "
        f"(leads first while behind, bodies later): about {iw['capacity_per_min']:.0f} "
        f"articles/min with the CPU it got here, for {r['published_per_min']:.1f}/min published."
    )

    samples = r["samples"]
    step = max(1, round(len(samples) / 12))
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    rows, prev = [], None
    for s in picked:
        d_t = s["t"] - prev["t"] if prev else s["t"]
        d_cpu = s["cpu"] - prev["cpu"] if prev else s["cpu"]
        d_busy = s["machine_busy"] - (prev["machine_busy"] if prev else 0)
        d_total = s["machine_total"] - (prev["machine_total"] if prev else 0)
        rows.append((f"{s['t']:.0f}", f"{s['rss']:.0f}", f"{s['rss_workers']:.0f}", s["polls"],
                     s["published"], s["published"] - s["discovered"],
                     s["pending"] + s["fetched"], s["bodies_pending"],
                     f"{d_cpu / max(d_t, 1e-9):.0%}", f"{d_busy / max(d_total, 1):.0%}",
                     f"{s['load1']:.1f}"))  # fmt: skip
        prev = s
    parts.append(table(
        f"Over time (a sample every {step * args['sample']:g} s; CPU since the previous row)",
        ["t (s)", "RSS MiB", "workers MiB", "polls", "published", "not polled yet",
         "waiting (pending + to index)", "bodies deferred", "service CPU", "machine busy",
         "load"],
        rows,
    ))  # fmt: skip

    cpu, bl, ck = r["cpu_percent_of_one_core"], r["backlog"], r["checks"]
    parts.append(table("Memory, CPU, backlog", ["metric", "value"], [
        ("service RSS at the start / peak", f"{mem['rss_start_mib']:.0f} / "
         f"{mem['rss_peak_mib']:.0f} MiB"),
        ("service RSS, mean of the first -> last third of the run",
         f"{mem['rss_first_third_mib']:.0f} -> {mem['rss_last_third_mib']:.0f} MiB "
         f"({mem['rss_growth_mib_per_min']:+.2f} MiB/min; the first third holds the warm-up)"),
        (f"service RSS after the warm-up (first {mem['warm_up_s']:.0f} s), first -> last third",
         f"{mem['rss_steady_first_third_mib']:.0f} -> {mem['rss_steady_last_third_mib']:.0f} MiB "
         f"({mem['rss_steady_growth_mib_per_min']:+.2f} MiB/min); least-squares slope "
         f"{mem['rss_steady_slope_mib_per_min']:+.2f} MiB/min, over the second half "
         f"{mem['rss_second_half_slope_mib_per_min']:+.2f} MiB/min"),
        ("- of which anonymous (heap) / mapped files, first -> last third",
         f"{mem['anon_first_third_mib']:.0f} -> {mem['anon_last_third_mib']:.0f} MiB "
         f"({mem['anon_growth_mib_per_min']:+.2f} MiB/min) / "
         f"{mem['file_first_third_mib']:.0f} -> {mem['file_last_third_mib']:.0f} MiB "
         f"({mem['file_growth_mib_per_min']:+.2f} MiB/min)"),
        ("extraction workers RSS after the warm-up, first -> last third",
         f"{mem['workers_first_third_mib']:.0f} -> {mem['workers_last_third_mib']:.0f} MiB "
         f"({mem['workers_growth_mib_per_min']:+.2f} MiB/min)"),
        ("service RSS at the end, before / after malloc_trim(0)",
         f"{mem['rss_before_trim_mib']:.0f} / {mem['rss_after_trim_mib']:.0f} MiB"),
        *([("Python allocations (tracemalloc) after the warm-up, first -> last third",
            f"{mem['traced_first_third_mib']:.0f} -> {mem['traced_last_third_mib']:.0f} MiB "
            f"({mem['traced_growth_mib_per_min']:+.2f} MiB/min)")]
          if mem["traced_growth_top"] else []),
        ("reports the app keeps in memory", ", ".join(f"{k} {v}" for k, v in
         mem["reports_kept"].items()) + f" ({mem['reports_kept_kib']:.0f} KiB)"),
        ("data on disk", ", ".join(f"{k} {v:.1f} MiB" for k, v in mem["data_mib"].items())),
        ("CPU, % of one core", f"service {cpu['service']:.0f}%, extraction workers "
         f"{cpu['workers']:.0f}%, outlet server {cpu['server']:.0f}%, everything else on the "
         f"machine ~{cpu['others']:.0f}% ({cpu['machine']:.0f}% of {r['machine_cores']} "
         "cores busy)"),
        ("articles waiting (pending + to index): mean first -> last third, max, at the end",
         f"{bl['waiting_mean_first_third']:.1f} -> {bl['waiting_mean_last_third']:.1f}, "
         f"{bl['waiting_max']}, {bl['waiting_at_end']} ({bl['bodies_deferred_at_end']} bodies "
         "deferred)"),
        ("backlog bounded", "yes" if bl["bounded"] else "NO: it grows"),
    ]))  # fmt: skip

    never = ck["feeds_never_polled"]
    parts.append(table("Health", ["check", "value"], [
        ("feeds neither scheduled nor being polled (two samples in a row)",
         len(ck["feeds_dropped"])),
        ("feeds with no poll recorded (first poll in flight at the end)",
         f"{sum(never.values())}" + (f" ({', '.join(f'{k} {v}' for k, v in never.items())})"
                                     if never else "")),
        ("always-failing feeds polled with no error recorded",
         len(ck["failing_polled_without_error"])),
        ("errors recorded on healthy feeds", ck["healthy_feed_errors"]),
        ("polls that raised / cancelled by the stop", f"{p['raised']} / {p['cancelled_at_stop']}"),
        ("warnings and errors logged", ", ".join(f"{k} {v}" for k, v in
                                                 sorted(ck["log"].items())) or "none"),
    ]))  # fmt: skip
    if mem["traced_growth_top"]:
        parts.append("\nWhere Python allocations grew after the warm-up (tracemalloc):\n\n"
                     + "\n".join(f"* {line}" for line in mem["traced_growth_top"]))  # fmt: skip
    if ck["errors_logged"]:
        parts.append(
            "\nFirst errors logged:\n\n" + "\n".join(f"* {e}" for e in ck["errors_logged"])
        )
    return "\n".join(parts)


# -- main -----------------------------------------------------------------------------------------


def _topic_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, the value read as YAML: -0.173 a number, false a boolean)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. compete=false), got {text!r}")
    return key.strip(), yaml.safe_load(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--duration",
        type=float,
        default=630,
        help="seconds the service runs (10.5 min: its 10-minute jobs run once)",
    )
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--failing", type=float, default=0.2, help="share of failing feeds")
    ap.add_argument("--rate", type=float, default=24, help="items published a minute, in all")
    ap.add_argument(
        "--quiet",
        type=float,
        default=60,
        help="seconds at the end without new items (the backlog drains)",
    )
    ap.add_argument(
        "--topical", type=float, default=0.4, help="share of items from the labelled topic fixtures"
    )
    ap.add_argument(
        "--page-faults",
        type=float,
        default=0.05,
        help="share of the other items whose page 404s or 503s once",
    )
    ap.add_argument("--sample", type=float, default=10, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results (and samples) here")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and service.log")
    ap.add_argument(
        "--topic-option",
        action="append",
        default=[],
        type=_topic_option,
        metavar="KEY=VALUE",
        help="set a key of every topic (a YAML value), e.g. threshold=-0.173 or compete=false: "
        "to measure another matcher on the same service run",
    )
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace Python allocations: where memory grew after the warm-up (slower)",
    )
    ap.add_argument(
        "--no-memory-trim",
        action="store_true",
        help="the service without its periodic malloc_trim (monitor.memory): the RSS before it",
    )
    args = ap.parse_args()
    args.quiet = min(args.quiet, args.duration / 3)
    if args.no_memory_trim:
        import monitor.service

        monitor.service.trim_available = lambda: False  # type: ignore[assignment]

    plan = make_plan(args)
    tmp = Path(tempfile.mkdtemp(prefix="newsmon-soak-"))
    ctx = multiprocessing.get_context("spawn")
    t0 = ctx.Value("d", 0.0)
    ready: Any = ctx.Queue()
    server = ctx.Process(target=serve, args=(plan, t0, ready), daemon=True)
    server.start()
    logs = LogCounter()
    try:
        ports = ready.get(timeout=60)
        config = write_config(tmp, plan, ports, free_port(), dict(args.topic_option))
        _log_to(tmp / "service.log", logs)
        print(f"[soak] {len(plan.feeds)} feeds, {len(plan.items)} items to publish, "
              f"{args.duration:.0f} s; data in {tmp}", file=sys.stderr, flush=True)  # fmt: skip
        assert server.pid is not None
        if args.tracemalloc:
            tracemalloc.start()
        outcome = asyncio.run(soak(args, config, plan, t0, server.pid, logs))
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/_stats", timeout=60) as resp:
            stats = json.load(resp)
    finally:
        server.terminate()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results = analyse(args, plan, outcome, stats, logs)
    print(render(results))
    if args.keep:
        print(f"\nThe data dir and service.log are kept in {tmp}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), "utf-8")


def _log_to(path: Path, counter: LogCounter) -> None:
    """The service logs as `newsmon run` does (INFO), to a file; warnings are also counted."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.addHandler(counter)
    for noisy in ("httpx", "httpcore", "apscheduler", "trafilatura", "htmldate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
