"""The web page: search, topics and feed health, server-rendered (Jinja2) by the API's process.

``web_router(app)`` returns routes to include in the FastAPI app of ``monitor.api``. The pages
live beside the JSON API: ``/`` (search), ``/ui/topics``, ``/ui/topics/{id}``, ``/ui/feeds`` and
``/ui/static/{name}``. They need no JavaScript and load nothing from elsewhere (a strict
Content-Security-Policy says so); the coverage chart is an SVG drawn here. Bad input (a date
that is not one) renders the page with a message and HTTP 422.
"""

from __future__ import annotations

import mimetypes
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from alerts.labels import label_article, labelled_urls
from alerts.report import alert_json
from indexer.search import MAX_QUERY_CHARS, hit_json, parse_when, story_json
from monitor.errors import TopicError
from monitor.identity import canonical_url
from monitor.types import FeedState, as_utc, utcnow

if TYPE_CHECKING:
    from alerts.types import StoredMatch
    from indexer.types import StoryHit
    from monitor.config import TopicConfig
    from monitor.service import App

HERE = Path(__file__).resolve().parent
SEARCH_LIMIT = 20
STORY_LIMIT = 10
RECENT_ALERTS = 20
COVERAGE_DAYS = 30
MAX_COVERAGE_DAYS = 366
DEFAULT_BACKTEST = "30d"
MAX_FORM_CHARS = 8192
#: the topic page's judgement buttons, and what the page says once one is saved
LABEL_VERDICTS = {
    "relevant": "Saved: relevant to this topic.",
    "not-relevant": "Saved: not relevant to this topic.",
}
#: what the pages may load: their own stylesheet, nothing else (no script at all)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # a click on a hit must not tell the outlet what was searched; the pages' own forms still
    # name their origin (with no-referrer a browser posts them as from "null")
    "Referrer-Policy": "same-origin",
}
#: Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_WORD = re.compile(r"\w+")
_FALSE = {"", "0", "false", "off", "no"}

Authorise = Callable[..., Any]


class BadInput(ValueError):
    """User input a page cannot use; the message is shown on the page (HTTP 422)."""


