"""What a digest says, per medium: pure functions from a ``Digest`` to JSON, Markdown, plain
text, HTML, Slack Block Kit and a coverage chart (PNG), and ``render_digest`` bundling them for
the channels.

The escaping rules are those of ``alerts.render`` (titles, passages, outlet names, URLs and
feed errors are hostile text), plus two of the digest's own:

* the HTML is well-formed XML as well (self-closed void elements, no named entities, no
  characters XML forbids), so strict parsers and mail sanitisers read what browsers read;
* Markdown backslash-escapes the characters that start markup, so a title cannot become a
  link, an image or raw HTML in whatever renders the file.

The human formats show at most ``MAX_STORIES`` stories per topic and ``MAX_ARTICLES`` links
per story (a digest must stay readable); the JSON carries everything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from alerts.digest import Digest, DigestArticle, DigestStory, DigestWindow, FeedNote, TopicDigest
from alerts.render import (
    PASSAGE_CHARS,
    SLACK_MAX_BLOCKS,
    SLACK_SECTION_CHARS,
    SUBJECT_CHARS,
    is_linkable,
    iso_utc,
    one_line,
    slack_escape,
    slack_link,
    slack_mrkdwn,
    trim_words,
)

__all__ = [
    "DigestChart",
    "RenderedDigest",
    "coverage_chart_png",
    "digest_html",
    "digest_json",
    "digest_markdown",
    "digest_slack",
    "digest_subject",
    "digest_text",
    "render_digest",
]

MAX_STORIES = 25  # per topic, in the human formats
MAX_ARTICLES = 8  # links per story, in the human formats
SLACK_STORIES = 5  # per topic: Slack is the summary, the email the full read
CHART_SIZE = (640, 240)  # pixels
_CHART_DPI = 100
_CHART_LANGUAGES = 8  # more share one "other" colour
_CHART_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22",
)  # fmt: skip
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MESSAGE_ID_DOMAIN = "newsmon"
#: what XML 1.0 forbids even escaped, after ``one_line`` removed the control characters
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~&$])")
_CHART_LABEL = re.compile(r"[^A-Za-z0-9/_+-]")
_T = TypeVar("_T")


# -- shared -----------------------------------------------------------------------------------


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _day(day: date, *, year: bool = False) -> str:
    """``Mon 26 Jan`` (English whatever the process locale: the digest reads the same)."""
    text = f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}"
    return f"{text} {day.year}" if year else text


def _local(when: datetime, window: DigestWindow) -> str:
    """``2026-01-28 14:05 CET``: in the digest's time zone, where its days begin."""
    local = when.astimezone(window.zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or window.timezone}"


def _period(window: DigestWindow) -> str:
    """``Mon 26 Jan 2026 – Sun 1 Feb 2026 (Europe/Berlin)`` for a week, times otherwise."""
    if window.label:
        last = window.local_date(window.end - timedelta(microseconds=1))
        first = window.local_date(window.start)
        return f"{_day(first, year=True)} – {_day(last, year=True)} ({window.timezone})"
    return f"{_local(window.start, window)} – {_local(window.end, window)}"


def _title(digest: Digest) -> str:
    label = digest.window.label
    return f"Weekly digest {label}" if label else "Digest"


def _languages(counts: Mapping[str, int], sep: str = " · ") -> str:
    return sep.join(f"{one_line(lang)} {count}" for lang, count in counts.items())


def _passage(text: str) -> str:
    return trim_words(one_line(text), PASSAGE_CHARS)


def _headline(story: DigestStory) -> str:
    return one_line(story.headline) or one_line(story.best.title) or "(untitled)"


def _story_facts(story: DigestStory, window: DigestWindow) -> str:
    return one_line(
        f"{_plural(story.article_count, 'article')} · {_languages(story.per_language)} · "
        f"first seen {_local(story.first_seen, window)}, "
        f"last seen {_local(story.last_seen, window)}"
    )


