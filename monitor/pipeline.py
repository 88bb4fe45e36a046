"""The ingest stages: poll a feed, then process each new article's page.

Each stage records its progress in the state store before the next one starts, so a run that is
interrupted at any point resumes where it stopped:

1. ``poll_feed``: conditional GET -> parse -> classify entries (new / updated / unchanged) ->
   store new and changed entries as ``pending`` articles -> record the poll (validators,
   health, next poll time). The validators are written *after* the drafts, so a crash in
   between re-polls the unchanged document instead of losing its entries.
2. ``process_article``: fetch the page (SSRF-guarded) -> extract + identify language in the
   page processor -> store the text (``fetched``). Transient failures are retried with
   backoff; after ``max_attempts`` (or at once for a permanent refusal such as 403/404/410 or
   a private address) the feed's own text is stored instead, so no article is ever lost.

The decisions (is it new, which text, when next) are pure functions in ``identity``,
``schedule`` and ``pages``; this module only sequences I/O. Failures are recorded on the feed
or article and never escape to the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from monitor.errors import (
    BlockedAddressError,
    ExtractionError,
    FeedParseError,
    FetchError,
    HTTPStatusError,
    NewsmonError,
    ResponseTooLargeError,
    StorageError,
    TooManyRedirectsError,
)
from monitor.identity import (
    EntryChange,
    article_id,
    canonical_url,
    classify_entry,
    content_hash,
    entry_key,
    is_web_url,
    same_site,
)
from monitor.schedule import PollOutcome, SchedulePolicy, cache_control_max_age, next_poll
from monitor.types import (
    Article,
    ArticleDraft,
    ArticleStatus,
    FeedPollRecord,
    FeedState,
    FetchResult,
    ParsedEntry,
    ParsedFeed,
    ProcessedText,
    as_utc,
    utcnow,
)

if TYPE_CHECKING:  # the ports; their modules import heavy libraries (httpx, trafilatura, ...)
    from monitor.fetch import Fetcher
    from monitor.pages import PageProcessor
    from monitor.state import StateStore

log = logging.getLogger("newsmon.pipeline")

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, "
    "text/xml;q=0.9, */*;q=0.5"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
#: HTTP statuses after which refetching the page is pointless: use the feed text at once
PERMANENT_PAGE_STATUSES = frozenset({401, 402, 403, 404, 410, 451})
ARTICLE_RETRY_BASE = timedelta(minutes=2)


class FeedSpec(Protocol):
    """What the pipeline reads of a configured feed (``config.FeedConfig``)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def interval(self) -> timedelta | None: ...


# -- results ----------


@dataclass(frozen=True, slots=True)
class PollReport:
    feed: str
    ok: bool
    status: int | None
    items_seen: int
    new_article_ids: tuple[str, ...]
    next_poll_at: datetime
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ArticleReport:
    article_id: str
    outcome: str  # fetched | duplicate | retry | failed | skipped
    detail: str | None = None


# -- the stages ----------


