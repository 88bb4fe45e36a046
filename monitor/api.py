"""The local HTTP API (FastAPI), served by ``newsmon run`` in its own process.

The embedded vector store admits one process, so while the service runs, CLI commands such as
``newsmon search`` reach the data through this API. It listens on 127.0.0.1:8765 by default;
on any other address the configuration requires a bearer token (``api.token``).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request

from alerts.report import alert_json, backtest_json
from indexer.search import hit_json, parse_when, story_hit_json, story_json
from indexer.types import SearchFilter
from monitor.types import utcnow

if TYPE_CHECKING:
    from monitor.service import App

MAX_QUERY_CHARS = 2000
MAX_LIMIT = 100


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

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    guarded = [Depends(authorised)]

    @api.get("/health", dependencies=guarded)
    def health() -> dict[str, Any]:
        return {"status": "ok", "feeds": len(app.config.feeds),
                "articles": app.store.count_articles()}  # fmt: skip

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
        if topic_id not in {t.id for t in app.config.topics}:
            raise HTTPException(status_code=404, detail=f"no topic {topic_id!r} in the config")
        try:
            start = parse_when(since, utcnow())
            end = parse_when(until, utcnow()) if until else None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        return topic_backtest(app, topic_id, since=start, until=end)

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

    return api


def topic_backtest(
    app: App, topic_id: str, *, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """``newsmon topics test``: what the topic would have alerted on in stored coverage."""
    verdicts = app.alerts.backtest(topic_id, since=since, until=until)
    story_ids = [v.article.story_id for v in verdicts if v.article.story_id]
    stories = app.store.get_stories(story_ids) if story_ids else {}
    return backtest_json(topic_id, verdicts, stories)


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