def _topic_facts(topic: TopicDigest) -> str:
    alerted = len(topic.alerted_stories)
    parts = [
        _plural(len(topic.stories), "story", "stories"),
        _plural(topic.article_count, "article"),
    ]
    if topic.per_language:
        parts.append(_languages(topic.per_language, ", "))
    parts.append(f"{alerted} alerted, {len(topic.stories) - alerted} only in this digest")
    return one_line("; ".join(parts))


def _status(story: DigestStory) -> str:
    return "alerted" if story.alerted else "digest only"


def _article_meta(article: DigestArticle, window: DigestWindow) -> str:
    return " · ".join(
        (
            one_line(article.source) or "unknown outlet",
            one_line(article.language).upper() or "??",
            _local(article.published, window),
        )
    )


def _feed_line(note: FeedNote) -> str:
    return one_line(f"{note.feed}: {note.problem.value} ({note.detail})")


def _shown(items: tuple[_T, ...], limit: int) -> tuple[tuple[_T, ...], int]:
    """The first ``limit`` items and how many were left out."""
    return items[:limit], max(len(items) - limit, 0)


def digest_subject(digest: Digest) -> str:
    """``[newsmon] Weekly digest 2026-W05: 12 stories in 2 topics``; one line, capped."""
    stories = _plural(digest.story_count, "story", "stories")
    if len(digest.topics) == 1:
        name = trim_words(one_line(digest.topics[0].topic_name), 60)
        subject = f"[newsmon] {_title(digest)} · {name}: {stories}"
    else:
        subject = f"[newsmon] {_title(digest)}: {stories} in {_plural(len(digest.topics), 'topic')}"
    return trim_words(subject, SUBJECT_CHARS)


# -- JSON -------------------------------------------------------------------------------------


def digest_json(digest: Digest) -> dict[str, Any]:
    """The full digest for programs (``--format json`` and the webhook): topics -> stories ->
    articles, whole passages, UTC times; a stable, documented contract."""
    window = digest.window
    return {
        "type": "digest",
        "id": digest.id,
        "generated_at": iso_utc(digest.generated_at),
        "window": {
            "start": iso_utc(window.start),
            "end": iso_utc(window.end),
            "timezone": window.timezone,
            "label": window.label or None,
        },
        "story_count": digest.story_count,
        "article_count": digest.article_count,
        "topics": [_topic_json(topic) for topic in digest.topics],
        "feeds": [_feed_json(note) for note in digest.feeds],
    }


def _topic_json(topic: TopicDigest) -> dict[str, Any]:
    return {
        "id": topic.topic_id,
        "name": topic.topic_name,
        "story_count": len(topic.stories),
        "article_count": topic.article_count,
        "alerted_story_count": len(topic.alerted_stories),
        "languages": dict(topic.per_language),
        "daily": [
            {"date": day.isoformat(), "total": sum(counts.values()), "languages": dict(counts)}
            for day, counts in topic.daily.items()
        ],
        "stories": [_story_json(story) for story in topic.stories],
    }


def _story_json(story: DigestStory) -> dict[str, Any]:
    return {
        "id": story.story_id,
        "headline": story.headline,
        "first_seen": iso_utc(story.first_seen),
        "last_seen": iso_utc(story.last_seen),
        "article_count": story.article_count,
        "languages": dict(story.per_language),
        "sources": list(story.sources),
        "alerted": story.alerted,
        "best": {"article_id": story.best.article_id, "passage": story.best.passage},
        "articles": [_article_json(article) for article in story.articles],
    }


def _article_json(article: DigestArticle) -> dict[str, Any]:
    return {
        "article_id": article.article_id,
        "url": article.url,
        "title": article.title,
        "language": article.language,
        "source": article.source,
        "published": iso_utc(article.published),
        "score": round(article.score, 4),
        "passage": article.passage,
        "alerted": article.alerted,
    }


def _feed_json(note: FeedNote) -> dict[str, Any]:
    last_new = note.last_new_item_at
    return {
        "feed": note.feed,
        "problem": note.problem.value,
        "detail": note.detail,
        "last_new_item_at": iso_utc(last_new) if last_new else None,
        "consecutive_failures": note.consecutive_failures,
        "last_error": note.last_error,
    }


