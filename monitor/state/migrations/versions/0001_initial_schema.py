"""Initial schema: feeds, articles, entries.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out in full rather than derived from ``monitor.state.schema``: a revision must keep
creating the schema it created on the day it was written, whatever the code says later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _counter(name: str, default: int = 0) -> sa.Column[object]:
    return sa.Column(name, sa.Integer, nullable=False, server_default=str(default))


def upgrade() -> None:
    _create_feeds()
    _create_articles()
    _create_entries()


def _create_feeds() -> None:
    op.create_table(
        "feeds",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        _timestamp("added_at", nullable=False),
        _timestamp("config_updated_at", nullable=False),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        _timestamp("last_polled_at"),
        _timestamp("next_poll_at"),
        sa.Column("interval_seconds", sa.Float),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        _counter("error_count"),
        _counter("consecutive_failures"),
        _counter("items_seen"),
        _counter("items_new"),
        _counter("total_articles"),
        _timestamp("last_new_item_at"),
        sa.Column("permanent_redirect", sa.Text),
        sa.Column("malformed_reason", sa.Text),
        sa.Column("title", sa.Text),
        sa.PrimaryKeyConstraint("name", name="pk_feeds"),
    )


def _create_articles() -> None:
    op.create_table(
        "articles",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("feed", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("canonical_url", sa.Text, nullable=False),
        sa.Column("guid", sa.Text),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("feed_text", sa.Text, nullable=False),
        sa.Column("feed_language", sa.Text, nullable=False),
        sa.Column("author", sa.Text),
        _timestamp("published_at"),
        _timestamp("discovered_at", nullable=False),
        _timestamp("fetched_at"),
        _timestamp("updated_at", nullable=False),
        sa.Column("text", sa.Text),
        sa.Column("text_source", sa.Text),
        sa.Column("language", sa.Text),
        sa.Column("language_confidence", sa.Float),
        sa.Column("content_hash", sa.Text),
        sa.Column("text_hash", sa.Text),
        _counter("version", default=1),
        sa.Column("status", sa.Text, nullable=False),
        _counter("attempts"),
        sa.Column("last_error", sa.Text),
        _timestamp("next_attempt_at"),
        sa.Column("duplicate_of", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_articles"),
        sa.ForeignKeyConstraint(["feed"], ["feeds.name"], name="fk_articles_feed_feeds"),
        sa.ForeignKeyConstraint(
            ["duplicate_of"], ["articles.id"], name="fk_articles_duplicate_of_articles"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'fetched', 'indexed', 'duplicate', 'failed')",
            name="ck_articles_status",
        ),
    )
    op.create_index("ix_articles_canonical_url", "articles", ["canonical_url"])
    op.create_index("ix_articles_discovered_at", "articles", ["discovered_at"])
    op.create_index("ix_articles_text_hash", "articles", ["text_hash"])
    op.create_index("ix_articles_status_discovered_at", "articles", ["status", "discovered_at"])
    op.create_index("ix_articles_feed_discovered_at", "articles", ["feed", "discovered_at"])


def _create_entries() -> None:
    op.create_table(
        "entries",
        sa.Column("feed", sa.Text, nullable=False),
        sa.Column("entry_key", sa.Text, nullable=False),
        sa.Column("article_id", sa.Text, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False),
        _timestamp("first_seen_at", nullable=False),
        sa.PrimaryKeyConstraint("feed", "entry_key", name="pk_entries"),
        sa.ForeignKeyConstraint(["feed"], ["feeds.name"], name="fk_entries_feed_feeds"),
        sa.ForeignKeyConstraint(
            ["article_id"], ["articles.id"], name="fk_entries_article_id_articles"
        ),
    )
    op.create_index("ix_entries_article_id", "entries", ["article_id"])


def downgrade() -> None:
    op.drop_table("entries")
    op.drop_table("articles")
    op.drop_table("feeds")
