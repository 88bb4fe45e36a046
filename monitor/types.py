"""Frozen, typed domain objects.

Three families are kept apart on purpose (as in lemon24/reader):

* **wire** types: what was fetched and parsed (``FetchResult``, ``ParsedFeed``, ``ParsedEntry``,
  ``ExtractedPage``) - untrusted, possibly incomplete;
* **stored** types: what the state store holds (``FeedState``, ``Article``);
* **to-write** types: what a stage asks the store to write (``FeedPollRecord``,
  ``ArticleDraft``, ``ArticleText``).

Every datetime is timezone-aware UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The one clock of the code base (decision functions take ``now`` instead of calling it)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Normalise a datetime to aware UTC; naive values are taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# -- wire ----------


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One HTTP exchange that ended in a usable answer (2xx or 304)."""

    url: str
    final_url: str
    status: int
    headers: Mapping[str, str]
    content: bytes
    fetched_at: datetime
    etag: str | None = None
    last_modified: str | None = None
    #: set when a 301/308 was followed: the URL the resource now lives at
    permanent_redirect: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One feed item as feedparser saw it; links are absolute, text is plain text."""

    guid: str | None
    link: str | None
    title: str
    summary: str
    content: str
    published: datetime | None
    updated: datetime | None
    author: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    title: str
    link: str | None
    language: str | None
    entries: tuple[ParsedEntry, ...]
    #: feedparser's reason when it flagged the document as malformed (bozo); entries are still used
    malformed_reason: str | None = None
    #: the feed's own hint of how often it changes (``ttl``, ``sy:updatePeriod``), in seconds
    update_hint_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ExtractedPage:
    """Main text and metadata trafilatura found in an article page."""

    text: str
    title: str | None = None
    author: str | None = None
    published: datetime | None = None
    language: str | None = None
    canonical_url: str | None = None


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    language: str | None  # ISO 639-1, None when undecidable (empty or too short a text)
    confidence: float


class TextSource(enum.StrEnum):
    PAGE = "page"
    FEED = "feed"


@dataclass(frozen=True, slots=True)
class ProcessedText:
    """The outcome of the page stage: chosen text, its origin, metadata and language."""

    text: str
    text_source: TextSource
    language: str | None
    language_confidence: float
    title: str | None = None
    author: str | None = None
    published: datetime | None = None
    canonical_url: str | None = None
    #: why the page text was not used (blocked, too short, extraction failed), if it was not
    fallback_reason: str | None = None


# -- stored ----------


class ArticleStatus(enum.StrEnum):
    """Processing state machine; every stage moves an article forward exactly once.

    ``pending``  entry seen, page not processed yet (a restart resumes here)
    ``fetched``  text stored (page or feed fallback); later stages (indexing) pick it up
    ``indexed``  passages embedded and stored (issue 3)
    ``duplicate`` same canonical URL as an earlier article; kept for the record, not processed
    ``failed``   gave up after ``max_attempts``; kept with its last error
    """

    PENDING = "pending"
    FETCHED = "fetched"
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FeedState:
    """A configured feed's stored schedule, validators and health."""

    name: str
    url: str
    language: str
    etag: str | None = None
    last_modified: str | None = None
    last_polled_at: datetime | None = None
    next_poll_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    error_count: int = 0
    consecutive_failures: int = 0
    items_seen: int = 0
    items_new: int = 0
    total_articles: int = 0
    last_new_item_at: datetime | None = None
    interval_seconds: float | None = None
    permanent_redirect: str | None = None
    malformed_reason: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Article:
    id: str
    feed: str  # name of the feed it was first seen in
    url: str
    canonical_url: str
    guid: str | None
    title: str
    feed_text: str
    feed_language: str
    status: ArticleStatus
    discovered_at: datetime
    updated_at: datetime
    published_at: datetime | None = None
    fetched_at: datetime | None = None
    author: str | None = None
    text: str | None = None
    text_source: TextSource | None = None
    language: str | None = None
    language_confidence: float | None = None
    content_hash: str | None = None
    version: int = 1
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    duplicate_of: str | None = None
    text_hash: str | None = None
    story_id: str | None = None
    near_duplicate_of: str | None = None
    indexed_at: datetime | None = None
    index_model: str | None = None
    #: seen in its feed's first poll: alerts only if published within ``alert_backfill``
    first_poll: bool = False
    #: when it was matched against the topics (None: not yet)
    matched_at: datetime | None = None
    #: indexed by its lead alone (a backlog); the other passages wait for an idle index worker
    body_pending: bool = False

    @property
    def text_length(self) -> int:
        return len(self.text or "")


# -- to write ----------


@dataclass(frozen=True, slots=True)
class ArticleDraft:
    """A new or changed feed entry, to be stored as ``pending`` before its page is fetched."""

    id: str
    feed: str
    entry_key: str
    url: str
    canonical_url: str
    guid: str | None
    title: str
    feed_text: str
    feed_language: str
    published_at: datetime | None
    author: str | None
    content_hash: str
    #: from the feed's first poll (its backlog): see ``Article.first_poll``
    first_poll: bool = False


@dataclass(frozen=True, slots=True)
class FeedPollRecord:
    """What one poll of a feed changes on its stored state."""

    polled_at: datetime
    next_poll_at: datetime
    interval_seconds: float
    status: int | None = None
    error: str | None = None  # None: the poll succeeded
    etag: str | None = None
    last_modified: str | None = None
    items_seen: int = 0
    items_new: int = 0
    permanent_redirect: str | None = None
    malformed_reason: str | None = None
    title: str | None = None
