"""Crash safety: ``newsmon run`` SIGKILLed at random points of ingest, indexing and delivery,
restarted, and checked for lost or doubled work.

Real components everywhere: the service is a child process (``python -m monitor.cli run``) on a
config file; feeds and slow article pages come from a local HTTP server; alerts go to a real SMTP
server (aiosmtpd) and a real webhook endpoint in this process, both slow to acknowledge so that a
kill can land while a delivery is in flight.

A *sequence* starts with an empty data directory and kills the service several times, each kill
aimed at a phase: after the k-th page request (ingest), after the k-th indexed article while
others wait (indexing), after the k-th delivery reached a receiver (delivery), or during start-up
- always plus a random delay from a seeded ``random.Random``. After the kills the service runs
until everything is indexed and delivered, and stops (SIGTERM). Then:

* no article is lost or stored twice (state store: one row per fixture page, all indexed);
* the vector store opens, and holds each indexed article's passages exactly once (0..n-1);
* the topic matches are the ones a run without kills makes (the reference run);
* every (topic, story) with an alertable match has an alert, and every message in the outbox
  reached both receivers, marked sent;
* no message arrived twice - except where the receiver acknowledged it and the kill came before
  the service recorded it as sent: the one window no outbox can close. Such a kill is recognised
  exactly (the receiver has the message, the killed service's outbox still says pending), and
  then exactly one more copy is expected.

Which phases a kill really interrupted is read from the state the killed process left behind
(pages pending, articles waiting to be indexed or matched, deliveries pending or in flight at a
receiver); the test asserts that each phase was hit in several kills. The seed is random per
run (``NEWSMON_CRASH_SEED`` repeats one) and is in every assertion message. Each process start
costs seconds (imports, stores), so a sequence kills 4 times, and two sequences run at once.

Two smaller tests pin down crash windows found while writing this one: an alert interrupted
between recording an article's matches and writing the outbox is planned again after the restart,
and the page workers of a killed service do not outlive it.
"""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from indexer.qdrant_edge import EdgeVectorStore
from monitor.cli import main
from monitor.config import load_config
from monitor.errors import StorageError
from monitor.service import make_app
from monitor.state import open_state_store, sqlite_url
from tests.support.crashkit import (
    HookReceiver,
    MailReceiver,
    Received,
    Service,
    StateCounts,
    children,
    process_running,
    quiet_connection_errors,
    read_state,
    state_counts,
    wait_for,
)
from tests.support.httpserver import LocalServer, Request, Response
from tests.support.newsfixtures import (
    article_page,
    fixture_articles,
    run_once,
    serve_site,
    site_feeds,
    write_config,
)

pytestmark = [pytest.mark.slow]

#: pages answer this late (2 fetched at a time): ingest lasts a few seconds
PAGE_DELAY = 0.25
#: receivers acknowledge this late: deliveries are in flight long enough to be hit
ACK_DELAY = 0.25
SEQUENCES = 5
#: sequences run at once
PARALLEL = 2
#: each sequence kills once in each phase, plus one more (rotating) kill
EXTRA_KILLS = ("startup", "delivery", "indexing", "ingest", "delivery")
#: kills that must have hit each phase, and kills aimed at it that must have (of 6 or 7 aimed)
MIN_HITS = 5
#: kills that must have happened, of the 20 planned (SEQUENCES x 4)
MIN_KILLS = 18
#: below the service's 60 s sweep: resuming after a restart must not wait for its next round
FINISH_TIMEOUT = 50.0
TOPICS: list[dict[str, Any]] = [
    {
        "id": "abu-dhabi-talks",
        "name": "Abu Dhabi peace talks",
        "description": (
            "Peace negotiations between Russia, Ukraine and the United States held in Abu Dhabi, "
            "United Arab Emirates: the delegations and envoys taking part, the rounds of talks "
            "and their agenda, proposals and counter-proposals discussed there, statements about "
            "progress, deadlock or a next round, and the role of the UAE as host and mediator."
        ),
        "channels": ["mail", "hook"],
    },
    {
        # matches every article: an alert per story, so several messages per channel
        "id": "all-news",
        "name": "Everything",
        "description": "News of any kind.",
        "threshold": -1.0,
        "channels": ["mail", "hook"],
    },
]
SENT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO newsmon\.alerts: alert (\S+) sent on "
    r"channel '(\w+)'$",
    re.M,
)