@dataclass
class Pipeline:
    store: StateStore
    fetcher: Fetcher
    pages: PageProcessor
    policy: SchedulePolicy
    max_attempts: int = 5
    max_entries: int = 1000
    clock: Callable[[], datetime] = utcnow
    rand: Callable[[], float] = lambda: random.uniform(-1.0, 1.0)

    def __post_init__(self) -> None:
        self._feed_locks: dict[str, asyncio.Lock] = {}

    def _now(self) -> datetime:
        return as_utc(self.clock())

    # -- stage 1 ----------

    async def poll_feed(self, feed: FeedSpec) -> PollReport:
        """Poll one feed; never raises for feed-level problems (they are recorded on the feed)."""
        lock = self._feed_locks.setdefault(feed.name, asyncio.Lock())
        async with lock:  # never two polls of one feed at once, whoever triggers them
            return await self._poll_locked(feed)

    async def _poll_locked(self, feed: FeedSpec) -> PollReport:
        state = self.store.get_feed(feed.name)
        url = (state.permanent_redirect if state else None) or feed.url
        try:
            result = await self.fetcher.fetch(
                url,
                etag=state.etag if state else None,
                last_modified=state.last_modified if state else None,
                trusted=True,
                accept=FEED_ACCEPT,
            )
            # off the event loop (a large or pathological document takes feedparser seconds of
            # CPU, which would stall every other fetch into its timeout), in the page workers
            # when there are any, under their time limit
            parsed = (
                None
                if result.not_modified
                else await self.pages.parse_feed(result.content, result.final_url, result.headers)
            )
        except (FetchError, FeedParseError) as e:
            return self._record_poll_failure(feed, state, e)
        if parsed is not None and len(parsed.entries) > self.max_entries:
            parsed = _capped(parsed, self.max_entries)
        first_poll = state is None or state.total_articles == 0
        new_ids = self._store_entries(feed, parsed, first_poll=first_poll) if parsed else ()
        return self._record_poll_success(feed, state, result, parsed, new_ids)

    def _store_entries(
        self, feed: FeedSpec, parsed: ParsedFeed, *, first_poll: bool
    ) -> tuple[str, ...]:
        drafts = self._drafts(feed, parsed.entries)
        if first_poll:  # the feed's backlog: alerting treats old entries as history
            drafts = [replace(d, first_poll=True) for d in drafts]
        if not drafts:
            return ()
        known = self.store.known_entries(feed.name, [d.entry_key for d in drafts])
        changed = [
            d for d in drafts
            if classify_entry(d.entry_key, d.content_hash, known) is not EntryChange.UNCHANGED
        ]  # fmt: skip
        if not changed:
            return ()
        outcomes = self.store.save_drafts(changed, self._now())
        return tuple(aid for aid, outcome in outcomes if outcome in ("new", "updated"))

    def _drafts(self, feed: FeedSpec, entries: Sequence[ParsedEntry]) -> list[ArticleDraft]:
        drafts: dict[str, ArticleDraft] = {}
        for entry in entries:
            draft = make_draft(feed, entry)
            if draft is not None:
                drafts.setdefault(draft.entry_key, draft)  # a feed listing an item twice
        return list(drafts.values())

    def _record_poll_success(
        self,
        feed: FeedSpec,
        state: FeedState | None,
        result: FetchResult,
        parsed: ParsedFeed | None,
        new_ids: tuple[str, ...],
    ) -> PollReport:
        now = self._now()
        hint = max(
            (h for h in (
                parsed.update_hint_seconds if parsed else None,
                cache_control_max_age(result.headers.get("cache-control")),
            ) if h),
            default=None,
        )  # fmt: skip
        outcome = PollOutcome(ok=True, items_new=len(new_ids), update_hint=hint)
        nxt = next_poll(
            self.policy,
            now=now,
            outcome=outcome,
            configured=feed.interval,
            previous_interval=state.interval_seconds if state else None,
            rand=self.rand(),
        )
        record = FeedPollRecord(
            polled_at=now,
            next_poll_at=nxt.at,
            interval_seconds=nxt.interval,
            status=result.status,
            etag=result.etag,
            last_modified=result.last_modified,
            items_seen=len(parsed.entries) if parsed else 0,
            items_new=len(new_ids),
            permanent_redirect=result.permanent_redirect,
            malformed_reason=parsed.malformed_reason if parsed else None,
            title=parsed.title if parsed else None,
        )
        self.store.record_poll(feed.name, record)
        if parsed and parsed.malformed_reason:
            log.warning("feed %r is malformed (%s); used what it yielded", feed.name,
                        parsed.malformed_reason)  # fmt: skip
        return PollReport(feed.name, True, result.status, record.items_seen, new_ids, nxt.at)

    def _record_poll_failure(
        self, feed: FeedSpec, state: FeedState | None, error: NewsmonError
    ) -> PollReport:
        now = self._now()
        failures = (state.consecutive_failures if state else 0) + 1
        retry_after = error.retry_after if isinstance(error, FetchError) else None
        status = error.status if isinstance(error, HTTPStatusError) else None
        outcome = PollOutcome(ok=False, consecutive_failures=failures, retry_after=retry_after)
        nxt = next_poll(
            self.policy,
            now=now,
            outcome=outcome,
            configured=feed.interval,
            previous_interval=state.interval_seconds if state else None,
            rand=self.rand(),
        )
        message = str(error)
        self.store.record_poll(
            feed.name,
            FeedPollRecord(
                polled_at=now,
                next_poll_at=nxt.at,
                interval_seconds=nxt.interval,
                status=status,
                error=message,
            ),
        )
        log.warning("feed %r: poll failed (%d in a row), next at %s: %s",
                    feed.name, failures, nxt.at.isoformat(timespec="seconds"), message)  # fmt: skip
        return PollReport(feed.name, False, status, 0, (), nxt.at, error=message)

    # -- stage 2 ----------

    async def process_article(self, article_id: str, *, last_chance: bool = False) -> ArticleReport:
        """Fetch, extract and store one pending article; failures are recorded, never raised.

        ``last_chance``: do not schedule a retry for a transient failure, store the feed text
        now (``run --once`` finishes its work instead of leaving it for a later run).
        """
        article = self.store.get_article(article_id)
        if article is None or article.status is not ArticleStatus.PENDING:
            return ArticleReport(article_id, "skipped")
        try:
            return await self._process(article, last_chance)
        except StorageError:
            raise  # the store is down: nothing sensible to record; the caller decides
        except Exception as e:  # a bug must cost one article a retry, not the service
            log.exception("article %s (%s): unexpected error", article.id, article.url)
            return self._retry_later(article, f"internal error: {type(e).__name__}: {e}")

    async def _process(self, article: Article, last_chance: bool) -> ArticleReport:
        final = last_chance or article.attempts + 1 >= self.max_attempts
        html, page_error, transient = await self._fetch_page(article)
        if transient and not final:
            return self._retry_later(article, page_error or "page fetch failed")
        try:
            processed = await self._pages(article, html, page_error)
        except ExtractionError as e:  # the worker died on this page: retry, or use feed text
            if not final:
                return self._retry_later(article, str(e))
            processed = await self._pages(article, None, f"extraction failed: {e.message}")
        return self._store_text(article, processed)

    async def _pages(
        self, article: Article, html: bytes | None, page_error: str | None
    ) -> ProcessedText:
        return await self.pages.process(
            html, article.url, article.feed_text, article.feed_language, page_error=page_error
        )

    async def _fetch_page(self, article: Article) -> tuple[bytes | None, str | None, bool]:
        """(html, error, transient): the page bytes, or why not and whether to retry later."""
        if not article.url:
            return None, "entry has no link", False
        try:
            result = await self.fetcher.fetch(article.url, accept=PAGE_ACCEPT)
        except HTTPStatusError as e:
            blocked = e.status in PERMANENT_PAGE_STATUSES
            return None, f"page blocked: HTTP {e.status}" if blocked else str(e), not blocked
        except (BlockedAddressError, ResponseTooLargeError, TooManyRedirectsError) as e:
            return None, f"page refused: {e.message.removeprefix('refused: ')}", False
        except FetchError as e:
            return None, f"page fetch failed: {e.message}", True
        if not _looks_like_html(result):
            return None, f"not an HTML page ({result.content_type or 'no content type'})", False
        return result.content, None, False

    def _store_text(self, article: Article, processed: ProcessedText) -> ArticleReport:
        now = self._now()
        canonical = _believable_canonical(article, processed.canonical_url)
        if canonical and canonical != article.canonical_url:
            other = self.store.find_article_by_canonical_url(canonical)
            if other is not None and other.id != article.id:
                self.store.mark_duplicate(article.id, other.id, now)
                return ArticleReport(article.id, "duplicate", other.id)
        if canonical != processed.canonical_url:
            processed = _with_canonical(processed, canonical)
        self.store.save_text(article.id, processed, now)
        return ArticleReport(article.id, "fetched", processed.fallback_reason)

    def _retry_later(self, article: Article, error: str) -> ArticleReport:
        """Schedule another attempt with exponential backoff, or give up after max_attempts."""
        now = self._now()
        attempts = article.attempts + 1
        if attempts >= self.max_attempts:
            self.store.record_article_failure(article.id, error, None, now)
            log.error("article %s (%s) failed for good: %s", article.id, article.url, error)
            return ArticleReport(article.id, "failed", error)
        delay = ARTICLE_RETRY_BASE * (2 ** (attempts - 1))
        self.store.record_article_failure(article.id, error, now + delay, now)
        return ArticleReport(article.id, "retry", error)


