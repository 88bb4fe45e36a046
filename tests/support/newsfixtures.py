"""The fixture news site: four feeds (de, en, ru, uk) and their article pages, served locally.

Feeds come from tests/fixtures/feeds (their outlet hosts rewritten to the local server), pages are
built from tests/fixtures/site/articles.json inside realistic boilerplate (navigation, cookie
banner, related links, footer) that the extractor has to drop.
"""

from __future__ import annotations

import asyncio
import html
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.support.httpserver import LocalServer, Response

if TYPE_CHECKING:
    from monitor.service import App, RunSummary

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OUTLET_HOSTS = (
    "https://nachrichten.example",
    "https://news.example",
    "https://novosti.example",
    "https://novyny.example",
)
FEEDS = {  # name -> (fixture file, language, path served at)
    "Nachrichten": ("de_rss2.xml", "de", "/feeds/de.rss"),
    "World News": ("en_atom.xml", "en", "/feeds/en.atom"),
    "Novosti": ("ru_rss2_cp1251.xml", "ru", "/feeds/ru.rss"),
    "Novyny": ("uk_rdf.xml", "uk", "/feeds/uk.rdf"),
}
#: the seed topic of feeds.yaml that the fixture site's talks articles match (give it channels)
TALKS_TOPIC: dict[str, Any] = {
    "id": "abu-dhabi-talks",
    "name": "Abu Dhabi peace talks",
    "description": (
        "Peace negotiations between Russia, Ukraine and the United States held in Abu Dhabi, "
        "United Arab Emirates: the delegations and envoys taking part, the rounds of talks and "
        "their agenda, proposals and counter-proposals discussed there, statements about "
        "progress, deadlock or a next round, and the role of the UAE as host and mediator."
    ),
}
BOILERPLATE_MARK = "Newsletter abonnieren"  # appears in every page's chrome, never in the text


@dataclass(frozen=True)
class FixtureArticle:
    path: str
    language: str
    title: str
    paragraphs: tuple[str, ...]


def fixture_articles() -> list[FixtureArticle]:
    data = json.loads((FIXTURES / "site" / "articles.json").read_text("utf-8"))
    return [
        FixtureArticle(path, a["language"], a["title"], tuple(a["paragraphs"]))
        for path, a in data.items()
    ]


def article_page(article: FixtureArticle, canonical: str) -> bytes:
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in article.paragraphs)
    page = f"""<!DOCTYPE html>
<html lang="{article.language}"><head><meta charset="utf-8">
<title>{html.escape(article.title)} | Testportal</title>
<link rel="canonical" href="{html.escape(canonical)}">
<meta property="og:title" content="{html.escape(article.title)}">
<meta name="author" content="Redaktion">
<meta property="article:published_time" content="2026-11-28T09:30:00+01:00">
</head><body>
<div class="cookie-banner">Wir verwenden Cookies. <a href="/privacy">Datenschutz</a></div>
<nav><ul><li><a href="/">Start</a></li><li><a href="/politik">Politik</a></li>
<li><a href="/sport">Sport</a></li><li><a href="/newsletter">{BOILERPLATE_MARK}</a></li></ul></nav>
<main><article><h1>{html.escape(article.title)}</h1>
<p class="byline">Von Redaktion, 28.11.2026</p>
{body}
</article>
<aside><h3>Mehr zum Thema</h3><ul><li><a href="/a">Andere Meldung eins</a></li>
<li><a href="/b">Andere Meldung zwei</a></li></ul></aside></main>
<footer><p>© 2026 Testportal · Impressum · {BOILERPLATE_MARK}</p></footer>
</body></html>"""
    return page.encode("utf-8")


def feed_bytes(file: str, base_url: str) -> bytes:
    data = (FIXTURES / "feeds" / file).read_bytes()
    for host in OUTLET_HOSTS:
        data = data.replace(host.encode(), base_url.encode())
    return data


def serve_site(server: LocalServer, *, etag: bool = True) -> dict[str, str]:
    """Route the four feeds and nine pages; returns feed name -> feed URL."""
    for article in fixture_articles():
        page = article_page(article, server.url(article.path))
        server.route(article.path, Response(page))
    urls = {}
    for name, (file, _lang, path) in FEEDS.items():
        body = feed_bytes(file, server.base_url)
        urls[name] = server.route(
            path,
            Response(
                body,
                content_type="application/xml",
                etag=f'"{name}-v1"' if etag else None,
            ),
        )
    return urls


def write_config(tmp_path: Path, feeds: dict[str, tuple[str, str]], **overrides: Any) -> Path:
    """A config file in tmp_path: feeds maps name -> (url, language)."""
    config: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "fetch": {"timeout": "5s", "allow_private_addresses": True, "per_host_concurrency": 4},
        "extract": {"processes": 0},
        # a port nothing listens on: CLI commands in tests must never find some other service
        # on the default 127.0.0.1:8765 and talk to it
        "api": {"port": free_port()},
        "feeds": [{"name": n, "url": u, "language": lang} for n, (u, lang) in feeds.items()],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / "feeds.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), "utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_feeds(urls: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {name: (url, FEEDS[name][1]) for name, url in urls.items()}


def run_once(app: App, *, index: bool = True) -> RunSummary:
    """``newsmon run --once`` on an app built by the test, closing it afterwards."""

    async def once() -> RunSummary:
        try:
            return await app.run_once(index=index)
        finally:
            await app.aclose()

    return asyncio.run(once())
