"""Queries on the alerting tables (topic matches, alerts, messages, the delivery outbox and
topic labels), inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from alerts.types import (
    AlertArticle,
    AlertMessage,
    AlertRecord,
    Delivery,
    DeliveryStatus,
    Match,
    StoredMatch,
    message_from_json,
    message_to_json,
)
from monitor.state.schema import (
    alert_messages,
    alert_stories,
    alerts,
    articles,
    deliveries,
    digest_deliveries,
    topic_labels,
    topic_matches,
)
from monitor.types import ArticleStatus


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


# -- matching -----------------------------------------------------------------------------------


def due_for_matching(conn: Connection, limit: int) -> list[str]:
    query = (
        sa.select(articles.c.id)
        .where(articles.c.status == ArticleStatus.INDEXED.value, articles.c.matched_at.is_(None))
        .order_by(articles.c.indexed_at, articles.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def record_matches(
    conn: Connection,
    article_id: str,
    story_id: str | None,
    matches: Sequence[Match],
    *,
    alertable: bool,
    now: datetime,
    mark_matched: bool = True,
) -> None:
    for match in matches:
        if not match.matched or story_id is None:
            continue
        values = {
            "topic_id": match.topic_id,
            "article_id": article_id,
            "story_id": story_id,
            "score": match.score,
            "threshold": match.threshold,
            "passage": match.passage,
            "passage_index": match.passage_index,
            "keywords": list(match.keywords),
            "reason": match.reason,
            "alertable": alertable,
            "matched_at": now,
        }
        statement = _insert(conn)(topic_matches).values(**values)
        # matching again (never by the service, but by hand) refreshes the explanation and
        # keeps which message reported it
        keep = {"topic_id", "article_id", "message_id"}
        update = {k: statement.excluded[k] for k in values if k not in keep}
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[topic_matches.c.topic_id, topic_matches.c.article_id], set_=update
            )
        )
    if mark_matched:
        conn.execute(articles.update().where(articles.c.id == article_id).values(matched_at=now))


def _stored_match(row: RowMapping) -> StoredMatch:
    return StoredMatch(
        topic_id=row["topic_id"],
        story_id=row["story_id"],
        article=AlertArticle(
            article_id=row["article_id"],
            url=row["canonical_url"] or row["url"],
            title=row["title"],
            language=row["language"] or row["feed_language"],
            source=row["feed"],
            published_at=row["published_at"] or row["discovered_at"],
            score=row["score"],
            passage=row["passage"],
            keywords=tuple(row["keywords"] or ()),
        ),
        alertable=bool(row["alertable"]),
        matched_at=row["matched_at"],
        reason=row["reason"],
        message_id=row["message_id"],
        threshold=row["threshold"],
    )


def _matches_query() -> sa.Select[Any]:
    return sa.select(
        topic_matches,
        articles.c.url,
        articles.c.canonical_url,
        articles.c.title,
        articles.c.language,
        articles.c.feed_language,
        articles.c.feed,
        articles.c.published_at,
        articles.c.discovered_at,
    ).join(articles, articles.c.id == topic_matches.c.article_id)


def story_matches(conn: Connection, topic_id: str, story_id: str) -> list[StoredMatch]:
    query = (
        _matches_query()
        .where(topic_matches.c.topic_id == topic_id, topic_matches.c.story_id == story_id)
        .order_by(topic_matches.c.matched_at, topic_matches.c.article_id)
    )
    return [_stored_match(row) for row in conn.execute(query).mappings()]


def alert_matches(conn: Connection, alert_id: str) -> list[StoredMatch]:
    """Every match of the alert's topic in any of the alert's stories, oldest first."""
    query = (
        _matches_query()
        .join(
            alert_stories,
            (alert_stories.c.topic_id == topic_matches.c.topic_id)
            & (alert_stories.c.story_id == topic_matches.c.story_id),
        )
        .where(alert_stories.c.alert_id == alert_id)
        .order_by(topic_matches.c.matched_at, topic_matches.c.article_id)
    )
    return [_stored_match(row) for row in conn.execute(query).mappings()]


def alert_of_story(conn: Connection, topic_id: str, story_id: str) -> str | None:
    query = sa.select(alert_stories.c.alert_id).where(
        alert_stories.c.topic_id == topic_id, alert_stories.c.story_id == story_id
    )
    value = conn.execute(query).scalar()
    return str(value) if value is not None else None


def join_alert(conn: Connection, alert_id: str, topic_id: str, story_id: str) -> None:
    statement = _insert(conn)(alert_stories).values(
        topic_id=topic_id, story_id=story_id, alert_id=alert_id
    )
    conn.execute(statement.on_conflict_do_nothing())


def list_matches(
    conn: Connection, *, topic_id: str | None, since: datetime | None, until: datetime | None
) -> list[StoredMatch]:
    query = _matches_query().order_by(topic_matches.c.matched_at, topic_matches.c.article_id)
    if topic_id is not None:
        query = query.where(topic_matches.c.topic_id == topic_id)
    if since is not None:
        query = query.where(topic_matches.c.matched_at >= since)
    if until is not None:
        query = query.where(topic_matches.c.matched_at < until)
    return [_stored_match(row) for row in conn.execute(query).mappings()]


# -- alerts and the outbox ----------------------------------------------------------------------


def save_message(
    conn: Connection,
    message: AlertMessage,
    *,
    article_ids: Sequence[str],
    channels: Sequence[str],
    now: datetime,
) -> bool:
    """Write the alert (first time), the message, its deliveries and which matches it reports.
    False when the message exists already (a decision re-run): nothing is written twice."""
    exists = conn.execute(
        sa.select(alert_messages.c.id).where(alert_messages.c.id == message.id)
    ).first()
    if exists is not None:
        return False
    insert = _insert(conn)
    conn.execute(
        insert(alerts)
        .values(
            id=message.alert_id,
            topic_id=message.topic_id,
            story_id=message.story_id,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_update(index_elements=[alerts.c.id], set_={"updated_at": now})
    )
    join_alert(conn, message.alert_id, message.topic_id, message.story_id)
    conn.execute(
        alert_messages.insert().values(
            id=message.id,
            alert_id=message.alert_id,
            sequence=message.sequence,
            created_at=message.created_at,
            payload=message_to_json(message),
        )
    )
    for channel in dict.fromkeys(channels):
        conn.execute(
            deliveries.insert().values(
                message_id=message.id,
                channel=channel,
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    if article_ids:
        conn.execute(
            topic_matches.update()
            .where(
                topic_matches.c.topic_id == message.topic_id,
                topic_matches.c.article_id.in_(list(article_ids)),
            )
            .values(message_id=message.id)
        )
    if article_ids and message.sequence == 0:
        # a first alert of an uncertain topic may report a related story's held matches
        # (alerts.plan.Confirmation): that story is then part of the alert (a follow-up
        # reports only matches of the alert's stories)
        stories = conn.execute(
            sa.select(topic_matches.c.story_id)
            .distinct()
            .where(
                topic_matches.c.topic_id == message.topic_id,
                topic_matches.c.article_id.in_(list(article_ids)),
            )
        ).scalars()
        for story_id in list(stories):
            join_alert(conn, message.alert_id, message.topic_id, story_id)
    return True


def _delivery(row: RowMapping) -> Delivery:
    return Delivery(
        message_id=row["message_id"],
        channel=row["channel"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
        sent_at=row["sent_at"],
    )


def due_deliveries(
    conn: Connection, now: datetime, limit: int
) -> list[tuple[Delivery, AlertMessage]]:
    """At most ``limit`` due deliveries per channel, each channel's oldest first: a channel
    with a backlog (paused, or its receiver down) never hides another channel's due ones."""
    due = sa.and_(
        deliveries.c.status == DeliveryStatus.PENDING.value,
        sa.or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
    )
    # oldest first, so a channel delivers a story's messages in order
    order = (alert_messages.c.created_at, alert_messages.c.sequence)
    ranked = (
        sa.select(
            deliveries.c.message_id,
            deliveries.c.channel,
            sa.func.row_number()
            .over(partition_by=deliveries.c.channel, order_by=order)
            .label("rank"),
        )
        .join(alert_messages, alert_messages.c.id == deliveries.c.message_id)
        .where(due)
        .subquery()
    )
    query = (
        sa.select(deliveries, alert_messages.c.payload)
        .join(alert_messages, alert_messages.c.id == deliveries.c.message_id)
        .join(
            ranked,
            (ranked.c.message_id == deliveries.c.message_id)
            & (ranked.c.channel == deliveries.c.channel),
        )
        .where(ranked.c.rank <= limit)
        .order_by(*order, deliveries.c.channel)
    )
    return [
        (_delivery(row), message_from_json(row["payload"]))
        for row in conn.execute(query).mappings()
    ]