def web_router(app: App, authorised: Authorise | None = None) -> APIRouter:
    """The HTML pages of ``app``; ``authorised`` (a FastAPI dependency) guards every route."""
    guarded = [Depends(authorised)] if authorised is not None else []
    router = APIRouter(dependencies=guarded, include_in_schema=False)
    env = template_environment()
    static = _static_files(HERE / "static")

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        def link(route: str, **params: str) -> str:
            return str(request.url_for(route, **params).path)

        html = env.get_template(name).render(link=link, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    @router.get("/", response_class=HTMLResponse, name="web_search")
    def search_page(
        request: Request,
        q: str = "",
        lang: Annotated[list[str] | None, Query()] = None,
        source: Annotated[list[str] | None, Query()] = None,
        since: str = "",
        until: str = "",
        by_story: str = "",
    ) -> HTMLResponse:
        form = SearchForm(
            q=q.strip(),
            lang=tuple(x for x in lang or [] if x),
            source=tuple(x for x in source or [] if x),
            since=since.strip(),
            until=until.strip(),
            by_story=by_story.strip().lower() not in _FALSE,
        )
        context: dict[str, Any] = {
            "form": form,
            "languages": _languages(app, form),
            "sources": [f.name for f in app.config.feeds],
        }
        try:
            results = run_search(app, form)
        except BadInput as e:
            return page(request, "search.html", 422, error=str(e), **context)
        return page(request, "search.html", **context, **results)

    @router.get("/ui/topics", response_class=HTMLResponse, name="web_topics")
    def topics_page(request: Request) -> HTMLResponse:
        rows = [topic_row(app, t) for t in app.config.topics]
        return page(request, "topics.html", topics=rows)

    @router.get("/ui/topics/{topic_id}", response_class=HTMLResponse, name="web_topic")
    def topic_page(
        request: Request,
        topic_id: str,
        days: str = str(COVERAGE_DAYS),
        backtest: str = "",
        labelled: str = "",
    ) -> HTMLResponse:
        topic = next((t for t in app.config.topics if t.id == topic_id), None)
        if topic is None:
            message = f"There is no topic {topic_id!r} in the configuration."
            return page(request, "error.html", 404, title="No such topic", error=message)
        try:
            context = topic_context(app, topic, days=days, backtest=backtest.strip())
        except BadInput as e:  # the page without what was asked, and why not
            context = topic_context(app, topic, days=str(COVERAGE_DAYS), backtest="")
            context["backtest_since"] = backtest or DEFAULT_BACKTEST
            return page(request, "topic.html", 422, error=str(e), **context)
        notice = LABEL_VERDICTS.get(labelled, "")
        return page(request, "topic.html", notice=notice, **context)

    @router.post("/ui/topics/{topic_id}/label", name="web_topic_label")
    async def label_page(request: Request, topic_id: str) -> Response:
        """A judgement from the topic page's buttons: saved, then back to the page (303)."""
        form = parse_qs((await request.body()).decode("utf-8", "replace")[:MAX_FORM_CHARS])

        def field(name: str) -> str:
            return (form.get(name) or [""])[0].strip()

        back = {"days": field("days") or str(COVERAGE_DAYS), "backtest": field("backtest")}
        verdict = field("verdict")
        if verdict not in LABEL_VERDICTS:
            message = f"A label is 'relevant' or 'not-relevant', not {verdict!r}."
            return page(request, "error.html", 422, title="No such judgement", error=message)
        try:
            label_article(app.store, {t.id for t in app.config.topics}, topic_id, field("url"),
                          relevant=verdict == "relevant", now=utcnow())  # fmt: skip
        except TopicError as e:  # no such topic, or no stored article at the URL
            return page(request, "error.html", 404, title="Cannot label", error=str(e))
        target = request.url_for("web_topic", topic_id=topic_id).path
        query = urlencode({**{k: v for k, v in back.items() if v}, "labelled": verdict})
        anchor = "#backtest" if back["backtest"] else "#alerts"
        return RedirectResponse(f"{target}?{query}{anchor}", status_code=303)

    @router.get("/ui/feeds", response_class=HTMLResponse, name="web_feeds")
    def feeds_page(request: Request) -> HTMLResponse:
        return page(request, "feeds.html", feeds=feed_rows(app))

    @router.get("/ui/static/{name}", name="web_static")
    def static_file(name: str) -> Response:
        if name not in static:
            raise HTTPException(status_code=404, detail="no such file")
        body, media_type = static[name]
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(body, media_type=media_type, headers=headers)

    return router


# -- search --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchForm:
    q: str = ""
    lang: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    since: str = ""
    until: str = ""
    by_story: bool = False


def run_search(app: App, form: SearchForm) -> dict[str, Any]:
    """The results for the form (nothing without a query); BadInput when it cannot be run."""
    from monitor.api import search_filter  # here: monitor.api imports this module

    if not form.q:
        return {"searched": False}
    if len(form.q) > MAX_QUERY_CHARS:
        raise BadInput(f"The query is too long: at most {MAX_QUERY_CHARS} characters.")
    _check_when("Since", form.since)
    _check_when("Until", form.until)
    flt = search_filter(",".join(form.lang), list(form.source), form.since or None,
                        form.until or None)  # fmt: skip
    if form.by_story:
        folded = app.searcher.search_stories(form.q, filter=flt, limit=STORY_LIMIT)
        groups = [story_group(h) for h in folded]
        hits = [a for g in groups for a in g["articles"]]
    else:
        hits = [hit_json(h) for h in app.searcher.search(form.q, filter=flt, limit=SEARCH_LIMIT)]
        groups = []
    found = sorted({str(h["language"]) for h in hits})
    return {"searched": True, "hits": hits, "groups": groups, "found_languages": found}


def story_group(hit: StoryHit) -> dict[str, Any]:
    return {
        "story": story_json(hit.story) if hit.story else None,
        "score": hit.score,
        "articles": [hit_json(h) for h in hit.hits],
    }


def _check_when(label: str, text: str) -> None:
    if not text:
        return
    try:
        parse_when(text, utcnow())
    except ValueError as e:
        raise BadInput(f"{label}: {e}") from e


def _languages(app: App, form: SearchForm) -> list[str]:
    return sorted({f.language for f in app.config.feeds} | set(form.lang))


# -- highlighting --------------------------------------------------------------------------------


def query_terms(query: str) -> list[str]:
    """The query's words worth marking in a passage: three letters or more, or an acronym
    (``EU``); longest first, so a longer term wins where two overlap."""
    words = {w for w in _WORD.findall(query) if len(w) >= 3 or (len(w) == 2 and w.isupper())}
    return sorted(words, key=lambda w: (-len(w), w))


def highlight(text: str, query: str) -> Markup:
    """``text`` escaped, the query's words in it (whole words, any case) in ``<mark>``
    (pure)."""
    terms = query_terms(query)
    if not terms or not text:
        return escape(text)
    term = "(?:" + "|".join(re.escape(t) for t in terms) + ")"
    # neighbouring terms ("Abu Dhabi", "Абу-Даби") make one mark
    pattern = re.compile(rf"(?<!\w){term}(?:[\s-]+{term})*(?!\w)", re.IGNORECASE)
    parts: list[Markup] = []
    last = 0
    for match in pattern.finditer(text):
        parts.append(escape(text[last : match.start()]))
        parts.append(Markup("<mark>{}</mark>").format(match.group()))
        last = match.end()
    parts.append(escape(text[last:]))
    return Markup("").join(parts)


def passage_text(passage: object, title: object) -> str:
    """The passage without the title a lead passage starts with (the title is shown above)."""
    text, head = str(passage or ""), str(title or "").strip()
    if head and text.startswith(head):
        return text[len(head) :].lstrip() or text
    return text


def safe_href(url: object) -> str:
    """A link target only for http(s) URLs: a feed could carry ``javascript:`` links."""
    text = str(url or "")
    try:
        scheme = urlsplit(text).scheme.lower()
    except ValueError:
        return ""
    return text if scheme in {"http", "https"} else ""


def when(value: object) -> str:
    """A time as ``2026-11-28 08:30 UTC`` (datetime or ISO text); an em dash for none."""
    if value is None or value == "":
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return as_utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def iso(value: object) -> str:
    """A time for a ``<time datetime>`` attribute."""
    if value is None or value == "":
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return as_utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def template_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        highlight=highlight, passage_text=passage_text, safe_href=safe_href, when=when, iso=iso
    )
    return env


