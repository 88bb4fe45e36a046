"""Benchmark of the page stage on the gold sets in ../shared/corpus.

    .venv/bin/python bench/extract.py            # extract_page + language id, one process
    .venv/bin/python bench/extract.py --modes    # + raw trafilatura default vs fast=True
    .venv/bin/python bench/extract.py --pool 2   # + ProcessPoolPageProcessor throughput

Per set: pages, pages that raised ExtractionError, precision/recall/F1 (as in
tests/test_extraction_corpus.py), pages/s in this single process after a warm-up, and language
id ms/article on the extracted texts; then the process's RSS, which is what one pool worker
holds. Writes nothing (no bytecode either).
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep the repository untouched

import argparse  # noqa: E402
import asyncio  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trafilatura  # noqa: E402
from trafilatura.settings import set_date_params  # noqa: E402

from monitor.extract import extract_page  # noqa: E402
from monitor.language import get_identifier  # noqa: E402
from monitor.pages import ProcessPoolPageProcessor  # noqa: E402
from tests.test_extraction_corpus import (  # noqa: E402
    LOADERS,
    GoldPage,
    SetScore,
    extract_texts,
    score_set,
)

CORPUS = ROOT.parent / "shared" / "corpus"
_WARM_UP_HTML = (
    "<html lang='en'><head><title>Talks resume</title>"
    "<meta property='article:published_time' content='2024-05-06T09:10:00Z'></head><body>"
    "<nav><a href='/'>Home</a> <a href='/world'>World</a></nav><article><h1>Talks resume</h1>"
    + "<p>Negotiators met again on Monday to discuss a ceasefire and a prisoner exchange.</p>" * 8
    + "</article><footer>Contact</footer></body></html>"
)


def rss_mb(pid: int | str = "self") -> float:
    """Current resident set size (Linux /proc), else this process's peak from getrusage."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_sets() -> dict[str, list[GoldPage]]:
    sets = {}
    for name, (folder, loader) in LOADERS.items():
        path = CORPUS / folder
        if path.exists():
            sets[name] = loader(path)
        else:
            print(f"skipping {name}: {path} not found")
    return sets


def language_ms(texts: list[str | None]) -> float:
    usable = [t for t in texts if t]
    identifier = get_identifier()
    started = time.perf_counter()
    for text in usable:
        identifier.identify(text)
    return 1000 * (time.perf_counter() - started) / max(1, len(usable))


def run_extract_page(sets: dict[str, list[GoldPage]]) -> None:
    header = f"{'set':<12} {'pages':>5} {'fail':>4} {'P':>6} {'R':>6} {'F1':>6} {'pages/s':>8}"
    print(f"{header} {'lang ms':>8}")
    for name, pages in sets.items():
        texts, seconds = extract_texts(pages)
        score = score_set(name, pages, texts, seconds)
        print(f"{_row(score)} {language_ms(texts):>8.2f}")


def _row(s: SetScore) -> str:
    return (
        f"{s.name:<12} {s.pages:>5} {s.failures:>4} {s.precision:>6.3f} {s.recall:>6.3f} "
        f"{s.f1:>6.3f} {s.pages_per_second:>8.1f}"
    )


def _raw_extractor(fast: bool) -> Callable[[GoldPage], str | None]:
    def extract(page: GoldPage) -> str | None:
        document = trafilatura.bare_extraction(
            page.html,
            url=page.url,
            with_metadata=True,
            include_comments=False,
            fast=fast,
            date_extraction_params=set_date_params(False),  # as monitor.extract does
        )
        return getattr(document, "text", None) or None

    return extract


def run_modes(sets: dict[str, list[GoldPage]]) -> None:
    print("\nraw trafilatura.bare_extraction (metadata, no comments, no extensive date search):")
    for label, fast in (("default", False), ("fast", True)):
        extract = _raw_extractor(fast)
        for name, pages in sets.items():
            started = time.perf_counter()
            texts = [extract(page) for page in pages]
            score = score_set(name, pages, texts, time.perf_counter() - started)
            print(f"{label:<8} {_row(score)}")


async def _pool_throughput(pages: list[GoldPage], processes: int) -> tuple[float, list[float]]:
    """Pages/s of a warmed pool over ``pages``, and each worker's RSS afterwards (MB)."""
    processor = ProcessPoolPageProcessor(processes, min_chars=300)
    try:
        warm = [
            processor.process(p.html, p.url, "", p.lang or "en") for p in pages[: 2 * processes]
        ]
        await asyncio.gather(*warm)  # spawn and warm every worker first
        started = time.perf_counter()
        jobs = [processor.process(p.html, p.url, "", p.lang or "en") for p in pages]
        await asyncio.gather(*jobs)
        rate = len(pages) / (time.perf_counter() - started)
        # A benchmark may peek at the executor's private process table; the service never does.
        pids = list(processor._current_pool()._processes)
        return rate, [rss_mb(pid) for pid in pids]
    finally:
        processor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", action="store_true", help="compare trafilatura default/fast")
    parser.add_argument("--pool", type=int, default=0, help="also time a pool of N processes")
    args = parser.parse_args()

    sets = load_sets()
    if not sets:
        sys.exit(f"no gold sets under {CORPUS}")
    base = rss_mb()
    get_identifier().warm_up()
    with_lingua = rss_mb()
    # Warm-up on a page outside the gold sets: trafilatura and htmldate load lazily, and
    # their caches would flatter a second pass over the same pages.
    extract_page(_WARM_UP_HTML, "https://warm-up.invalid/news/1")
    run_extract_page(sets)
    print(
        f"\nRSS: {base:.0f} MB after imports, +{with_lingua - base:.0f} MB language models, "
        f"{rss_mb():.0f} MB after extraction (this process also holds the gold sets)"
    )
    if args.modes:
        run_modes(sets)
    if args.pool:
        every = [page for pages in sets.values() for page in pages]
        rate, worker_rss = asyncio.run(_pool_throughput(every, args.pool))
        sizes = ", ".join(f"{mb:.0f}" for mb in worker_rss)
        print(
            f"\npool of {args.pool}: {rate:.1f} pages/s (extract + language id, {len(every)} pages)"
        )
        print(f"worker RSS after the run: {sizes} MB")


if __name__ == "__main__":
    main()