class SlowPages:
    """Article pages answered after PAGE_DELAY, counting the requests (all, and those being
    answered)."""

    def __init__(self, site: LocalServer) -> None:
        self.paths: set[str] = set()
        self.requests = 0
        self.in_flight = 0
        self._lock = threading.Lock()
        for article in fixture_articles():
            page = article_page(article, site.url(article.path))
            site.route(article.path, partial(self._answer, Response(page)))
            self.paths.add(article.path)

    def _answer(self, response: Response, request: Request) -> Response:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
        try:
            time.sleep(PAGE_DELAY)
            return response
        finally:
            with self._lock:
                self.in_flight -= 1


# -- one sequence ---------------------------------------------------------------------------------


@dataclass
class Kill:
    sequence: int
    number: int
    target: str  # the phase aimed at
    delay: float  # the random extra delay after the trigger
    at: float = 0.0  # time.monotonic() of the SIGKILL
    after_start: float = 0.0  # seconds after the process was started
    state: StateCounts = field(default_factory=StateCounts)
    pages_in_flight: int = 0
    deliveries_in_flight: int = 0
    #: (message id, channel) acknowledged by a receiver but still pending in the outbox -> how
    #: many copies the receiver had then (a later kill before the resend sees the same ack)
    unrecorded_acks: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def phases(self) -> set[str]:
        """What was in progress: pages pending or being fetched (ingest); articles fetched
        but not indexed, or indexed but not matched (indexing); deliveries pending or at a
        receiver (delivery)."""
        s = self.state
        hit = set()
        if s.pending or self.pages_in_flight:
            hit.add("ingest")
        if s.fetched or s.unmatched:
            hit.add("indexing")
        if s.deliveries_pending or self.deliveries_in_flight:
            hit.add("delivery")
        return hit

    def describe(self) -> str:
        return (
            f"kill {self.sequence}.{self.number} aimed at {self.target} "
            f"(+{self.delay:.3f} s, {self.after_start:.2f} s after start): hit "
            f"{sorted(self.phases) or 'nothing in progress'}; {self.state}; pages in flight "
            f"{self.pages_in_flight}, deliveries in flight {self.deliveries_in_flight}, "
            f"acknowledged but not recorded {sorted(self.unrecorded_acks)}"
        )


