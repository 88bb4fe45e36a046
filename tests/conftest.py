from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from monitor.state import SqlStateStore, open_state_store, sqlite_url
from tests.support.httpserver import LocalServer

POSTGRES_URL = os.environ.get(
    "NEWSMON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def corpus_path(*parts: str) -> Path:
    """A path under ../shared/corpus, or a skip naming what is missing."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"third-party corpus not found at {path} (see the README: ../shared/corpus)")
    return path


#: files under the corpus's feeds_* folders that are not feed documents
NOT_FEEDS = frozenset({".md", ".json", ".txt"})


def corpus_feed_files() -> list[Path]:
    """Every feed document under ../shared/corpus/feeds_* (parser test suites and real
    outlets' feeds), or a skip naming what is missing."""
    root = corpus_path()
    files = [
        p for p in sorted(root.glob("feeds_*/**/*"))
        if p.is_file() and p.suffix not in NOT_FEEDS and "output" not in p.parts
    ]  # fmt: skip
    if not files:
        pytest.skip(f"no feed files under {root}/feeds_* (see ../shared/corpus/README.md)")
    return files


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    with LocalServer() as server:
        yield server


# -- state stores: every store test runs against SQLite and PostgreSQL ---------------------------


def _admin_connect() -> psycopg.Connection[Any]:
    url = sa.make_url(POSTGRES_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        connect_timeout=3,
        autocommit=True,
    )


@cache
def _postgres_unavailable() -> str | None:
    try:
        _admin_connect().close()
    except psycopg.Error as e:
        shown = sa.make_url(POSTGRES_URL).render_as_string(hide_password=True)
        cause = " ".join(str(e).split())
        return f"PostgreSQL at {shown} is unreachable ({cause}); see NEWSMON_TEST_POSTGRES_URL"
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a schema of its own, dropped afterwards: parallel runs and
    reruns never see each other's tables."""
    reason = _postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"newsmon_test_{uuid.uuid4().hex[:12]}"
    with _admin_connect() as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with _admin_connect() as admin:
            # a connection a test leaked would block the drop forever; fail fast instead
            admin.execute("SET lock_timeout = '10s'")
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "data")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def empty_store(store_url: str) -> Iterator[SqlStateStore]:
    store = open_state_store(store_url)
    yield store
    store.close()
