from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.httpserver import LocalServer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def corpus_path(*parts: str) -> Path:
    """A path under ../shared/corpus, or a skip naming what is missing."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"third-party corpus not found at {path} (see the README: ../shared/corpus)")
    return path


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    with LocalServer() as server:
        yield server
