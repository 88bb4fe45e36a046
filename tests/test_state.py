"""The state store, run against SQLite (a file in tmp_path) and PostgreSQL (a fresh schema).

PostgreSQL comes from ``NEWSMON_TEST_POSTGRES_URL`` (default: the local server's ``test``
database); its cases skip with the reason when that server is unreachable.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from indexer.types import Story
from monitor.errors import StorageError
from monitor.state import (
    SqlStateStore,
    StateStore,
    head_version,
    open_state_store,
    sqlite_url,
)
from monitor.state import migrate as migrations
from monitor.state.schema import metadata
from monitor.types import (
    ArticleDraft,
    ArticleStatus,
    FeedPollRecord,
    ProcessedText,
    TextSource,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FEEDS = [
    ("kyiv", "https://kyiv.example/rss", "uk"),
    ("world", "https://world.example/rss", "en"),
]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def store(empty_store: SqlStateStore) -> SqlStateStore:
    empty_store.sync_feeds(FEEDS, T0)
    return empty_store


def draft(article_id: str, **overrides: Any) -> ArticleDraft:
    values: dict[str, Any] = {
        "id": article_id,
        "feed": "kyiv",
        "entry_key": f"guid:{article_id}",
        "url": f"https://kyiv.example/{article_id}",
        "canonical_url": f"https://kyiv.example/{article_id}",
        "guid": article_id,
        "title": f"Title {article_id}",
        "feed_text": f"Summary {article_id}",
        "feed_language": "uk",
        "published_at": T0 - timedelta(hours=1),
        "author": None,
        "content_hash": "hash-1",
    }
    values.update(overrides)
    return ArticleDraft(**values)


def poll(**overrides: Any) -> FeedPollRecord:
    values: dict[str, Any] = {
        "polled_at": T0,
        "next_poll_at": T0 + timedelta(minutes=15),
        "interval_seconds": 900.0,
        "status": 200,
    }
    values.update(overrides)
    return FeedPollRecord(**values)


def page_text(**overrides: Any) -> ProcessedText:
    values: dict[str, Any] = {
        "text": "Повний текст статті.",
        "text_source": TextSource.PAGE,
        "language": "uk",
        "language_confidence": 0.97,
    }
    values.update(overrides)
    return ProcessedText(**values)


# -- feeds ---------------------------------------------------------------------------------------


def test_sync_feeds_inserts_updates_deactivates_and_reactivates(empty_store: SqlStateStore) -> None:
    s: StateStore = empty_store
    s.sync_feeds([*FEEDS, ("sport", "https://sport.example/rss", "en")], T0)
    s.record_poll("sport", poll(etag='"s1"'))

    s.sync_feeds([("kyiv", "https://kyiv.example/rss", "ru"), FEEDS[1]], T0)

    assert [f.name for f in s.list_feeds()] == ["kyiv", "world"]
    assert s.get_feed("kyiv").language == "ru"  # type: ignore[union-attr]
    inactive = s.get_feed("sport")
    assert inactive is not None
    assert inactive.etag == '"s1"', "an inactive feed keeps its data"

    s.sync_feeds([*FEEDS, ("sport", "https://sport.example/rss", "en")], T0)
    assert [f.name for f in s.list_feeds()] == ["kyiv", "sport", "world"]
    assert s.get_feed("sport").etag == '"s1"'  # type: ignore[union-attr]
    assert s.get_feed("nope") is None


def test_sync_feeds_new_url_drops_old_validators(store: SqlStateStore) -> None:
    store.record_poll("kyiv", poll(etag='"e1"', last_modified="Sat, 01 Mar 2025 12:00:00 GMT"))
    store.sync_feeds(FEEDS, T0)
    assert store.get_feed("kyiv").etag == '"e1"'  # type: ignore[union-attr]

    store.sync_feeds([("kyiv", "https://kyiv.example/atom", "uk"), FEEDS[1]], T0)
    feed = store.get_feed("kyiv")
    assert feed is not None
    assert (feed.url, feed.etag, feed.last_modified) == ("https://kyiv.example/atom", None, None)


def test_record_poll_success_sets_validators_and_health(store: SqlStateStore) -> None:
    store.record_poll(
        "kyiv",
        poll(
            etag='"e1"',
            last_modified="lm1",
            items_seen=20,
            items_new=5,
            permanent_redirect="https://kyiv.example/new-rss",
            malformed_reason="undefined entity",
            title="Київ",
        ),
    )
    feed = store.get_feed("kyiv")
    assert feed is not None
    assert (feed.etag, feed.last_modified, feed.last_status) == ('"e1"', "lm1", 200)
    assert (feed.items_seen, feed.items_new, feed.total_articles) == (20, 5, 5)
    assert feed.last_new_item_at == T0
    assert (feed.last_polled_at, feed.next_poll_at) == (T0, T0 + timedelta(minutes=15))
    assert feed.interval_seconds == 900.0
    assert feed.permanent_redirect == "https://kyiv.example/new-rss"
    assert (feed.malformed_reason, feed.title) == ("undefined entity", "Київ")

    later = T0 + timedelta(minutes=15)
    store.record_poll("kyiv", poll(polled_at=later, etag='"e2"', items_seen=20, items_new=0))
    feed = store.get_feed("kyiv")
    assert feed is not None
    assert (feed.etag, feed.last_modified) == ('"e2"', None), "a 200 without it drops it"
    assert (feed.items_new, feed.total_articles, feed.last_new_item_at) == (0, 5, T0)
    assert feed.last_polled_at == later


def test_record_poll_not_modified_keeps_what_it_does_not_repeat(store: SqlStateStore) -> None:
    store.record_poll("kyiv", poll(etag='"e1"', last_modified="lm1", title="Київ", items_new=2))
    store.record_poll("kyiv", poll(status=304, items_seen=0, items_new=0))
    feed = store.get_feed("kyiv")
    assert feed is not None
    assert (feed.etag, feed.last_modified, feed.title) == ('"e1"', "lm1", "Київ")
    assert (feed.last_status, feed.items_new, feed.total_articles) == (304, 0, 2)


def test_record_poll_failures_count_until_a_success(store: SqlStateStore) -> None:
    store.record_poll("kyiv", poll(etag='"e1"'))
    store.record_poll("kyiv", poll(status=503, error="HTTP 503"))
    store.record_poll("kyiv", poll(status=None, error="connection refused"))
    feed = store.get_feed("kyiv")
    assert feed is not None
    assert (feed.error_count, feed.consecutive_failures) == (2, 2)
    assert (feed.last_error, feed.last_status) == ("connection refused", None)
    assert feed.etag == '"e1"', "a failure keeps the validators"

    store.record_poll("kyiv", poll(status=304))
    feed = store.get_feed("kyiv")
    assert feed is not None
    assert (feed.error_count, feed.consecutive_failures, feed.last_error) == (2, 0, None)


def test_record_poll_of_unknown_feed_fails(store: SqlStateStore) -> None:
    with pytest.raises(StorageError, match="unknown feed 'nope'"):
        store.record_poll("nope", poll())


# -- drafts and entries ----------------------------------------------------------------------------


def test_save_drafts_new_linked_updated(store: SqlStateStore) -> None:
    assert store.save_drafts([draft("a1"), draft("a2")], T0) == [("a1", "new"), ("a2", "new")]
    assert store.known_entries("kyiv", ["guid:a1", "guid:a2", "guid:zz"]) == {
        "guid:a1": "hash-1",
        "guid:a2": "hash-1",
    }
    later = T0 + timedelta(hours=1)
    outcomes = store.save_drafts([draft("a1"), draft("a2", content_hash="hash-2")], later)
    assert outcomes == [("a1", "linked"), ("a2", "updated")]
    assert store.known_entries("kyiv", ["guid:a2"]) == {"guid:a2": "hash-2"}

    unchanged, changed = store.get_article("a1"), store.get_article("a2")
    assert unchanged is not None
    assert changed is not None
    assert (unchanged.version, unchanged.updated_at) == (1, T0)
    assert (changed.version, changed.content_hash, changed.updated_at) == (2, "hash-2", later)
    assert changed.discovered_at == T0


def test_same_article_from_two_feeds_in_one_batch(store: SqlStateStore) -> None:
    twin = draft("a1", feed="world", entry_key="link:https://kyiv.example/a1")
    assert store.save_drafts([draft("a1"), twin], T0) == [("a1", "new"), ("a1", "linked")]
    assert store.known_entries("world", ["link:https://kyiv.example/a1"]) == {
        "link:https://kyiv.example/a1": "hash-1"
    }
    article = store.get_article("a1")
    assert article is not None
    assert article.feed == "kyiv", "the feed it was first seen in"
    assert store.known_entries("kyiv", []) == {}


def test_changed_entry_is_processed_again(store: SqlStateStore) -> None:
    store.save_drafts([draft("a1")], T0)
    store.record_article_failure("a1", "timeout", None, T0)
    store.save_text("a1", page_text(), T0)  # fetched after all, with page text

    changed = draft("a1", title="Новий заголовок", feed_text="Новий", content_hash="hash-2")
    later = T0 + timedelta(hours=2)
    assert store.save_drafts([changed], later) == [("a1", "updated")]
    article = store.get_article("a1")
    assert article is not None
    assert (article.status, article.attempts, article.last_error) == (
        ArticleStatus.PENDING,
        0,
        None,
    )
    assert (article.title, article.feed_text, article.version) == ("Новий заголовок", "Новий", 2)
    assert article.text == "Повний текст статті.", "old text stays until the new one is fetched"
    assert [a.id for a in store.due_articles(later, 10)] == ["a1"]


def test_save_drafts_is_one_transaction(store: SqlStateStore) -> None:
    orphan = draft("a2", feed="not-configured")
    with pytest.raises(StorageError, match="saving 2 new entries failed"):
        store.save_drafts([draft("a1"), orphan], T0)
    assert store.get_article("a1") is None
    assert store.known_entries("kyiv", ["guid:a1"]) == {}


# -- article life cycle ----------------------------------------------------------------------------


def test_due_articles_oldest_first_with_backoff_and_limit(store: SqlStateStore) -> None:
    for minutes, article_id in enumerate(["a1", "a2", "a3", "a4"]):
        store.save_drafts([draft(article_id)], T0 + timedelta(minutes=minutes))
    store.record_article_failure("a1", "HTTP 503", T0 + timedelta(hours=1), T0)
    store.save_text("a3", page_text(), T0)

    now = T0 + timedelta(minutes=30)
    assert [a.id for a in store.due_articles(now, 10)] == ["a2", "a4"]
    assert [a.id for a in store.due_articles(now, 1)] == ["a2"]
    assert [a.id for a in store.due_articles(T0 + timedelta(hours=1), 10)] == ["a1", "a2", "a4"]


def test_pending_articles_resume_after_reopening(store_url: str) -> None:
    with open_state_store(store_url) as first:
        first.sync_feeds(FEEDS, T0)
        first.save_drafts([draft("a1"), draft("a2")], T0)
        first.save_text("a1", page_text(), T0)
    with open_state_store(store_url) as second:
        assert [a.id for a in second.due_articles(T0, 10)] == ["a2"]
        assert second.schema_version() == head_version()


def test_save_text_prefers_page_metadata(store: SqlStateStore) -> None:
    store.save_drafts([draft("a1", author="Feed Author")], T0)
    page_published = datetime(2025, 2, 28, 9, 30, tzinfo=UTC)
    fetched = T0 + timedelta(minutes=5)
    store.save_text(
        "a1",
        page_text(
            title="Заголовок сторінки",
            published=page_published,
            canonical_url="https://kyiv.example/canonical/a1",
        ),
        fetched,
    )
    article = store.get_article("a1")
    assert article is not None
    assert (article.status, article.text_source, article.last_error) == (
        ArticleStatus.FETCHED,
        TextSource.PAGE,
        None,
    )
    assert (article.title, article.author) == ("Заголовок сторінки", "Feed Author")
    assert (article.published_at, article.fetched_at) == (page_published, fetched)
    assert article.canonical_url == "https://kyiv.example/canonical/a1"
    assert (article.language, article.language_confidence) == ("uk", 0.97)
    assert article.text_length == len("Повний текст статті.")


def test_save_text_feed_fallback_records_the_reason(store: SqlStateStore) -> None:
    store.save_drafts([draft("a1")], T0)
    store.save_text(
        "a1",
        page_text(
            text="Summary a1",
            text_source=TextSource.FEED,
            language=None,
            language_confidence=0.0,
            fallback_reason="page text too short",
        ),
        T0,
    )
    article = store.get_article("a1")
    assert article is not None
    assert (article.text_source, article.last_error) == (TextSource.FEED, "page text too short")
    assert (article.title, article.canonical_url) == ("Title a1", "https://kyiv.example/a1")
    assert article.language is None
    with store.engine.connect() as conn:
        text_hash = conn.execute(sa.text("SELECT text_hash FROM articles")).scalar_one()
    assert text_hash == hashlib.sha256(b"Summary a1").hexdigest()


def test_mark_duplicate_and_canonical_lookup(store: SqlStateStore) -> None:
    shared = "https://kyiv.example/story"
    store.save_drafts([draft("a1", canonical_url=shared)], T0)
    store.save_drafts([draft("a2", canonical_url=shared)], T0 + timedelta(minutes=1))
    store.mark_duplicate("a1", "a2", T0 + timedelta(minutes=2))

    duplicate = store.get_article("a1")
    assert duplicate is not None
    assert (duplicate.status, duplicate.duplicate_of) == (ArticleStatus.DUPLICATE, "a2")
    assert duplicate.updated_at == T0 + timedelta(minutes=2)
    found = store.find_article_by_canonical_url(shared)
    assert found is not None
    assert found.id == "a2", "the original, not the duplicate"
    assert store.find_article_by_canonical_url("https://nowhere.example/") is None
    assert [a.id for a in store.due_articles(T0 + timedelta(hours=1), 10)] == ["a2"]


def test_failures_retry_then_give_up(store: SqlStateStore) -> None:
    store.save_drafts([draft("a1")], T0)
    retry_at = T0 + timedelta(minutes=10)
    store.record_article_failure("a1", "HTTP 503", retry_at, T0)
    article = store.get_article("a1")
    assert article is not None
    assert (article.status, article.attempts, article.next_attempt_at) == (
        ArticleStatus.PENDING,
        1,
        retry_at,
    )
    assert store.due_articles(T0, 10) == []

    store.record_article_failure("a1", "HTTP 404", None, retry_at)
    article = store.get_article("a1")
    assert article is not None
    assert (article.status, article.attempts, article.last_error) == (
        ArticleStatus.FAILED,
        2,
        "HTTP 404",
    )
    assert article.next_attempt_at is None
    assert store.due_articles(T0 + timedelta(days=1), 10) == []


def test_set_status_and_counts(store: SqlStateStore) -> None:
    store.save_drafts([draft("a1"), draft("a2"), draft("a3")], T0)
    store.set_status(["a1", "a2"], ArticleStatus.INDEXED, T0 + timedelta(hours=1))
    assert store.count_articles() == 3
    assert store.count_articles(ArticleStatus.INDEXED) == 2
    assert store.count_articles(ArticleStatus.PENDING) == 1
    assert store.get_article("a1").updated_at == T0 + timedelta(hours=1)  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="1 of 2 articles do not exist"):
        store.set_status(["a3", "missing"], ArticleStatus.INDEXED, T0)
    assert store.count_articles(ArticleStatus.INDEXED) == 2, "rolled back"


def test_operations_on_unknown_articles_fail(store: SqlStateStore) -> None:
    assert store.get_article("missing") is None
    with pytest.raises(StorageError, match="no article 'missing'"):
        store.save_text("missing", page_text(), T0)
    with pytest.raises(StorageError, match="no article 'missing'"):
        store.record_article_failure("missing", "x", None, T0)
    with pytest.raises(StorageError, match="no article 'missing'"):
        store.mark_duplicate("missing", "other", T0)
    store.save_drafts([draft("a1")], T0)
    with pytest.raises(StorageError, match="marking article 'a1' a duplicate failed"):
        store.mark_duplicate("a1", "missing", T0)  # the original must exist
    with pytest.raises(StorageError, match="a duplicate of itself"):
        store.mark_duplicate("a1", "a1", T0)


def test_list_articles_newest_first_and_filters(store: SqlStateStore) -> None:
    store.save_drafts([draft("old", published_at=T0 - timedelta(days=2))], T0)
    store.save_drafts([draft("undated", published_at=None)], T0 + timedelta(hours=1))
    store.save_drafts(
        [draft("w1", feed="world", published_at=T0 - timedelta(hours=3))],
        T0 + timedelta(hours=2),
    )
    store.save_text("w1", page_text(), T0 + timedelta(hours=2))

    assert [a.id for a in store.list_articles()] == ["undated", "w1", "old"]
    assert [a.id for a in store.list_articles(limit=1)] == ["undated"]
    assert [a.id for a in store.list_articles(feed="kyiv")] == ["undated", "old"]
    assert [a.id for a in store.list_articles(status=ArticleStatus.FETCHED)] == ["w1"]
    # since = discovery time: w1 was published before T0 but discovered after
    since = T0 + timedelta(minutes=30)
    assert [a.id for a in store.list_articles(since=since)] == ["undated", "w1"]
    assert store.list_articles(since=since, feed="world", status=ArticleStatus.PENDING) == []


# -- round trips ---------------------------------------------------------------------------------


def test_cyrillic_round_trip(store: SqlStateStore) -> None:
    title = "Київ: «Ґрунтовний» звіт — ЁЖЩ ёжщ 🇺🇦"
    store.sync_feeds([*FEEDS, ("новини", "https://новини.example/rss", "ru")], T0)
    store.save_drafts(
        [draft("ст1", feed="новини", title=title, entry_key="guid:ст1", author="Олена Пчілка")],
        T0,
    )
    store.save_text("ст1", page_text(text="Текст " * 5000), T0)
    article = store.get_article("ст1")
    assert article is not None
    assert (article.title, article.author, article.feed) == (title, "Олена Пчілка", "новини")
    assert article.text == "Текст " * 5000
    assert store.known_entries("новини", ["guid:ст1"]) == {"guid:ст1": "hash-1"}
    assert store.get_feed("новини").url == "https://новини.example/rss"  # type: ignore[union-attr]


def test_datetimes_come_out_aware_utc(store: SqlStateStore) -> None:
    kyiv_time = timezone(timedelta(hours=2))
    published = datetime(2025, 3, 1, 10, 0, tzinfo=kyiv_time)
    store.save_drafts([draft("a1", published_at=published)], T0)
    naive_utc = datetime(2025, 3, 1, 13, 0)  # taken to be UTC
    store.record_article_failure("a1", "x", naive_utc, T0)
    store.record_poll("kyiv", poll(polled_at=T0.astimezone(kyiv_time), items_new=1))

    article = store.get_article("a1")
    feed = store.get_feed("kyiv")
    assert article is not None
    assert feed is not None
    for value in (
        article.published_at,
        article.discovered_at,
        article.updated_at,
        article.next_attempt_at,
        feed.last_polled_at,
        feed.last_new_item_at,
        feed.next_poll_at,
    ):
        assert value is not None
        assert value.tzinfo is UTC, value
    assert article.published_at == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert article.next_attempt_at == datetime(2025, 3, 1, 13, 0, tzinfo=UTC)
    assert feed.last_polled_at == T0
    # ordering and comparisons use the instant, not the wall-clock text
    assert store.due_articles(datetime(2025, 3, 1, 14, 0, tzinfo=kyiv_time), 10) == []
    assert len(store.due_articles(datetime(2025, 3, 1, 15, 0, tzinfo=kyiv_time), 10)) == 1


# -- schema and migrations -------------------------------------------------------------------------


def test_migrations_from_empty_to_head_match_the_schema(store_url: str) -> None:
    with open_state_store(store_url, migrate=False) as store:
        assert store.schema_version() is None
        assert not sa.inspect(store.engine).has_table("articles")

        store.migrate()
        assert store.schema_version() == head_version()
        with store.engine.connect() as conn:
            # the migrations create exactly what monitor.state.schema describes
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []

        with store.engine.begin() as conn:
            migrations.downgrade(conn, "base")
        assert store.schema_version() is None
        assert not sa.inspect(store.engine).has_table("feeds")
        store.migrate()
        assert store.schema_version() == head_version()


def test_reopening_is_idempotent(store_url: str) -> None:
    with open_state_store(store_url) as store:
        store.sync_feeds(FEEDS, T0)
        store.save_drafts([draft("a1")], T0)
    for _ in range(2):
        with open_state_store(store_url) as store:
            assert store.schema_version() == head_version()
            assert store.count_articles() == 1
            assert [f.name for f in store.list_feeds()] == ["kyiv", "world"]


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with open_state_store(sqlite_url(tmp_path / "nested" / "dir")) as store:
        assert (tmp_path / "nested" / "dir" / "newsmon.db").is_file()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def test_in_memory_store_shares_one_database() -> None:
    with open_state_store("sqlite://") as store:
        store.sync_feeds(FEEDS, T0)
        store.save_drafts([draft("a1")], T0)
        assert store.count_articles() == 1
    with open_state_store("sqlite://") as fresh:
        assert fresh.count_articles() == 0, "each in-memory store is private"


def test_sqlite_url(tmp_path: Path) -> None:
    assert sqlite_url(tmp_path) == f"sqlite:///{tmp_path}/newsmon.db"


# -- errors --------------------------------------------------------------------------------------


def test_unusable_directory_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create the directory") as caught:
        open_state_store(sqlite_url(blocker / "data"))
    assert str(blocker / "data" / "newsmon.db") in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


def test_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "newsmon.db").write_bytes(b"this is no SQLite file " * 100)
    with pytest.raises(StorageError, match="not a database") as caught:
        open_state_store(sqlite_url(tmp_path))
    assert caught.value.__cause__ is not None


def test_unreachable_server_is_a_storage_error_with_redacted_url() -> None:
    url = "postgresql+psycopg://newsmon:s3cret-pw@127.0.0.1:1/newsmon?connect_timeout=2"
    with pytest.raises(StorageError) as caught:
        open_state_store(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql+psycopg://newsmon:***@127.0.0.1:1/newsmon" in message
    assert message.startswith("connecting failed in state store")
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)


def test_plain_postgresql_scheme_means_psycopg() -> None:
    with pytest.raises(StorageError, match=r"postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/db"):
        open_state_store("postgresql://u:pw@127.0.0.1:1/db", migrate=False)


def test_unsupported_url_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="unsupported state store URL mysql://u:\\*\\*\\*@"):
        open_state_store("mysql://u:pw@localhost/db")
    with pytest.raises(StorageError, match="invalid state store URL"):
        open_state_store("::not a url::")


def test_closed_store_refuses_work(store: SqlStateStore) -> None:
    store.close()
    with pytest.raises(StorageError, match="is closed"):
        store.list_feeds()


# -- indexing and stories ------------------------------------------------------------------------


def _fetched(store: SqlStateStore, *ids: str, text: str = "Повний текст статті.") -> None:
    store.save_drafts([draft(i) for i in ids], T0)
    for n, i in enumerate(ids):
        store.save_text(i, page_text(text=text), T0 + timedelta(seconds=n))


def _story(story_id: str, *, count: int = 1, sources: tuple[str, ...] = ("kyiv",)) -> Story:
    return Story(
        id=story_id,
        headline="Переговори в Абу-Дабі",
        first_seen=T0,
        last_seen=T0 + timedelta(hours=count),
        article_count=count,
        languages=("uk",),
        sources=sources,
        representative_article_id="a1",
    )


def test_due_for_indexing_lists_fetched_articles_oldest_first(store: SqlStateStore) -> None:
    _fetched(store, "a1", "a2", "a3")
    assert [a.id for a in store.due_for_indexing(10)] == ["a1", "a2", "a3"]
    assert [a.id for a in store.due_for_indexing(2)] == ["a1", "a2"]


def test_mark_indexed_saves_the_story_and_links_the_article(store: SqlStateStore) -> None:
    _fetched(store, "a1", "a2")
    store.mark_indexed("a1", model="m1", story=_story("s1"), near_duplicate_of=None, now=T0)
    grown = _story("s1", count=2, sources=("kyiv", "meduza"))
    store.mark_indexed("a2", model="m1", story=grown, near_duplicate_of="a1", now=T0)

    a1, a2 = store.get_article("a1"), store.get_article("a2")
    assert a1 is not None
    assert a2 is not None
    assert a1.status is ArticleStatus.INDEXED
    assert (a1.story_id, a1.index_model, a1.indexed_at) == ("s1", "m1", T0)
    assert (a2.story_id, a2.near_duplicate_of) == ("s1", "a1")
    assert store.due_for_indexing(10) == []
    assert store.get_stories(["s1", "nope"]) == {"s1": grown}
    assert [a.id for a in store.story_articles("s1")] == ["a1", "a2"]
    assert store.list_stories() == [grown]
    assert store.list_stories(since=T0 + timedelta(hours=3)) == []


def test_find_indexed_by_text_hash_finds_the_original_only(store: SqlStateStore) -> None:
    _fetched(store, "a1", "a2", text="Та сама стаття, слово в слово.")
    first = store.get_article("a1")
    assert first is not None
    assert first.text_hash is not None
    assert store.find_indexed_by_text_hash(first.text_hash, exclude_id="a2") is None  # not indexed
    store.mark_indexed("a1", model="m1", story=_story("s1"), near_duplicate_of=None, now=T0)
    store.mark_indexed("a2", model="m1", story=_story("s1", count=2), near_duplicate_of="a1",
                       now=T0)  # fmt: skip
    found = store.find_indexed_by_text_hash(first.text_hash, exclude_id="a3")
    assert found is not None
    assert found.id == "a1"
    assert store.find_indexed_by_text_hash(first.text_hash, exclude_id="a1") is None


def test_reset_index_by_model_keeps_stories(store: SqlStateStore) -> None:
    _fetched(store, "a1", "a2")
    store.mark_indexed("a1", model="old", story=_story("s1"), near_duplicate_of=None, now=T0)
    store.mark_indexed("a2", model="new", story=_story("s1", count=2), near_duplicate_of=None,
                       now=T0)  # fmt: skip
    assert store.reset_index("new", T0) == 1
    assert [a.id for a in store.due_for_indexing(10)] == ["a1"]
    again = store.get_article("a1")
    assert again is not None
    assert again.story_id == "s1"
    assert store.reset_index(None, T0) == 1
    assert store.count_articles(ArticleStatus.FETCHED) == 2
    assert store.get_articles(["a1", "a2", "zz"]).keys() == {"a1", "a2"}


def test_deferred_bodies_oldest_first_for_the_model_and_due_for_matching_again(
    store: SqlStateStore,
) -> None:
    _fetched(store, "a1", "a2", "a3", "a4")
    store.mark_indexed("a1", model="m1", story=_story("s1"), near_duplicate_of=None,
                       now=T0 + timedelta(minutes=2), body_pending=True)  # fmt: skip
    store.mark_indexed("a2", model="m1", story=_story("s2"), near_duplicate_of=None,
                       now=T0 + timedelta(minutes=1), body_pending=True)  # fmt: skip
    store.mark_indexed("a3", model="m0", story=_story("s3"), near_duplicate_of=None,
                       now=T0, body_pending=True)  # fmt: skip
    store.mark_indexed("a4", model="m1", story=_story("s4"), near_duplicate_of=None, now=T0)
    assert store.bodies_pending("m1", 10) == ["a2", "a1"]  # another model's wait for reindex
    assert store.bodies_pending("m1", 1) == ["a2"]
    a2 = store.get_article("a2")
    assert a2 is not None
    assert a2.body_pending
    assert a2.status is ArticleStatus.INDEXED
    # matched on its lead: once the body is in, it is due for matching again
    store.record_matches("a1", "s1", [], alertable=True, now=T0 + timedelta(minutes=3))
    store.record_matches("a2", "s2", [], alertable=True, now=T0 + timedelta(minutes=3))
    assert store.due_for_matching(10) == ["a3", "a4"]
    store.mark_body_indexed("a1", rematch=True, now=T0 + timedelta(minutes=4))
    store.mark_body_indexed("a2", rematch=False, now=T0 + timedelta(minutes=4))
    assert store.bodies_pending("m1", 10) == []
    assert store.due_for_matching(10) == ["a3", "a4", "a1"]
    # only while pending: a repeated call (or one after a full re-index) changes nothing
    store.record_matches("a1", "s1", [], alertable=True, now=T0 + timedelta(minutes=5))
    store.mark_body_indexed("a1", rematch=True, now=T0 + timedelta(minutes=6))
    assert store.due_for_matching(10) == ["a3", "a4"]
    # indexing again decides afresh
    store.mark_indexed("a2", model="m1", story=_story("s2"), near_duplicate_of=None,
                       now=T0 + timedelta(minutes=7), body_pending=True)  # fmt: skip
    assert store.bodies_pending("m1", 10) == ["a2"]