# -- plain text -------------------------------------------------------------------------------


def digest_text(digest: Digest) -> str:
    """The plain-text mail body and ``--format`` for terminals: every field on one line."""
    lines = [
        f"newsmon · {_title(digest)}",
        _period(digest.window),
        f"{_plural(digest.story_count, 'story', 'stories')} in "
        f"{_plural(len(digest.topics), 'topic')} · generated {iso_utc(digest.generated_at)}",
    ]
    for topic in digest.topics:
        lines += ["", *_text_topic(topic)]
    lines += ["", *_text_feeds(digest.feeds), "", "-- ", f"newsmon · {digest.id}"]
    return "\n".join(lines) + "\n"


def _text_topic(topic: TopicDigest) -> list[str]:
    lines = [
        f"== {one_line(topic.topic_name)} (topic {one_line(topic.topic_id)}) ==",
        _topic_facts(topic),
    ]
    if not topic.stories:
        return [*lines, "No coverage in this period."]
    lines += ["", *_text_daily(topic)]
    stories, hidden = _shown(topic.stories, MAX_STORIES)
    for number, story in enumerate(stories, start=1):
        lines += ["", *_text_story(number, story, topic.window)]
    if hidden:
        lines += ["", f"… and {_plural(hidden, 'more story', 'more stories')} (see the JSON)"]
    return lines


def _text_daily(topic: TopicDigest) -> list[str]:
    """Rows of days, columns of languages: as many days as a window has, few languages."""
    languages = [one_line(lang)[:6] for lang in topic.per_language]
    rows = [["Daily coverage", "total", *languages]]
    for day, counts in topic.daily.items():
        rows.append([_day(day), str(sum(counts.values())), *map(str, counts.values())])
    return ["  " + f"{row[0]:<14}" + "".join(f"  {cell:>6}" for cell in row[1:]) for row in rows]


def _text_story(number: int, story: DigestStory, window: DigestWindow) -> list[str]:
    lines = [
        f"{number}. [{_status(story).upper()}] {_headline(story)}",
        f"   {_story_facts(story, window)}",
        f"   Outlets: {one_line(', '.join(story.sources))}",
    ]
    if passage := _passage(story.best.passage):
        lines.append(f"   “{passage}” ({one_line(story.best.source)})")
    articles, hidden = _shown(story.articles, MAX_ARTICLES)
    for article in articles:
        lines.append(f"   - {one_line(article.title) or '(untitled)'}")
        lines.append(f"     {_article_meta(article, window)} · {one_line(article.url)}")
    if hidden:
        lines.append(f"   … and {_plural(hidden, 'more article')}")
    return lines


def _text_feeds(feeds: tuple[FeedNote, ...]) -> list[str]:
    if not feeds:
        return ["Every feed delivered new items in this period."]
    return ["What this digest could not see:", *(f"- {_feed_line(note)}" for note in feeds)]


# -- Markdown ---------------------------------------------------------------------------------