class Sequence:
    """An empty data directory, its receivers and the service on it."""

    def __init__(self, root: Path, number: int, seed: int | None) -> None:
        self.number, self.seed = number, seed
        self.rng = random.Random(seed)
        self.site = LocalServer().start()  # its own: the triggers count its page requests
        quiet_connection_errors(self.site)
        feeds = site_feeds(serve_site(self.site))
        self.slow_pages = SlowPages(self.site)  # slow pages: ingest lasts long enough to be hit
        self.pages = self.slow_pages.paths
        self.mail = MailReceiver(ACK_DELAY).start()
        self.hook = HookReceiver(ACK_DELAY).start()
        root.mkdir(parents=True)
        self.data = root / "data"
        self.db = self.data / "newsmon.db"
        channels = {
            "mail": {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": self.mail.port,
                     "starttls": False, "from": "newsmon@example.org", "to": "desk@example.org",
                     "timeout": "10s"},
            "hook": {"type": "webhook", "url": self.hook.url, "timeout": "10s"},
        }  # fmt: skip
        self.config = write_config(
            root, feeds, topics=TOPICS, channels=channels, alert_backfill="3650d",
            delivery={"first_retry": "1s"},
            fetch={"per_host_concurrency": 2},  # with PAGE_DELAY: ingest takes a while
        )  # fmt: skip
        self.service = Service(self.config, root / "logs")
        self.kills: list[Kill] = []
        self.start_seconds: list[float] = []  # process start -> "newsmon running"

    def close(self) -> None:
        if self.service.alive():
            self.service.kill()
        self.mail.stop()
        self.hook.stop()
        self.site.stop()

    @property
    def where(self) -> str:
        return f"sequence {self.number}, seed {self.seed}, data {self.data}"

    # -- counters the kill triggers watch

    def page_requests(self) -> int:
        return self.slow_pages.requests

    def arrivals(self) -> int:
        return self.mail.log.arrivals + self.hook.log.arrivals

    def _note_ready(self) -> None:
        """Start-up time from the log (for the report), once the service said it runs."""
        text = self.service.log_text()
        if "newsmon running" in text:
            self.start_seconds.append(time.monotonic() - self.service.started_at)

    # -- a kill aimed at a phase

    def kill_during(self, target: str, number: int) -> Kill | None:
        """Start the service, wait for ``target``'s trigger and a random delay, SIGKILL it.
        None when the phase has nothing left to interrupt."""
        kill = Kill(self.number, number, target, delay=0.0)
        before = state_counts(self.db)
        if self._nothing_left(target, before):
            return None
        self.service.start()
        try:
            delay = self._trigger(target, before)
        except TimeoutError as e:
            raise AssertionError(f"{self.where}: {e}\n{self.service.all_logs()}") from None
        if delay is None:  # it finished before the trigger
            assert self.service.stop() == 0, f"{self.where}\n{self.service.log_text()}"
            return None
        kill.delay = delay
        time.sleep(delay)
        self._note_ready()
        assert self.service.alive(), f"{self.where}: the service died\n{self.service.log_text()}"
        kill.pages_in_flight = self.slow_pages.in_flight
        kill.deliveries_in_flight = self.mail.log.in_flight + self.hook.log.in_flight
        kill.at = self.service.kill()
        kill.after_start = kill.at - self.service.started_at
        # a receiver that was answering when the sender died finishes (and records) first
        wait_for(lambda: not self.mail.log.in_flight and not self.hook.log.in_flight, 10,
                 "the receivers' requests to end")  # fmt: skip
        kill.state = state_counts(self.db)
        kill.unrecorded_acks = self._unrecorded_acks()
        integrity = read_state(self.db, "PRAGMA integrity_check")
        assert integrity in ([], [("ok",)]), f"{self.where}: {kill.describe()}: {integrity}"
        self.kills.append(kill)
        return kill

    def _nothing_left(self, target: str, counts: StateCounts) -> bool:
        if target == "ingest":
            return _to_fetch(counts) == 0
        if target == "indexing":
            return _all_indexed(counts)
        if target == "delivery":
            return _all_indexed(counts) and counts.messages > 0 and not counts.deliveries_pending
        return False

    def _trigger(self, target: str, before: StateCounts) -> float | None:
        """Wait for the phase's trigger; the random delay to wait after it (None: the work
        was all done first)."""
        rng = self.rng
        if target == "startup":  # imports, migrations, opening the stores, first polls
            return rng.uniform(0.3, 3.0)
        pages, arrivals = self.page_requests(), self.arrivals()
        # the other phases: in the running service, after its start-up
        wait_for(self.service.running, 60, "the service to start")
        if target == "ingest":  # the k-th page request (it is answered PAGE_DELAY later)
            k = rng.randint(1, min(3, _to_fetch(before)))
            wait_for(lambda: self.page_requests() >= pages + k, 30, f"page request {k}")
            return rng.uniform(0.0, 1.5 * PAGE_DELAY)
        if target == "indexing":  # k more articles indexed, others still to index or match
            # all indexed but some not matched yet (an earlier kill hit matching): k = 0, the
            # kill then lands in matching
            k = rng.randint(0, max(0, min(2, len(self.pages) - before.indexed - 1)))
            wait_for(lambda: _indexing_progress(state_counts(self.db), before.indexed, k), 40,
                     f"{k} more articles indexed while others wait")  # fmt: skip
            return None if _all_indexed(state_counts(self.db)) else rng.uniform(0.0, 0.4)
        if target == "delivery":  # the k-th delivery reached a receiver (acknowledged later)
            k = rng.randint(1, 3)
            wait_for(lambda: self.arrivals() >= arrivals + k or self._finished(), 40,
                     f"delivery {k}")  # fmt: skip
            return None if self.arrivals() < arrivals + k else rng.uniform(0.0, 1.6 * ACK_DELAY)
        raise AssertionError(target)

    def _unrecorded_acks(self) -> dict[tuple[str, str], int]:
        pending = {
            (message_id, channel)
            for message_id, channel in read_state(
                self.db, "SELECT message_id, channel FROM deliveries WHERE status = 'pending'"
            )
        }
        acked = Counter((r.id, "mail") for r in self.mail.log.snapshot())
        acked.update((r.id, "hook") for r in self.hook.log.snapshot())
        return {key: copies for key, copies in acked.items() if key in pending}

    # -- the end

    def finish(self) -> float:
        """Run until every article is indexed and matched and every message delivered on both
        channels; stop with SIGTERM. Returns the seconds it took."""
        self.service.start()
        t0 = time.monotonic()
        try:
            wait_for(self._finished, FINISH_TIMEOUT, "every article indexed and alert delivered",
                     poll=0.05)  # fmt: skip
        except TimeoutError as e:
            raise AssertionError(
                f"{self.where}: {e}; {state_counts(self.db)}\n"
                + "\n".join(k.describe() for k in self.kills)
                + "\n"
                + self.service.all_logs()
            ) from None
        self._note_ready()
        assert self.service.stop() == 0, f"{self.where}: unclean stop\n{self.service.log_text()}"
        return time.monotonic() - t0

    def _finished(self) -> bool:
        # past start-up first: a kill may have left nothing to do, and a SIGTERM before the
        # service installed its handlers would end it by the signal's default (exit -15)
        if not self.service.running():
            return False
        counts = state_counts(self.db)
        if not (_all_indexed(counts) and counts.messages and not counts.deliveries_pending):
            return False
        messages = {row[0] for row in read_state(self.db, "SELECT id FROM alert_messages")}
        return messages <= set(self.mail.log.ids()) and messages <= set(self.hook.log.ids())


