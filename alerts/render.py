"""What an alert says, per medium: pure functions from an ``AlertMessage`` to text, HTML, Slack
Block Kit and webhook JSON.

Everything here is deterministic in the message alone (no clock, no configuration), so a message
re-sent after a restart renders byte for byte the same and receivers can de-duplicate it.

Article titles, passages, outlets and URLs come from feeds nobody vetted, so every medium treats
them as hostile text:

* single-line fields lose newlines and control characters (no header injection in a subject,
  no fake lines in a plain-text mail);
* HTML escapes everything and only links ``http``/``https`` URLs (no ``javascript:``);
* Slack escapes ``&``, ``<`` and ``>`` (its only control characters), so ``<!channel>`` in a
  headline shows as text instead of paging a whole workspace, and defuses ``@channel``-style
  words as well; its text objects are ``verbatim``, so a bare URL or ``#channel`` in a title
  does not become a link either.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from alerts.types import AlertArticle, AlertMessage, MessageKind
from monitor.types import as_utc

__all__ = [
    "email_subject",
    "render_html",
    "render_text",
    "slack_payload",
    "webhook_payload",
]

#: the passage shown in mail and Slack: enough to judge relevance, short enough to skim
PASSAGE_CHARS = 400
SUBJECT_CHARS = 180  # long subjects are cut by every mail client anyway
_TOPIC_CHARS = 60
_ELLIPSIS = "…"

# C0/C1 controls, DEL, and the Unicode line/paragraph separators (they break lines too)
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_LINKABLE_SCHEMES = frozenset({"http", "https"})


# -- shared text helpers ------------------------------------------------------------------------


def one_line(text: str) -> str:
    """Collapse whitespace and control characters into single spaces."""
    return _CONTROL_OR_SPACE.sub(" ", text).strip()


def trim_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, on a word boundary when one is near."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(_ELLIPSIS)]
    space = cut.rfind(" ")
    if space > limit // 2:  # a single huge "word" (a URL, CJK text) is cut mid-word instead
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + _ELLIPSIS


def utc_time(value: datetime) -> str:
    """``2024-05-01 12:30 UTC``: what a reader sees."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def iso_utc(value: datetime) -> str:
    """``2024-05-01T12:30:00Z``: what a program reads (as ``alerts.types`` stores it)."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


def is_linkable(url: str) -> bool:
    """Only plain web links become clickable; anything else is shown as text."""
    if not url or one_line(url) != url or " " in url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in _LINKABLE_SCHEMES and bool(parts.netloc)


def _passage(article: AlertArticle) -> str:
    return trim_words(one_line(article.passage), PASSAGE_CHARS)


def _kind_label(msg: AlertMessage) -> str:
    return "update" if msg.kind is MessageKind.FOLLOW_UP else "new story"


def _story_summary(msg: AlertMessage) -> str:
    count = msg.story_article_count or len(msg.articles)
    parts = [f"{count} article{'s' if count != 1 else ''}"]
    if msg.story_languages:
        parts.append("languages " + ", ".join(msg.story_languages))
    if msg.story_sources:
        parts.append("sources " + ", ".join(msg.story_sources))
    return one_line("; ".join(parts))


def _article_meta(article: AlertArticle) -> str:
    return " · ".join(
        (
            one_line(article.source) or "unknown outlet",
            one_line(article.language).upper() or "??",
            utc_time(article.published_at),
            # rounded as the outbox stores it first, so a re-send after a restart reads the same
            f"score {round(article.score, 4):.2f}",
        )
    )


# -- email ------------------------------------------------------------------------------------


def email_subject(msg: AlertMessage) -> str:
    """``[newsmon] <topic>: <headline>``, `` (update)`` for a follow-up; one line, capped."""
    prefix = f"[newsmon] {trim_words(one_line(msg.topic_name), _TOPIC_CHARS)}: "
    suffix = " (update)" if msg.kind is MessageKind.FOLLOW_UP else ""
    room = max(SUBJECT_CHARS - len(prefix) - len(suffix), 20)
    return prefix + trim_words(one_line(msg.headline), room) + suffix


def render_text(msg: AlertMessage) -> str:
    """The plain-text mail body (also what terminal mail readers and previews show)."""
    lines = [
        f"newsmon alert: {one_line(msg.topic_name)} (topic {one_line(msg.topic_id)})",
        "",
        f"Story: {one_line(msg.headline)}",
        f"Why: {one_line(msg.reason) or _kind_label(msg)}",
        f"Story so far: {_story_summary(msg)}",
    ]
    for number, article in enumerate(msg.articles, start=1):
        lines += ["", *_text_article(number, article)]
    lines += ["", "-- ", f"newsmon · alert {msg.alert_id} · message {msg.id}"]
    return "\n".join(lines) + "\n"


def _text_article(number: int, article: AlertArticle) -> list[str]:
    lines = [
        f"{number}. {one_line(article.title) or '(untitled)'}",
        f"   {_article_meta(article)}",
        f"   {one_line(article.url)}",
    ]
    if article.keywords:
        lines.append(f"   Keywords: {one_line(', '.join(article.keywords))}")
    if passage := _passage(article):
        lines.append(f"   “{passage}”")
    return lines


def render_html(msg: AlertMessage) -> str:
    """The HTML mail body: inline styles only, no external resources, everything escaped."""
    e = _html_text
    head = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{e(email_subject(msg))}</title></head>\n"
        '<body style="font-family:sans-serif;line-height:1.4;max-width:48em">\n'
        f'<p style="color:#555">newsmon alert · <b>{e(msg.topic_name)}</b> '
        f"<small>(topic {e(msg.topic_id)})</small></p>\n"
        f'<h2 style="margin:0.2em 0">{e(msg.headline)}</h2>\n'
        f"<p><b>Why:</b> {e(msg.reason or _kind_label(msg))}<br>\n"
        f"<b>Story so far:</b> {e(_story_summary(msg))}</p>\n"
    )
    articles = "".join(_html_article(article) for article in msg.articles)
    foot = (
        f'<p style="color:#888;font-size:small">newsmon · alert {e(msg.alert_id)} · '
        f"message {e(msg.id)}</p>\n</body></html>\n"
    )
    return head + articles + foot


def _html_text(text: str) -> str:
    return html.escape(one_line(text), quote=True)


def _html_link(url: str, label: str) -> str:
    if is_linkable(url):
        return f'<a href="{html.escape(url, quote=True)}">{_html_text(label)}</a>'
    return _html_text(label)


def _html_article(article: AlertArticle) -> str:
    e = _html_text
    title = _html_link(article.url, one_line(article.title) or "(untitled)")
    parts = [
        '<div style="border-top:1px solid #ddd;padding:0.5em 0">\n',
        f'<h3 style="margin:0.2em 0">{title}</h3>\n',
        f'<p style="color:#555;margin:0.2em 0">{e(_article_meta(article))}<br>\n',
        f'<small style="word-break:break-all">{_html_link(article.url, article.url)}</small></p>\n',
    ]
    if passage := _passage(article):
        lang = html.escape(one_line(article.language), quote=True)
        parts.append(
            f'<blockquote lang="{lang}" style="margin:0.4em 0 0.4em 1em;color:#333">'
            f"{html.escape(passage)}</blockquote>\n"
        )
    if article.keywords:
        parts.append(f"<p><b>Keywords:</b> {e(', '.join(article.keywords))}</p>\n")
    parts.append("</div>\n")
    return "".join(parts)


# -- Slack --------------------------------------------------------------------------------------

SLACK_MAX_BLOCKS = 50
SLACK_SECTION_CHARS = 3000
_SLACK_URL_CHARS = 1000  # longer URLs are shown unlinked rather than breaking the section limit
_SLACK_FALLBACK_CHARS = 500
# Plain-word mentions are only honoured by legacy parsing, but defusing them costs nothing:
# a WORD JOINER after the "@" keeps the text readable and unparseable as a mention.
_SLACK_WORD_MENTION = re.compile(r"@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)
_SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def slack_escape(text: str, limit: int | None = None) -> str:
    """``text`` as inert Slack mrkdwn, at most ``limit`` characters *after* escaping.

    Trimming happens on the escaped form so a cut can never split ``&amp;`` and leave a
    stray ``&`` that Slack would parse.
    """
    pieces = [_SLACK_ESCAPES.get(char, char) for char in _SLACK_WORD_MENTION.sub("@\u2060", text)]
    if limit is None or sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    used = len(_ELLIPSIS)
    for piece in pieces:
        if used + len(piece) > limit:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept).rstrip() + _ELLIPSIS


def slack_link(url: str, label: str) -> str:
    """``<url|label>`` for a web URL; the escaped label alone for anything else."""
    safe_label = slack_escape(one_line(label).replace("|", "¦"), 250)
    if not is_linkable(url) or len(url) > _SLACK_URL_CHARS:
        return safe_label
    # "<", ">" and "|" end the link or its URL part; percent-encoding keeps the URL equivalent
    target = url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
    return f"<{target.replace('&', '&amp;')}|{safe_label}>"


def slack_payload(msg: AlertMessage) -> dict[str, Any]:
    """A Block Kit message: a summary, one section per article, and a ``text`` fallback."""
    blocks = _slack_head(msg)
    articles = list(msg.articles)
    room = SLACK_MAX_BLOCKS - len(blocks)
    if len(articles) > room:
        shown = room - 1  # one block goes to the "… and K more" line
        blocks += [_slack_article(a) for a in articles[:shown]]
        blocks.append(_slack_context(f"… and {len(articles) - shown} more articles"))
    else:
        blocks += [_slack_article(a) for a in articles]
    fallback = slack_escape(one_line(email_subject(msg)), _SLACK_FALLBACK_CHARS)
    return {"text": fallback, "blocks": blocks}


def _slack_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": slack_mrkdwn(text[:SLACK_SECTION_CHARS])}


def _slack_context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [slack_mrkdwn(text)]}


def slack_mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object that Slack takes verbatim: no automatic links for bare URLs or
    ``#channel`` names and no mention parsing in article text; ``<url|label>`` still links."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _slack_head(msg: AlertMessage) -> list[dict[str, Any]]:
    title = (
        f":newspaper: *{slack_escape(one_line(msg.topic_name), 200)}* · {_kind_label(msg)}\n"
        f"*{slack_escape(one_line(msg.headline), 1500)}*\n"
        f"_{slack_escape(one_line(msg.reason) or _kind_label(msg), 500)}_"
    )
    facts = (
        f"topic `{slack_escape(one_line(msg.topic_id), 100)}` · "
        f"{slack_escape(_story_summary(msg), 1000)}"
    )
    return [_slack_section(title), _slack_context(facts), {"type": "divider"}]


def _slack_article(article: AlertArticle) -> dict[str, Any]:
    # Each part has its own cap, so the sum stays under SLACK_SECTION_CHARS without cutting
    # a link in half: 1000 (URL) + 250 (title) + 300 + 1300 + 120 < 3000.
    lines = [
        f"*{slack_link(article.url, one_line(article.title) or '(untitled)')}*",
        slack_escape(_article_meta(article), 300),
    ]
    if passage := _passage(article):
        lines.append(f">{slack_escape(passage, 1300)}")
    if article.keywords:
        lines.append(f"Keywords: {slack_escape(one_line(', '.join(article.keywords)), 120)}")
    return _slack_section("\n".join(lines))


# -- webhook ------------------------------------------------------------------------------------


def webhook_payload(msg: AlertMessage) -> dict[str, Any]:
    """The JSON document a webhook receiver gets (a stable, documented contract)."""
    return {
        "type": "alert",
        "id": msg.id,
        "alert_id": msg.alert_id,
        "sequence": msg.sequence,
        "kind": msg.kind.value,
        "topic": {"id": msg.topic_id, "name": msg.topic_name},
        "story": {
            "id": msg.story_id,
            "headline": msg.headline,
            "languages": list(msg.story_languages),
            "sources": list(msg.story_sources),
            "article_count": msg.story_article_count or len(msg.articles),
        },
        "reason": msg.reason,
        "created_at": iso_utc(msg.created_at),
        "articles": list(_webhook_articles(msg.articles)),
    }


def _webhook_articles(articles: Iterable[AlertArticle]) -> Iterable[dict[str, Any]]:
    for article in articles:
        yield {
            "url": article.url,
            "title": article.title,
            "language": article.language,
            "source": article.source,
            "published": iso_utc(article.published_at),
            "score": round(article.score, 4),
            "passage": article.passage,  # whole: a program can trim, it cannot un-trim
            "keywords": list(article.keywords),
        }
