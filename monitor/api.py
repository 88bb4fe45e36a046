"""The local HTTP API (FastAPI), served by ``newsmon run`` in its own process.

The embedded vector store admits one process, so while the service runs, CLI commands such as
``newsmon search`` reach the data through this API. It listens on 127.0.0.1:8765 by default;
on any other address the configuration requires a bearer token (``api.token``).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlsplit

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from alerts.labels import UnknownArticleError, label_article, labelled_urls
from alerts.report import alert_json, backtest_json
from indexer.search import hit_json, parse_when, story_hit_json, story_json
from indexer.types import SearchFilter
from monitor.types import utcnow

if TYPE_CHECKING:
    from monitor.service import App

MAX_QUERY_CHARS = 2000
MAX_LIMIT = 100
MAX_URL_CHARS = 4096


class LabelIn(BaseModel):
    """A judgement of a stored article for a topic."""

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    relevant: bool


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGINT/SIGTERM and stops the
    server by setting ``should_exit``."""

    def __init__(self, app: FastAPI, *, host: str, port: int) -> None:
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                        access_log=False, lifespan="off"))  # fmt: skip

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create_api(app: App) -> FastAPI:
    api = FastAPI(title="newsmon", version="0.1.0", description=__doc__)
    token = app.config.api.token.get_secret_value() if app.config.api.token else None

    def token_given(request: Request) -> bool:
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        cookie = request.cookies.get(TOKEN_COOKIE, "")
        return hmac.compare_digest(header.encode(), f"Bearer {token}".encode()) or (
            hmac.compare_digest(cookie.encode(), token.encode())
        )

    def authorised(request: Request) -> None:
        if not token_given(request):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    def page_authorised(request: Request) -> None:
        # a browser sends no Authorization header: the pages take the token from a cookie
        # set by the sign-in form, and send a visitor without one there
        if not token_given(request):
            raise HTTPException(status_code=303, headers={"Location": "/ui/login"})

    guarded = [Depends(authorised)]

    @api.middleware("http")
    async def refuse_cross_site_writes(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method not in SAFE_METHODS and not same_site(request):
            return PlainTextResponse("a write from another site's page is refused", 403)
        return await call_next(request)

    @api.get("/health", dependencies=guarded)
    def health() -> dict[str, Any]:
        # the backlogs an operator watches: bodies waiting to be embedded (lead-first
        # indexing when behind), alert deliveries waiting for their channel, and those given
        # up on (`newsmon alerts --retry-failed` queues them again)
        return {"status": "ok", "feeds": len(app.config.feeds),
                "articles": app.store.count_articles(),
                "bodies_pending": app.store.count_bodies_pending(),
                "deliveries_pending": app.store.count_pending_deliveries(),
                "deliveries_failed": app.store.count_failed_deliveries()}  # fmt: skip

    @api.get("/search", dependencies=guarded)
    def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
        lang: Annotated[str | None, Query(description="comma-separated codes")] = None,
        source: Annotated[list[str] | None, Query()] = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10,
        by_story: bool = False,
    ) -> list[dict[str, Any]]:
        try:
            flt = search_filter(lang, source, since, until)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        if by_story:
            folded = app.searcher.search_stories(q, filter=flt, limit=limit)
            return [story_hit_json(h) for h in folded]
        return [hit_json(h) for h in app.searcher.search(q, filter=flt, limit=limit)]

    @api.get("/feeds", dependencies=guarded)
    def feeds() -> list[dict[str, Any]]:
        from monitor.cli import feed_row

        return [feed_row(f) for f in app.store.list_feeds()]

    @api.get("/topics", dependencies=guarded)
    def topics() -> list[dict[str, Any]]:
        fields = ("id", "name", "description", "channels", "languages", "sources", "threshold",
                  "compete", "confirm")  # fmt: skip
        return [{f: _jsonable(getattr(t, f)) for f in fields} for t in app.config.topics]

    @api.get("/stories", dependencies=guarded)
    def stories(
        since: str | None = None, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20
    ) -> list[dict[str, Any]]:
        try:
            start = parse_when(since, utcnow()) if since else None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        return [story_json(s) for s in app.store.list_stories(since=start, limit=limit)]

    @api.get("/topics/{topic_id}/test", dependencies=guarded)
    def topic_test(topic_id: str, since: str = "30d", until: str | None = None) -> dict[str, Any]:
        known_topic(topic_id)
        try:
            start = parse_when(since, utcnow())
            end = parse_when(until, utcnow()) if until else None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        return topic_backtest(app, topic_id, since=start, until=end)

    @api.get("/topics/{topic_id}/labels", dependencies=guarded)
    def topic_labels(topic_id: str) -> list[dict[str, Any]]:
        known_topic(topic_id)
        return [{"url": url, "relevant": relevant}
                for url, relevant in labelled_urls(app.store, topic_id).items()]  # fmt: skip

    @api.post("/topics/{topic_id}/labels", dependencies=guarded)
    def add_topic_label(topic_id: str, label: LabelIn) -> dict[str, Any]:
        """Judge a stored article for the topic (as ``newsmon topics label``): matching uses it
        from the next article on, and ``/topics/{id}/test`` shows what it changes."""
        known_topic(topic_id)
        try:
            article = label_article(app.store, topic_ids(), topic_id, label.url,
                                    relevant=label.relevant, now=utcnow())  # fmt: skip
        except UnknownArticleError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e
        url = article.canonical_url or article.url
        return {"topic": topic_id, "article_id": article.id, "title": article.title, "url": url,
                "relevant": label.relevant}  # fmt: skip

    def topic_ids() -> set[str]:
        return {t.id for t in app.config.topics}

    def known_topic(topic_id: str) -> None:
        if topic_id not in topic_ids():
            raise HTTPException(status_code=404, detail=f"no topic {topic_id!r} in the config")

    @api.get("/alerts", dependencies=guarded)
    def alerts(
        topic: str | None = None,
        since: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        try:
            start = parse_when(since, utcnow()) if since else None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        names = {t.id: t.name for t in app.config.topics}
        records = app.store.list_alerts(topic_id=topic, since=start, limit=limit)
        return [alert_json(r, names) for r in records]

    @api.post("/reindex", dependencies=guarded)
    def reindex(all: bool = False) -> dict[str, Any]:
        model = None if all else app.indexer.embedder.model_id
        return {"reset": app.store.reset_index(model, utcnow())}

    @api.get("/digest", dependencies=guarded, response_model=None)
    def digest(
        week: str | None = None,
        since: str | None = None,
        topic: str | None = None,
        format: Annotated[str, Query(pattern="^(json|html|md)$")] = "json",
    ) -> dict[str, Any] | Response:
        try:
            built = build_digest_for(app.config, app.store, week=week, since=since, topic=topic)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        return digest_response(built, format)

    @api.get("/ui/login", include_in_schema=False)
    def login_form() -> Response:
        return HTMLResponse(LOGIN_PAGE)

    @api.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            return HTMLResponse(LOGIN_PAGE.replace("<!--error-->", "<p>Wrong token.</p>"),
                                status_code=401)  # fmt: skip
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")  # fmt: skip
        return response

    from monitor.web import web_router

    api.include_router(web_router(app, page_authorised))
    return api


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_site(request: Request) -> bool:
    """Whether a write may come from where the browser says it does. A form on another site's
    page can post here: the browser would send the sign-in cookie along (were it not strict) or,
    on loopback, no token is asked at all - so a label or a re-index would be forged. Browsers
    say where a request comes from (``Sec-Fetch-Site``, ``Origin``); a client that is no
    browser sends neither and is judged by its token alone."""
    fetched_from = request.headers.get("sec-fetch-site")
    if fetched_from is not None:  # every current browser sends it
        return fetched_from in ("same-origin", "none")
    origin = request.headers.get("origin")
    # the host, not the scheme: behind a TLS proxy the page is https and this server http (an
    # opaque "null" origin, from a sandboxed frame or a no-referrer page, is no match)
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


TOKEN_COOKIE = "newsmon_token"  # noqa: S105 - the cookie name, not a secret
LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>newsmon: sign in</title></head>
<body><h1>newsmon</h1><!--error-->
<form method="post" action="/ui/login"><label>API token
<input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></body></html>"""


def build_digest_for(
    config: Any,
    store: Any,
    *,
    week: str | None,
    since: str | None,
    topic: str | None,
) -> Any:
    """The digest the CLI and the API build: ``week`` (2026-W05) or ``since`` (7d), else the
    previous complete week, in ``digest.timezone``; all topics or one. ValueError when bad."""
    from alerts.digest import load_digest, previous_week, since_window, week_window
    from monitor.config import parse_duration

    now = utcnow()
    zone = config.digest.zone
    if week and since:
        raise ValueError("give --week or --since, not both")
    if week:
        window = week_window(week, zone)
    elif since:
        window = since_window(now, parse_duration(since), zone)
    else:
        window = previous_week(now, zone)
    topics = [t for t in config.topics if topic is None or t.id == topic]
    if topic is not None and not topics:
        raise ValueError(f"no topic {topic!r} in the config")
    return load_digest(store, topics, window, now)


def digest_response(digest: Any, format: str) -> dict[str, Any] | Response:
    from alerts.render_digest import digest_html, digest_json, digest_markdown

    if format == "html":
        return HTMLResponse(digest_html(digest))
    if format == "md":
        return PlainTextResponse(digest_markdown(digest), media_type="text/markdown")
    result: dict[str, Any] = digest_json(digest)
    return result


def topic_backtest(
    app: App, topic_id: str, *, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """``newsmon topics test``: what the topic would have alerted on in stored coverage."""
    verdicts = app.alerts.backtest(topic_id, since=since, until=until)
    story_ids = [v.article.story_id for v in verdicts if v.article.story_id]
    stories = app.store.get_stories(story_ids) if story_ids else {}
    return backtest_json(topic_id, verdicts, stories,
                         refinement=app.alerts.refinement(topic_id))  # fmt: skip


def search_filter(
    lang: str | None, sources: list[str] | None, since: str | None, until: str | None
) -> SearchFilter:
    """The filter from user input (CLI or API); ValueError with a clear message when bad."""
    now = utcnow()
    languages = tuple(x.strip().lower() for x in (lang or "").split(",") if x.strip())
    names = tuple(x.strip() for s in (sources or []) for x in s.split(",") if x.strip())
    return SearchFilter(
        languages=languages,
        sources=names,
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
    )