def _all_indexed(counts: StateCounts) -> bool:
    return (
        counts.indexed == len(fixture_articles())
        and not counts.pending
        and not counts.fetched
        and not counts.unmatched
    )


def _to_fetch(counts: StateCounts) -> int:
    """Fixture pages not fetched yet (feeds not polled yet included)."""
    return len(fixture_articles()) - counts.fetched - counts.indexed


def _indexing_progress(counts: StateCounts, base: int, k: int) -> bool:
    """At least k more articles indexed, and some fetched ones still to index or match."""
    waiting = counts.fetched or counts.unmatched
    return (counts.indexed >= base + k and bool(waiting)) or _all_indexed(counts)


# -- what a finished sequence must look like -------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    articles: dict[str, str]  # page path -> status
    passages: dict[str, int]  # page path -> vector points stored
    matches: set[tuple[str, str]]  # (topic, page path)


@dataclass(frozen=True)
class Result:
    where: str
    kills: list[Kill]
    skipped: list[str]
    outcome: Outcome
    windows: dict[str, list[float]]  # channel -> acknowledgement-to-record seconds
    starts: list[float]  # process start -> "newsmon running", seconds
    seconds: float


def run_sequence(root: Path, number: int, seed: int | None) -> Result:
    """A fresh data directory; the kills (none for the reference, seed None); the finish."""
    began = time.monotonic()
    seq = Sequence(root, number, seed)
    try:
        skipped = []
        for n, target in enumerate(kill_targets(number) if seed is not None else [], start=1):
            if seq.kill_during(target, n) is None:
                skipped.append(f"{number}.{n} {target}")
        seq.finish()
        outcome = check_sequence(seq)
        windows = ack_to_record_seconds(seq)
        where = f"{seq.where}; kills:\n" + "\n".join(k.describe() for k in seq.kills)
        return Result(where, seq.kills, skipped, outcome, windows, seq.start_seconds,
                      time.monotonic() - began)  # fmt: skip
    finally:
        seq.close()


