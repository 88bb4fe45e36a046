from __future__ import annotations

import pickle

import pytest

from monitor.errors import (
    BlockedAddressError,
    ConfigError,
    ExtractionError,
    FeedError,
    FeedParseError,
    HTTPStatusError,
    NewsmonError,
)


@pytest.mark.parametrize(
    "error",
    [
        ExtractionError("https://x/a", "no main text"),
        HTTPStatusError("https://x/a", 429, retry_after=30.0),
        BlockedAddressError("https://x/a", "resolves to 10.0.0.1 (private)"),
        FeedParseError("https://x/feed", "not a feed"),
        FeedError("Tagesschau", "HTTP 500"),
        ConfigError("feeds.yaml", ["feeds.yaml:3: feeds[0].url: bad"]),
    ],
)
def test_errors_survive_pickling_across_the_process_pool(error: NewsmonError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_errors_name_what_they_are_about() -> None:
    assert str(HTTPStatusError("https://x/feed", 503)) == "https://x/feed: HTTP 503"
    assert "feed 'Meduza'" in str(FeedError("Meduza", "timed out"))
