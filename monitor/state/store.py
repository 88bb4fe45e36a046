"""The SQL implementation of the state store (SQLite or PostgreSQL through SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType

import sqlalchemy as sa
from alembic.util.exc import CommandError
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from alerts.types import AlertMessage, AlertRecord, Delivery, DeliveryStatus, Match, StoredMatch
from indexer.types import Story
from monitor.errors import StorageError
from monitor.state import _alerts, _articles, _feeds, _stories
from monitor.state import engine as engines
from monitor.state import migrate as migrations
from monitor.state._articles import Outcome
from monitor.types import (
    Article,
    ArticleDraft,
    ArticleStatus,
    FeedPollRecord,
    FeedState,
    ProcessedText,
)

# any fixed number: it names the lock that keeps two processes from migrating at once
_MIGRATION_LOCK_ID = 0x6E65_7773  # "news"
_MAX_CAUSE_CHARS = 500


def open_state_store(url: str, *, migrate: bool = True) -> SqlStateStore:
    """Open the store at ``url``, migrating its schema to the newest version unless told not to.

    Fails with ``StorageError`` (naming the URL, password redacted) when the database cannot be
    reached, created or migrated.
    """
    parsed = engines.parse_url(url)
    store = SqlStateStore(engines.create_engine(parsed), parsed)
    try:
        store.ping()  # so that an unreachable database reads as such, not as a failed migration
        if migrate:
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store


class SqlStateStore:
    """Implements ``monitor.state.StateStore``; every method is one transaction."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self._engine = engine
        self._url = url
        self._closed = False

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL, password redacted."""
        return engines.redact(self._url)

    @property
    def engine(self) -> Engine:
        """The underlying engine, for diagnostics and tests; prefer the methods."""
        return self._engine

    @contextmanager
    def _transaction(self, what: str, *, write: bool = False) -> Iterator[Connection]:
        """A connection in a transaction that commits on success; database errors become
        ``StorageError`` saying ``what`` failed where."""
        if self._closed:
            raise StorageError(f"{what} failed: state store {self.url} is closed")
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{engines.WRITE_OPTION: write})
                with conn.begin():
                    yield conn
        except (SQLAlchemyError, CommandError) as e:
            raise StorageError(f"{what} failed in state store {self.url}: {self._cause(e)}") from e

    def _cause(self, error: Exception) -> str:
        # The driver's message, on one line and short: SQLAlchemy's own text repeats the SQL
        # and its parameters (whole article texts). Scrub the password in case a driver
        # echoes its connection string.
        cause = error.orig if isinstance(error, DBAPIError) and error.orig else error
        message = " ".join(str(cause).split()) or type(cause).__name__
        if self._url.password:
            message = message.replace(str(self._url.password), "***")
        return message[:_MAX_CAUSE_CHARS]

    def ping(self) -> None:
        """Connect once, so that an unusable URL fails now rather than at first use."""
        with self._transaction("connecting") as conn:
            conn.execute(sa.select(1))

    def migrate(self) -> None:
        """Bring the schema to the newest version (a no-op when it is there already)."""
        with self._transaction("migrating the schema", write=True) as conn:
            if conn.dialect.name == "postgresql":
                # released at commit; SQLite's BEGIN IMMEDIATE already serialises writers
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
            migrations.upgrade(conn)

    def schema_version(self) -> str | None:
        """The schema revision of the database; None when it was never migrated."""
        with self._transaction("reading the schema version") as conn:
            return migrations.current_version(conn)

    def close(self) -> None:
        """Release all connections; the store cannot be used afterwards."""
        self._closed = True
        self._engine.dispose()

    def __enter__(self) -> SqlStateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- feeds -----------------------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[tuple[str, str, str]], now: datetime) -> None:
        with self._transaction("syncing the configured feeds", write=True) as conn:
            _feeds.sync(conn, feeds, now)

    def list_feeds(self) -> list[FeedState]:
        with self._transaction("listing feeds") as conn:
            return _feeds.list_active(conn)

    def get_feed(self, name: str) -> FeedState | None:
        with self._transaction(f"reading feed {name!r}") as conn:
            return _feeds.get(conn, name)

    def record_poll(self, name: str, record: FeedPollRecord) -> None:
        with self._transaction(f"recording a poll of feed {name!r}", write=True) as conn:
            _feeds.record_poll(conn, name, record)

    # -- entries and drafts ------------------------------------------------------------------------

    def known_entries(self, feed: str, entry_keys: Sequence[str]) -> dict[str, str]:
        with self._transaction(f"reading known entries of feed {feed!r}") as conn:
            return _articles.known_entries(conn, feed, entry_keys)

    def save_drafts(
        self, drafts: Sequence[ArticleDraft], now: datetime
    ) -> list[tuple[str, Outcome]]:
        with self._transaction(f"saving {len(drafts)} new entries", write=True) as conn:
            return _articles.save_drafts(conn, drafts, now)

    # -- articles --------------------------------------------------------------------------------

    def get_article(self, article_id: str) -> Article | None:
        with self._transaction(f"reading article {article_id!r}") as conn:
            return _articles.get(conn, article_id)

    def find_article_by_canonical_url(self, canonical_url: str) -> Article | None:
        with self._transaction(f"looking up canonical URL {canonical_url!r}") as conn:
            return _articles.find_by_canonical_url(conn, canonical_url)

    def due_articles(self, now: datetime, limit: int) -> list[Article]:
        with self._transaction("listing due articles") as conn:
            return _articles.due(conn, now, limit)

    def save_text(self, article_id: str, text: ProcessedText, fetched_at: datetime) -> None:
        with self._transaction(f"saving the text of article {article_id!r}", write=True) as conn:
            _articles.save_text(conn, article_id, text, fetched_at)

    def mark_duplicate(self, article_id: str, duplicate_of: str, now: datetime) -> None:
        with self._transaction(f"marking article {article_id!r} a duplicate", write=True) as conn:
            _articles.mark_duplicate(conn, article_id, duplicate_of, now)

    def record_article_failure(
        self, article_id: str, error: str, next_attempt_at: datetime | None, now: datetime
    ) -> None:
        what = f"recording a failure of article {article_id!r}"
        with self._transaction(what, write=True) as conn:
            _articles.record_failure(conn, article_id, error, next_attempt_at, now)

    def set_status(self, article_ids: Sequence[str], status: ArticleStatus, now: datetime) -> None:
        what = f"setting status {status.value!r} on {len(article_ids)} articles"
        with self._transaction(what, write=True) as conn:
            _articles.set_status(conn, article_ids, status, now)

    def list_articles(
        self,
        *,
        since: datetime | None = None,
        feed: str | None = None,
        status: ArticleStatus | None = None,
        limit: int | None = None,
    ) -> list[Article]:
        with self._transaction("listing articles") as conn:
            return _articles.list_articles(conn, since=since, feed=feed, status=status, limit=limit)

    def count_articles(self, status: ArticleStatus | None = None) -> int:
        with self._transaction("counting articles") as conn:
            return _articles.count(conn, status)

    # -- indexing and stories ----------------------------------------------------------------------

    def get_articles(self, article_ids: Sequence[str]) -> dict[str, Article]:
        with self._transaction(f"reading {len(article_ids)} articles") as conn:
            return _articles.get_many(conn, article_ids)

    def due_for_indexing(self, limit: int) -> list[Article]:
        with self._transaction("listing articles to index") as conn:
            return _articles.due_for_indexing(conn, limit)

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
        """Record the indexing outcome and the article's story (saved in the same transaction)."""
        with self._transaction(f"marking article {article_id!r} indexed", write=True) as conn:
            if story is not None:
                _stories.save(conn, story)
            _articles.mark_indexed(
                conn, article_id, model=model, story_id=story.id if story else None,
                near_duplicate_of=near_duplicate_of, body_pending=body_pending, now=now,
            )  # fmt: skip

    def count_bodies_pending(self) -> int:
        with self._transaction("counting articles whose body is still to embed") as conn:
            return _articles.count_bodies_pending(conn)

    def bodies_pending(self, model: str, limit: int) -> list[str]:
        with self._transaction("listing articles whose body is still to embed") as conn:
            return _articles.bodies_pending(conn, model, limit)

    def mark_body_indexed(self, article_id: str, *, rematch: bool, now: datetime) -> None:
        what = f"marking the body of article {article_id!r} indexed"
        with self._transaction(what, write=True) as conn:
            _articles.mark_body_indexed(conn, article_id, rematch=rematch, now=now)

    def find_indexed_by_text_hash(self, text_hash: str, exclude_id: str) -> Article | None:
        with self._transaction("looking up an article by its text") as conn:
            return _articles.find_indexed_by_text_hash(conn, text_hash, exclude_id)

    def reset_index(self, model: str | None, now: datetime) -> int:
        with self._transaction("resetting the index state", write=True) as conn:
            return _articles.reset_index(conn, model, now)

    def get_stories(self, story_ids: Sequence[str]) -> dict[str, Story]:
        with self._transaction(f"reading {len(story_ids)} stories") as conn:
            return _stories.get_many(conn, story_ids)

    def list_stories(
        self, *, since: datetime | None = None, limit: int | None = None
    ) -> list[Story]:
        with self._transaction("listing stories") as conn:
            return _stories.list_recent(conn, since, limit)

    def story_articles(self, story_id: str) -> list[Article]:
        with self._transaction(f"listing the articles of story {story_id!r}") as conn:
            return _articles.story_articles(conn, story_id)

    def alerted_stories(self, story_ids: Sequence[str]) -> set[str]:
        if not story_ids:
            return set()
        with self._transaction(f"checking {len(story_ids)} stories for alerts") as conn:
            return _stories.alerted(conn, story_ids)

    def move_to_story(
        self, article_ids: Sequence[str], story: Story, *, left: str, left_story: Story | None
    ) -> None:
        what = f"moving articles {list(article_ids)!r} from story {left!r} to {story.id!r}"
        with self._transaction(what, write=True) as conn:
            _stories.move_articles(conn, article_ids, story.id)
            _stories.save(conn, story)
            if left_story is None:
                _stories.delete(conn, left)
            else:
                _stories.save(conn, left_story)

    # -- alerting (0003) ---------------------------------------------------------------------------

    def due_for_matching(self, limit: int) -> list[str]:
        with self._transaction("listing articles to match against the topics") as conn:
            return _alerts.due_for_matching(conn, limit)

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
        what = f"recording the topic matches of article {article_id!r}"
        with self._transaction(what, write=True) as conn:
            _alerts.record_matches(conn, article_id, story_id, matches, alertable=alertable,
                                   now=now, mark_matched=mark_matched)  # fmt: skip

    def story_matches(self, topic_id: str, story_id: str) -> list[StoredMatch]:
        what = f"reading the matches of topic {topic_id!r} in story {story_id!r}"
        with self._transaction(what) as conn:
            return _alerts.story_matches(conn, topic_id, story_id)

    def alert_matches(self, alert_id: str) -> list[StoredMatch]:
        with self._transaction(f"reading the matches of alert {alert_id!r}") as conn:
            return _alerts.alert_matches(conn, alert_id)

    def alert_of_story(self, topic_id: str, story_id: str) -> str | None:
        with self._transaction(f"looking up the alert of story {story_id!r}") as conn:
            return _alerts.alert_of_story(conn, topic_id, story_id)

    def join_alert(self, alert_id: str, topic_id: str, story_id: str) -> None:
        what = f"joining story {story_id!r} to alert {alert_id!r}"
        with self._transaction(what, write=True) as conn:
            _alerts.join_alert(conn, alert_id, topic_id, story_id)

    def list_matches(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[StoredMatch]:
        with self._transaction("listing topic matches") as conn:
            return _alerts.list_matches(conn, topic_id=topic_id, since=since, until=until)

    def save_alert_message(
        self,
        message: AlertMessage,
        *,
        article_ids: Sequence[str],
        channels: Sequence[str],
        now: datetime,
    ) -> bool:
        what = f"saving alert message {message.id!r} to the outbox"
        with self._transaction(what, write=True) as conn:
            return _alerts.save_message(conn, message, article_ids=article_ids,
                                        channels=channels, now=now)  # fmt: skip

    def due_deliveries(self, now: datetime, limit: int) -> list[tuple[Delivery, AlertMessage]]:
        with self._transaction("listing due deliveries") as conn:
            return _alerts.due_deliveries(conn, now, limit)

    def next_delivery_at(self) -> datetime | None:
        with self._transaction("reading the next delivery time") as conn:
            return _alerts.next_delivery_at(conn)

    def count_pending_deliveries(self) -> int:
        with self._transaction("counting pending deliveries") as conn:
            return _alerts.count_pending(conn)

    def defer_deliveries(self, channel: str, until: datetime) -> None:
        with self._transaction(f"pausing the deliveries of channel {channel!r}", write=True) as c:
            _alerts.defer_deliveries(c, channel, until)

    def count_failed_deliveries(self) -> int:
        with self._transaction("counting failed deliveries") as conn:
            return _alerts.count_failed(conn)

    def retry_failed_deliveries(self, channel: str | None, now: datetime) -> int:
        what = f"re-queueing the failed deliveries of {channel or 'every channel'}"
        with self._transaction(what, write=True) as conn:
            return _alerts.retry_failed(conn, channel, now)

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
        what = f"recording delivery of {message_id!r} on channel {channel!r}"
        with self._transaction(what, write=True) as conn:
            _alerts.record_delivery(conn, message_id, channel, status=status, error=error,
                                    next_attempt_at=next_attempt_at, now=now)  # fmt: skip

    def list_alerts(
        self,
        *,
        topic_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[AlertRecord]:
        with self._transaction("listing alerts") as conn:
            return _alerts.list_alerts(conn, topic_id=topic_id, since=since, limit=limit)

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        with self._transaction(f"reading alert {alert_id!r}") as conn:
            return _alerts.get_alert(conn, alert_id)

    def save_label(self, topic_id: str, article_id: str, relevant: bool, now: datetime) -> None:
        what = f"saving a label of article {article_id!r} for topic {topic_id!r}"
        with self._transaction(what, write=True) as conn:
            _alerts.save_label(conn, topic_id, article_id, relevant, now)

    def topic_labels(self, topic_id: str | None = None) -> list[tuple[str, str, bool]]:
        """``(topic_id, article_id, relevant)`` in the order they were given."""
        with self._transaction("reading topic labels") as conn:
            return _alerts.labels(conn, topic_id)

    def digest_sent(self, digest_id: str, channel: str) -> bool:
        with self._transaction(f"reading whether digest {digest_id!r} was sent") as conn:
            return _alerts.digest_sent(conn, digest_id, channel)

    def record_digest(
        self, digest_id: str, channel: str, *, error: str | None, now: datetime
    ) -> None:
        what = f"recording digest {digest_id!r} on channel {channel!r}"
        with self._transaction(what, write=True) as conn:
            _alerts.record_digest(conn, digest_id, channel, error=error, now=now)