def kill_targets(number: int) -> list[str]:
    """One kill per phase, in the order the work flows, plus one more (rotating)."""
    targets = ["ingest", "indexing", "delivery"]
    extra = EXTRA_KILLS[number % len(EXTRA_KILLS)]
    at = {"startup": 0, "ingest": 1, "indexing": 2, "delivery": 3}[extra]
    return [*targets[:at], extra, *targets[at:]]


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def check_sequence(seq: Sequence) -> Outcome:
    where = f"{seq.where}; kills:\n" + "\n".join(k.describe() for k in seq.kills)
    db = seq.db
    assert read_state(db, "PRAGMA integrity_check") == [("ok",)], where

    # articles: each fixture page stored once, all indexed
    rows = read_state(db, "SELECT id, canonical_url, status, near_duplicate_of FROM articles")
    paths = Counter(_path(url) for _, url, _, _ in rows)
    assert set(paths) == seq.pages, f"{where}\nstored {sorted(paths)}"
    assert all(n == 1 for n in paths.values()), f"{where}\nstored twice: {paths}"
    statuses = {_path(url): status for _, url, status, _ in rows}
    assert set(statuses.values()) == {"indexed"}, f"{where}\n{statuses}"
    entries = read_state(db, "SELECT feed, entry_key, count(*) FROM entries GROUP BY 1, 2")
    assert all(n == 1 for _, _, n in entries), where

    # vectors: the store opens after the kills; each article's passages once, 0..n-1
    passages: dict[str, int] = {}
    with EdgeVectorStore(seq.data / "vectors") as vectors:
        [collection] = vectors.collections()
        total = 0
        for article_id, url, _, near_duplicate_of in rows:
            points = vectors.article_points(collection, article_id)
            indexes = [payload.passage_index for payload, _ in points]
            if near_duplicate_of:
                assert not indexes, f"{where}\nnear-duplicate {url} has vectors"
            assert indexes == list(range(len(indexes))), f"{where}\n{url}: passages {indexes}"
            assert near_duplicate_of or indexes, f"{where}\n{url} has no vectors"
            passages[_path(url)] = len(indexes)
            total += len(indexes)
        assert vectors.count(collection) == total, f"{where}\nstray points"

    # matches: what a run without kills decides (matching is per article and deterministic)
    matches = {
        (topic, _path(url))
        for topic, url in read_state(
            db,
            "SELECT m.topic_id, a.canonical_url FROM topic_matches m "
            "JOIN articles a ON a.id = m.article_id",
        )
    }
    # every (topic, story) with an alertable match has an alert with a message
    unalerted = read_state(
        db,
        "SELECT DISTINCT m.topic_id, m.story_id FROM topic_matches m WHERE m.alertable AND NOT "
        "EXISTS (SELECT 1 FROM alert_stories s JOIN alert_messages am ON am.alert_id = "
        "s.alert_id WHERE s.topic_id = m.topic_id AND s.story_id = m.story_id)",
    )
    assert not unalerted, f"{where}\nmatched stories without an alert (lost): {unalerted}"

    # the outbox: every message sent on both channels, and received - once, unless a kill came
    # between the receiver's acknowledgement and the outbox's record of it
    messages = {row[0] for row in read_state(db, "SELECT id FROM alert_messages")}
    deliveries = read_state(db, "SELECT message_id, channel, status FROM deliveries")
    assert {(m, c) for m, c, _ in deliveries} == {(m, c) for m in messages
                                                  for c in ("mail", "hook")}, where  # fmt: skip
    assert {s for _, _, s in deliveries} == {"sent"}, f"{where}\n{deliveries}"
    for channel, log in (("mail", seq.mail.log), ("hook", seq.hook.log)):
        received = Counter(log.ids())
        assert set(received) == messages, f"{where}\n{channel}: {received} vs {messages}"
        for message_id, copies in received.items():
            # each acknowledgement that was not recorded counts once, however many kills saw it
            key = (message_id, channel)
            windows = len({k.unrecorded_acks[key] for k in seq.kills if key in k.unrecorded_acks})
            assert copies == 1 + windows, (
                f"{where}\n{channel}: message {message_id} arrived {copies} times, "
                f"expected {1 + windows} ({windows} kills between acknowledgement and record)"
            )
    return Outcome(statuses, passages, matches)