def _md(text: str) -> str:
    """One line of inert Markdown: no link, image, emphasis or raw HTML can start in it."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line(text))


def _md_link(url: str, label: str) -> str:
    if not is_linkable(url):
        return _md(label)
    target = url.replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")
    return f"[{_md(label)}]({target})"


def digest_markdown(digest: Digest) -> str:
    """``--format md``: the text digest as Markdown (tables, links), every field escaped."""
    lines = [
        f"# newsmon · {_md(_title(digest))}",
        "",
        f"{_md(_period(digest.window))} · "
        f"{_plural(digest.story_count, 'story', 'stories')} in "
        f"{_plural(len(digest.topics), 'topic')}",
    ]
    for topic in digest.topics:
        lines += ["", *_md_topic(topic)]
    lines += ["", "## What this digest could not see", ""]
    if digest.feeds:
        lines += [f"- {_md(_feed_line(note))}" for note in digest.feeds]
    else:
        lines.append("Every feed delivered new items in this period.")
    lines += ["", f"*{_md(digest.id)}*"]
    return "\n".join(lines) + "\n"


def _md_topic(topic: TopicDigest) -> list[str]:
    lines = [f"## {_md(topic.topic_name)}", "", _md(_topic_facts(topic))]
    if not topic.stories:
        return [*lines, "", "No coverage in this period."]
    languages = [_md(lang) for lang in topic.per_language]
    lines += ["", "| day | total | " + " | ".join(languages) + " |"]
    lines.append("|---|---:|" + "---:|" * len(languages))
    for day, counts in topic.daily.items():
        cells = [_day(day), str(sum(counts.values())), *map(str, counts.values())]
        lines.append("| " + " | ".join(cells) + " |")
    stories, hidden = _shown(topic.stories, MAX_STORIES)
    for number, story in enumerate(stories, start=1):
        lines += ["", *_md_story(number, story, topic.window)]
    if hidden:
        lines += ["", f"… and {_plural(hidden, 'more story', 'more stories')} (see the JSON)"]
    return lines


def _md_story(number: int, story: DigestStory, window: DigestWindow) -> list[str]:
    lines = [
        f"### {number}. {_md(_headline(story))} ({_status(story)})",
        "",
        f"{_md(_story_facts(story, window))}  ",
        f"Outlets: {_md(', '.join(story.sources))}",
    ]
    if passage := _passage(story.best.passage):
        lines += ["", f"> {_md(passage)} ({_md(story.best.source)})"]
    articles, hidden = _shown(story.articles, MAX_ARTICLES)
    lines.append("")
    for article in articles:
        link = _md_link(article.url, one_line(article.title) or "(untitled)")
        lines.append(f"- {link} · {_md(_article_meta(article, window))}")
    if hidden:
        lines.append(f"- … and {_plural(hidden, 'more article')}")
    return lines


# -- HTML -------------------------------------------------------------------------------------


def _h(text: str) -> str:
    """One line, escaped for HTML and XML alike."""
    return html.escape(_NOT_XML.sub("", one_line(text)), quote=True)


def _h_link(url: str, label: str) -> str:
    if is_linkable(url) and not _NOT_XML.search(url):
        return f'<a href="{html.escape(url, quote=True)}">{_h(label)}</a>'
    return _h(label)


def digest_html(
    digest: Digest,
    *,
    chart_cids: Mapping[str, str] | None = None,
    charts: Mapping[str, bytes] | None = None,
) -> str:
    """The HTML mail body or ``--out`` file: inline styles, no external resources.

    Each topic's chart is ``<img src="cid:…">`` when ``chart_cids`` (topic id -> Content-ID)
    is given, as the email needs; otherwise a ``data:`` URI of the PNG from ``charts`` (topic
    id -> PNG), rendered here when ``charts`` is None, so a saved file stands alone.
    """
    e = _h
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{e(digest_subject(digest))}</title></head>\n"
        '<body style="font-family:sans-serif;line-height:1.4;max-width:52em">\n'
        f'<h1 style="margin:0.2em 0;font-size:1.5em">newsmon · {e(_title(digest))}</h1>\n'
        f'<p style="color:#555;margin:0.2em 0">{e(_period(digest.window))} · '
        f"{_plural(digest.story_count, 'story', 'stories')} in "
        f"{_plural(len(digest.topics), 'topic')}</p>\n"
    )
    body = "".join(
        _html_topic(topic, _chart_src(topic, chart_cids, charts)) for topic in digest.topics
    )
    foot = (
        f"{_html_feeds(digest.feeds)}"
        f'<p style="color:#888;font-size:small">newsmon · {e(digest.id)} · generated '
        f"{e(iso_utc(digest.generated_at))}</p>\n</body></html>\n"
    )
    return head + body + foot


def _chart_src(
    topic: TopicDigest, cids: Mapping[str, str] | None, charts: Mapping[str, bytes] | None
) -> str | None:
    if cids is not None:
        cid = cids.get(topic.topic_id)
        return f"cid:{cid}" if cid else None
    if charts is not None:
        png = charts.get(topic.topic_id)
    else:
        png = coverage_chart_png(topic) if topic.article_count else None
    return f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" if png else None


def _html_topic(topic: TopicDigest, chart_src: str | None) -> str:
    e = _h
    parts = [
        '<div style="border-top:3px solid #333;margin-top:1.2em">\n',
        f'<h2 style="margin:0.4em 0 0.1em 0">{e(topic.topic_name)} '
        f'<small style="color:#888;font-weight:normal">(topic {e(topic.topic_id)})</small></h2>\n',
        f'<p style="color:#555;margin:0.2em 0">{e(_topic_facts(topic))}</p>\n',
    ]
    if not topic.stories:
        parts.append("<p>No coverage in this period.</p>\n</div>\n")
        return "".join(parts)
    if chart_src:
        alt = f"Daily coverage per language: {_languages(topic.per_language, ', ')}"
        width, height = CHART_SIZE
        parts.append(
            f'<p><img src="{html.escape(chart_src, quote=True)}" alt="{e(alt)}" '
            f'width="{width}" height="{height}" style="max-width:100%;height:auto"/></p>\n'
        )
    parts.append(_html_daily(topic))
    stories, hidden = _shown(topic.stories, MAX_STORIES)
    parts += [_html_story(n, story, topic.window) for n, story in enumerate(stories, start=1)]
    if hidden:
        more = _plural(hidden, "more story", "more stories")
        parts.append(f'<p style="color:#555">… and {more} (see the JSON digest)</p>\n')
    parts.append("</div>\n")
    return "".join(parts)


def _html_daily(topic: TopicDigest) -> str:
    """The chart's numbers as a table: readable where images are blocked."""
    cell = 'style="padding:0 0.6em;text-align:right"'
    languages = "".join(f"<th {cell}>{_h(lang)}</th>" for lang in topic.per_language)
    rows = "".join(
        f'<tr><td style="padding:0 0.6em">{_h(_day(day))}</td>'
        f"<td {cell}><b>{sum(counts.values())}</b></td>"
        + "".join(f"<td {cell}>{count}</td>" for count in counts.values())
        + "</tr>\n"
        for day, counts in topic.daily.items()
    )
    return (
        '<table style="border-collapse:collapse;font-size:small;color:#333;margin:0.4em 0">\n'
        f'<tr><th style="padding:0 0.6em;text-align:left">day</th><th {cell}>total</th>'
        f"{languages}</tr>\n{rows}</table>\n"
    )


