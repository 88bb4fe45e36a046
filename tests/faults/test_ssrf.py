"""SSRF end to end: feed entries and feed redirects that point at this machine or its network.

With ``fetch.allow_private_addresses: false`` (the default) the operator's own feed URL is
trusted on its first hop (that is how these tests serve it from 127.0.0.1), but every article
link and every redirect is the server's choice: one that leads to a loopback, private,
link-local, multicast or otherwise non-public address is refused before any connection, and the
refusal is recorded on the article or feed. Victim servers on 127.0.0.1 and ::1 count the
connections they accept: none may arrive. With the setting on, the same links are fetched.

Non-loopback targets use port 9 and are only ever used where they must be refused: the tests
never try to reach another machine, whatever happens.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from indexer.embed import HashEmbedder
from monitor.cli import main
from monitor.config import load_config
from monitor.service import make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import Article, ArticleStatus, FeedState, TextSource
from tests.faults.cases import PROSE, RSS_TYPE, TIMEOUT_S, Item, article_html, rss
from tests.faults.server import HostileServer, Reply, redirect
from tests.support.newsfixtures import run_once

LINKS_FEED = "Links inwards"
INTERNAL_PAGE = article_html("Internal dashboard", PROSE).encode()

#: entry links: label -> (URL template, what the refusal must say). {v4}/{v6}: victim ports
PRIVATE_LINKS = {
    "loopback": ("http://127.0.0.1:{v4}/internal/a", "127.0.0.1, a loopback address"),
    "IPv6 loopback": ("http://[::1]:{v6}/internal/b", "::1, a loopback address"),
    "localhost": ("http://localhost:{v4}/internal/c", "localhost resolves to"),
    "IPv4-mapped": ("http://[::ffff:127.0.0.1]:{v4}/internal/d", "a loopback address"),
    "unspecified": ("http://0.0.0.0:{v4}/internal/e", "0.0.0.0, an unspecified address"),
    "private 10/8": ("http://10.255.255.1:9/admin", "10.255.255.1, a private address"),
    "private 192.168/16": ("http://192.168.255.254:9/", "192.168.255.254, a private address"),
    "cloud metadata": ("http://169.254.169.254:9/latest/meta-data/",
                       "169.254.169.254, a link-local address"),
    "multicast": ("http://224.0.0.1:9/x", "224.0.0.1, a multicast address"),
    "shared (CGNAT)": ("http://100.64.0.1:9/x", "100.64.0.1, a non-public address"),
}  # fmt: skip


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


#: without IPv6 on this machine the [::1] links are still refused (nothing to connect to is
#: needed for that); only the allowing run leaves them out
IPV6 = _ipv6_loopback()
#: the links that point at this machine: the only ones the allowing run may follow
LOOPBACK_LINKS = ("loopback", "localhost", "IPv4-mapped") + (("IPv6 loopback",) if IPV6 else ())

#: feeds (trusted first hop) that redirect: name -> (Location template, what the refusal says)
PRIVATE_REDIRECTS = {
    "Redirect to loopback": ("http://127.0.0.1:{v4}/internal/feed",
                             "127.0.0.1, a loopback address"),
    "Redirect to IPv6 loopback": ("http://[::1]:{v6}/internal/feed", "::1, a loopback address"),
    "Redirect to localhost": ("http://localhost:{v4}/internal/feed", "localhost resolves to"),
    "Redirect to 10/8": ("http://10.255.255.1:9/feed", "10.255.255.1, a private address"),
    "Redirect to metadata": ("http://169.254.169.254:9/latest/meta-data/",
                             "169.254.169.254, a link-local address"),
}  # fmt: skip
LOOPBACK_REDIRECTS = ("Redirect to loopback", "Redirect to localhost") + (
    ("Redirect to IPv6 loopback",) if IPV6 else ()
)


@dataclass
class Outcome:
    feeds: dict[str, FeedState]
    articles: dict[str, Article]  # by label (PRIVATE_LINKS)
    cli_feeds: dict[str, dict[str, Any]]
    cli_articles: dict[str, dict[str, Any]]  # by URL
    connections: tuple[int, int]  # accepted by the victims on 127.0.0.1 and ::1
    hits: tuple[int, int]  # requests they got


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _scenario(tmp_path_factory.mktemp("ssrf-default"), allow=False)


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _scenario(tmp_path_factory.mktemp("ssrf-allowed"), allow=True)


@contextlib.contextmanager
def _victims() -> Iterator[tuple[HostileServer, HostileServer | None]]:
    with contextlib.ExitStack() as stack:
        v4 = stack.enter_context(HostileServer("127.0.0.1"))
        v6 = stack.enter_context(HostileServer("::1")) if IPV6 else None
        for victim in (v4, v6) if v6 else (v4,):
            for path in ("/internal/a", "/internal/b", "/internal/c", "/internal/d",
                         "/internal/e"):  # fmt: skip
                victim.route(path, Reply(INTERNAL_PAGE))
            item = Item("Internal feed entry", victim.url("/internal/a"), "internal")
            victim.route("/internal/feed", Reply(rss([item], title="Internal"),
                                                 content_type=RSS_TYPE))  # fmt: skip
        yield v4, v6


def _scenario(tmp: Path, *, allow: bool) -> Outcome:
    with _victims() as (v4, v6), HostileServer() as server:
        ports = {"v4": v4.port, "v6": v6.port if v6 else 9}
        links = {label: template.format(**ports) for label, (template, _) in PRIVATE_LINKS.items()
                 if not allow or label in LOOPBACK_LINKS}  # fmt: skip
        items = [Item(f"Entry linking to {label}", url, f"Feed text about {label}.")
                 for label, url in links.items()]  # fmt: skip
        feeds = {LINKS_FEED: (server.route("/links.rss", Reply(rss(items), content_type=RSS_TYPE)),
                              "en")}  # fmt: skip
        for name, (template, _) in PRIVATE_REDIRECTS.items():
            if not allow or name in LOOPBACK_REDIRECTS:
                target = redirect(template.format(**ports))
                feeds[name] = (server.route(f"/redirect/{len(feeds)}", target), "en")
        config = _write_config(tmp, feeds, allow=allow)
        _run_once(config)
        store = open_state_store(sqlite_url(tmp / "data"))
        try:
            states = {f.name: f for f in store.list_feeds()}
            by_url = {a.url: a for a in store.list_articles()}
        finally:
            store.close()
        return Outcome(
            feeds=states,
            articles={label: by_url[url] for label, url in links.items()},
            cli_feeds={f["name"]: f for f in json.loads(_cli(config, "feeds", "--json"))},
            cli_articles={a["url"]: a for a in json.loads(_cli(config, "articles", "--json"))},
            connections=(v4.connections, v6.connections if v6 else 0),
            hits=(len(v4.requests), len(v6.requests) if v6 else 0),
        )


def _write_config(tmp: Path, feeds: dict[str, tuple[str, str]], *, allow: bool) -> Path:
    from tests.support.newsfixtures import write_config

    fetch: dict[str, Any] = {"timeout": f"{TIMEOUT_S}s", "per_host_concurrency": 16}
    if allow:
        fetch["allow_private_addresses"] = True
    path = write_config(tmp, feeds, fetch=fetch)
    if not allow:  # the default: the key left out, as in a fresh feeds.yaml
        text = path.read_text("utf-8").replace("  allow_private_addresses: true\n", "")
        path.write_text(text, "utf-8")
    return path


def _run_once(config: Path) -> None:
    loaded = load_config(config)
    app = make_app(loaded, embedder=HashEmbedder())

    run_once(app)


def _cli(config: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", str(config), *args]) == 0
    return out.getvalue()


# -- refused by default -----------------------------------------------------------------------


def test_the_default_configuration_refuses_private_addresses(tmp_path: Path) -> None:
    feeds = {"Own feed": ("http://127.0.0.1:1/feed.rss", "en")}
    config = load_config(_write_config(tmp_path, feeds, allow=False))
    assert "allow_private_addresses" not in (tmp_path / "feeds.yaml").read_text("utf-8")
    assert config.fetch.allow_private_addresses is False


def test_the_operators_own_feed_url_is_trusted_on_its_first_hop(refused: Outcome) -> None:
    feed = refused.feeds[LINKS_FEED]
    assert feed.last_error is None
    assert feed.last_status == 200
    assert feed.items_seen == len(PRIVATE_LINKS)


@pytest.mark.parametrize("label", list(PRIVATE_LINKS))
def test_article_links_to_private_addresses_are_refused_and_recorded(
    refused: Outcome, label: str
) -> None:
    article = refused.articles[label]
    _, reason = PRIVATE_LINKS[label]
    assert article.status is ArticleStatus.INDEXED  # from the feed's own text
    assert article.text_source is TextSource.FEED
    assert article.text == f"Feed text about {label}."
    assert (article.last_error or "").startswith("page refused: "), article.last_error
    assert reason in (article.last_error or "")
    assert refused.cli_articles[article.url]["last_error"] == article.last_error


@pytest.mark.parametrize("name", list(PRIVATE_REDIRECTS))
def test_redirects_from_a_trusted_feed_to_private_addresses_are_refused(
    refused: Outcome, name: str
) -> None:
    _, reason = PRIVATE_REDIRECTS[name]
    state = refused.feeds[name]
    assert reason in (state.last_error or ""), state.last_error
    assert "refused" in (state.last_error or "")
    assert state.consecutive_failures == 1
    assert refused.cli_feeds[name]["last_error"] == state.last_error


def test_nothing_private_was_ever_connected_to(refused: Outcome) -> None:
    assert refused.connections == (0, 0)
    assert refused.hits == (0, 0)


# -- fetched when the operator allows it ---------------------------------------------------------


@pytest.mark.parametrize("label", LOOPBACK_LINKS)
def test_private_article_links_are_fetched_when_allowed(allowed: Outcome, label: str) -> None:
    article = allowed.articles[label]
    assert article.status is ArticleStatus.INDEXED
    assert article.text_source is TextSource.PAGE, article.last_error
    assert article.last_error is None
    assert PROSE[0][:40] in (article.text or "")


@pytest.mark.parametrize("name", LOOPBACK_REDIRECTS)
def test_private_redirects_are_followed_when_allowed(allowed: Outcome, name: str) -> None:
    state = allowed.feeds[name]
    assert state.last_error is None
    assert state.last_status == 200
    assert state.title == "Internal"


def test_the_victims_were_reached_when_allowed(allowed: Outcome) -> None:
    v4_hits, v6_hits = allowed.hits
    assert v4_hits >= 5  # three links and two redirected feeds
    assert v6_hits >= (2 if IPV6 else 0)