def _static_files(folder: Path) -> dict[str, tuple[bytes, str]]:
    files = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file():
            media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if media_type.startswith("text/"):
                media_type += "; charset=utf-8"
            files[path.name] = (path.read_bytes(), media_type)
    return files


# -- topics --------------------------------------------------------------------------------------


def topic_row(app: App, topic: TopicConfig) -> dict[str, Any]:
    latest = app.store.list_alerts(topic_id=topic.id, limit=1)
    return {
        "id": topic.id,
        "name": topic.name,
        "description": topic.description,
        "languages": list(topic.languages),
        "channels": list(topic.channels),
        "last_alert": latest[0].updated_at if latest else None,
    }


def topic_context(app: App, topic: TopicConfig, *, days: str, backtest: str) -> dict[str, Any]:
    """Everything the topic page shows; BadInput for a bad ``days`` or backtest bound."""
    span = _days(days)
    now = utcnow()
    matches = app.store.list_matches(topic_id=topic.id, since=now - timedelta(days=span))
    rows = daily_coverage(matches, days=span)
    alerts = recent_alerts(app, topic.id)
    tested = run_backtest(app, topic.id, backtest) if backtest else None
    labels = labelled_urls(app.store, topic.id)
    shown = [a for alert in alerts for a in alert["articles"]]
    if tested:
        shown += [v for story in tested["stories"] for v in story["articles"]]
        shown += tested["near_misses"] + tested["changed_by_labels"]
    for row in shown:
        row["label"] = labels.get(canonical_url(str(row.get("url") or "")))
    return {
        "topic": topic,
        "days": span,
        "alerts": alerts,
        "coverage": rows,
        "chart": coverage_svg(rows),
        "coverage_languages": sorted({lang for _, counts in rows for lang in counts}),
        "backtest_since": backtest or DEFAULT_BACKTEST,
        "backtest": tested,
    }


