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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


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
    compete: bool = True  # False: scored alone, and never a rival of the other topics
    #: False: alert on any match, also while the topic's matches are uncertain (``Confirmation``)
    confirm: bool = True


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
    #: the topic's scope or keywords decided, not the score (no story lends it support)
    ruled_out: bool = False


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


@dataclass(frozen=True, slots=True)
class StoredMatch:
    """A stored positive match: the article as an alert shows it, and whether it was reported."""

    topic_id: str
    story_id: str
    article: AlertArticle
    alertable: bool  # False: indexed silently (e.g. an old entry of a feed's first poll)
    matched_at: datetime
    reason: str = ""
    message_id: str | None = None  # the message that reported it; None: not reported yet
    threshold: float | None = None  # the topic's threshold when it matched (None: unknown)


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


# -- JSON (the outbox stores messages as JSON; the CLI and API print them) ------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def article_to_json(article: AlertArticle) -> dict[str, Any]:
    return {
        "article_id": article.article_id,
        "url": article.url,
        "title": article.title,
        "language": article.language,
        "source": article.source,
        "published": _iso(article.published_at),
        "score": round(article.score, 4),
        "passage": article.passage,
        "keywords": list(article.keywords),
    }


def article_from_json(data: Mapping[str, Any]) -> AlertArticle:
    return AlertArticle(
        article_id=data["article_id"],
        url=data["url"],
        title=data["title"],
        language=data["language"],
        source=data["source"],
        published_at=datetime.fromisoformat(data["published"]),
        score=float(data["score"]),
        passage=data["passage"],
        keywords=tuple(data.get("keywords", ())),
    )


def message_to_json(message: AlertMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "alert_id": message.alert_id,
        "sequence": message.sequence,
        "kind": message.kind.value,
        "topic_id": message.topic_id,
        "topic_name": message.topic_name,
        "story_id": message.story_id,
        "headline": message.headline,
        "created_at": _iso(message.created_at),
        "reason": message.reason,
        "articles": [article_to_json(a) for a in message.articles],
        "story_languages": list(message.story_languages),
        "story_sources": list(message.story_sources),
        "story_article_count": message.story_article_count,
    }


def message_from_json(data: Mapping[str, Any]) -> AlertMessage:
    return AlertMessage(
        id=data["id"],
        alert_id=data["alert_id"],
        sequence=int(data["sequence"]),
        kind=MessageKind(data["kind"]),
        topic_id=data["topic_id"],
        topic_name=data["topic_name"],
        story_id=data["story_id"],
        headline=data["headline"],
        created_at=datetime.fromisoformat(data["created_at"]),
        reason=data["reason"],
        articles=tuple(article_from_json(a) for a in data["articles"]),
        story_languages=tuple(data.get("story_languages", ())),
        story_sources=tuple(data.get("story_sources", ())),
        story_article_count=int(data.get("story_article_count", 0)),
    )


def delivery_to_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "next_attempt_at": _iso(delivery.next_attempt_at) if delivery.next_attempt_at else None,
        "sent_at": _iso(delivery.sent_at) if delivery.sent_at else None,
    }
