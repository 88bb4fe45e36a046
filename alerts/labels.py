"""Relevance labels: a user's judgement of a stored article for a topic. Matching learns them
(``alerts.profiles``: relevant articles pull the topic's score towards them, not-relevant ones
push it away) once the topic's profile is rebuilt. One function for every way a user gives one:
``newsmon topics label``, the HTTP API and the topic page."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from monitor.errors import TopicError
from monitor.identity import canonical_url

if TYPE_CHECKING:
    from monitor.state import StateStore
    from monitor.types import Article


class UnknownArticleError(TopicError):
    """The URL a label names is not a stored article (the topic is named too)."""

    def __init__(self, topic: str, url: str) -> None:
        self.url = url
        super().__init__(topic, f"no stored article at {url}")


def label_article(
    store: StateStore,
    topic_ids: Collection[str],
    topic_id: str,
    url: str,
    *,
    relevant: bool,
    now: datetime,
) -> Article:
    """Store the judgement of the article at ``url`` (any URL of it: canonicalised) for the
    topic; the last judgement of an article counts. ``TopicError`` naming the topic when it is
    not configured (``topic_ids``), ``UnknownArticleError`` when no stored article has the URL."""
    if topic_id not in topic_ids:
        raise TopicError(topic_id, "no such topic in the configuration")
    article = store.find_article_by_canonical_url(canonical_url(url.strip()))
    if article is None:
        raise UnknownArticleError(topic_id, url)
    store.save_label(topic_id, article.id, relevant, now)
    return article


def labelled_urls(store: StateStore, topic_id: str) -> dict[str, bool]:
    """The topic's labels by the labelled article's canonical URL (``canonical_url`` of the URL
    a page or the API shows an article by)."""
    labels = store.topic_labels(topic_id)
    articles = store.get_articles([article_id for _, article_id, _ in labels]) if labels else {}
    result: dict[str, bool] = {}
    for _, article_id, relevant in labels:  # in the order given: the last judgement counts
        article = articles.get(article_id)
        if article is not None:
            result[canonical_url(article.canonical_url or article.url)] = relevant
    return result