def _html_story(number: int, story: DigestStory, window: DigestWindow) -> str:
    e = _h
    colour = "#b35900" if story.alerted else "#2a7a2a"
    badge = (
        f'<small style="color:{colour};border:1px solid {colour};padding:0 0.3em">'
        f"{e(_status(story))}</small>"
    )
    parts = [
        '<div style="border-top:1px solid #ddd;padding:0.5em 0">\n',
        f'<h3 style="margin:0.2em 0">{number}. '
        f"{_h_link(story.best.url, _headline(story))} {badge}</h3>\n",
        f'<p style="color:#555;margin:0.2em 0">{e(_story_facts(story, window))}<br/>\n',
        f"Outlets: {e(', '.join(story.sources))}</p>\n",
    ]
    if passage := _passage(story.best.passage):
        lang = _h(story.best.language)
        parts.append(
            f'<blockquote lang="{lang}" style="margin:0.4em 0 0.4em 1em;color:#333">'
            f"{_h(passage)} <small>({e(story.best.source)})</small></blockquote>\n"
        )
    articles, hidden = _shown(story.articles, MAX_ARTICLES)
    items = "".join(_html_article(article, window) for article in articles)
    if hidden:
        items += f'<li style="color:#555">… and {_plural(hidden, "more article")}</li>\n'
    parts += [f'<ul style="margin:0.2em 0;padding-left:1.2em">\n{items}</ul>\n', "</div>\n"]
    return "".join(parts)


def _html_article(article: DigestArticle, window: DigestWindow) -> str:
    title = _h_link(article.url, one_line(article.title) or "(untitled)")
    lang = _h(article.language)
    return (
        f'<li lang="{lang}">{title} '
        f'<small style="color:#555">{_h(_article_meta(article, window))}</small></li>\n'
    )


