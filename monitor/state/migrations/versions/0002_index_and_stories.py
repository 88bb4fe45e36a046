"""Indexing and stories: article index state and story link, the stories table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # plain nullable columns: SQLite can add them without rebuilding the table
    op.add_column("articles", sa.Column("story_id", sa.Text))
    op.add_column("articles", sa.Column("near_duplicate_of", sa.Text))
    op.add_column("articles", sa.Column("indexed_at", sa.DateTime(timezone=True)))
    op.add_column("articles", sa.Column("index_model", sa.Text))
    op.create_index("ix_articles_story_id", "articles", ["story_id"])
    op.create_table(
        "stories",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("headline", sa.Text, nullable=False),
        sa.Column("representative_article_id", sa.Text, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("article_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("languages", sa.JSON, nullable=False),
        sa.Column("sources", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stories"),
    )
    op.create_index("ix_stories_last_seen", "stories", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_stories_last_seen", table_name="stories")
    op.drop_table("stories")
    op.drop_index("ix_articles_story_id", table_name="articles")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("index_model")
        batch.drop_column("indexed_at")
        batch.drop_column("near_duplicate_of")
        batch.drop_column("story_id")
