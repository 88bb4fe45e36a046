"""Queries on the ``articles`` and ``entries`` tables, inside the caller's transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from monitor.errors import StorageError
from monitor.state.schema import articles, entries
from monitor.types import Article, ArticleDraft, ArticleStatus, ProcessedText, TextSource

Outcome = Literal["new", "updated", "linked"]

_ARTICLE_FIELDS = tuple(name for name in Article.__dataclass_fields__ if name != "status")

# SQLite caps bound parameters per statement (32766 since 3.32, 999 before); stay well below
_IN_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _to_article(row: RowMapping) -> Article:
    values = {name: row[name] for name in _ARTICLE_FIELDS}
    if values["text_source"] is not None:
        values["text_source"] = TextSource(values["text_source"])
    return Article(status=ArticleStatus(row["status"]), **values)


def _articles_where(conn: Connection, *conditions: sa.ColumnElement[bool]) -> list[Article]:
    query = sa.select(articles).where(*conditions)
    return [_to_article(row) for row in conn.execute(query).mappings()]


def _update_one(conn: Connection, article_id: str, what: str, **values: Any) -> None:
    result = conn.execute(articles.update().where(articles.c.id == article_id).values(**values))
    if result.rowcount == 0:
        raise StorageError(f"cannot {what}: no article {article_id!r}")


# -- entries and drafts ------------------------------------------------------------------------


def known_entries(conn: Connection, feed: str, entry_keys: Sequence[str]) -> dict[str, str]:
    known: dict[str, str] = {}
    for chunk in _chunks(list(dict.fromkeys(entry_keys))):
        query = sa.select(entries.c.entry_key, entries.c.content_hash).where(
            entries.c.feed == feed, entries.c.entry_key.in_(chunk)
        )
        known.update((row.entry_key, row.content_hash) for row in conn.execute(query))
    return known


def save_drafts(
    conn: Connection, drafts: Sequence[ArticleDraft], now: datetime
) -> list[tuple[str, Outcome]]:
    stored = _stored_hashes(conn, [draft.id for draft in drafts])
    outcomes: list[tuple[str, Outcome]] = []
    for draft in drafts:
        outcomes.append((draft.id, _save_article(conn, draft, stored, now)))
        _link_entry(conn, draft, now)
    return outcomes


def _stored_hashes(conn: Connection, ids: Sequence[str]) -> dict[str, str | None]:
    stored: dict[str, str | None] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        query = sa.select(articles.c.id, articles.c.content_hash).where(articles.c.id.in_(chunk))
        stored.update((row.id, row.content_hash) for row in conn.execute(query))
    return stored


def _save_article(
    conn: Connection, draft: ArticleDraft, stored: dict[str, str | None], now: datetime
) -> Outcome:
    """Insert or update the draft's article; ``stored`` (id -> content hash) is kept current
    so that a later draft of the same batch (the same story in two feeds) sees this one."""
    known = draft.id in stored
    previous_hash = stored.get(draft.id)
    stored[draft.id] = draft.content_hash
    if not known:
        conn.execute(articles.insert().values(**_new_article(draft, now)))
        return "new"
    if previous_hash == draft.content_hash:
        return "linked"
    values = _changed_article(draft, now)
    _update_one(conn, draft.id, "update the article", **values, version=articles.c.version + 1)
    return "updated"


def _new_article(draft: ArticleDraft, now: datetime) -> dict[str, Any]:
    return {
        "id": draft.id,
        "feed": draft.feed,
        "url": draft.url,
        "canonical_url": draft.canonical_url,
        "guid": draft.guid,
        "title": draft.title,
        "feed_text": draft.feed_text,
        "feed_language": draft.feed_language,
        "author": draft.author,
        "published_at": draft.published_at,
        "content_hash": draft.content_hash,
        "first_poll": draft.first_poll,
        "status": ArticleStatus.PENDING.value,
        "discovered_at": now,
        "updated_at": now,
    }


def _changed_article(draft: ArticleDraft, now: datetime) -> dict[str, Any]:
    # The entry changed in its feed: take the new feed data and process the article again from
    # scratch (attempts, backoff, error and duplicate verdict belong to the old version). The
    # stored page text stays until the new one replaces it, so search keeps finding it.
    return {
        "url": draft.url,
        "title": draft.title,
        "feed_text": draft.feed_text,
        "author": draft.author,
        "published_at": draft.published_at,
        "content_hash": draft.content_hash,
        "status": ArticleStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": None,
        "last_error": None,
        "duplicate_of": None,
        # a changed text may no longer repeat the article it was a copy of: decide again
        "near_duplicate_of": None,
        "updated_at": now,
    }


def _link_entry(conn: Connection, draft: ArticleDraft, now: datetime) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(entries).values(
        feed=draft.feed,
        entry_key=draft.entry_key,
        article_id=draft.id,
        content_hash=draft.content_hash,
        first_seen_at=now,
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[entries.c.feed, entries.c.entry_key],
            set_={
                "article_id": statement.excluded.article_id,
                "content_hash": statement.excluded.content_hash,
            },
        )
    )


# -- reads ---------------------------------------------------------------------------------------


def get(conn: Connection, article_id: str) -> Article | None:
    found = _articles_where(conn, articles.c.id == article_id)
    return found[0] if found else None


def find_by_canonical_url(conn: Connection, canonical_url: str) -> Article | None:
    # several articles may share a canonical URL (duplicates point at their original); the
    # original is the one that is not a duplicate, else the first discovered
    query = (
        sa.select(articles)
        .where(articles.c.canonical_url == canonical_url)
        .order_by(
            (articles.c.status == ArticleStatus.DUPLICATE.value).asc(),
            articles.c.discovered_at,
            articles.c.id,
        )
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else _to_article(row)


def due(conn: Connection, now: datetime, limit: int) -> list[Article]:
    query = (
        sa.select(articles)
        .where(
            articles.c.status == ArticleStatus.PENDING.value,
            sa.or_(articles.c.next_attempt_at.is_(None), articles.c.next_attempt_at <= now),
        )
        .order_by(articles.c.discovered_at, articles.c.id)
        .limit(limit)
    )
    return [_to_article(row) for row in conn.execute(query).mappings()]


def list_articles(
    conn: Connection,
    *,
    since: datetime | None,
    feed: str | None,
    status: ArticleStatus | None,
    limit: int | None,
) -> list[Article]:
    conditions: list[sa.ColumnElement[bool]] = []
    if since is not None:
        conditions.append(articles.c.discovered_at >= since)
    if feed is not None:
        conditions.append(articles.c.feed == feed)
    if status is not None:
        conditions.append(articles.c.status == status.value)
    newest = sa.func.coalesce(articles.c.published_at, articles.c.discovered_at)
    query = sa.select(articles).where(*conditions).order_by(newest.desc(), articles.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [_to_article(row) for row in conn.execute(query).mappings()]


def count(conn: Connection, status: ArticleStatus | None) -> int:
    query = sa.select(sa.func.count()).select_from(articles)
    if status is not None:
        query = query.where(articles.c.status == status.value)
    return int(conn.execute(query).scalar_one())


# -- processing outcomes -------------------------------------------------------------------------


def save_text(conn: Connection, article_id: str, text: ProcessedText, fetched_at: datetime) -> None:
    values: dict[str, Any] = {
        "text": text.text,
        "text_hash": hashlib.sha256(text.text.encode("utf-8")).hexdigest(),
        "text_source": text.text_source.value,
        "language": text.language,
        "language_confidence": text.language_confidence,
        "status": ArticleStatus.FETCHED.value,
        "fetched_at": fetched_at,
        "updated_at": fetched_at,
        "next_attempt_at": None,
        "last_error": text.fallback_reason,
    }
    # the page knows better than the feed, but when it says nothing the feed's value stays
    page = {
        "title": text.title,
        "author": text.author,
        "published_at": text.published,
        "canonical_url": text.canonical_url,
    }
    values.update({key: value for key, value in page.items() if value is not None})
    _update_one(conn, article_id, "save the text", **values)


def mark_duplicate(conn: Connection, article_id: str, duplicate_of: str, now: datetime) -> None:
    if article_id == duplicate_of:
        raise StorageError(f"cannot mark article {article_id!r} a duplicate of itself")
    _update_one(
        conn,
        article_id,
        "mark a duplicate",
        status=ArticleStatus.DUPLICATE.value,
        duplicate_of=duplicate_of,
        next_attempt_at=None,
        updated_at=now,
    )


def record_failure(
    conn: Connection,
    article_id: str,
    error: str,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    # no next attempt means the caller gave up: "failed" takes it off the due list for good
    status = ArticleStatus.PENDING if next_attempt_at is not None else ArticleStatus.FAILED
    _update_one(
        conn,
        article_id,
        "record a failure",
        attempts=articles.c.attempts + 1,
        last_error=error,
        next_attempt_at=next_attempt_at,
        status=status.value,
        updated_at=now,
    )


def set_status(
    conn: Connection, article_ids: Sequence[str], status: ArticleStatus, now: datetime
) -> None:
    wanted = list(dict.fromkeys(article_ids))
    updated = 0
    for chunk in _chunks(wanted):
        result = conn.execute(
            articles.update()
            .where(articles.c.id.in_(chunk))
            .values(status=status.value, updated_at=now)
        )
        updated += result.rowcount
    if updated != len(wanted):
        raise StorageError(
            f"cannot set status {status.value!r}: {len(wanted) - updated} of "
            f"{len(wanted)} articles do not exist"
        )


# -- indexing (0002) -----------------------------------------------------------------------------


def get_many(conn: Connection, article_ids: Sequence[str]) -> dict[str, Article]:
    found: dict[str, Article] = {}
    for chunk in _chunks(list(dict.fromkeys(article_ids))):
        found.update((a.id, a) for a in _articles_where(conn, articles.c.id.in_(chunk)))
    return found


def due_for_indexing(conn: Connection, limit: int) -> list[Article]:
    query = (
        sa.select(articles)
        .where(articles.c.status == ArticleStatus.FETCHED.value)
        .order_by(articles.c.fetched_at, articles.c.id)
        .limit(limit)
    )
    return [_to_article(row) for row in conn.execute(query).mappings()]


def mark_indexed(
    conn: Connection,
    article_id: str,
    *,
    model: str,
    story_id: str | None,
    near_duplicate_of: str | None,
    body_pending: bool,
    now: datetime,
) -> None:
    _update_one(
        conn,
        article_id,
        "mark the article indexed",
        status=ArticleStatus.INDEXED.value,
        index_model=model,
        indexed_at=now,
        story_id=story_id,
        near_duplicate_of=near_duplicate_of,
        body_pending=body_pending,
        updated_at=now,
    )


def count_bodies_pending(conn: Connection) -> int:
    query = sa.select(sa.func.count()).where(
        articles.c.body_pending.is_(True), articles.c.status == ArticleStatus.INDEXED.value
    )
    return int(conn.execute(query).scalar() or 0)


def bodies_pending(conn: Connection, model: str, limit: int) -> list[str]:
    query = (
        sa.select(articles.c.id)
        .where(
            articles.c.body_pending.is_(True),
            articles.c.status == ArticleStatus.INDEXED.value,
            articles.c.index_model == model,
        )
        .order_by(articles.c.indexed_at, articles.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def mark_body_indexed(conn: Connection, article_id: str, *, rematch: bool, now: datetime) -> None:
    # only while it is still pending: an update indexed meanwhile decided afresh
    values: dict[str, Any] = {"body_pending": False, "updated_at": now}
    if rematch:
        values["matched_at"] = None
    conn.execute(
        articles.update()
        .where(articles.c.id == article_id, articles.c.body_pending.is_(True))
        .values(**values)
    )


def find_indexed_by_text_hash(conn: Connection, text_hash: str, exclude_id: str) -> Article | None:
    """The first indexed original with exactly this text (a syndicated copy's source)."""
    query = (
        sa.select(articles)
        .where(
            articles.c.text_hash == text_hash,
            articles.c.id != exclude_id,
            articles.c.status == ArticleStatus.INDEXED.value,
            articles.c.near_duplicate_of.is_(None),
        )
        .order_by(articles.c.indexed_at, articles.c.id)
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else _to_article(row)


def reset_index(conn: Connection, model: str | None, now: datetime) -> int:
    """Send indexed articles back to ``fetched`` (all, or those not indexed with ``model``)."""
    condition = articles.c.status == ArticleStatus.INDEXED.value
    if model is not None:
        condition = condition & (
            articles.c.index_model.is_(None) | (articles.c.index_model != model)
        )
    result = conn.execute(
        articles.update()
        .where(condition)
        .values(status=ArticleStatus.FETCHED.value, updated_at=now)
    )
    return int(result.rowcount)


def story_articles(conn: Connection, story_id: str) -> list[Article]:
    query = (
        sa.select(articles)
        .where(articles.c.story_id == story_id)
        .order_by(
            sa.func.coalesce(articles.c.published_at, articles.c.discovered_at), articles.c.id
        )
    )
    return [_to_article(row) for row in conn.execute(query).mappings()]
