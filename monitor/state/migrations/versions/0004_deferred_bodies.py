"""Deferred bodies: an article indexed by its lead alone, its body to embed when the worker is idle.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # every article indexed so far has all its passages: false for them all
    op.add_column(
        "articles",
        sa.Column("body_pending", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_articles_body_pending_indexed_at", "articles", ["body_pending", "indexed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_articles_body_pending_indexed_at", table_name="articles")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("body_pending")
