"""The generic webhook channel: a signed JSON POST of ``alerts.render.webhook_payload``.

Request
-------
``POST <url>`` with the configured extra headers and::

    Content-Type: application/json
    X-Newsmon-Timestamp: 1714566600                 (unix seconds when this attempt was made)
    X-Newsmon-Signature: sha256=<64 hex digits>     (only when the channel has a ``secret``)

The body is compact UTF-8 JSON (see ``webhook_payload`` for the fields). Its ``id`` is the
message id: a message whose delivery failed is sent again *byte for byte identical*, so a
receiver that may have processed it already de-duplicates on ``id``.

Alerts have ``"type": "alert"``. A digest is posted the same way, signed the same way, with
``"type": "digest"`` (``alerts.render_digest.digest_json``: window, topics -> stories ->
articles, feed notes); its ``id`` is stable for a window and its topics.

Verifying the signature
-----------------------
The signature is ``HMAC-SHA256(secret, f"{timestamp}.".encode() + body)`` in hex, where
``timestamp`` is the header's value and ``body`` the raw request bytes (verify *before* parsing
the JSON; re-serialised JSON would not match)::

    signed = f"{request.headers['X-Newsmon-Timestamp']}.".encode() + request.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, request.headers["X-Newsmon-Signature"])
    fresh = abs(time.time() - int(request.headers["X-Newsmon-Timestamp"])) <= 300

Why the timestamp is signed too: the body alone is the same on every retry, so a signature over
it alone would stay valid forever and anyone who once captured a request could replay it.
Signing the timestamp lets the receiver reject requests older than a few minutes (``fresh``
above); within that window, de-duplicating on ``id`` makes a replay harmless. Each retry gets a
new timestamp and hence a new signature.

Status handling (shared with the Slack channel, whose incoming webhooks are a special case):
2xx is success; 429 and 503 are transient and honour ``Retry-After``; other 5xx, 408 and
network errors or timeouts are transient; redirects and other 4xx are permanent, since the same
request to the same URL will be refused again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from alerts.render import one_line, webhook_payload
from alerts.render_digest import RenderedDigest
from alerts.types import AlertMessage
from monitor.config import DEFAULT_USER_AGENT, WebhookChannelConfig
from monitor.errors import ChannelError
from monitor.fetch import parse_retry_after
from monitor.types import utcnow

__all__ = ["WebhookChannel", "check_response", "encode_body", "encode_digest_body", "post", "sign"]

log = logging.getLogger("newsmon.alerts.webhook")

SIGNATURE_HEADER = "X-Newsmon-Signature"
TIMESTAMP_HEADER = "X-Newsmon-Timestamp"
#: a 429 without Retry-After: wait this long rather than hammering a rate-limited receiver
DEFAULT_RATE_LIMIT_PAUSE = 30.0
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_BODY_EXCERPT_CHARS = 200


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Newsmon-Signature`` value for ``body`` sent at ``timestamp``."""
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def encode_body(message: AlertMessage) -> bytes:
    """Compact UTF-8 JSON: the same bytes on every retry."""
    return compact_json(webhook_payload(message))


def encode_digest_body(digest: RenderedDigest) -> bytes:
    """The digest's JSON (``"type": "digest"``), compact UTF-8 like an alert's."""
    return compact_json(digest.json)


def compact_json(payload: dict[str, Any]) -> bytes:
    """The body every HTTP channel posts: compact JSON, UTF-8, non-ASCII kept as is."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class WebhookChannel:
    def __init__(
        self,
        name: str,
        config: WebhookChannelConfig,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient()

    async def send(self, message: AlertMessage) -> None:
        await self._post(encode_body(message), f"message {message.id}")

    async def send_digest(self, digest: RenderedDigest) -> None:
        await self._post(encode_digest_body(digest), digest.id)

    async def _post(self, body: bytes, what: str) -> None:
        timestamp = int(time.time())
        secret = self._config.secret
        await post(
            self._client,
            self.name,
            self._config.url,
            body,
            self._headers(timestamp, body),
            timeout=self._config.timeout.total_seconds(),
            # a receiver may echo the request in its error answer: never quote these back
            secrets=[*self._config.headers.values(), secret.get_secret_value() if secret else ""],
        )
        log.debug("%s sent via webhook channel %r", what, self.name)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _headers(self, timestamp: int, body: bytes) -> httpx.Headers:
        # the configured headers first, so they cannot override the ones receivers rely on
        headers = httpx.Headers({"User-Agent": DEFAULT_USER_AGENT})
        headers.update(self._config.headers)
        headers["Content-Type"] = "application/json"
        headers[TIMESTAMP_HEADER] = str(timestamp)
        if self._config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(
                self._config.secret.get_secret_value(), timestamp, body
            )
        return headers


async def post(
    client: httpx.AsyncClient,
    channel: str,
    url: str,
    body: bytes,
    headers: httpx.Headers,
    *,
    timeout: float,
    secrets: Iterable[str] = (),
) -> None:
    """POST ``body`` and raise ``ChannelError`` unless the receiver answered 2xx.

    Error messages name the channel, never the URL or the headers: a Slack webhook URL is
    itself the credential, and webhook headers often carry tokens. The httpx exception is not
    chained for the same reason (its request holds the URL). ``secrets`` (and the URL) are
    masked in the excerpt of an error answer, which may echo the request.
    """
    try:
        response = await client.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        raise ChannelError(channel, f"no answer within {timeout:g}s") from None
    except httpx.TransportError as e:
        reason = _without(str(e), url) or type(e).__name__
        raise ChannelError(channel, f"network error: {reason}") from None
    check_response(channel, response, secrets=[*secrets, url])


def _without(text: str, url: str) -> str:
    """``text`` with ``url`` and its path masked (httpx messages rarely quote them; be sure)."""
    path = urlsplit(url).path
    for secret in (url, path if len(path) > 1 else ""):
        if secret:
            text = text.replace(secret, "<url>")
    return one_line(text)


def check_response(channel: str, response: httpx.Response, *, secrets: Iterable[str] = ()) -> None:
    """Map an HTTP answer onto success, a transient or a permanent ``ChannelError``."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}{_excerpt(response, secrets)}"
    if status in _RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"), utcnow())
        if retry_after is None and status == 429:
            retry_after = DEFAULT_RATE_LIMIT_PAUSE
        raise ChannelError(channel, detail, retry_after=retry_after)
    if status >= 500 or status == 408:
        raise ChannelError(channel, detail)
    if 300 <= status < 400:
        # following a redirect would re-post (and re-sign) to a URL nobody configured
        detail += "; configure the final URL instead of one that redirects"
    raise ChannelError(channel, detail, permanent=True)


def _excerpt(response: httpx.Response, secrets: Iterable[str] = ()) -> str:
    """The start of the answer (Slack says why there: ``invalid_payload``, ``no_service``),
    with ``secrets`` masked before it is cut (a cut must not leave half a secret)."""
    text = one_line(response.text)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        if secret.startswith(("http://", "https://")):
            text = _without(text, secret)  # the URL and its path (a Slack URL's token)
        else:
            text = text.replace(secret, "***")
    text = text[:_BODY_EXCERPT_CHARS]
    return f": {text}" if text else ""
