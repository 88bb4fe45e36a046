"""The email channel: one multipart (text + HTML) mail per message, over SMTP.

``smtplib`` is blocking, so each send runs in a worker thread (``asyncio.to_thread``); a send
opens its own connection, which suits the few messages an alert service sends and leaves no
idle connection for the server to drop between alerts.

Every mail carries ``Message-ID: <{message.id}@newsmon>``, derived from the message alone: a
retry, or a re-send after a restart, repeats it, so servers and clients can de-duplicate.
Follow-ups point ``In-Reply-To``/``References`` at the first message of the alert so clients
thread them under it.

A digest is one mail too: ``multipart/alternative`` of the text and a ``multipart/related``
holding the HTML and its charts as inline PNG parts, whose ``Content-ID`` the HTML refers to
(``cid:``), so the charts show without loading anything remote. Its ``Message-ID`` is derived
from the digest id (window and topics), so a re-sent digest is recognised as the same mail.

Errors are classified by what retrying can change: a 5xx reply or refused recipients will be
refused again (permanent); 4xx replies (greylisting, "try again later"), refused connections,
timeouts and dropped connections may pass later (transient). Rejected credentials are transient
too, but the channel's failure rather than the message's: the delivery stays pending (with the
error, for ``newsmon alerts``) until the password is fixed or the account unlocked, and the
channel pauses meanwhile rather than trying a bad login per message (servers lock accounts for
less). Neither the password nor the user name ever appears in an error message or a log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import smtplib
import ssl
from email.message import EmailMessage

from alerts.render import email_subject, one_line, render_html, render_text
from alerts.render_digest import RenderedDigest
from alerts.types import AlertMessage
from monitor.config import EmailChannelConfig
from monitor.errors import ChannelError
from monitor.types import as_utc

__all__ = ["EmailChannel", "build_digest_email", "build_email", "message_id_header"]

log = logging.getLogger("newsmon.alerts.email")

_MESSAGE_ID_DOMAIN = "newsmon"


def message_id_header(message_id: str) -> str:
    """``<al_….0@newsmon>``: stable for a message, whoever sends it and however often."""
    return f"<{message_id}@{_MESSAGE_ID_DOMAIN}>"


def build_email(config: EmailChannelConfig, message: AlertMessage) -> EmailMessage:
    """The mail for ``message``; UTF-8 headers are RFC 2047-encoded when it is serialised."""
    mail = EmailMessage()
    mail["Subject"] = email_subject(message)
    mail["From"] = config.from_
    mail["To"] = ", ".join(config.to)
    # the decision time, not the send time: a retried mail stays identical
    mail["Date"] = email.utils.format_datetime(as_utc(message.created_at))
    mail["Message-ID"] = message_id_header(message.id)
    if message.sequence > 0:
        first = message_id_header(f"{message.alert_id}.0")
        mail["In-Reply-To"] = first
        mail["References"] = first
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies to this
    mail["X-Newsmon-Alert"] = message.alert_id
    mail.set_content(render_text(message))
    mail.add_alternative(render_html(message), subtype="html")
    return mail


def build_digest_email(config: EmailChannelConfig, digest: RenderedDigest) -> EmailMessage:
    """The digest mail: text, and HTML with its charts as related inline images."""
    mail = EmailMessage()
    mail["Subject"] = digest.subject
    mail["From"] = config.from_
    mail["To"] = ", ".join(config.to)
    mail["Date"] = email.utils.format_datetime(as_utc(digest.created_at))
    mail["Message-ID"] = message_id_header(digest.id)
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Newsmon-Digest"] = digest.id
    mail.set_content(digest.text)
    mail.add_alternative(digest.html, subtype="html")
    html_part = mail.get_body(("html",))
    assert html_part is not None  # just added
    for number, chart in enumerate(digest.charts, start=1):
        # turns the HTML part into multipart/related on the first call
        html_part.add_related(
            chart.png,
            maintype="image",
            subtype="png",
            cid=f"<{chart.content_id}>",
            disposition="inline",
            filename=f"coverage-{number}.png",
        )
    return mail


class EmailChannel:
    def __init__(
        self,
        name: str,
        config: EmailChannelConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._ssl_context = ssl_context or ssl.create_default_context()

    async def send(self, message: AlertMessage) -> None:
        await self._send(build_email(self._config, message), f"message {message.id}")

    async def send_digest(self, digest: RenderedDigest) -> None:
        await self._send(build_digest_email(self._config, digest), digest.id)

    async def _send(self, mail: EmailMessage, what: str) -> None:
        try:
            # a cancelled send leaves the thread to finish; config.timeout bounds each wait
            refused = await asyncio.to_thread(self._deliver, mail)
        except (smtplib.SMTPException, OSError, UnicodeError) as e:
            raise self._error(e) from None  # the cause may quote the server's AUTH dialogue
        if refused:
            # the others got it; retrying would send them a duplicate for an address that
            # will be refused again
            log.warning(
                "channel %r: %s refused for %s", self.name, what, _describe_refused(refused)
            )
        log.debug("%s sent via email channel %r", what, self.name)

    async def aclose(self) -> None:
        """Nothing to release: every send uses its own connection."""

    # -- in the worker thread

    def _deliver(self, mail: EmailMessage) -> dict[str, tuple[int, bytes]]:
        with self._connect() as smtp:
            if self._config.starttls:
                smtp.starttls(context=self._ssl_context)
                smtp.ehlo()  # the capabilities offered before TLS no longer count
            if self._config.username is not None:
                password = self._config.password
                smtp.login(
                    self._config.username.get_secret_value(),
                    password.get_secret_value() if password is not None else "",
                )
            return smtp.send_message(mail)

    def _connect(self) -> smtplib.SMTP:
        config = self._config
        timeout = config.timeout.total_seconds()
        if config.ssl:
            return smtplib.SMTP_SSL(
                config.smtp_host, config.smtp_port, timeout=timeout, context=self._ssl_context
            )
        return smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=timeout)

    # -- error classification

    def _error(self, error: Exception) -> ChannelError:
        where = f"SMTP {self._config.smtp_host}:{self._config.smtp_port}"
        message, permanent = _classify(error)
        login = isinstance(error, smtplib.SMTPAuthenticationError)
        return ChannelError(self.name, f"{where}: {self._redact(message)}", permanent=permanent,
                            whole_channel=login)  # fmt: skip

    def _redact(self, text: str) -> str:
        """Mask the credentials should a server reply quote them (the host is left alone)."""
        for secret in (self._config.password, self._config.username):
            value = secret.get_secret_value() if secret is not None else ""
            if value:
                text = text.replace(value, "***")
        return text


def _classify(error: Exception) -> tuple[str, bool]:
    """(what went wrong, whether it is permanent)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        text = f"all recipients refused: {_describe_refused(error.recipients)}"
        return text, any(code >= 500 for code in codes) or not codes
    if isinstance(error, smtplib.SMTPResponseException):
        return _classify_reply(error)
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return f"the server does not support this: {error}", True
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {error.verify_message}", True
    if isinstance(error, UnicodeError):  # smtplib sends credentials as ASCII only
        return "non-ASCII user name or password; the SMTP login cannot carry it", True
    if isinstance(error, TimeoutError):
        return "timed out", False
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return f"connection closed: {error}", False
    return f"{type(error).__name__}: {error}", False


def _classify_reply(error: smtplib.SMTPResponseException) -> tuple[str, bool]:
    reply = f"{error.smtp_code} {_decode(error.smtp_error)}"
    if isinstance(error, smtplib.SMTPAuthenticationError):
        # not permanent even for 535: a password gets fixed, a locked account unlocked, and a
        # delivery failed for good would never go out afterwards
        return f"login refused: {reply}", False
    step = "sender refused" if isinstance(error, smtplib.SMTPSenderRefused) else "server replied"
    return f"{step}: {reply}", error.smtp_code >= 500


def _describe_refused(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(
        f"{address} ({code} {_decode(reply)})" for address, (code, reply) in recipients.items()
    )


def _decode(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return one_line(text)[:300]