def _html_feeds(feeds: tuple[FeedNote, ...]) -> str:
    if not feeds:
        return '<p style="color:#555">Every feed delivered new items in this period.</p>\n'
    items = "".join(
        f"<li><b>{_h(note.feed)}</b>: {_h(note.problem.value)} ({_h(note.detail)})</li>\n"
        for note in feeds
    )
    return (
        '<h2 style="margin:1em 0 0.2em 0;font-size:1.1em">What this digest could not see</h2>\n'
        f"<ul>\n{items}</ul>\n"
    )


# -- Slack ------------------------------------------------------------------------------------


def _slack_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": slack_mrkdwn(text[:SLACK_SECTION_CHARS])}


def _slack_context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [slack_mrkdwn(text[:2000])]}


def digest_slack(digest: Digest) -> dict[str, Any]:
    """A Block Kit summary (the top stories per topic) with a ``text`` fallback, at most
    ``SLACK_MAX_BLOCKS`` blocks: topics that do not fit are counted, not cut mid-way."""
    head = [
        _slack_section(
            f":newspaper: *{slack_escape(_title(digest), 100)}*\n"
            f"{slack_escape(_period(digest.window), 200)} · "
            f"{_plural(digest.story_count, 'story', 'stories')} in "
            f"{_plural(len(digest.topics), 'topic')}"
        )
    ]
    tail = [_slack_context(_slack_feeds(digest.feeds)), _slack_context(f"newsmon · {digest.id}")]
    room = SLACK_MAX_BLOCKS - len(head) - len(tail)
    body: list[dict[str, Any]] = []
    for index, topic in enumerate(digest.topics):
        blocks = _slack_topic(topic)
        left = len(digest.topics) - index - 1
        if len(body) + len(blocks) + (1 if left else 0) > room:
            more = _plural(len(digest.topics) - index, "more topic")
            body.append(_slack_context(f"… and {more} in the email digest"))
            break
        body += blocks
    fallback = slack_escape(digest_subject(digest), 500)
    return {"text": fallback, "blocks": head + body + tail}


def _slack_topic(topic: TopicDigest) -> list[dict[str, Any]]:
    summary = (
        f"*{slack_escape(one_line(topic.topic_name), 200)}* "
        f"(`{slack_escape(one_line(topic.topic_id), 100)}`)\n"
        f"{slack_escape(_topic_facts(topic), 1000)}"
    )
    blocks = [{"type": "divider"}, _slack_section(summary)]
    if topic.stories:
        blocks.append(_slack_section(_slack_stories(topic)))
    return blocks


def _slack_stories(topic: TopicDigest) -> str:
    """The top stories, one line each, kept whole under the section's character limit."""
    lines: list[str] = []
    used = 0
    stories, hidden = _shown(topic.stories, SLACK_STORIES)
    for number, story in enumerate(stories, start=1):
        line = (
            f"{number}. *{slack_link(story.best.url, _headline(story))}* · "
            f"{_plural(story.article_count, 'article')} · "
            f"{slack_escape(_languages(story.per_language, ', '), 150)} · {_status(story)}"
        )
        if used + len(line) + 100 > SLACK_SECTION_CHARS:  # 100: room for the "more" line
            hidden += len(stories) - number + 1
            break
        lines.append(line)
        used += len(line) + 1
    if hidden:
        lines.append(f"… and {_plural(hidden, 'more story', 'more stories')} in the email digest")
    return "\n".join(lines)


def _slack_feeds(feeds: tuple[FeedNote, ...]) -> str:
    if not feeds:
        return "Every feed delivered new items in this period."
    text = "Could not see: " + "; ".join(_feed_line(note) for note in feeds)
    return slack_escape(text, 1900)


# -- chart ------------------------------------------------------------------------------------


