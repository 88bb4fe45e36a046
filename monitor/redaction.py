"""Keeping the configured secrets out of every log line.

newsmon's own code never logs a secret, but libraries do: an httpx error names the URL it
failed on (a Slack webhook URL *is* the credential), a database driver quotes its connection
string, and a logged traceback prints both. So once the configuration is known, ``install``
redacts every log record as it is created (through the ``LogRecord`` factory, so every handler
sees only the redacted record: the stderr handler, uvicorn's, a test's): the message with its
arguments merged in, the text of its exception and its stack. Each secret value (and its
percent-encoded form, as it appears inside URLs) becomes ``***``.

Values shorter than ``MIN_SECRET_CHARS`` are left alone, as in ``monitor.config``'s messages:
masking "de" or "1" would garble unrelated words, and a value that short protects nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:
    from pydantic import SecretStr

    from monitor.config import Config

__all__ = ["MASK", "MIN_SECRET_CHARS", "SecretRedactor", "config_secrets", "install"]

MASK = "***"
MIN_SECRET_CHARS = 4
#: a URL path this long is a token (Slack's /services/T…/B…/…), not a route name
_SECRET_PATH_CHARS = 16

_lock = threading.Lock()


class SecretRedactor:
    """Replaces every occurrence of the given secrets (longest first) with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants = {
            form
            for secret in secrets
            if len(secret) >= MIN_SECRET_CHARS
            for form in (secret, quote(secret, safe=""), quote_plus(secret), unquote(secret))
            if len(form) >= MIN_SECRET_CHARS
        }
        ordered = sorted(variants, key=lambda value: (-len(value), value))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def redact_record(self, record: logging.LogRecord) -> None:
        """Redact ``record`` in place: message (arguments merged in), exception, stack."""
        if self._pattern is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: show both, redacted, rather than fail
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            # formatters use a record's cached exc_text instead of formatting exc_info again
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = self.redact(text)
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)


def install(redactor: SecretRedactor) -> Callable[[], None]:
    """Redact every log record created from now on; returns the function that undoes it.

    Installs nest: the last one installed runs last, and each uninstall restores the factory
    it replaced.
    """
    with _lock:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redactor.redact_record(record)
            return record

        logging.setLogRecordFactory(factory)

    def uninstall() -> None:
        with _lock:
            if logging.getLogRecordFactory() is factory:
                logging.setLogRecordFactory(previous)

    return uninstall


@contextmanager
def installed(redactor: SecretRedactor) -> Iterator[SecretRedactor]:
    """``install`` for the duration of a ``with`` block."""
    uninstall = install(redactor)
    try:
        yield redactor
    finally:
        uninstall()


def config_secrets(config: Config) -> list[str]:
    """Every secret value of ``config``, and the parts of URLs a message may quote alone."""
    from monitor.config import EmailChannelConfig, SlackChannelConfig, WebhookChannelConfig

    values = [_value(config.api.token), _value(config.qdrant.api_key)]
    if config.state_url is not None:  # a driver may name the password alone
        values += [_value(config.state_url), *_password(_value(config.state_url))]
    values += _password(config.qdrant.url or "")
    for channel in config.channels.values():
        if isinstance(channel, EmailChannelConfig):
            values += [_value(channel.username), _value(channel.password)]
        elif isinstance(channel, SlackChannelConfig):
            values += _slack_secrets(_value(channel.webhook_url))
        elif isinstance(channel, WebhookChannelConfig):
            values += [_value(channel.secret), *channel.headers.values(), *_password(channel.url)]
    return [value for value in values if value]


def _value(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def _password(url: str) -> list[str]:
    try:
        password = urlsplit(url).password if url else None
    except ValueError:
        return []
    return [password] if password else []


def _slack_secrets(url: str) -> list[str]:
    """The webhook URL, and its path, query and token on their own: the token is the path's
    last part (``/services/T…/B…/<token>``), and HTTP libraries name the path or the request
    target alone."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    pieces = (parts.path, parts.query, target, *parts.path.split("/"))
    return [url, *_password(url), *(part for part in pieces if len(part) >= _SECRET_PATH_CHARS)]
