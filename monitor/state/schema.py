"""Table definitions of the state store (SQLAlchemy Core).

This module is the *current* shape of the schema, used by the queries. The migrations under
``migrations/versions`` are what creates it in a database; a test compares the two so they
cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from monitor.types import ArticleStatus, as_utc

# Deterministic constraint names: Alembic needs names to alter or drop constraints later,
# and SQLite only gets them when we give them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

STATUS_VALUES = tuple(status.value for status in ArticleStatus)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on every backend.

    PostgreSQL stores ``timestamptz`` and hands back aware values in the session's time zone;
    SQLite stores text without an offset and hands back naive values. Normalising to UTC on the
    way in keeps SQLite's text comparisons and ordering correct, and normalising on the way out
    gives callers aware UTC values from both.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


feeds = sa.Table(
    "feeds",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False),
    # feeds dropped from the config are kept (with their articles) but no longer polled
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("added_at", UTCDateTime, nullable=False),
    sa.Column("config_updated_at", UTCDateTime, nullable=False),
    # HTTP validators of the last successful poll
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    # schedule
    sa.Column("last_polled_at", UTCDateTime),
    sa.Column("next_poll_at", UTCDateTime),
    sa.Column("interval_seconds", sa.Float),
    # health
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("items_seen", sa.Integer, nullable=False, server_default="0"),
    sa.Column("items_new", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total_articles", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_new_item_at", UTCDateTime),
    # what the last parsed document said about itself
    sa.Column("permanent_redirect", sa.Text),
    sa.Column("malformed_reason", sa.Text),
    sa.Column("title", sa.Text),
)

articles = sa.Table(
    "articles",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("feed", sa.Text, sa.ForeignKey("feeds.name"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    # Not unique: a duplicate keeps the canonical URL of the article it duplicates (that is how
    # it was found to be one), and a page update may move an article onto a URL another
    # article already has. Lookups prefer the original (see find_article_by_canonical_url).
    sa.Column("canonical_url", sa.Text, nullable=False, index=True),
    sa.Column("guid", sa.Text),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("feed_text", sa.Text, nullable=False),
    sa.Column("feed_language", sa.Text, nullable=False),
    sa.Column("author", sa.Text),
    sa.Column("published_at", UTCDateTime),
    sa.Column("discovered_at", UTCDateTime, nullable=False, index=True),
    sa.Column("fetched_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("text", sa.Text),
    sa.Column("text_source", sa.Text),
    sa.Column("language", sa.Text),
    sa.Column("language_confidence", sa.Float),
    sa.Column("content_hash", sa.Text),
    # sha256 of ``text``: cheap exact-duplicate detection across URLs for later stages
    sa.Column("text_hash", sa.Text, index=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("duplicate_of", sa.Text, sa.ForeignKey("articles.id")),
    # indexing (0002): the story it belongs to, the article whose text it repeats (then it is
    # not embedded itself), and which model's vectors it has
    sa.Column("story_id", sa.Text, index=True),
    sa.Column("near_duplicate_of", sa.Text),
    sa.Column("indexed_at", UTCDateTime),
    sa.Column("index_model", sa.Text),
    # alerting (0003): seen in its feed's first poll (old ones then stay silent), and when it
    # was matched against the topics (null: still to do; a re-index does not match again)
    sa.Column("first_poll", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("matched_at", UTCDateTime),
    # deferred bodies (0004): indexed by its lead alone during a backlog; the other passages
    # are embedded when the index worker is idle (oldest indexed first)
    sa.Column("body_pending", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint(
        sa.column("status").in_(STATUS_VALUES),
        name="status",
    ),
    # serves due_articles (status = pending, oldest first) and status filters/counts
    sa.Index(None, "status", "discovered_at"),
    sa.Index(None, "feed", "discovered_at"),
    sa.Index(None, "body_pending", "indexed_at"),
)

entries = sa.Table(
    "entries",
    metadata,
    # one row per feed item ever seen: the feed's own key for it (guid or link) -> article
    sa.Column("feed", sa.Text, sa.ForeignKey("feeds.name"), primary_key=True),
    sa.Column("entry_key", sa.Text, primary_key=True),
    sa.Column("article_id", sa.Text, sa.ForeignKey("articles.id"), nullable=False, index=True),
    sa.Column("content_hash", sa.Text, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
)

stories = sa.Table(
    "stories",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("headline", sa.Text, nullable=False),
    sa.Column("representative_article_id", sa.Text, nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False, index=True),
    sa.Column("article_count", sa.Integer, nullable=False, server_default="0"),
    # sorted lists of language codes and feed names
    sa.Column("languages", sa.JSON, nullable=False),
    sa.Column("sources", sa.JSON, nullable=False),
)

# -- alerting (0003) ------------------------------------------------------------------------------

DELIVERY_STATUS_VALUES = ("pending", "sent", "failed")

topic_matches = sa.Table(
    "topic_matches",
    metadata,
    # an article that matched a topic, with the explanation; message_id says which alert
    # message reported it (null: not reported yet - it waits for a follow-up or the digest)
    sa.Column("topic_id", sa.Text, primary_key=True),
    sa.Column("article_id", sa.Text, sa.ForeignKey("articles.id"), primary_key=True),
    sa.Column("story_id", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("passage", sa.Text, nullable=False),
    sa.Column("passage_index", sa.Integer, nullable=False),
    sa.Column("keywords", sa.JSON, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # may it alert (false: indexed silently, e.g. old entries of a feed's first poll)
    sa.Column("alertable", sa.Boolean, nullable=False),
    sa.Column("matched_at", UTCDateTime, nullable=False),
    sa.Column("message_id", sa.Text),
    sa.Index(None, "topic_id", "story_id"),
    sa.Index(None, "matched_at"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # alert_id_for(topic_id, story_id)
    sa.Column("topic_id", sa.Text, nullable=False),
    sa.Column("story_id", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("topic_id", "story_id"),
)

alert_stories = sa.Table(
    "alert_stories",
    metadata,
    # which alert a (topic, story) belongs to: its own, or an earlier alert of the topic that
    # the story was found to continue (the clustering split one event into several stories)
    sa.Column("topic_id", sa.Text, primary_key=True),
    sa.Column("story_id", sa.Text, primary_key=True),
    sa.Column("alert_id", sa.Text, sa.ForeignKey("alerts.id"), nullable=False, index=True),
)

alert_messages = sa.Table(
    "alert_messages",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("alert_id", sa.Text, sa.ForeignKey("alerts.id"), nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # the frozen AlertMessage: every retry, on every channel, sends exactly this
    sa.Column("payload", sa.JSON, nullable=False),
    sa.UniqueConstraint("alert_id", "sequence"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    # the outbox: one row per message and channel, written with the message, before any send
    sa.Column("message_id", sa.Text, sa.ForeignKey("alert_messages.id"), primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(sa.column("status").in_(DELIVERY_STATUS_VALUES), name="status"),
    sa.Index(None, "status", "next_attempt_at"),
)

topic_labels = sa.Table(
    "topic_labels",
    metadata,
    # a user's judgement: is this article relevant to the topic (feedback for matching)
    sa.Column("topic_id", sa.Text, primary_key=True),
    sa.Column("article_id", sa.Text, sa.ForeignKey("articles.id"), primary_key=True),
    sa.Column("relevant", sa.Boolean, nullable=False),
    sa.Column("labelled_at", UTCDateTime, nullable=False),
)

digest_deliveries = sa.Table(
    "digest_deliveries",
    metadata,
    # one row per digest (stable id per week and topics) and channel: sent once, failures kept
    sa.Column("digest_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
