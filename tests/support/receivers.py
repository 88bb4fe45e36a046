"""Alert receivers that fail on request: a real SMTP server (aiosmtpd, in this process) and a
Slack/webhook-like HTTP endpoint for ``tests.support.httpserver.LocalServer``.

Both are scriptable while they run (the next replies, the password the server accepts, a stall
longer than the client's timeout) so a test can break a channel and repair it in the same run.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.httpserver import Request, Response

# -- SMTP -----------------------------------------------------------------------------------------


@dataclass
class MailDrop:
    """An aiosmtpd handler (and authenticator) keeping every accepted mail.

    ``data_reply`` / ``rcpt_reply`` script refusals (e.g. ``"451 4.3.0 try later"``);
    ``password`` is what ``user`` must log in with (None: AUTH is offered, any login fails).
    """

    user: str = "newsmon"
    password: str | None = None
    data_reply: str = "250 OK"
    rcpt_reply: str = "250 OK"
    mails: list[EmailMessage] = field(default_factory=list)
    #: the Message-ID of every mail sent with DATA, refused ones included
    data_ids: list[str] = field(default_factory=list)
    #: (what, reply) for every DATA/RCPT/AUTH the server refused or accepted
    dialogue: list[tuple[str, str]] = field(default_factory=list)
    logins: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_reply
        self.dialogue.append(("RCPT", reply))
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.data_reply
        self.dialogue.append(("DATA", reply))
        raw = bytes(envelope.original_content or b"")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        with self.lock:
            self.data_ids.append(str(parsed["Message-ID"]))
            if reply.startswith("250"):
                self.mails.append(parsed)
        return reply

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        expected = None if self.password is None else (self.user.encode(), self.password.encode())
        ok = isinstance(data, LoginPassword) and expected is not None and tuple(data) == expected
        self.dialogue.append(("AUTH", "235" if ok else "535"))
        self.logins += ok
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.mails]


@contextmanager
def smtp_server(drop: MailDrop, port: int, *, auth: bool = False) -> Iterator[MailDrop]:
    """Serve ``drop`` on 127.0.0.1:``port`` (plain SMTP; AUTH offered without TLS if ``auth``)."""
    options: dict[str, Any] = {}
    if auth:
        options = {"authenticator": drop.authenticate, "auth_require_tls": False}
    controller = Controller(drop, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield drop
    finally:
        controller.stop()


# -- HTTP (Slack incoming webhook, generic webhook) -----------------------------------------------


@dataclass
class Endpoint:
    """A LocalServer handler: answers ``status`` (with ``headers``) or, with ``stall`` seconds,
    answers 200 only after the client gave up. ``accepted`` keeps the bodies it answered 2xx in
    time; ``seen`` every body, with the status it got (stalled ones as 0)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0
    accepted: list[bytes] = field(default_factory=list)
    seen: list[tuple[int, bytes]] = field(default_factory=list)
    seen_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, request: Request) -> Response:
        with self.lock:
            status, stall = self.status, self.stall
            self.seen.append((0 if stall else status, request.body))
            self.seen_at.append(time.monotonic())
            if not stall and 200 <= status < 300:
                self.accepted.append(request.body)
        if stall:
            return Response(b"ok", status=200, delay=stall, content_type="text/plain")
        body = b"ok" if status < 300 else f"error {status}".encode()
        return Response(body, status=status, headers=self.headers, content_type="text/plain")

    def fail(self, status: int, headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.status, self.headers, self.stall = status, dict(headers or {}), 0.0

    def hang(self, seconds: float) -> None:
        with self.lock:
            self.stall = seconds

    def recover(self) -> None:
        self.fail(200)

    def accepted_json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for body in self.accepted]