def ack_to_record_seconds(seq: Sequence) -> dict[str, list[float]]:
    """Per channel and delivery: the receiver's acknowledgement -> the service's log line
    written right after the outbox recorded it sent (an upper bound of the window)."""
    logged: dict[tuple[str, str], float] = {}
    for n in range(1, seq.service.starts + 1):
        text = (seq.service.logs / f"run-{n}.log").read_text("utf-8", "replace")
        for stamp, message_id, channel in SENT_LINE.findall(text):
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            logged[(message_id, channel)] = when
    offset = time.time() - time.monotonic()
    seconds: dict[str, list[float]] = {}
    for channel, log in (("mail", seq.mail.log), ("hook", seq.hook.log)):
        acked: dict[str, Received] = {}
        for r in log.snapshot():
            acked[r.id] = r  # the last copy is the one the service recorded
        for message_id, r in acked.items():
            if (message_id, channel) in logged:
                window = logged[(message_id, channel)] - (r.acked_at + offset)
                seconds.setdefault(channel, []).append(window)
    return seconds


# -- the test --------------------------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_sigkill_during_ingest_indexing_and_delivery_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    base_seed = int(os.environ.get("NEWSMON_CRASH_SEED") or random.randrange(2**31))
    began = time.monotonic()
    # two at a time: most of a sequence is waiting (start-up I/O, slow pages and receivers)
    with ThreadPoolExecutor(PARALLEL) as pool:
        ref_job = pool.submit(run_sequence, tmp_path / "reference", -1, None)
        jobs = [pool.submit(run_sequence, tmp_path / f"seq{n}", n, base_seed + n)
                for n in range(SEQUENCES)]  # fmt: skip
        reference = ref_job.result()
        try:
            results = [job.result() for job in jobs]
        except Exception as e:  # the seed repeats the run (NEWSMON_CRASH_SEED)
            raise AssertionError(f"base seed {base_seed}: {type(e).__name__}: {e}") from e
    assert any(topic == "abu-dhabi-talks" for topic, _ in reference.outcome.matches)
    for result in results:  # matching is per article and deterministic: kills change nothing
        assert result.outcome.passages == reference.outcome.passages, result.where
        assert result.outcome.matches == reference.outcome.matches, (
            f"{result.where}\nmatches differ from the run without kills: "
            f"{result.outcome.matches ^ reference.outcome.matches}"
        )

    kills = [k for r in results for k in r.kills]
    report = "\n".join(k.describe() for k in kills)
    hits = Counter(phase for k in kills for phase in k.phases)
    aimed = Counter(k.target for k in kills if k.target in k.phases)
    starts = [s for r in [reference, *results] for s in r.starts]
    print(f"\ncrash safety: base seed {base_seed}; {len(kills)} kills in {SEQUENCES} sequences, "
          f"{PARALLEL} at a time, in {time.monotonic() - began:.1f} s (reference run "
          f"{reference.seconds:.1f} s, sequences {[round(r.seconds, 1) for r in results]}); "
          f"phases hit {dict(hits)}, by the kills aimed at them {dict(aimed)}; skipped "
          f"{[s for r in results for s in r.skipped]}; kills with a delivery at a receiver "
          f"{sum(k.deliveries_in_flight > 0 for k in kills)}, between acknowledgement and "
          f"record {sum(bool(k.unrecorded_acks) for k in kills)}; start-up median "
          f"{statistics.median(starts):.2f} s")  # fmt: skip
    windows: dict[str, list[float]] = {}
    for result in [reference, *results]:
        for channel, seconds in result.windows.items():
            windows.setdefault(channel, []).extend(seconds)
    for channel, seconds in sorted(windows.items()):
        ms = sorted(s * 1000 for s in seconds)
        print(f"{channel}: acknowledgement -> outbox record (log line) over {len(ms)} deliveries: "
              f"median {statistics.median(ms):.1f} ms, p90 {ms[int(0.9 * len(ms))]:.1f} ms, "
              f"max {ms[-1]:.1f} ms")  # fmt: skip
    print(report)
    # 20 are planned; one is skipped when the restart after the previous kill has already
    # finished its phase (seen on 2026-11-30, a Zen 4 runner: 19 kills, a sequence's last
    # delivery kill found every delivery done): what the kills must find is checked per phase
    assert len(kills) >= MIN_KILLS, f"base seed {base_seed}: only {len(kills)} kills\n{report}"
    for phase in ("ingest", "indexing", "delivery"):
        assert hits[phase] >= MIN_HITS, (
            f"base seed {base_seed}: {phase} interrupted by {hits[phase]} kills only\n{report}"
        )
    # and by aim: most kills aimed at a phase found it in progress (a few come when the phase's
    # last piece of work has just finished; the faster the machine and the embedder, the more
    # often: on a Zen 4 runner with the int8 engine, 4 of 6 aimed at indexing hit it)
    tried = Counter(k.target for k in kills)
    for phase in ("ingest", "indexing", "delivery"):
        assert 2 * aimed[phase] > tried[phase], (
            f"base seed {base_seed}: {dict(aimed)} of {dict(tried)}\n{report}"
        )


