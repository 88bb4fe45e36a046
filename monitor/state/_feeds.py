"""Queries on the ``feeds`` table; each takes a connection inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from monitor.errors import StorageError
from monitor.state.schema import feeds
from monitor.types import FeedPollRecord, FeedState

_STATE_FIELDS = tuple(FeedState.__dataclass_fields__)


def _to_state(row: RowMapping) -> FeedState:
    return FeedState(**{name: row[name] for name in _STATE_FIELDS})


def sync(conn: Connection, configured: Sequence[tuple[str, str, str]], now: datetime) -> None:
    stored = {row.name: row for row in conn.execute(sa.select(feeds.c.name, feeds.c.url))}
    for name, url, language in configured:
        if name not in stored:
            conn.execute(
                feeds.insert().values(
                    name=name, url=url, language=language, added_at=now, config_updated_at=now
                )
            )
            continue
        values: dict[str, Any] = {"language": language, "active": True}
        if stored[name].url != url:
            # validators and a seen redirect describe the old URL's resource, not the new one
            values.update(url=url, etag=None, last_modified=None, permanent_redirect=None)
        _update_changed(conn, name, values, now)
    removed = set(stored) - {name for name, _, _ in configured}
    if removed:
        conn.execute(
            feeds.update()
            .where(feeds.c.name.in_(removed), feeds.c.active)
            .values(active=False, config_updated_at=now)
        )


def _update_changed(conn: Connection, name: str, values: dict[str, Any], now: datetime) -> None:
    # only touch config_updated_at when something really changed, so it means what it says
    changed = sa.or_(*(feeds.c[key].is_distinct_from(value) for key, value in values.items()))
    conn.execute(
        feeds.update().where(feeds.c.name == name, changed).values(**values, config_updated_at=now)
    )


def list_active(conn: Connection) -> list[FeedState]:
    query = sa.select(feeds).where(feeds.c.active).order_by(feeds.c.name)
    return [_to_state(row) for row in conn.execute(query).mappings()]


def get(conn: Connection, name: str) -> FeedState | None:
    row = conn.execute(sa.select(feeds).where(feeds.c.name == name)).mappings().first()
    return None if row is None else _to_state(row)


def record_poll(conn: Connection, name: str, record: FeedPollRecord) -> None:
    values: dict[str, Any] = {
        "last_polled_at": record.polled_at,
        "next_poll_at": record.next_poll_at,
        "interval_seconds": record.interval_seconds,
        "last_status": record.status,
    }
    values.update(_success_values(record) if record.error is None else _failure_values(record))
    result = conn.execute(feeds.update().where(feeds.c.name == name).values(**values))
    if result.rowcount == 0:
        raise StorageError(f"cannot record a poll of unknown feed {name!r}")


def _success_values(record: FeedPollRecord) -> dict[str, Any]:
    document = {
        "etag": record.etag,
        "last_modified": record.last_modified,
        "permanent_redirect": record.permanent_redirect,
        "malformed_reason": record.malformed_reason,
        "title": record.title,
    }
    if record.status == 304:
        # "not modified": the stored document, its validators and what we learnt from it
        # still hold; a 304 may repeat a validator or leave it out
        document = {key: value for key, value in document.items() if value is not None}
    values: dict[str, Any] = {
        **document,
        "last_error": None,
        "consecutive_failures": 0,
        "items_seen": record.items_seen,
        "items_new": record.items_new,
        "total_articles": feeds.c.total_articles + record.items_new,
    }
    if record.items_new > 0:
        values["last_new_item_at"] = record.polled_at
    return values


def _failure_values(record: FeedPollRecord) -> dict[str, Any]:
    return {
        "last_error": record.error,
        "error_count": feeds.c.error_count + 1,
        "consecutive_failures": feeds.c.consecutive_failures + 1,
    }
