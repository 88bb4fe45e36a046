"""Alert channels against real receivers: an in-process SMTP server (aiosmtpd, with real TLS
from a throwaway CA) and a local HTTP server standing in for Slack and webhook receivers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from alerts.channels import Channel, RecordingChannel, make_channel
from alerts.channels.email import EmailChannel
from alerts.channels.slack import SlackChannel
from alerts.channels.webhook import WebhookChannel
from alerts.render import slack_payload, webhook_payload
from alerts.types import AlertMessage
from monitor.config import EmailChannelConfig, SlackChannelConfig, WebhookChannelConfig
from monitor.errors import ChannelError
from tests.support.httpserver import LocalServer, Response
from tests.test_render import HOSTILE, make_message

# -- helpers --------------------------------------------------------------------------------------


def deliver(make: Callable[[], Channel], *messages: AlertMessage) -> None:
    """Create the channel inside the event loop, send ``messages`` in order, close it."""

    async def scenario() -> None:
        channel = make()
        try:
            for message in messages:
                await channel.send(message)
        finally:
            await channel.aclose()

    asyncio.run(scenario())


def failure(make: Callable[[], Channel], message: AlertMessage | None = None) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        deliver(make, message or make_message())
    return caught.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- SMTP -----------------------------------------------------------------------------------------

USER, PASSWORD = "newsmon", "correct horse battery staple"


@dataclass
class Inbox:
    """An aiosmtpd handler keeping every accepted mail; ``replies`` scripts refusals."""

    envelopes: list[Envelope] = field(default_factory=list)
    tls_sessions: list[bool] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_replies.get(address, "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply.startswith("250"):
            self.envelopes.append(envelope)
            transport = server.transport
            self.tls_sessions.append(bool(transport and transport.get_extra_info("ssl_object")))
        return self.data_reply

    def mails(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(bytes(e.original_content or b""), policy=email.policy.default)
            for e in self.envelopes
        ]


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the server) from a throwaway CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@contextmanager
def smtp_server(inbox: Inbox, **options: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def email_config(port: int, **changes: Any) -> EmailChannelConfig:
    data: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "starttls": False,
        "from": "newsmon <alerts@example.org>",
        "to": "analyst@example.org, desk@example.org",
        "timeout": "5s",
        **changes,
    }
    return EmailChannelConfig.model_validate(data)


def email_channel(config: EmailChannelConfig, ctx: ssl.SSLContext | None = None) -> EmailChannel:
    return EmailChannel("mail", config, ssl_context=ctx)


def test_email_is_multipart_utf8_with_a_stable_message_id() -> None:
    inbox = Inbox()
    message = make_message()
    with smtp_server(inbox) as port:
        deliver(lambda: email_channel(email_config(port)), message, message)
    first, again = inbox.mails()
    assert first["Subject"] == "[newsmon] Gaza ceasefire: Переговоры о прекращении огня в Каире"
    assert first["From"] == "newsmon <alerts@example.org>"
    assert first["To"] == "analyst@example.org, desk@example.org"
    assert inbox.envelopes[0].rcpt_tos == ["analyst@example.org", "desk@example.org"]
    assert first["Message-ID"] == again["Message-ID"] == f"<{message.id}@newsmon>"
    assert first["Date"] == again["Date"]
    assert first["In-Reply-To"] is None
    assert first.get_content_type() == "multipart/alternative"
    text, html_part = (first.get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None
    assert html_part is not None
    assert "Переговори про припинення вогню відновилися в Каїрі" in text.get_content()
    assert "Переговоры о прекращении огня возобновились в Каире" in html_part.get_content()


def test_email_headers_are_rfc2047_encoded_on_the_wire() -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        deliver(lambda: email_channel(email_config(port)), make_message())
    raw = bytes(inbox.envelopes[0].original_content or b"")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"Subject: [newsmon] Gaza ceasefire: =?utf-8?" in head


def test_email_follow_up_threads_under_the_first_message() -> None:
    inbox = Inbox()
    follow_up = make_message(sequence=2)
    with smtp_server(inbox) as port:
        deliver(lambda: email_channel(email_config(port)), follow_up)
    (mail,) = inbox.mails()
    first = f"<{follow_up.alert_id}.0@newsmon>"
    assert mail["In-Reply-To"] == mail["References"] == first
    assert mail["Message-ID"] == f"<{follow_up.alert_id}.2@newsmon>"
    assert str(mail["Subject"]).endswith(" (update)")


def test_email_starttls(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    inbox = Inbox()
    with smtp_server(inbox, tls_context=server_ctx, require_starttls=True) as port:
        deliver(
            lambda: email_channel(email_config(port, starttls=True), client_ctx), make_message()
        )
    assert inbox.tls_sessions == [True]


def test_email_without_starttls_is_refused_by_a_server_requiring_it(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = tls
    with smtp_server(Inbox(), tls_context=server_ctx, require_starttls=True) as port:
        error = failure(lambda: email_channel(email_config(port, starttls=False)))
    assert error.permanent
    assert "530" in error.message


def test_email_untrusted_certificate_is_permanent(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = tls
    with smtp_server(Inbox(), tls_context=server_ctx, require_starttls=True) as port:
        # the default context trusts the system CAs, not our throwaway one
        error = failure(lambda: EmailChannel("mail", email_config(port, starttls=True)))
    assert error.permanent
    assert "certificate" in error.message


def test_email_implicit_tls(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    inbox = Inbox()
    with smtp_server(inbox, ssl_context=server_ctx) as port:
        config = email_config(port, ssl=True, starttls=False)
        deliver(lambda: email_channel(config, client_ctx), make_message())
    assert inbox.tls_sessions == [True]
    assert len(inbox.mails()) == 1


@pytest.fixture
def auth_server(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    options = {"authenticator": authenticate, "auth_require_tls": True, "auth_required": True}
    with smtp_server(inbox, tls_context=tls[0], **options) as port:
        yield port, inbox


def test_email_login(
    auth_server: tuple[int, Inbox], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port, inbox = auth_server
    config = email_config(port, starttls=True, username=USER, password=PASSWORD)
    deliver(lambda: email_channel(config, tls[1]), make_message())
    assert len(inbox.envelopes) == 1


def test_email_wrong_password_is_retried_channel_wide_and_not_disclosed(
    auth_server: tuple[int, Inbox], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port, inbox = auth_server
    wrong = "hunter2-wrong-password"
    config = email_config(port, starttls=True, username=USER, password=wrong)
    error = failure(lambda: email_channel(config, tls[1]))
    assert not error.permanent  # kept pending until the password is fixed (test_channel_faults)
    assert error.whole_channel
    assert "535" in error.message
    for text in (str(error), repr(error), error.message):
        assert wrong not in text
    assert error.__cause__ is None  # smtplib's exception is not chained: it may quote the login
    assert inbox.envelopes == []


def test_email_non_ascii_password_is_permanent_and_not_disclosed(
    auth_server: tuple[int, Inbox], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port, _ = auth_server
    config = email_config(port, starttls=True, username=USER, password="пароль-секрет")
    error = failure(lambda: email_channel(config, tls[1]))
    assert error.permanent
    assert "пароль" not in str(error)


def test_email_unreachable_server_is_transient() -> None:
    port = free_port()  # nothing listens there
    error = failure(lambda: email_channel(email_config(port)))
    assert not error.permanent
    assert error.channel == "mail"
    assert "'mail'" in str(error)
    assert f"127.0.0.1:{port}" in error.message


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("451 4.7.1 Greylisted, try again later", False), ("554 5.7.1 Spam rejected", True)],
)
def test_email_data_reply_decides_permanence(reply: str, permanent: bool) -> None:
    inbox = Inbox(data_reply=reply)
    with smtp_server(inbox) as port:
        error = failure(lambda: email_channel(email_config(port)))
    assert error.permanent is permanent
    assert reply.split()[0] in error.message


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("550 5.1.1 No such user", True), ("450 4.2.1 Mailbox busy", False)],
)
def test_email_all_recipients_refused(reply: str, permanent: bool) -> None:
    inbox = Inbox(rcpt_replies={"analyst@example.org": reply, "desk@example.org": reply})
    with smtp_server(inbox) as port:
        error = failure(lambda: email_channel(email_config(port)))
    assert error.permanent is permanent
    assert "analyst@example.org" in error.message


def test_email_partly_refused_recipients_count_as_sent(caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox(rcpt_replies={"desk@example.org": "550 5.1.1 No such user"})
    with smtp_server(inbox) as port, caplog.at_level(logging.WARNING):
        deliver(lambda: email_channel(email_config(port)), make_message())
    assert inbox.envelopes[0].rcpt_tos == ["analyst@example.org"]
    assert "desk@example.org (550" in caplog.text


# -- Slack ----------------------------------------------------------------------------------------

SLACK_PATH = "/services/T0000/B0000/s3cr3tT0k3n"


def slack_channel(url: str, timeout: str = "5s") -> SlackChannel:
    return SlackChannel("team-slack", SlackChannelConfig(webhook_url=url, timeout=timeout))  # type: ignore[arg-type]


def test_slack_posts_block_kit(http_server: LocalServer) -> None:
    url = http_server.route(SLACK_PATH, Response(b"ok", content_type="text/plain"))
    message = make_message()
    deliver(lambda: slack_channel(url), message)
    (request,) = http_server.requests
    assert request.method == "POST"
    assert request.headers["content-type"].startswith("application/json")
    assert json.loads(request.body) == slack_payload(message)


def test_slack_headline_cannot_ping(http_server: LocalServer) -> None:
    url = http_server.route(SLACK_PATH, Response(b"ok"))
    deliver(lambda: slack_channel(url), make_message(headline=HOSTILE))
    body = http_server.requests[0].body.decode()
    assert "<!channel>" not in body
    assert "&lt;!channel&gt;" in body
    assert "<b>" not in body


@pytest.mark.parametrize(
    ("response", "permanent", "retry_after"),
    [
        (Response(b"rate limited", status=429, headers={"Retry-After": "7"}), False, 7),
        (Response(b"", status=429), False, 30),
        (Response(b"", status=500), False, None),
        (Response(b"", status=503, headers={"Retry-After": "12"}), False, 12),
        (Response(b"", status=408), False, None),
        (Response(b"invalid_payload", status=400), True, None),
        (Response(b"action_prohibited", status=403), True, None),
        (Response(b"no_service", status=404), True, None),
    ],
)
def test_slack_status_handling(
    http_server: LocalServer, response: Response, permanent: bool, retry_after: float | None
) -> None:
    url = http_server.route(SLACK_PATH, response)
    error = failure(lambda: slack_channel(url))
    assert (error.permanent, error.retry_after) == (permanent, retry_after)
    assert f"HTTP {response.status}" in error.message
    assert response.body.decode() in error.message  # Slack's reason, e.g. "no_service"
    assert "s3cr3tT0k3n" not in str(error)


def test_slack_retry_after_as_http_date(http_server: LocalServer) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    url = http_server.route(SLACK_PATH, Response(status=429, headers={"Retry-After": when}))
    error = failure(lambda: slack_channel(url))
    assert error.retry_after is not None
    assert 100 < error.retry_after <= 120


def test_slack_timeout_and_network_errors_are_transient(http_server: LocalServer) -> None:
    url = http_server.route(SLACK_PATH, Response(b"ok", delay=1.0))
    slow = failure(lambda: slack_channel(url, timeout="0.2s"))
    closed = f"http://127.0.0.1:{free_port()}{SLACK_PATH}"
    refused = failure(lambda: slack_channel(closed))
    for error in (slow, refused):
        assert not error.permanent
        assert error.channel == "team-slack"
        assert "s3cr3tT0k3n" not in str(error)
        assert error.__cause__ is None
    assert "no answer within 0.2s" in slow.message


def test_slack_without_webhook_url_fails_permanently() -> None:
    error = failure(lambda: slack_channel(""))
    assert error.permanent
    assert "SLACK_WEBHOOK_URL" in error.message


def test_slack_leaves_an_injected_client_open(http_server: LocalServer) -> None:
    url = http_server.route(SLACK_PATH, Response(b"ok"))
    config = SlackChannelConfig(webhook_url=url)  # type: ignore[arg-type]

    async def scenario() -> bool:
        async with httpx.AsyncClient() as client:
            channel = SlackChannel("team-slack", config, client=client)
            await channel.send(make_message())
            await channel.aclose()
            return client.is_closed

    assert asyncio.run(scenario()) is False


# -- webhook --------------------------------------------------------------------------------------

SECRET = "whsec-test"


def webhook_channel(url: str, **changes: Any) -> WebhookChannel:
    config = WebhookChannelConfig.model_validate({"url": url, "timeout": "5s", **changes})
    return WebhookChannel("ops-hook", config)


def test_webhook_posts_signed_compact_json(http_server: LocalServer) -> None:
    url = http_server.route("/hook", Response(status=204))
    message = make_message()
    headers = {"Authorization": "Bearer t0k", "X-Team": "desk", "Content-Type": "text/plain"}
    deliver(lambda: webhook_channel(url, secret=SECRET, headers=headers), message)
    (request,) = http_server.requests
    assert request.body == json.dumps(
        webhook_payload(message), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    assert "Переговоры".encode() in request.body  # raw UTF-8, not \u escapes
    assert request.headers["content-type"] == "application/json"  # not overridable
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.headers["x-team"] == "desk"
    timestamp = request.headers["x-newsmon-timestamp"]
    assert abs(int(timestamp) - time.time()) < 10
    signed = f"{timestamp}.".encode() + request.body
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-newsmon-signature"], expected)


def test_webhook_without_secret_is_not_signed(http_server: LocalServer) -> None:
    url = http_server.route("/hook", Response(b"{}", content_type="application/json"))
    deliver(lambda: webhook_channel(url), make_message())
    assert "x-newsmon-signature" not in http_server.requests[0].headers
    assert "x-newsmon-timestamp" in http_server.requests[0].headers


def test_webhook_resends_identical_bytes(http_server: LocalServer) -> None:
    url = http_server.route("/hook", Response(b""))
    message = make_message(headline=HOSTILE)
    deliver(lambda: webhook_channel(url, secret=SECRET), message, message)
    first, again = http_server.requests
    assert first.body == again.body
    assert json.loads(first.body)["story"]["headline"] == HOSTILE  # JSON needs no escaping


@pytest.mark.parametrize(
    ("response", "permanent", "retry_after"),
    [
        (Response(status=429, headers={"Retry-After": "7"}), False, 7),
        (Response(status=503, headers={"Retry-After": "5"}), False, 5),
        (Response(status=503), False, None),
        (Response(status=502), False, None),
        (Response(status=400), True, None),
        (Response(status=404), True, None),
        (Response(status=301, headers={"Location": "https://elsewhere.example/"}), True, None),
    ],
)
def test_webhook_status_handling(
    http_server: LocalServer, response: Response, permanent: bool, retry_after: float | None
) -> None:
    url = http_server.route("/hook", response)
    error = failure(lambda: webhook_channel(url))
    assert (error.permanent, error.retry_after) == (permanent, retry_after)
    assert error.channel == "ops-hook"
    assert f"HTTP {response.status}" in error.message


# -- factory and the recording channel ----------------------------------------------------------


def test_make_channel_picks_the_implementation() -> None:
    configs: list[tuple[Any, type]] = [
        (email_config(2525), EmailChannel),
        (SlackChannelConfig(webhook_url="https://hooks.slack.com/services/x"), SlackChannel),  # type: ignore[arg-type]
        (WebhookChannelConfig(url="https://example.org/hook"), WebhookChannel),
    ]

    async def scenario() -> None:
        for config, kind in configs:
            channel = make_channel("c", config)
            assert isinstance(channel, kind)
            assert channel.name == "c"
            await channel.aclose()

    asyncio.run(scenario())


def test_recording_channel_records_and_fails_on_request() -> None:
    channel = RecordingChannel("rec")
    as_channel: Channel = channel  # mypy checks that it satisfies the protocol
    channel.fail_next(2, ChannelError("rec", "slow down", retry_after=5))
    message = make_message()

    async def scenario() -> list[ChannelError]:
        errors = []
        for _ in range(3):
            try:
                await channel.send(message)
            except ChannelError as e:
                errors.append(e)
        await as_channel.aclose()
        return errors

    errors = asyncio.run(scenario())
    assert [e.retry_after for e in errors] == [5, 5]
    assert errors[0] is not errors[1]
    assert channel.sent == [message]
    assert channel.attempts == [message] * 3
    assert channel.closed