# -- the window between matching an article and planning its alert -------------------------------


ALL_NEWS = {**TOPICS[1], "channels": ["hook"]}


def test_alert_planning_interrupted_after_matching_is_redone(
    tmp_path: Path, http_server: LocalServer
) -> None:
    """A crash (or a store error) after an article's matches were recorded but before its alert
    was written to the outbox must not lose the alert: the next run plans it."""
    http_server.route("/hook", Response(b"ok", content_type="text/plain"))
    config = write_config(
        tmp_path, site_feeds(serve_site(http_server)), topics=[ALL_NEWS], alert_backfill="3650d",
        channels={"hook": {"type": "webhook", "url": http_server.url("/hook")}},
    )  # fmt: skip
    loaded = load_config(config)
    store = open_state_store(sqlite_url(loaded.data_dir))

    def dies(*args: Any, **kwargs: Any) -> bool:
        raise StorageError("simulated: the process died before the outbox write")

    store.save_alert_message = dies  # type: ignore[method-assign]
    app = make_app(loaded, store=store)

    run_once(app)
    db = loaded.data_dir / "newsmon.db"
    assert read_state(db, "SELECT count(*) FROM topic_matches") != [(0,)]
    assert read_state(db, "SELECT count(*) FROM alert_messages") == [(0,)]

    assert main(["--config", str(config), "run", "--once"]) == 0  # the restart
    unalerted = read_state(
        db,
        "SELECT DISTINCT m.story_id FROM topic_matches m WHERE NOT EXISTS (SELECT 1 FROM "
        "alert_stories s WHERE s.topic_id = m.topic_id AND s.story_id = m.story_id)",
    )
    assert not unalerted, f"matched stories whose alert was lost: {unalerted}"
    assert http_server.hits("/hook") == read_state(db, "SELECT count(*) FROM alert_messages")[0][0]


# -- extraction workers of a killed service -------------------------------------------------------


@pytest.mark.timeout(120)
def test_extraction_workers_leave_when_the_service_is_killed(
    tmp_path: Path, http_server: LocalServer
) -> None:
    """The page workers (and multiprocessing's resource tracker) of a SIGKILLed service exit
    by themselves; each crash would otherwise leave ~150 MiB processes behind for good."""
    config = write_config(tmp_path, site_feeds(serve_site(http_server)), extract={"processes": 1})
    service = Service(config, tmp_path / "logs")
    service.start()
    assert service.proc is not None
    orphans: list[int] = []
    try:
        db = tmp_path / "data" / "newsmon.db"
        wait_for(lambda: state_counts(db).fetched + state_counts(db).indexed > 0, 60,
                 "a page extracted in the worker pool")  # fmt: skip
        orphans = children(service.proc.pid)
        assert len(orphans) >= 2, orphans  # a worker and the resource tracker
        service.kill()
        try:
            wait_for(lambda: not any(process_running(p) for p in orphans), 10,
                     "the orphaned workers to exit", poll=0.1)  # fmt: skip
        except TimeoutError:
            left = [p for p in orphans if process_running(p)]
            raise AssertionError(f"processes left behind by the killed service: {left}") from None
    finally:
        if service.alive():
            service.kill()
        for pid in orphans:
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)
