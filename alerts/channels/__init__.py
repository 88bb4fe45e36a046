"""Alert channels: where an ``AlertMessage`` or a digest goes (email, Slack, a webhook).

A channel does one thing: deliver one message once, or say precisely why it could not. Retries,
backoff and bookkeeping belong to the dispatcher working through the outbox, which is why
``send`` raises ``ChannelError`` with ``permanent`` (stop retrying) and ``retry_after`` (the
receiver asked for a pause) instead of retrying itself.

Channel modules are imported lazily by ``make_channel``: a deployment with only a webhook never
imports ``smtplib``/``ssl`` set-up code, and vice versa.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Protocol

from alerts.render_digest import RenderedDigest
from alerts.types import AlertMessage
from monitor.config import EmailChannelConfig, SlackChannelConfig, WebhookChannelConfig
from monitor.errors import ChannelError

__all__ = ["Channel", "RecordingChannel", "make_channel"]


class Channel(Protocol):
    """One configured destination (``name`` is its key under ``channels:`` in the config)."""

    name: str

    async def send(self, message: AlertMessage) -> None:
        """Return only once the receiver acknowledged ``message``.

        Raises ``ChannelError`` otherwise: ``permanent=True`` when retrying cannot help,
        ``retry_after`` (seconds) when the receiver asked for a pause. The same message may be
        sent again after an error (the receiver may have got it anyway), so every channel
        marks it with ``message.id`` for de-duplication.
        """
        ...

    async def send_digest(self, digest: RenderedDigest) -> None:
        """Deliver a digest rendered once for every channel, with the errors of ``send``.

        Marked with ``digest.id`` (stable for a window and its topics) for de-duplication.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the channel is not used afterwards."""
        ...


def make_channel(
    name: str, config: EmailChannelConfig | SlackChannelConfig | WebhookChannelConfig
) -> Channel:
    """The channel for one validated channel config."""
    if isinstance(config, EmailChannelConfig):
        from alerts.channels.email import EmailChannel

        return EmailChannel(name, config)
    if isinstance(config, SlackChannelConfig):
        from alerts.channels.slack import SlackChannel

        return SlackChannel(name, config)
    from alerts.channels.webhook import WebhookChannel

    return WebhookChannel(name, config)


class RecordingChannel:
    """An in-memory channel for tests: records what was sent, fails on request.

    ``attempts`` holds every message ``send`` was called with (failed ones included), ``sent``
    only the ones that succeeded; ``digest_attempts`` and ``digests`` do the same for digests.
    Failures requested with ``fail_next`` apply to the next sends of either kind.
    """

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.sent: list[AlertMessage] = []
        self.attempts: list[AlertMessage] = []
        self.digests: list[RenderedDigest] = []
        self.digest_attempts: list[RenderedDigest] = []
        self.closed = False
        self._failures: deque[ChannelError] = deque()

    def fail_next(self, count: int = 1, error: ChannelError | None = None) -> None:
        """Make the next ``count`` sends raise ``error`` (a transient error by default)."""
        failure = error or ChannelError(self.name, "simulated failure")
        self._failures.extend([failure] * count)

    async def send(self, message: AlertMessage) -> None:
        self.attempts.append(message)
        self._maybe_fail()
        self.sent.append(message)

    async def send_digest(self, digest: RenderedDigest) -> None:
        self.digest_attempts.append(digest)
        self._maybe_fail()
        self.digests.append(digest)

    def _maybe_fail(self) -> None:
        if self._failures:
            # a fresh copy per raise: re-raising one instance would pile up its traceback
            raise copy.copy(self._failures.popleft())

    async def aclose(self) -> None:
        self.closed = True