def retry_failed(conn: Connection, channel: str | None, now: datetime) -> int:
    """Failed deliveries (of one channel, or all) back to pending, due now, with a fresh count
    of attempts; returns how many. For after the cause was fixed (a webhook URL, a recipient)."""
    query = (
        deliveries.update()
        .where(deliveries.c.status == DeliveryStatus.FAILED.value)
        .values(status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=now)
    )
    if channel is not None:
        query = query.where(deliveries.c.channel == channel)
    return int(conn.execute(query).rowcount or 0)


def defer_deliveries(conn: Connection, channel: str, until: datetime) -> None:
    """The channel's pending deliveries due before ``until`` wait until then (it is paused)."""
    conn.execute(
        deliveries.update()
        .where(
            deliveries.c.channel == channel,
            deliveries.c.status == DeliveryStatus.PENDING.value,
            sa.or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at < until),
        )
        .values(next_attempt_at=until)
    )


def count_failed(conn: Connection) -> int:
    query = sa.select(sa.func.count()).where(deliveries.c.status == DeliveryStatus.FAILED.value)
    return int(conn.execute(query).scalar() or 0)


def next_delivery_at(conn: Connection) -> datetime | None:
    query = sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
        deliveries.c.status == DeliveryStatus.PENDING.value
    )
    value = conn.execute(query).scalar()
    return value if isinstance(value, datetime) else None


