"""The Slack channel: a Block Kit message POSTed to an incoming-webhook URL.

The webhook URL is the credential (anyone holding it can post to the channel), so it only
leaves this module as the target of the POST: errors and log lines name the channel instead.
Status handling is the webhook channel's (``alerts.channels.webhook.check_response``): Slack
answers 429 with ``Retry-After`` when rate-limited, and 400 ``invalid_payload``, 403
``action_prohibited`` or 404 ``no_service`` when retrying cannot help.

A digest is posted the same way, as its Block Kit summary (``RenderedDigest.slack``).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from alerts.channels.webhook import compact_json, post
from alerts.render import slack_payload
from alerts.render_digest import RenderedDigest
from alerts.types import AlertMessage
from monitor.config import DEFAULT_USER_AGENT, SlackChannelConfig
from monitor.errors import ChannelError

__all__ = ["SlackChannel"]

log = logging.getLogger("newsmon.alerts.slack")


class SlackChannel:
    def __init__(
        self,
        name: str,
        config: SlackChannelConfig,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient()

    async def send(self, message: AlertMessage) -> None:
        await self._post(slack_payload(message), f"message {message.id}")

    async def send_digest(self, digest: RenderedDigest) -> None:
        await self._post(digest.slack, digest.id)

    async def _post(self, payload: dict[str, Any], what: str) -> None:
        if not self._config.enabled:
            raise ChannelError(
                self.name, "webhook_url is empty (is SLACK_WEBHOOK_URL set?)", permanent=True
            )
        await post(
            self._client,
            self.name,
            self._config.webhook_url.get_secret_value(),
            compact_json(payload),
            httpx.Headers(
                {
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": DEFAULT_USER_AGENT,
                }
            ),
            timeout=self._config.timeout.total_seconds(),
        )
        log.debug("%s sent via Slack channel %r", what, self.name)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