def coverage_chart_png(topic: TopicDigest) -> bytes:
    """Daily articles per language as stacked bars, ``CHART_SIZE`` pixels.

    matplotlib is imported here, not at module level: only a digest pays for it. The
    object-oriented API (no pyplot) keeps no global figure state, so concurrent renders are
    safe; without the ``Software`` tag and with no timestamps, equal input gives equal bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    days = list(topic.daily)
    series = _chart_series(topic)
    figure = Figure(figsize=(CHART_SIZE[0] / _CHART_DPI, CHART_SIZE[1] / _CHART_DPI))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bottom = [0] * len(days)
    for index, (label, values) in enumerate(series):
        colour = _CHART_COLOURS[min(index, len(_CHART_COLOURS) - 1)]
        axes.bar(range(len(days)), values, bottom=bottom, width=0.7, label=label, color=colour)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    step = max(1, -(-len(days) // 14))  # at most 14 day labels
    axes.set_xticks(range(0, len(days), step), [_chart_day(d) for d in days[::step]])
    axes.tick_params(labelsize=8)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.margins(y=0.08)
    axes.set_ylabel("articles", fontsize=9)
    axes.set_xlabel(f"day ({_chart_text(topic.window.timezone, 40)})", fontsize=9, labelpad=2)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if series:
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    figure.subplots_adjust(left=0.08, right=0.86, top=0.95, bottom=0.27)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=_CHART_DPI, metadata={"Software": None})
    return out.getvalue()


def _chart_series(topic: TopicDigest) -> list[tuple[str, list[int]]]:
    """One series per language, most covered first; the tail shares an "other" series."""
    languages = list(topic.per_language)
    head, tail = languages[: _CHART_LANGUAGES - 1], languages[_CHART_LANGUAGES - 1 :]
    if len(tail) == 1:
        head, tail = languages, []
    days = list(topic.daily.values())
    series = [(_chart_text(lang, 12), [day.get(lang, 0) for day in days]) for lang in head]
    if tail:
        series.append(("other", [sum(day.get(lang, 0) for lang in tail) for day in days]))
    return series


def _chart_text(text: str, limit: int) -> str:
    """ASCII only: no missing glyphs, no mathtext (``$``), no legend-hiding leading ``_``."""
    return _CHART_LABEL.sub("", text).lstrip("_")[:limit] or "?"


def _chart_day(day: date) -> str:
    return f"{_WEEKDAYS[day.weekday()]}\n{day.day} {_MONTHS[day.month - 1]}"


# -- for the channels -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestChart:
    topic_id: str
    content_id: str  # the MIME Content-ID without angle brackets; the HTML says cid:<this>
    png: bytes


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    """A digest in every medium, rendered once: each channel sends its part, and a retry
    sends the very same bytes."""

    id: str  # Digest.id: the email Message-ID's local part, the webhook payload's id
    subject: str
    text: str
    html: str  # refers to the charts by Content-ID
    charts: tuple[DigestChart, ...]  # one per topic with coverage, in topic order
    slack: dict[str, Any]
    json: dict[str, Any]  # what the webhook posts (its "type" is "digest")
    created_at: datetime  # the mail's Date: when the digest was generated


def chart_content_id(digest_id: str, topic_id: str) -> str:
    """``chart-<hash>.<digest id>@newsmon``: unique per topic, stable per digest."""
    key = hashlib.sha256(topic_id.encode()).hexdigest()[:10]
    return f"chart-{key}.{digest_id}@{_MESSAGE_ID_DOMAIN}"


def render_digest(digest: Digest) -> RenderedDigest:
    """Everything the channels send; the charts are drawn once and shared."""
    charts = tuple(
        DigestChart(topic.topic_id, chart_content_id(digest.id, topic.topic_id), png)
        for topic in digest.topics
        if topic.article_count
        for png in (coverage_chart_png(topic),)
    )
    cids = {chart.topic_id: chart.content_id for chart in charts}
    return RenderedDigest(
        id=digest.id,
        subject=digest_subject(digest),
        text=digest_text(digest),
        html=digest_html(digest, chart_cids=cids),
        charts=charts,
        slack=digest_slack(digest),
        json=digest_json(digest),
        created_at=digest.generated_at,
    )
