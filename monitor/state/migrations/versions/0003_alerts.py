"""Alerting: article match state, topic matches, alerts, messages, the delivery outbox, labels.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "articles",
        sa.Column("first_poll", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.add_column("articles", sa.Column("matched_at", _TIME))
    # coverage indexed before alerting existed is history, not news: never alert on it
    op.execute("UPDATE articles SET matched_at = indexed_at WHERE status = 'indexed'")
    op.create_table(
        "topic_matches",
        sa.Column("topic_id", sa.Text, nullable=False),
        sa.Column("article_id", sa.Text, nullable=False),
        sa.Column("story_id", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("passage", sa.Text, nullable=False),
        sa.Column("passage_index", sa.Integer, nullable=False),
        sa.Column("keywords", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("alertable", sa.Boolean, nullable=False),
        sa.Column("matched_at", _TIME, nullable=False),
        sa.Column("message_id", sa.Text),
        sa.ForeignKeyConstraint(
            ["article_id"], ["articles.id"], name="fk_topic_matches_article_id_articles"
        ),
        sa.PrimaryKeyConstraint("topic_id", "article_id", name="pk_topic_matches"),
    )
    op.create_index("ix_topic_matches_topic_id_story_id", "topic_matches", ["topic_id", "story_id"])
    op.create_index("ix_topic_matches_matched_at", "topic_matches", ["matched_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("topic_id", sa.Text, nullable=False),
        sa.Column("story_id", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("topic_id", "story_id", name="uq_alerts_topic_id_story_id"),
    )
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_table(
        "alert_stories",
        sa.Column("topic_id", sa.Text, nullable=False),
        sa.Column("story_id", sa.Text, nullable=False),
        sa.Column("alert_id", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_stories_alert_id_alerts"
        ),
        sa.PrimaryKeyConstraint("topic_id", "story_id", name="pk_alert_stories"),
    )
    op.create_index("ix_alert_stories_alert_id", "alert_stories", ["alert_id"])
    op.create_table(
        "alert_messages",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("alert_id", sa.Text, nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_messages_alert_id_alerts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_messages"),
        sa.UniqueConstraint("alert_id", "sequence", name="uq_alert_messages_alert_id_sequence"),
    )
    op.create_table(
        "deliveries",
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", _TIME),
        sa.Column("sent_at", _TIME),
        sa.Column("created_at", _TIME, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_deliveries_status"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["alert_messages.id"], name="fk_deliveries_message_id_alert_messages"
        ),
        sa.PrimaryKeyConstraint("message_id", "channel", name="pk_deliveries"),
    )
    op.create_index(
        "ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_table(
        "topic_labels",
        sa.Column("topic_id", sa.Text, nullable=False),
        sa.Column("article_id", sa.Text, nullable=False),
        sa.Column("relevant", sa.Boolean, nullable=False),
        sa.Column("labelled_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"], ["articles.id"], name="fk_topic_labels_article_id_articles"
        ),
        sa.PrimaryKeyConstraint("topic_id", "article_id", name="pk_topic_labels"),
    )
    op.create_table(
        "digest_deliveries",
        sa.Column("digest_id", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("sent_at", _TIME),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("digest_id", "channel", name="pk_digest_deliveries"),
    )


def downgrade() -> None:
    op.drop_table("digest_deliveries")
    op.drop_table("topic_labels")
    op.drop_index("ix_deliveries_status_next_attempt_at", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("alert_messages")
    op.drop_index("ix_alert_stories_alert_id", table_name="alert_stories")
    op.drop_table("alert_stories")
    op.drop_index("ix_alerts_created_at", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_topic_matches_matched_at", table_name="topic_matches")
    op.drop_index("ix_topic_matches_topic_id_story_id", table_name="topic_matches")
    op.drop_table("topic_matches")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("matched_at")
        batch.drop_column("first_poll")