def _days(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_COVERAGE_DAYS:
        raise BadInput(f"Days: a whole number from 1 to {MAX_COVERAGE_DAYS}, not {text!r}.")
    return value


def recent_alerts(app: App, topic_id: str) -> list[dict[str, Any]]:
    """The topic's latest alerts (JSON shape of the API), each with its story."""
    names = {t.id: t.name for t in app.config.topics}
    records = app.store.list_alerts(topic_id=topic_id, limit=RECENT_ALERTS)
    stories = app.store.get_stories([r.story_id for r in records]) if records else {}
    rows = []
    for record in records:
        row = alert_json(record, names)
        story = stories.get(record.story_id)
        row["story"] = story_json(story) if story else None
        rows.append(row)
    return rows


def run_backtest(app: App, topic_id: str, since: str) -> dict[str, Any]:
    from monitor.api import topic_backtest  # here: monitor.api imports this module

    try:
        start = parse_when(since, utcnow())
    except ValueError as e:
        raise BadInput(f"Backtest since: {e}") from e
    return topic_backtest(app, topic_id, since=start, until=None)


# -- the coverage chart --------------------------------------------------------------------------

DayCounts = tuple[date, dict[str, int]]


def daily_coverage(matches: Iterable[StoredMatch], *, days: int) -> list[DayCounts]:
    """Matched articles per publication day (UTC) and language: ``days`` days up to the latest
    such day, days without matches included; empty without matches (pure)."""
    counts: dict[date, Counter[str]] = {}
    seen: set[str] = set()
    for match in matches:
        if match.article.article_id in seen:
            continue
        seen.add(match.article.article_id)
        day = as_utc(match.article.published_at).date()
        counts.setdefault(day, Counter())[match.article.language or "?"] += 1
    if not counts:
        return []
    first = max(counts) - timedelta(days=days - 1)
    window = (first + timedelta(days=n) for n in range(days))
    return [(d, dict(sorted(counts.get(d, Counter()).items()))) for d in window]


@dataclass(frozen=True, slots=True)
class ChartBox:
    width: int = 640
    height: int = 200
    left: int = 36
    right: int = 8
    top: int = 28
    bottom: int = 24


def coverage_svg(rows: Sequence[DayCounts], box: ChartBox | None = None) -> Markup:
    """Stacked bars, one per day, a colour per language; each bar part titled for tooltips and
    screen readers. Empty markup without data."""
    if not rows:
        return Markup("")
    box = box or ChartBox()
    languages = sorted({lang for _, counts in rows for lang in counts})
    colours = {lang: PALETTE[n % len(PALETTE)] for n, lang in enumerate(languages)}
    peak = max(sum(c.values()) for _, c in rows) or 1
    plot_w, plot_h = box.width - box.left - box.right, box.height - box.top - box.bottom
    step = plot_w / len(rows)
    parts = [_svg_axes(rows, box, peak), _svg_legend(languages, colours, box)]
    for n, (day, counts) in enumerate(rows):
        x, y = box.left + n * step + step * 0.1, float(box.top + plot_h)
        for lang, count in counts.items():
            height = plot_h * count / peak
            y -= height
            parts.append(
                Markup(
                    '<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}">'
                    "<title>{}: {} in {}</title></rect>"
                ).format(x, y, step * 0.8, height, colours[lang], day.isoformat(), count, lang)
            )
    total = sum(sum(c.values()) for _, c in rows)
    label = f"Matched articles per day and language, {rows[0][0]} to {rows[-1][0]}: {total}"
    head = Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {} {}" role="img" '
        'aria-labelledby="chart-title"><title id="chart-title">{}</title>'
    ).format(box.width, box.height, label)
    return head + Markup("").join(parts) + Markup("</svg>")


def _svg_axes(rows: Sequence[DayCounts], box: ChartBox, peak: int) -> Markup:
    base = box.height - box.bottom
    first, last = rows[0][0].isoformat(), rows[-1][0].isoformat()
    return Markup(
        '<line x1="{x0}" y1="{t}" x2="{x0}" y2="{b}" class="axis"/>'
        '<line x1="{x0}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>'
        '<text x="{lt}" y="{ty}" text-anchor="end" class="tick">{peak}</text>'
        '<text x="{lt}" y="{b}" text-anchor="end" class="tick">0</text>'
        '<text x="{x0}" y="{dy}" class="tick">{first}</text>'
        '<text x="{r}" y="{dy}" text-anchor="end" class="tick">{last}</text>'
    ).format(x0=box.left, t=box.top, b=base, r=box.width - box.right, lt=box.left - 4,
             ty=box.top + 10, dy=base + 16, peak=peak, first=first, last=last)  # fmt: skip


def _svg_legend(languages: Sequence[str], colours: dict[str, str], box: ChartBox) -> Markup:
    items = []
    for n, lang in enumerate(languages):
        x = box.left + n * 56
        items.append(Markup(
            '<rect x="{}" y="6" width="12" height="12" fill="{}"/>'
            '<text x="{}" y="16" class="tick">{}</text>'
        ).format(x, colours[lang], x + 16, lang))  # fmt: skip
    return Markup("").join(items)


# -- feeds ---------------------------------------------------------------------------------------


def feed_rows(app: App) -> list[dict[str, Any]]:
    """Every configured feed, in the configuration's order, with its stored health."""
    stored = {f.name: f for f in app.store.list_feeds()}
    return [
        feed_health(stored.get(f.name) or FeedState(name=f.name, url=f.url, language=f.language))
        for f in app.config.feeds
    ]


def feed_health(feed: FeedState) -> dict[str, Any]:
    """A feed's row on the feeds page, with a one-word health."""
    if feed.last_polled_at is None:
        health = "not polled yet"
    elif feed.consecutive_failures:
        health = "failing"
    elif feed.malformed_reason:
        health = "malformed"
    else:
        health = "ok"
    return {
        "name": feed.name,
        "url": feed.url,
        "language": feed.language,
        "title": feed.title,
        "health": health,
        "last_polled_at": feed.last_polled_at,
        "next_poll_at": feed.next_poll_at,
        "last_status": feed.last_status,
        "last_error": feed.last_error or feed.malformed_reason,
        "error_count": feed.error_count,
        "consecutive_failures": feed.consecutive_failures,
        "last_new_item_at": feed.last_new_item_at,
        "items_seen": feed.items_seen,
        "items_new": feed.items_new,
        "total_articles": feed.total_articles,
        "permanent_redirect": feed.permanent_redirect,
    }
