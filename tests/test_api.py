"""The local HTTP API: authentication and request limits (FastAPI's test client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.embed import HashEmbedder
from monitor.api import create_api
from monitor.config import load_config
from monitor.service import App, make_app
from tests.support.newsfixtures import write_config

FEEDS = {"Example": ("https://example.org/rss", "en")}


def _app(tmp_path: Path, **api: object) -> Iterator[App]:
    config = load_config(write_config(tmp_path, FEEDS, api=api))
    app = make_app(config, embedder=HashEmbedder())
    yield app
    app.pages.close()
    app.indexer.vectors.close()
    app.store.close()


@pytest.fixture
def open_api(tmp_path: Path) -> Iterator[TestClient]:
    for app in _app(tmp_path):
        yield TestClient(create_api(app))


@pytest.fixture
def guarded_api(tmp_path: Path) -> Iterator[TestClient]:
    for app in _app(tmp_path, host="0.0.0.0", token="s3cret-token"):
        yield TestClient(create_api(app))


def test_health_and_an_empty_search(open_api: TestClient) -> None:
    assert open_api.get("/health").json() == {
        "status": "ok", "feeds": 1, "articles": 0, "bodies_pending": 0, "deliveries_pending": 0,
        "deliveries_failed": 0,
    }  # fmt: skip
    assert open_api.get("/search", params={"q": "Abu Dhabi"}).json() == []
    assert open_api.get("/stories").json() == []


@pytest.mark.parametrize(
    "params",
    [{"q": ""}, {"q": "x" * 2001}, {"q": "x", "limit": 0}, {"q": "x", "limit": 101},
     {"q": "x", "since": "soon"}],
)  # fmt: skip
def test_request_limits(open_api: TestClient, params: dict[str, object]) -> None:
    assert open_api.get("/search", params=params).status_code == 422


def test_a_token_is_required_off_loopback(guarded_api: TestClient) -> None:
    assert guarded_api.get("/health").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert guarded_api.get("/health", headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret-token"}
    assert guarded_api.get("/health", headers=right).status_code == 200
    assert guarded_api.post("/reindex", headers=right).json() == {"reset": 0}


def test_openapi_documents_the_endpoints(open_api: TestClient) -> None:
    paths = open_api.get("/openapi.json").json()["paths"]
    assert {"/health", "/search", "/stories", "/reindex"} <= paths.keys()


def test_pages_need_the_token_too_and_take_it_from_a_sign_in_cookie(
    guarded_api: TestClient,
) -> None:
    page = guarded_api.get("/", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login"
    assert "password" in guarded_api.get("/ui/login").text
    wrong = guarded_api.post("/ui/login", data={"token": "guess"}, follow_redirects=False)
    assert wrong.status_code == 401
    assert "newsmon_token" not in wrong.headers.get("set-cookie", "")
    right = guarded_api.post("/ui/login", data={"token": "s3cret-token"}, follow_redirects=False)
    assert right.status_code == 303
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert guarded_api.get("/").status_code == 200  # the client keeps the cookie
    assert guarded_api.get("/ui/feeds").status_code == 200


def test_digest_endpoint_formats_and_bad_input(open_api: TestClient) -> None:
    week = open_api.get("/digest", params={"week": "2026-W05"})
    assert week.status_code == 200
    assert week.json()["type"] == "digest"
    html = open_api.get("/digest", params={"since": "7d", "format": "html"})
    assert html.status_code == 200
    assert html.text.lstrip().startswith("<!DOCTYPE html")
    markdown = open_api.get("/digest", params={"format": "md"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert open_api.get("/digest", params={"week": "2026-W99"}).status_code == 422
    assert open_api.get("/digest", params={"week": "2026-W05", "since": "7d"}).status_code == 422
    assert open_api.get("/digest", params={"topic": "nope"}).status_code == 422
    assert open_api.get("/digest", params={"format": "pdf"}).status_code == 422


def test_serve_runs_the_api_and_the_page_on_a_real_port_until_stopped(tmp_path: Path) -> None:
    import asyncio

    import httpx

    for app in _app(tmp_path):

        async def scenario(app: App = app, port: int = app.config.api.port) -> tuple[int, int, str]:
            stop = asyncio.Event()
            serving = asyncio.create_task(app.serve_api(stop))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(100):  # until uvicorn listens
                    try:
                        health = await client.get("/health")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                page = await client.get("/")
            stop.set()
            await asyncio.wait_for(serving, 10)
            return health.status_code, page.status_code, page.text

        health, page, text = asyncio.run(scenario())
        assert health == 200
        assert page == 200
        assert "<form" in text


def test_feeds_and_topics_endpoints(tmp_path: Path) -> None:
    for app in _app(tmp_path):
        app.sync_feeds()  # what `newsmon run` does first
        _check_feeds_and_topics(TestClient(create_api(app)))


def _check_feeds_and_topics(open_api: TestClient) -> None:
    [feed] = open_api.get("/feeds").json()
    assert feed["name"] == "Example"
    assert "consecutive_failures" in feed
    assert open_api.get("/topics").json() == []


def test_feeds_and_topics_need_the_token(guarded_api: TestClient) -> None:
    assert guarded_api.get("/feeds").status_code == 401
    assert guarded_api.get("/topics").status_code == 401
