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
    assert open_api.get("/health").json() == {"status": "ok", "feeds": 1, "articles": 0}
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
