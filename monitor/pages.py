"""The page stage: extract an article page, choose page or feed text, identify its language.

trafilatura crashes the whole process (segfault, double free) when called from several
threads at once (adbar/trafilatura#925). Measured: behind a lock or in a process pool it never
crashed, and a pool of 2 processes did fetch + extract + language id at ~28 articles/s
(extract + language id alone: ~35-43 pages/s on the 169 gold pages, 2 cores, workers at
135-175 MB RSS; ``bench/extract.py --pool 2``). Hence two ``PageProcessor`` implementations:
a pool of spawned worker processes (the default for the service) and an in-process one whose
trafilatura calls are serialised by the lock in ``monitor.extract`` (tests, small installs).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

from monitor.errors import ExtractionError, FeedParseError
from monitor.extract import extract_page
from monitor.feeds import parse_feed
from monitor.language import get_identifier
from monitor.memory import release_free_memory
from monitor.types import ExtractedPage, ParsedFeed, ProcessedText, TextSource

#: a consent wall or paywall stub is short; longer texts that mention cookies are articles
WALL_MAX_CHARS = 1_500

# Tell-tale text of consent walls, paywalls and bot checks (de/en/ru/uk), lower case. Phrases
# address the reader and do not occur in reporting: one is enough. Words are topics news also
# covers (a data-protection story, "подписка о невыезде"): they need a second hit.
_WALL_PHRASES = (
    *("ihre zustimmung", "jetzt abonnieren", "abonnieren sie", "weiterlesen mit", "pur-abo"),
    *("mit werbung lesen", "alle akzeptieren", "we use cookies", "accept all cookies"),
    *("subscribe to continue", "subscribe to read", "to continue reading", "subscribers only"),
    *("already a subscriber", "verify you are human", "enable javascript", "подпишитесь"),
    *("только для подписчиков", "оформите подписку", "мы используем cookie", "принять все"),
    *("підпишіться", "лише для передплатників", "оформіть передплату", "прийняти все"),
    "ми використовуємо cookie",
)
_WALL_WORDS = (
    *("cookie", "datenschutz", "einwilligung", "zustimmung", "werbung", "consent", "privacy"),
    *("subscribe", "subscription", "abonnement", "подписк", "куки", "конфиденциальн"),
    *("передплат", "кукі", "конфіденційн"),
)
_BLOCKED_STATUS = re.compile(r"\bHTTP (401|402|403|407|429|451)\b")


def looks_like_wall(text: str) -> bool:
    """True for a short text that reads like a consent wall, paywall or bot check."""
    if len(text) > WALL_MAX_CHARS:
        return False
    lowered = text.lower()
    score = 2 * sum(phrase in lowered for phrase in _WALL_PHRASES)
    score += sum(word in lowered for word in _WALL_WORDS)
    return score >= 2


def choose_text(
    page: ExtractedPage | None, feed_text: str, *, min_chars: int, page_error: str | None
) -> tuple[str, TextSource, str | None]:
    """(text, source, fallback_reason): the page text unless the feed text is the better one.

    ``page_error`` says why there is no page; it is the reason given when ``page`` is None.
    The page loses when it looks like a consent/paywall stub or is shorter than the feed text
    (a partial or teaser page); one under ``min_chars`` is kept only if the feed text is
    shorter still, and ``min_chars`` names the reason ("too short" vs "shorter than feed").
    """
    feed = feed_text.strip()
    if page is None:
        return feed, TextSource.FEED, page_error or "page not fetched"
    text = page.text.strip()
    rejection = _page_rejection(text, feed, min_chars)
    if rejection is not None:
        return feed, TextSource.FEED, rejection
    return text, TextSource.PAGE, None


def _page_rejection(text: str, feed: str, min_chars: int) -> str | None:
    """Why the feed text beats the page text, or None when the page text is the one to use."""
    if not text:
        return "page has no text"
    if looks_like_wall(text):
        return f"page looks like a consent or paywall stub ({len(text)} chars)"
    # A page text under min_chars is still kept when the feed has even less to offer.
    if len(text) < len(feed):
        if len(text) < min_chars:
            return f"page text too short ({len(text)} chars)"
        return f"page text shorter than feed text ({len(text)} < {len(feed)} chars)"
    return None


def fetch_failure_reason(page_error: str | None) -> str:
    """The fetch error as a fallback reason: "page blocked: HTTP 403", "page not fetched: ..."."""
    if not page_error:
        return "page not fetched"
    if page_error.startswith("page "):  # worded as a reason already ("page refused: ...")
        return page_error
    if _BLOCKED_STATUS.search(page_error):
        return f"page blocked: {page_error}"
    return f"page not fetched: {page_error}"


def process_page(
    html: bytes | None,
    url: str,
    feed_text: str,
    declared_language: str,
    *,
    min_chars: int,
    page_error: str | None,
) -> ProcessedText:
    """Extract (when there is a page), choose the text, identify its language.

    A fetch error (``page_error``) wins over ``html``: the body of a failed fetch is an error
    page, not the article. Bad HTML never raises; it becomes the fallback reason.
    """
    page, reason = _extract_or_reason(html, url, page_error)
    text, source, fallback = choose_text(page, feed_text, min_chars=min_chars, page_error=reason)
    guess = get_identifier().identify(text, prior=declared_language)
    used = page if source is TextSource.PAGE else None
    return ProcessedText(
        text=text,
        text_source=source,
        language=guess.language,
        language_confidence=guess.confidence,
        title=used.title if used else None,
        author=used.author if used else None,
        published=used.published if used else None,
        canonical_url=used.canonical_url if used else None,
        fallback_reason=fallback,
    )


def _extract_or_reason(
    html: bytes | None, url: str, page_error: str | None
) -> tuple[ExtractedPage | None, str | None]:
    if page_error is not None or html is None:
        return None, fetch_failure_reason(page_error)
    try:
        return extract_page(html, url), None
    except ExtractionError as e:
        return None, f"extraction failed: {e.message}"


T = TypeVar("T")


class PageProcessor(Protocol):
    async def process(
        self,
        html: bytes | None,
        url: str,
        feed_text: str,
        declared_language: str,
        *,
        page_error: str | None = None,
    ) -> ProcessedText: ...

    async def parse_feed(self, content: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed:
        """``monitor.feeds.parse_feed`` off the event loop (a pathological document can take
        feedparser seconds of CPU); raises ``FeedParseError``."""
        ...

    def close(self) -> None: ...


class InlinePageProcessor:
    """Runs the page stage in a worker thread of this process.

    trafilatura calls are serialised by ``monitor.extract``'s process-wide lock (it guards
    every caller of ``extract_page``, not only this class); language id runs unlocked.
    """

    def __init__(self, min_chars: int) -> None:
        self._min_chars = min_chars

    async def process(
        self,
        html: bytes | None,
        url: str,
        feed_text: str,
        declared_language: str,
        *,
        page_error: str | None = None,
    ) -> ProcessedText:
        return await asyncio.to_thread(
            process_page,
            html,
            url,
            feed_text,
            declared_language,
            min_chars=self._min_chars,
            page_error=page_error,
        )

    async def parse_feed(self, content: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed:
        return await asyncio.to_thread(parse_feed, content, url, dict(headers))

    def close(self) -> None:
        """Nothing to release; present for the protocol."""


_WARM_UP_HTML = (
    "<html lang='en'><head><title>Warm-up</title></head><body><article>"
    "<h1>Warm-up</h1><p>Negotiators met again on Monday to discuss a ceasefire, officials said."
    " The talks are expected to continue through the week.</p></article></body></html>"
)


#: how often a worker looks whether the service that started it still runs
PARENT_CHECK_INTERVAL = 1.0


def _init_worker() -> None:
    # Ctrl-C goes to the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright (SIGKILL, the OOM killer) never shuts the pool down, and a
    # worker waiting for its next page would wait forever: leave when orphaned.
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    # Load trafilatura's and lingua's models now, not on the first real article.
    with contextlib.suppress(ExtractionError):
        extract_page(_WARM_UP_HTML, "https://warm-up.invalid/")
    get_identifier().warm_up()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_INTERVAL)
    os._exit(0)


def _process_in_worker(
    html: bytes | None,
    url: str,
    feed_text: str,
    declared_language: str,
    min_chars: int,
    page_error: str | None,
) -> ProcessedText:
    try:
        return process_page(
            html, url, feed_text, declared_language, min_chars=min_chars, page_error=page_error
        )
    finally:
        _trim_now_and_then()


#: a worker returns its allocator's free memory at most this often (``monitor.memory``)
WORKER_TRIM_INTERVAL = 10.0
_last_trim = 0.0


def _trim_now_and_then() -> None:
    """lxml's trees and trafilatura's copies of a page come and go with every page; glibc
    keeps the freed memory unless asked (the service's own process is trimmed by a job)."""
    global _last_trim
    now = time.monotonic()
    if now - _last_trim >= WORKER_TRIM_INTERVAL:
        _last_trim = now
        release_free_memory()


class ProcessPoolPageProcessor:
    """Runs the page stage in ``processes`` spawned worker processes.

    Spawned, never forked: forking a process that runs threads (asyncio's executor, the
    scheduler) can copy held locks into the child. A crashed worker breaks the whole pool;
    the pool is then replaced and the affected pages fail with ``ExtractionError`` so the
    caller can retry them later.
    """

    def __init__(self, processes: int, min_chars: int, timeout: float | None = 60.0) -> None:
        if processes < 1:
            raise ValueError(f"a process pool needs at least one process, not {processes}")
        self._processes = processes
        self._min_chars = min_chars
        #: seconds one page may take in a worker; past it the pool's workers are killed and
        #: replaced (a worker cannot be interrupted otherwise) and the page fails, to be retried
        self.timeout = timeout
        # a page is handed to the pool only when a worker is free, so the time limit measures
        # the work, not the wait behind a burst (one semaphore per event loop)
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = self._new_pool()
        #: how many times a broken pool was replaced (for logs and tests)
        self.restarts = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )

    def _current_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                raise RuntimeError("page processor is closed")
            return self._pool

    def _replace_pool(self, broken: ProcessPoolExecutor, *, kill: bool = False) -> None:
        # Every page in flight on a broken pool reports here; only the first one replaces it.
        with self._lock:
            if self._pool is not broken:
                return
            self._pool = self._new_pool()
            self.restarts += 1
        workers = list((getattr(broken, "_processes", None) or {}).values()) if kill else []
        broken.shutdown(wait=False, cancel_futures=True)
        for worker in workers:  # stuck on a page: the other pages in flight there are retried
            with contextlib.suppress(Exception):
                worker.kill()

    async def process(
        self,
        html: bytes | None,
        url: str,
        feed_text: str,
        declared_language: str,
        *,
        page_error: str | None = None,
    ) -> ProcessedText:
        args = (html, url, feed_text, declared_language, self._min_chars, page_error)
        return await self._run(ExtractionError, url, "extraction", _process_in_worker, *args)

    async def parse_feed(self, content: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed:
        return await self._run(FeedParseError, url, "parsing", parse_feed, content, url,
                               dict(headers))  # fmt: skip

    async def _run(
        self,
        error: type[ExtractionError | FeedParseError],
        url: str,
        what: str,
        function: Callable[..., T],
        *args: Any,
    ) -> T:
        """``function(*args)`` in a worker, once one is free, within the time limit. Past it,
        or when a worker died, the pool is replaced and ``error`` (naming ``url`` and ``what``
        was done) raised, for the caller to retry later."""
        loop = asyncio.get_running_loop()
        slots = self._slots.setdefault(loop, asyncio.Semaphore(self._processes))
        async with slots:
            pool = self._current_pool()
            try:
                work = loop.run_in_executor(pool, function, *args)
                return await asyncio.wait_for(work, self.timeout)
            except TimeoutError as e:
                self._replace_pool(pool, kill=True)
                message = f"{what} took longer than {self.timeout:g}s; worker replaced"
                raise error(url, message) from e
            except BrokenProcessPool as e:
                self._replace_pool(pool)
                raise error(url, f"{what} worker process crashed; retry later") from e

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def make_page_processor(
    processes: int, min_chars: int, timeout: float | None = 60.0
) -> PageProcessor:
    """A process pool of ``processes`` workers, or the in-process variant for 0 (which has no
    time limit: a page cannot be stopped in the service's own process)."""
    if processes < 0:
        raise ValueError(f"processes must be 0 (in-process) or more, not {processes}")
    if processes == 0:
        return InlinePageProcessor(min_chars)
    return ProcessPoolPageProcessor(processes, min_chars, timeout)
