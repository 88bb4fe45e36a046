"""Frozen domain types of alerting: topics, match decisions, alerts, messages and deliveries.

As in ``monitor.types``, three families are kept apart:

* **config-derived**: ``Topic`` (a validated ``TopicConfig`` plus its compiled keywords);
* **decisions**: ``Match`` (why an article matches a topic), ``AlertPlan`` (what to send);
* **stored**: ``AlertRecord`` (one per topic and story), ``AlertMessage`` (a frozen snapshot of
  one message in the outbox, re-sent byte for byte after a restart) and ``Delivery`` (one
  message on one channel: the outbox row a dispatcher works through).

Every datetime is timezone-aware UTC.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime


def alert_id_for(topic_id: str, story_id: str) -> str:
    """Deterministic: one alert per (topic, story), however often the decision is re-run."""
    digest = hashlib.sha256(f"{topic_id}\x00{story_id}".encode()).hexdigest()
    return f"al_{digest[:20]}"


def message_id_for(alert_id: str, sequence: int) -> str:
    return f"{alert_id}.{sequence}"


@dataclass(frozen=True, slots=True)
class Topic:
    """A tracked topic as matching sees it (built from ``TopicConfig``)."""

    id: str
    name: str
    description: str
    channels: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()  # empty: every language
    sources: tuple[str, ...] = ()  # feed names; empty: every feed
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    threshold: float | None = None  # None: the calibrated default
    examples: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """The explained verdict of one article against one topic (matched or not)."""

    topic_id: str
    article_id: str
    matched: bool
    score: float  # the decision score the threshold was applied to
    threshold: float
    passage: str  # the best passage, in the article's own language
    passage_index: int
    keywords: tuple[str, ...] = ()  # include keywords found in the article
    reason: str = ""  # one line a user can read: why it matched or not


class MessageKind(enum.StrEnum):
    NEW = "new"  # first alert of a (topic, story)
    FOLLOW_UP = "follow-up"  # the story grew materially since the last message


@dataclass(frozen=True, slots=True)
class AlertArticle:
    """One matching article as a message shows it."""

    article_id: str
    url: str
    title: str
    language: str
    source: str  # the outlet (feed name)
    published_at: datetime
    score: float
    passage: str  # best-matching passage, original language
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """What one send carries, identical on every channel and every retry.

    ``articles`` are the articles this message reports: all matching articles of the story for
    a new alert, the ones added since the previous message for a follow-up.
    """

    id: str  # message_id_for(alert_id, sequence); also the email Message-ID's local part
    alert_id: str
    sequence: int  # 0 for the first message, then 1, 2, ... for follow-ups
    kind: MessageKind
    topic_id: str
    topic_name: str
    story_id: str
    headline: str
    created_at: datetime
    reason: str  # why this message goes out ("new story", "first coverage in uk", ...)
    articles: tuple[AlertArticle, ...]
    #: the story as a whole when the message was decided
    story_languages: tuple[str, ...] = ()
    story_sources: tuple[str, ...] = ()
    story_article_count: int = 0


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # not yet acknowledged; retried with backoff
    SENT = "sent"  # the channel acknowledged it
    FAILED = "failed"  # gave up (permanent error or attempts exhausted); kept with its error


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message on one channel (an outbox row)."""

    message_id: str
    channel: str
    status: DeliveryStatus
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert: a topic and a story, with every matching article and every message so far."""

    id: str
    topic_id: str
    story_id: str
    created_at: datetime
    updated_at: datetime
    articles: tuple[AlertArticle, ...]
    messages: tuple[AlertMessage, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