# -- pure helpers ----------


def newest_entries(entries: Sequence[ParsedEntry], limit: int) -> list[ParsedEntry]:
    """At most ``limit`` entries, the newest: by date when every entry has one, else the
    first ones (feeds list their newest first); the kept ones stay in document order."""
    if len(entries) <= limit:
        return list(entries)
    stamps = [stamp for e in entries if (stamp := e.published or e.updated) is not None]
    if len(stamps) < len(entries):
        return list(entries[:limit])
    newest = sorted(range(len(entries)), key=stamps.__getitem__, reverse=True)[:limit]
    return [entries[i] for i in sorted(newest)]


def _capped(parsed: ParsedFeed, limit: int) -> ParsedFeed:
    note = (f"{len(parsed.entries)} entries in one document; the newest {limit} taken "
            "(fetch.max_entries_per_poll)")  # fmt: skip
    reason = f"{parsed.malformed_reason}; {note}" if parsed.malformed_reason else note
    return replace(parsed, entries=tuple(newest_entries(parsed.entries, limit)),
                   malformed_reason=reason)  # fmt: skip


def make_draft(feed: FeedSpec, entry: ParsedEntry) -> ArticleDraft | None:
    """The article an entry stands for, or None for an entry with neither link nor title."""
    link = canonical_url(entry.link) if entry.link else None
    if link is not None and not is_web_url(link):
        link = None
    if link is None and not entry.title and not entry.summary:
        return None
    key = entry_key(entry, link)
    feed_text = entry.content if len(entry.content) > len(entry.summary) else entry.summary
    aid = article_id(link, feed=feed.name, key=key)
    return ArticleDraft(
        id=aid,
        feed=feed.name,
        entry_key=key,
        url=(entry.link or "").strip() if link else "",
        canonical_url=link or "",
        guid=entry.guid,
        title=entry.title,
        feed_text=feed_text,
        feed_language=feed.language,
        published_at=entry.published or entry.updated,
        author=entry.author,
        content_hash=content_hash(entry.title, feed_text),
    )


def _looks_like_html(result: FetchResult) -> bool:
    ctype = result.content_type.split(";")[0].strip().lower()
    return ctype in ("", "text/html", "application/xhtml+xml", "text/plain") or ctype.endswith(
        "+xml"
    )


def _believable_canonical(article: Article, page_canonical: str | None) -> str | None:
    """The page's canonical URL, if it stays on the article's site (else the one we had)."""
    if not page_canonical:
        return article.canonical_url or None
    candidate = canonical_url(page_canonical, base=article.url)
    if not is_web_url(candidate) or not same_site(candidate, article.url):
        return article.canonical_url or None
    return candidate


def _with_canonical(processed: ProcessedText, canonical: str | None) -> ProcessedText:
    return replace(processed, canonical_url=canonical)
