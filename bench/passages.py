"""Benchmark of passage splitting with the bundled model's tokenizer on real news pages.

    .venv/bin/python bench/passages.py

Texts: the 169 pages of ../shared/corpus/extraction_* (those bench/ingest.py serves), extracted
by newsmon's own extractor. Times ``split_passages`` as the indexer calls it (each distinct word
tokenised once, the passages' sums checked against their real counts) and its fallback for
tokenizers that do not count additively (every candidate text tokenised whole, as the splitter
did before - which took 43 ms an article here, a little less than the fallback, which counts
each sentence once more), and checks that both give the same passages. Writes nothing.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep the repository untouched

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import CORPUS, corpus_pages  # noqa: E402
from indexer.embed import BundledEmbedder  # noqa: E402
from indexer.passages import _split, _Tokens, split_passages  # noqa: E402
from indexer.types import Passage  # noqa: E402
from monitor.errors import NewsmonError  # noqa: E402
from monitor.extract import extract_page  # noqa: E402

Splitter = Callable[[str, str, Callable[[str], int]], list[Passage]]


def texts() -> list[tuple[str, str]]:
    found = []
    for n, html in enumerate(corpus_pages()):
        try:
            page = extract_page(html, f"https://example.org/{n}")
        except NewsmonError:
            continue
        if page.text:
            found.append((page.title or "", page.text))
    return found


def summed(title: str, text: str, count: Callable[[str], int]) -> list[Passage]:
    return split_passages(title, text, count_tokens=count)


def whole(title: str, text: str, count: Callable[[str], int]) -> list[Passage]:
    return [p for p, _ in _split(title, text, _Tokens(count, exact=True), 256, 32)]


def measure(
    split: Splitter, articles: list[tuple[str, str]], count: Callable[[str], int]
) -> tuple[float, float, list[list[Passage]]]:
    calls = 0

    def counting(text: str) -> int:
        nonlocal calls
        calls += 1
        return count(text)

    started = time.perf_counter()
    result = [split(title, text, counting) for title, text in articles]
    elapsed = time.perf_counter() - started
    return elapsed / len(articles) * 1000, calls / len(articles), result


def main() -> None:
    if not CORPUS.exists():
        sys.exit(f"the corpus is not at {CORPUS}")
    articles = texts()
    embedder = BundledEmbedder()
    tokens = sum(embedder.count_tokens(text) for _, text in articles) / len(articles)
    print(f"{len(articles)} articles, {tokens:.0f} tokens each on average")
    print("| counting | ms/article | tokenizer calls/article | passages/article |")
    print("|---|---|---|---|")
    results = []
    for name, split in (("every candidate whole (fallback)", whole), ("summed words", summed)):
        ms, calls, passages = measure(split, articles, embedder.count_tokens)
        per_article = sum(map(len, passages)) / len(passages)
        print(f"| {name} | {ms:.1f} | {calls:.0f} | {per_article:.1f} |")
        results.append(passages)
    print("identical passages:", results[0] == results[1])


if __name__ == "__main__":
    main()
