"""The state store: feeds, their poll state and health, and articles through their life cycle.

One SQL schema on SQLite (the default: ``sqlite_url(data_dir)``) or PostgreSQL
(``postgresql+psycopg://user:password@host/db``; a plain ``postgresql://`` URL means the same),
versioned with Alembic migrations that ``open_state_store`` runs to the newest version.

For fast tests, ``open_state_store("sqlite://")`` gives a private in-memory database; all its
connections share one (StaticPool), so use it from one thread at a time.

Conventions:

* every datetime going in or coming out is aware UTC (naive input is taken to be UTC);
* every method is one transaction, and every database failure leaving the store is a
  ``StorageError`` saying what failed, naming the URL with its password redacted;
* writers are expected to be one process (the monitor); readers may be many. SQLite runs in
  WAL mode with a busy timeout, so readers never block the writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from alerts.types import AlertMessage, AlertRecord, Delivery, DeliveryStatus, Match, StoredMatch
from indexer.types import Story
from monitor.state._articles import Outcome
from monitor.state.engine import sqlite_url
from monitor.state.migrate import head_version
from monitor.state.store import SqlStateStore, open_state_store
from monitor.types import (
    Article,
    ArticleDraft,
    ArticleStatus,
    FeedPollRecord,
    FeedState,
    ProcessedText,
)

__all__ = [
    "Outcome",
    "SqlStateStore",
    "StateStore",
    "head_version",
    "open_state_store",
    "sqlite_url",
]


class StateStore(Protocol):
    """What the pipeline stages need from storage (see the module docstring for conventions)."""

    def sync_feeds(self, feeds: Sequence[tuple[str, str, str]], now: datetime) -> None:
        """Make the stored feeds match the config's ``(name, url, language)`` triples.

        New names are inserted; known ones get their url/language updated (a new URL drops the
        old URL's validators) and are re-activated; stored feeds missing from the config are
        marked inactive, keeping their data. Names are unique (the config guarantees it).
        """
        ...

    def list_feeds(self) -> list[FeedState]:
        """Active feeds, sorted by name."""
        ...

    def get_feed(self, name: str) -> FeedState | None:
        """The stored feed, active or not; None when the name was never configured."""
        ...

    def record_poll(self, name: str, record: FeedPollRecord) -> None:
        """Store a poll's outcome: schedule always; validators, counters and document
        details on success (a 304 keeps what it does not repeat); error counters on failure."""
        ...

    def known_entries(self, feed: str, entry_keys: Sequence[str]) -> dict[str, str]:
        """``entry_key -> content_hash`` for the keys already seen in ``feed``."""
        ...

    def save_drafts(
        self, drafts: Sequence[ArticleDraft], now: datetime
    ) -> list[tuple[str, Outcome]]:
        """Store drafts in one transaction, linking each ``(feed, entry_key)`` to its article.

        Outcome per draft: ``"new"`` (inserted as pending), ``"updated"`` (content hash changed:
        feed fields replaced, version + 1, back to pending with attempts, backoff, error and
        duplicate verdict cleared) or ``"linked"`` (same content, only the entry recorded).
        """
        ...

    def get_article(self, article_id: str) -> Article | None: ...

    def find_article_by_canonical_url(self, canonical_url: str) -> Article | None:
        """The article at that canonical URL; when several share it, the one that is not a
        duplicate, else the first discovered."""
        ...

    def due_articles(self, now: datetime, limit: int) -> list[Article]:
        """Pending articles whose next attempt is unset or due, oldest discovered first."""
        ...

    def save_text(self, article_id: str, text: ProcessedText, fetched_at: datetime) -> None:
        """Store the processed text; page title/author/published/canonical URL replace the
        feed's only when given. Status becomes fetched, last_error the fallback reason."""
        ...

    def mark_duplicate(self, article_id: str, duplicate_of: str, now: datetime) -> None: ...

    def record_article_failure(
        self, article_id: str, error: str, next_attempt_at: datetime | None, now: datetime
    ) -> None:
        """Count a failed attempt; ``next_attempt_at=None`` gives up (status failed)."""
        ...

    def set_status(
        self, article_ids: Sequence[str], status: ArticleStatus, now: datetime
    ) -> None: ...

    def list_articles(
        self,
        *,
        since: datetime | None = None,
        feed: str | None = None,
        status: ArticleStatus | None = None,
        limit: int | None = None,
    ) -> list[Article]:
        """Newest first by published time (discovery time when unknown). ``since`` filters on
        ``discovered_at`` - when newsmon saw the article - since feeds' published dates are
        missing, wrong or back-dated often enough to make "new since" unreliable."""
        ...

    def count_articles(self, status: ArticleStatus | None = None) -> int: ...

    # -- indexing and stories (issue 3)

    def get_articles(self, article_ids: Sequence[str]) -> dict[str, Article]: ...

    def due_for_indexing(self, limit: int) -> list[Article]:
        """Fetched articles waiting to be embedded, oldest fetched first."""
        ...

    def mark_indexed(
        self,
        article_id: str,
        *,
        model: str,
        story: Story | None,
        near_duplicate_of: str | None,
        now: datetime,
        body_pending: bool = False,
    ) -> None:
        """Status indexed with the model that embedded it; saves ``story`` (new or grown) and
        links the article to it, in one transaction. ``body_pending``: only the lead's vector
        is stored so far."""
        ...

    def count_bodies_pending(self) -> int:
        """Indexed articles whose body waits to be embedded (the lead-first backlog)."""
        ...

    def bodies_pending(self, model: str, limit: int) -> list[str]:
        """Ids of articles indexed with ``model`` by their lead alone, oldest indexed first."""
        ...

    def mark_body_indexed(self, article_id: str, *, rematch: bool, now: datetime) -> None:
        """Every passage of the article is stored now (a no-op unless its body was pending);
        ``rematch``: its topic match saw the lead alone, so it is due for matching again."""
        ...

    def find_indexed_by_text_hash(self, text_hash: str, exclude_id: str) -> Article | None:
        """An indexed original (not itself a copy) whose text is exactly this one."""
        ...

    def reset_index(self, model: str | None, now: datetime) -> int:
        """Indexed articles back to fetched: all of them, or those not indexed with ``model``.
        Returns how many; they keep their story."""
        ...

    def get_stories(self, story_ids: Sequence[str]) -> dict[str, Story]: ...

    def list_stories(
        self, *, since: datetime | None = None, limit: int | None = None
    ) -> list[Story]:
        """Most recently seen first; ``since`` filters on last_seen."""
        ...

    def story_articles(self, story_id: str) -> list[Article]: ...

    def alerted_stories(self, story_ids: Sequence[str]) -> set[str]:
        """Those of the stories that an alert of any topic has reported."""
        ...

    def move_to_story(
        self, article_ids: Sequence[str], story: Story, *, left: str, left_story: Story | None
    ) -> None:
        """The articles (and their topic matches) move from story ``left`` to ``story``; both
        stories are saved as given, ``left`` deleted when ``left_story`` is None (emptied)."""
        ...

    # -- alerting (issue 4)

    def due_for_matching(self, limit: int) -> list[str]:
        """Ids of indexed articles not matched against the topics yet, oldest indexed first."""
        ...

    def record_matches(
        self,
        article_id: str,
        story_id: str | None,
        matches: Sequence[Match],
        *,
        alertable: bool,
        now: datetime,
        mark_matched: bool = True,
    ) -> None:
        """Store the positive matches (with their story) and mark the article matched, in one
        transaction; an article without a story only gets marked. ``mark_matched=False``
        stores the matches only (the caller marks it once its alerts are in the outbox)."""
        ...

    def story_matches(self, topic_id: str, story_id: str) -> list[StoredMatch]:
        """Every stored match of the topic in the story, oldest first."""
        ...

    def alert_matches(self, alert_id: str) -> list[StoredMatch]:
        """Every match of the alert's topic in the alert's stories, oldest first."""
        ...

    def alert_of_story(self, topic_id: str, story_id: str) -> str | None:
        """The alert a (topic, story) belongs to, if any."""
        ...

    def join_alert(self, alert_id: str, topic_id: str, story_id: str) -> None:
        """Make ``story_id``'s matches of the topic part of the (earlier) alert."""
        ...

    def list_matches(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[StoredMatch]: ...

    def save_alert_message(
        self,
        message: AlertMessage,
        *,
        article_ids: Sequence[str],
        channels: Sequence[str],
        now: datetime,
    ) -> bool:
        """The outbox write, one transaction: the alert (first time), the message, one pending
        delivery per channel, and the reported matches linked to it. False (and nothing
        written) when the message exists already."""
        ...

    def due_deliveries(self, now: datetime, limit: int) -> list[tuple[Delivery, AlertMessage]]:
        """Pending deliveries whose next attempt is due, oldest message first, at most
        ``limit`` per channel."""
        ...

    def next_delivery_at(self) -> datetime | None: ...

    def count_pending_deliveries(self) -> int: ...

    def count_failed_deliveries(self) -> int: ...

    def defer_deliveries(self, channel: str, until: datetime) -> None:
        """The channel's pending deliveries due before ``until`` become due at ``until``."""
        ...

    def retry_failed_deliveries(self, channel: str | None, now: datetime) -> int:
        """Failed deliveries (of ``channel``, or all) pending again, due at ``now``."""
        ...

    def record_delivery(
        self,
        message_id: str,
        channel: str,
        *,
        status: DeliveryStatus,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        """Count an attempt and its outcome (sent, pending again at ``next_attempt_at``, failed)."""
        ...

    def list_alerts(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[AlertRecord]:
        """Newest first; ``since`` filters on the alert's last update."""
        ...

    def get_alert(self, alert_id: str) -> AlertRecord | None: ...

    def save_label(self, topic_id: str, article_id: str, relevant: bool, now: datetime) -> None: ...

    def topic_labels(self, topic_id: str | None = None) -> list[tuple[str, str, bool]]: ...

    def digest_sent(self, digest_id: str, channel: str) -> bool:
        """Whether the digest went out on the channel (see alerts/digest_job.py)."""
        ...

    def record_digest(
        self, digest_id: str, channel: str, *, error: str | None, now: datetime
    ) -> None:
        """Count an attempt to send a digest on a channel: sent (``error`` None) or failed."""
        ...

    def close(self) -> None: ...


if TYPE_CHECKING:

    def _implements_protocol(store: SqlStateStore) -> StateStore:
        # mypy proves here that SqlStateStore satisfies the protocol
        return store
