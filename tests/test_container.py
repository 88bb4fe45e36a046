"""The container deployment: docker-compose.yml gives newsmon a configuration the code accepts.

There is no Docker engine here (the Dockerfile is linted by hadolint in `make lint`), so this
checks what can go wrong without one: the environment the compose file sets, interpolated into
the image's configuration (the shipped feeds.yaml at /etc/newsmon/feeds.yaml), must validate
against the configuration schema and point at the compose services.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from monitor.config import load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

#: values a user would put in .env for the `${VAR:?...}` the compose file requires
USER_ENV = {"POSTGRES_PASSWORD": "s3cret", "NEWSMON_API_TOKEN": "t0ken"}


class MissingVariable(Exception):
    """What ``docker compose`` reports for an unset ``${VAR:?message}``."""


def _compose_env(raw: dict[str, str], user: dict[str, str]) -> dict[str, str]:
    """Docker compose's own interpolation of ``${VAR}``, ``${VAR:-default}``, ``${VAR:?msg}``."""

    def value(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3) or ""
        if user.get(name):
            return user[name]
        if op == ":?":
            raise MissingVariable(f"compose requires {name}: {rest}")
        return rest if op == ":-" else ""

    pattern = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")
    return {key: pattern.sub(value, str(text)) for key, text in raw.items()}


def _dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text("utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def test_compose_configuration_validates_against_the_schema() -> None:
    compose = yaml.safe_load(COMPOSE.read_text("utf-8"))
    service = compose["services"]["newsmon"]
    env = {**_dockerfile_env(), **_compose_env(service["environment"], USER_ENV)}
    assert env["NEWSMON_CONFIG"] == "/etc/newsmon/feeds.yaml"
    # the image carries the repository's feeds.yaml at that path (Dockerfile COPY)
    assert "COPY feeds.yaml /etc/newsmon/feeds.yaml" in DOCKERFILE.read_text("utf-8")
    config = load_config(ROOT / "feeds.yaml", env=env)

    assert config.state_url is not None
    assert config.state_url.get_secret_value() == (
        "postgresql+psycopg://newsmon:s3cret@postgres:5432/newsmon"
    )
    assert str(config.qdrant.url).rstrip("/") == "http://qdrant:6333"
    assert config.api.host == "0.0.0.0"  # the container's own interface
    assert config.api.token is not None
    assert str(config.data_dir) == "/data"
    # the names the URLs use are services of this compose file, on the ports they serve
    assert {"postgres", "qdrant"} <= set(compose["services"])
    assert compose["services"]["postgres"]["environment"]["POSTGRES_DB"] == "newsmon"
    assert any(v.startswith("newsmon-data:/data") for v in service["volumes"])
    assert any(p.endswith(":8765") for p in service["ports"])


def test_compose_refuses_to_start_without_its_secrets() -> None:
    compose = yaml.safe_load(COMPOSE.read_text("utf-8"))
    environment = compose["services"]["newsmon"]["environment"]
    for missing in USER_ENV:
        user = {k: v for k, v in USER_ENV.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            _compose_env(environment, user)
