"""JSON shapes of alerts and topic backtests, shared by the CLI and the HTTP API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from alerts.types import AlertRecord, Delivery, DeliveryStatus, article_to_json, delivery_to_json

if TYPE_CHECKING:
    from alerts.stage import ArticleVerdict
    from indexer.types import Story


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def channel_status(deliveries: Sequence[Delivery]) -> dict[str, Any]:
    """One channel's deliveries of an alert's messages folded into one status: pending while
    any message waits, failed if any gave up, else sent."""
    statuses = {d.status for d in deliveries}
    if DeliveryStatus.PENDING in statuses:
        status = DeliveryStatus.PENDING
    elif DeliveryStatus.FAILED in statuses:
        status = DeliveryStatus.FAILED
    else:
        status = DeliveryStatus.SENT
    last = max(deliveries, key=lambda d: (d.attempts > 0, d.message_id))
    errors = [d.last_error for d in deliveries if d.last_error]
    return {
        "status": status.value,
        "attempts": sum(d.attempts for d in deliveries),
        "last_error": errors[-1] if errors else None,
        "messages": {d.message_id: delivery_to_json(d) for d in deliveries},
        "next_attempt_at": delivery_to_json(last)["next_attempt_at"],
    }


def alert_json(record: AlertRecord, topic_names: Mapping[str, str]) -> dict[str, Any]:
    by_channel: dict[str, list[Delivery]] = {}
    for delivery in record.deliveries:
        by_channel.setdefault(delivery.channel, []).append(delivery)
    headline = record.messages[-1].headline if record.messages else ""
    return {
        "id": record.id,
        "topic": record.topic_id,
        "topic_name": topic_names.get(record.topic_id, record.topic_id),
        "story_id": record.story_id,
        "headline": headline,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "articles": [article_to_json(a) for a in record.articles],
        "messages": [
            {
                "id": m.id,
                "kind": m.kind.value,
                "created_at": _iso(m.created_at),
                "reason": m.reason,
                "articles": len(m.articles),
            }
            for m in record.messages
        ],
        "deliveries": {name: channel_status(ds) for name, ds in sorted(by_channel.items())},
    }


def backtest_json(
    topic_id: str,
    verdicts: Sequence[ArticleVerdict],
    stories: Mapping[str, Story],
    *,
    near_misses: int = 10,
    refinement: float | None = None,
) -> dict[str, Any]:
    """Which stories and articles would have alerted (grouped by story), the closest misses,
    and what the user's labels changed; ``refinement``: how far the topic's queries are
    refined on stored coverage (``AlertStage.refinement``)."""
    matched = [v for v in verdicts if v.match.matched]
    grouped: dict[str, list[ArticleVerdict]] = {}
    for verdict in matched:
        grouped.setdefault(verdict.article.story_id or verdict.article.id, []).append(verdict)
    changed = [
        v for v in verdicts
        if v.without_labels is not None and v.without_labels.matched != v.match.matched
    ]  # fmt: skip
    extra = {} if refinement is None else {"refinement": round(refinement, 3)}
    return {
        "topic": topic_id,
        **extra,
        "articles_matched": len(matched),
        "stories_alerted": len(grouped),
        "stories": [
            {
                "story_id": story_id,
                "headline": stories[story_id].headline
                if story_id in stories
                else rows[0].article.title,
                "articles": [_verdict_json(v) for v in rows],
            }
            for story_id, rows in grouped.items()
        ],
        "near_misses": [_verdict_json(v) for v in verdicts if not v.match.matched][:near_misses],
        "changed_by_labels": [_verdict_json(v) for v in changed],
    }


def _verdict_json(verdict: ArticleVerdict) -> dict[str, Any]:
    a, m = verdict.article, verdict.match
    row: dict[str, Any] = {
        "url": a.canonical_url or a.url,
        "title": a.title,
        "language": a.language or a.feed_language,
        "source": a.feed,
        "published": _iso(a.published_at or a.discovered_at),
        "score": round(m.score, 4),
        "threshold": round(m.threshold, 4),
        "matched": m.matched,
        "passage": m.passage,
        "keywords": list(m.keywords),
        "reason": m.reason,
    }
    if verdict.without_labels is not None:
        row["without_labels"] = {
            "score": round(verdict.without_labels.score, 4),
            "matched": verdict.without_labels.matched,
        }
    return row
