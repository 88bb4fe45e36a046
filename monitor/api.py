"""The local HTTP API (FastAPI), served by ``newsmon run`` in its own process.

The embedded vector store admits one process, so while the service runs, CLI commands such as
``newsmon search`` reach the data through this API. It listens on 127.0.0.1:8765 by default;
on any other address the configuration requires a bearer token (``api.token``).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request

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

    @api.post("/reindex", dependencies=guarded)
    def reindex(all: bool = False) -> dict[str, Any]:
        model = None if all else app.indexer.embedder.model_id
        return {"reset": app.store.reset_index(model, utcnow())}

    return api


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
