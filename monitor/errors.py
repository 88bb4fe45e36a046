"""One exception tree for newsmon.

Every error names what it is about (a feed, a URL, a topic, a channel, a config key), so a
message in `newsmon feeds` or a log line tells the user where to look. Boundaries wrap the
library's exception with ``raise ... from e`` so the cause stays inspectable.
"""

from __future__ import annotations

from typing import Any, Self


class NewsmonError(Exception):
    """Base of every error newsmon raises on purpose.

    Subclasses take keyword-rich constructors; ``__reduce__`` rebuilds them from the arguments
    they were created with, so they survive pickling (errors cross the extraction process pool).
    """

    _init_args: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        self = super().__new__(cls, *args)
        self._init_args = (args, kwargs)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._init_args
        return (_rebuild, (type(self), args, kwargs))


def _rebuild(cls: type[NewsmonError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


# -- configuration --------------------------------------------------------------------------


class ConfigError(NewsmonError):
    """The configuration file is unreadable or invalid.

    ``problems`` holds one precise message per problem ("feeds.yaml:12: feeds[3].url: ...").
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration {path}:\n{lines}")


# -- storage --------------------------------------------------------------------------------


class StorageError(NewsmonError):
    """The state store cannot be opened, migrated or written."""


# -- fetching -------------------------------------------------------------------------------


class FetchError(NewsmonError):
    """Fetching ``url`` failed. ``retry_after`` (seconds) is set when the server asked for it."""

    def __init__(self, url: str, message: str, *, retry_after: float | None = None) -> None:
        self.url = url
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{url}: {message}")


class HTTPStatusError(FetchError):
    """The server answered with a non-success status."""

    def __init__(self, url: str, status: int, *, retry_after: float | None = None) -> None:
        self.status = status
        super().__init__(url, f"HTTP {status}", retry_after=retry_after)


class ResponseTooLargeError(FetchError):
    """The (decompressed) body exceeded ``fetch.max_bytes``."""


class BlockedAddressError(FetchError):
    """The URL resolves to (or connected to) an address the SSRF guard refuses."""


class TooManyRedirectsError(FetchError):
    """Redirect loop or chain longer than the limit."""


class FetchTimeoutError(FetchError):
    """Connect, read or total deadline exceeded."""


class NetworkError(FetchError):
    """DNS failure, refused or reset connection, TLS error and the like."""


# -- parsing and extraction ------------------------------------------------------------------


class FeedParseError(NewsmonError):
    """The feed document could not be parsed into any entries."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        self.message = message
        super().__init__(f"{url}: {message}")


class ExtractionError(NewsmonError):
    """Main-text extraction of a page failed."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        self.message = message
        super().__init__(f"{url}: {message}")


class FeedError(NewsmonError):
    """A poll of one configured feed failed; wraps the cause and names the feed."""

    def __init__(self, feed: str, message: str) -> None:
        self.feed = feed
        self.message = message
        super().__init__(f"feed {feed!r}: {message}")


# -- alerting -------------------------------------------------------------------------------


class ChannelError(NewsmonError):
    """Sending through channel ``channel`` failed.

    ``permanent`` means retrying cannot help (a rejected recipient, a 4xx other than 408/429);
    ``retry_after`` (seconds) is set when the receiver asked for a pause (Slack's 429
    ``Retry-After``); ``whole_channel`` when the failure is the channel's rather than the
    message's (rejected credentials): every other message would fail the same way, so the
    channel pauses until the retry instead of trying them all.
    """

    def __init__(
        self,
        channel: str,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        whole_channel: bool = False,
    ) -> None:
        self.channel = channel
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.whole_channel = whole_channel
        super().__init__(f"channel {channel!r}: {message}")


class TopicError(NewsmonError):
    """A topic cannot be prepared for matching (e.g. its description cannot be embedded)."""

    def __init__(self, topic: str, message: str) -> None:
        self.topic = topic
        self.message = message
        super().__init__(f"topic {topic!r}: {message}")