def count_pending(conn: Connection) -> int:
    query = sa.select(sa.func.count()).where(deliveries.c.status == DeliveryStatus.PENDING.value)
    return int(conn.execute(query).scalar() or 0)


def record_delivery(
    conn: Connection,
    message_id: str,
    channel: str,
    *,
    status: DeliveryStatus,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    conn.execute(
        deliveries.update()
        .where(deliveries.c.message_id == message_id, deliveries.c.channel == channel)
        .values(
            status=status.value,
            attempts=deliveries.c.attempts + 1,
            last_error=error,
            next_attempt_at=next_attempt_at,
            sent_at=now if status is DeliveryStatus.SENT else None,
        )
    )


def list_alerts(
    conn: Connection, *, topic_id: str | None, since: datetime | None, limit: int | None
) -> list[AlertRecord]:
    query = sa.select(alerts).order_by(alerts.c.created_at.desc(), alerts.c.id)
    if topic_id is not None:
        query = query.where(alerts.c.topic_id == topic_id)
    if since is not None:
        query = query.where(alerts.c.updated_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [_record(conn, row) for row in conn.execute(query).mappings()]


def get_alert(conn: Connection, alert_id: str) -> AlertRecord | None:
    row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
    return None if row is None else _record(conn, row)


def _record(conn: Connection, row: RowMapping) -> AlertRecord:
    messages = [
        message_from_json(r["payload"])
        for r in conn.execute(
            sa.select(alert_messages.c.payload)
            .where(alert_messages.c.alert_id == row["id"])
            .order_by(alert_messages.c.sequence)
        ).mappings()
    ]
    sent = [
        _delivery(r)
        for r in conn.execute(
            sa.select(deliveries)
            .where(deliveries.c.message_id.in_([m.id for m in messages]))
            .order_by(deliveries.c.message_id, deliveries.c.channel)
        ).mappings()
    ]
    matched = alert_matches(conn, row["id"])
    return AlertRecord(
        id=row["id"],
        topic_id=row["topic_id"],
        story_id=row["story_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        articles=tuple(m.article for m in matched),
        messages=tuple(messages),
        deliveries=tuple(sent),
    )


# -- feedback -----------------------------------------------------------------------------------


def save_label(
    conn: Connection, topic_id: str, article_id: str, relevant: bool, now: datetime
) -> None:
    values = {"topic_id": topic_id, "article_id": article_id, "relevant": relevant,
              "labelled_at": now}  # fmt: skip
    statement = _insert(conn)(topic_labels).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[topic_labels.c.topic_id, topic_labels.c.article_id],
            set_={"relevant": statement.excluded.relevant, "labelled_at": now},
        )
    )


def labels(conn: Connection, topic_id: str | None) -> list[tuple[str, str, bool]]:
    query = sa.select(topic_labels.c.topic_id, topic_labels.c.article_id, topic_labels.c.relevant)
    if topic_id is not None:
        query = query.where(topic_labels.c.topic_id == topic_id)
    query = query.order_by(topic_labels.c.topic_id, topic_labels.c.labelled_at)
    return [(r[0], r[1], bool(r[2])) for r in conn.execute(query)]


# -- digests ------------------------------------------------------------------------------------


def digest_sent(conn: Connection, digest_id: str, channel: str) -> bool:
    query = sa.select(digest_deliveries.c.sent_at).where(
        digest_deliveries.c.digest_id == digest_id, digest_deliveries.c.channel == channel
    )
    return conn.execute(query).scalar() is not None


def record_digest(
    conn: Connection, digest_id: str, channel: str, *, error: str | None, now: datetime
) -> None:
    values = {"digest_id": digest_id, "channel": channel, "attempts": 1, "last_error": error,
              "sent_at": None if error else now, "updated_at": now}  # fmt: skip
    statement = _insert(conn)(digest_deliveries).values(**values)
    update = {
        "attempts": digest_deliveries.c.attempts + 1,
        "last_error": statement.excluded.last_error,
        "updated_at": statement.excluded.updated_at,
        # a later failure never un-sends a digest that went out
        "sent_at": sa.func.coalesce(digest_deliveries.c.sent_at, statement.excluded.sent_at),
    }
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[digest_deliveries.c.digest_id, digest_deliveries.c.channel],
            set_=update,
        )
    )
