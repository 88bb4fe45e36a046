"""Why the embedding engine runs on one thread: the torch engine's rate by calling thread.

    .venv/bin/python bench/engine_thread.py               # 96 passages, 3 rounds each (~2 min)
    .venv/bin/python bench/engine_thread.py --rounds 5

The same engine and passages (real uk/ru news cut by the indexer, as ``bench/embed.py``), in
alternating rounds:

* ``engine thread``: as newsmon calls it - every batch on the thread that loaded the engine
  (``indexer.engine_thread``);
* ``second thread``: as the service called it before 2026-11-30 - batches run on another
  thread, which gets an OpenMP team of its own (``on_engine_thread`` bypassed for that row).

Each round runs in a fresh process (libgomp counts OpenMP threads process-wide: after one round
from a second thread, the engine thread's rounds slow down too). Per round: tokens/s, and the
process's voluntary context switches and minor page faults while it embeds (with more OpenMP
threads than cores, libgomp's idle threads sleep at every barrier instead of spinning). Needs
torch and ../shared/corpus. Writes nothing.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep the repository untouched

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import embed as embed_bench  # noqa: E402

from indexer import e5_torch  # noqa: E402
from indexer.embed import BundledEmbedder  # noqa: E402
from indexer.engine_thread import on_engine_thread  # noqa: E402

ROWS = ("engine thread", "second thread")


@dataclass(frozen=True)
class Round:
    tokens_per_s: float
    context_switches: int
    page_faults: int


def _direct(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


def measure(embedder: BundledEmbedder, passages: list[str], tokens: int) -> Round:
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    embedder.embed_documents(passages)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return Round(
        tokens / seconds,
        after.ru_nvcsw - before.ru_nvcsw,
        after.ru_minflt - before.ru_minflt,
    )


def on_second_thread(
    caller: ThreadPoolExecutor, embedder: BundledEmbedder, passages: list[str], tokens: int
) -> Round:
    """A round whose batches run on ``caller``'s thread, not on the engine thread."""
    setattr(e5_torch, "on_engine_thread", _direct)  # noqa: B010 - the engine's own import
    try:
        return caller.submit(measure, embedder, passages, tokens).result()
    finally:
        setattr(e5_torch, "on_engine_thread", on_engine_thread)  # noqa: B010


def run_row(row: str, count: int) -> Round:
    """One measured round (after a warm-up) of ``row``, in this process."""
    passages, _ = embed_bench.make_passages(count)
    embedder = BundledEmbedder(engine="torch")  # loads on the engine thread
    tokens = sum(embedder.count_tokens(p) for p in passages)
    if row == "engine thread":
        measure(embedder, passages, tokens)  # warm-up: oneDNN compiles a kernel per shape
        return measure(embedder, passages, tokens)
    with ThreadPoolExecutor(1, thread_name_prefix="caller") as caller:
        on_second_thread(caller, embedder, passages, tokens)
        return on_second_thread(caller, embedder, passages, tokens)


def spawn(row: str, count: int) -> Round:
    """``row`` in a fresh process: libgomp's count of OpenMP threads is process-wide, so one
    round from a second thread would slow every later round on the engine thread too."""
    command = [sys.executable, __file__, "--row", row, "--passages", str(count)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return Round(**json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # one round, as JSON
    args = parser.parse_args()
    if not embed_bench.UK_TEXTS.is_dir():
        print(f"needs the corpus at {embed_bench.CORPUS} (see the README)", file=sys.stderr)
        return 2
    if args.row:
        print(json.dumps(asdict(run_row(args.row, args.passages))))
        return 0
    rows: dict[str, list[Round]] = {row: [] for row in ROWS}
    for _ in range(args.rounds):
        for row in ROWS:
            rows[row].append(spawn(row, args.passages))
    print(f"\n{args.passages} passages, torch engine, {args.rounds} rounds each, alternating\n")
    print("| calls run on | tokens/s (median, range) | context switches | page faults |")
    print("|---|---|---|---|")
    for name, rounds in rows.items():
        rates = [r.tokens_per_s for r in rounds]
        print(
            f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) "
            f"| {statistics.median(r.context_switches for r in rounds):,.0f} "
            f"| {statistics.median(r.page_faults for r in rounds):,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
