"""Queries on the ``stories`` table, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from indexer.types import Story
from monitor.state.schema import alert_stories, articles, stories, topic_matches


def _to_story(row: RowMapping) -> Story:
    return Story(
        id=row["id"],
        headline=row["headline"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        article_count=row["article_count"],
        languages=tuple(row["languages"]),
        sources=tuple(row["sources"]),
        representative_article_id=row["representative_article_id"],
    )


def save(conn: Connection, story: Story) -> None:
    values: dict[str, Any] = {
        "id": story.id,
        "headline": story.headline,
        "representative_article_id": story.representative_article_id,
        "first_seen": story.first_seen,
        "last_seen": story.last_seen,
        "article_count": story.article_count,
        "languages": list(story.languages),
        "sources": list(story.sources),
    }
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(stories).values(**values)
    update = {k: statement.excluded[k] for k in values if k != "id"}
    conn.execute(statement.on_conflict_do_update(index_elements=[stories.c.id], set_=update))


def get_many(conn: Connection, story_ids: Sequence[str]) -> dict[str, Story]:
    wanted = list(dict.fromkeys(story_ids))
    found: dict[str, Story] = {}
    for start in range(0, len(wanted), 500):
        query = sa.select(stories).where(stories.c.id.in_(wanted[start : start + 500]))
        found.update((row["id"], _to_story(row)) for row in conn.execute(query).mappings())
    return found


def list_recent(conn: Connection, since: datetime | None, limit: int | None) -> list[Story]:
    query = sa.select(stories).order_by(stories.c.last_seen.desc(), stories.c.id)
    if since is not None:
        query = query.where(stories.c.last_seen >= since)
    if limit is not None:
        query = query.limit(limit)
    return [_to_story(row) for row in conn.execute(query).mappings()]


def alerted(conn: Connection, story_ids: Sequence[str]) -> set[str]:
    """Those of the stories that an alert of any topic has reported."""
    query = sa.select(alert_stories.c.story_id).where(alert_stories.c.story_id.in_(story_ids))
    return {str(value) for value in conn.execute(query).scalars()}


def move_articles(conn: Connection, article_ids: Sequence[str], story_id: str) -> None:
    """The articles, and their topic matches, now belong to ``story_id``."""
    conn.execute(
        sa.update(articles).where(articles.c.id.in_(article_ids)).values(story_id=story_id)
    )
    conn.execute(
        sa.update(topic_matches)
        .where(topic_matches.c.article_id.in_(article_ids))
        .values(story_id=story_id)
    )


def delete(conn: Connection, story_id: str) -> None:
    conn.execute(sa.delete(stories).where(stories.c.id == story_id))
