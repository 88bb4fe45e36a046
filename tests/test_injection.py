"""Injection through what newsmon did not write: article titles, passages, outlet names and URLs
come from feeds and pages nobody vetted; configuration secrets must never be printed.

(a) HTML: alert mails (HTML and text parts), digest mails and files, and the web pages show
    hostile text as text, and link only http(s) URLs.
(b) Slack: mentions (``<!channel>``, ``<@U…>``), links (``<http://evil|click>``) and mrkdwn in
    titles stay inert in alert and digest payloads; webhook JSON carries them as plain data.
(c) Secrets (Slack webhook URL, SMTP credentials, API token, webhook keys and headers, database
    password) appear in no log line of a run whose channels fail, and not in ``check-config``.
(d) The HTTP API listens on loopback by default and needs ``api.token`` anywhere else.
"""

from __future__ import annotations

import base64
import email
import email.policy
import html
import json
import logging
import re
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient

from alerts.channels.email import build_digest_email, build_email
from alerts.channels.webhook import encode_body, encode_digest_body
from alerts.digest import Digest
from alerts.render import one_line, render_html, render_text, slack_payload, webhook_payload
from alerts.render_digest import (
    RenderedDigest,
    digest_html,
    digest_markdown,
    digest_slack,
    render_digest,
)
from alerts.types import AlertArticle, AlertMessage
from indexer.embed import HashEmbedder
from indexer.search import hit_json
from indexer.types import SearchHit
from monitor import cli
from monitor.api import create_api
from monitor.cli import main
from monitor.config import EmailChannelConfig, is_loopback_host, parse_config
from monitor.errors import ConfigError
from monitor.redaction import MASK, SecretRedactor, config_secrets, install
from monitor.types import FeedState
from monitor.web import SearchForm, coverage_svg, feed_health, template_environment
from tests.support.httpserver import LocalServer, Request, Response
from tests.support.newsfixtures import free_port, serve_site, site_feeds, write_config
from tests.test_digest import at, digest_of, feed, match, story
from tests.test_render import make_article, make_message

# -- hostile input --------------------------------------------------------------------------------

#: titles, outlets, passages, topic names: each must come out as the text it is
HOSTILE_TEXTS = (
    "<script>alert('title')</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(2)>",
    "</title></head><body onload=alert(3)>",
    '<a href="https://evil.example/phish">Read more</a>',
    "<iframe src=//evil.example/frame></iframe><base href=//evil.example/>",
    '<meta http-equiv="refresh" content="0;url=//evil.example/">',
    "<style>@import url(//evil.example/x.css)</style>",
    "<!-- ]]> &lt;script&gt; &amp;amp; &#x3C;b&#x3E;",
    "Talks\r\nBcc: victim@example.org\x00\x1b[31m",
)
#: article URLs: only http(s) may become a link target
HOSTILE_URLS = (
    "javascript:alert(document.cookie)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "\tjava\nscript:alert(1)",
    "\x01javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example/protocol-relative",
)
#: http(s) URLs with markup in them: linked, but never breaking out of the attribute
TRICKY_WEB_URLS = (
    'https://ok.example/a"onmouseover="alert(1)',
    "https://ok.example/b'><script>alert(1)</script>",
    "https://ok.example/c?x=<b>&y=1",
)
#: Slack control sequences and mrkdwn in article text
SLACK_HOSTILE = (
    "<!channel>",
    "<!here|here>",
    "<!everyone>",
    "<@U123ABC>",
    "<#C1>",
    "<!subteam^S123|@team>",
    "<http://evil.example|click here>",
    "<https://evil.example/bare>",
    "<mailto:x@evil.example|mail>",
    "*bold* _italic_ ~strike~ `code` ```block```",
    "@channel @here @everyone @Channel",
    "&lt;!channel&gt; &amp;lt;!here&amp;gt;",
    "> fake quote\n• fake bullet",
    "#general http://evil.example/bare-link",
)

SAFE_URL = "https://news.example/story?id=1&lang=en"
DANGEROUS_TAGS = {"script", "iframe", "frame", "object", "embed", "base", "style", "link", "meta"}


# -- an HTML checker ------------------------------------------------------------------------------


@dataclass
class Markup:
    """Every element and attribute of an HTML document, as a browser's tokenizer sees them."""

    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def hrefs(self) -> list[str]:
        return [a["href"] or "" for tag, a in self.tags if tag == "a" and "href" in a]


class _Collector(HTMLParser):
    def __init__(self, into: Markup) -> None:
        super().__init__(convert_charrefs=True)
        self.into = into

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.into.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.into.text.append(data)


def parse_markup(page: str) -> Markup:
    markup = Markup()
    collector = _Collector(markup)
    collector.feed(page)
    collector.close()
    return markup


def assert_inert_html(
    page: str, *, allowed_links: set[str], own_tags: Collection[str] = ()
) -> Markup:
    """No element or attribute came from hostile text, and every link goes where it should.

    ``own_tags``: tags of ``DANGEROUS_TAGS`` the page itself uses (its stylesheet link, its
    charset meta); those are checked for their fixed attribute values instead.
    """
    markup = parse_markup(page)
    for tag, attrs in markup.tags:
        assert tag not in DANGEROUS_TAGS - set(own_tags), (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            assert name not in {"style"} or "url(" not in (value or ""), (tag, value)
        if tag == "meta":
            assert "http-equiv" not in attrs, attrs
        if tag == "link":  # the page's own stylesheet and (empty) icon
            assert (attrs.get("href") or "").startswith(("/", "data:,")), attrs
            continue
        if tag == "img":  # a digest's chart, inline
            assert (attrs.get("src") or "").startswith(("cid:", "data:image/png;base64,")), attrs
            continue
        for name in ("href", "src", "action", "formaction", "xlink:href"):
            if name in attrs:
                _assert_safe_target(attrs[name] or "", allowed_links)
    return markup


def _assert_safe_target(target: str, allowed_links: set[str]) -> None:
    # what a browser strips before reading the scheme (WHATWG): C0 controls and spaces, tabs
    # and newlines anywhere
    seen = re.sub(r"[\t\n\r]", "", target).strip("".join(map(chr, range(0x21))))
    scheme = urlsplit(seen).scheme.lower()
    if scheme in ("http", "https"):
        assert target in allowed_links, f"unexpected link target {target!r}"
    else:
        assert not scheme, f"link with scheme {scheme!r}: {target!r}"
        assert target.startswith(("/", "#")), target
        assert not target.startswith("//"), target  # protocol-relative: another host


def text_of(markup: Markup) -> str:
    return " ".join("".join(markup.text).split())


def assert_single_line(value: str) -> None:
    assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]", value), repr(value)


# -- (a) alert email ------------------------------------------------------------------------------


def hostile_articles() -> tuple[AlertArticle, ...]:
    articles = [
        make_article(n, url=SAFE_URL, title=text, source=text[:40], passage=f"{text} passage",
                     keywords=(text,))
        for n, text in enumerate(HOSTILE_TEXTS + SLACK_HOSTILE)
    ]  # fmt: skip
    for n, url in enumerate(HOSTILE_URLS + TRICKY_WEB_URLS, start=len(articles)):
        articles.append(make_article(n, url=url, title=f"Article {n}"))
    articles.append(make_article(len(articles), url=SAFE_URL, title="A safe one"))
    return tuple(articles)


def hostile_message() -> AlertMessage:
    return make_message(
        headline=" ".join(HOSTILE_TEXTS),
        articles=hostile_articles(),
        topic_name=HOSTILE_TEXTS[0],
        topic_id="gaza-ceasefire",
        reason=HOSTILE_TEXTS[1],
    )


WEB_LINKS = {SAFE_URL, *TRICKY_WEB_URLS}


def email_config() -> EmailChannelConfig:
    return EmailChannelConfig.model_validate(
        {"smtp_host": "127.0.0.1", "from": "newsmon@example.org", "to": "desk@example.org"}
    )


def test_alert_email_html_shows_hostile_text_as_text_and_links_only_web_urls() -> None:
    message = hostile_message()
    mail = email.message_from_bytes(
        build_email(email_config(), message).as_bytes(), policy=email.policy.default
    )
    assert isinstance(mail, EmailMessage)
    html_part = mail.get_body(("html",))
    assert html_part is not None
    page = html_part.get_content()
    markup = assert_inert_html(page, allowed_links=WEB_LINKS, own_tags={"meta"})
    assert set(markup.hrefs()) == WEB_LINKS  # every web URL linked, nothing else
    shown = text_of(markup)
    for text in HOSTILE_TEXTS[:-1]:
        assert " ".join(text.split()) in shown  # shown, not dropped
    for url in HOSTILE_URLS:
        assert one_line(url) in shown  # shown as text
    assert page == render_html(message)


def test_alert_email_headers_and_text_part_cannot_be_forged() -> None:
    message = replace(hostile_message(), headline="Talks\r\nBcc: victim@example.org\r\n\r\nbody")
    raw = build_email(email_config(), message).as_bytes()
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert mail["Bcc"] is None
    assert "victim@example.org" in str(mail["Subject"])  # kept, on the subject's one line
    assert_single_line(str(mail["Subject"]))
    for name, value in mail.items():
        assert name.lower() == "subject" or "victim" not in str(value), (name, value)
    text_part = mail.get_body(("plain",))
    assert text_part is not None
    text = text_part.get_content()
    assert text == render_text(message)
    for line in text.splitlines():
        assert not line.startswith("Bcc:")
        assert_single_line(line)
    # article titles are on their numbered lines, whatever they contain
    numbered = [line for line in text.splitlines() if re.match(r"\d+\. ", line)]
    assert len(numbered) == len(message.articles)


# -- (a) digest -----------------------------------------------------------------------------------


@cache
def hostile_digest() -> Digest:
    matches = [
        match(f"t{n}", f"s{n}", published=at(n % 7), title=text, passage=text,
              source=text[:30], url=SAFE_URL)
        for n, text in enumerate(HOSTILE_TEXTS + SLACK_HOSTILE)
    ]  # fmt: skip
    for n, url in enumerate(HOSTILE_URLS + TRICKY_WEB_URLS):
        matches.append(match(f"u{n}", f"u{n}", published=at(n % 7), url=url, title=f"U{n}"))
    return digest_of(
        matches,
        stories={"s0": story("s0", HOSTILE_TEXTS[4], at(0), at(1))},
        feeds=[feed("broken", consecutive_failures=3, last_error=HOSTILE_TEXTS[0]),
               feed(HOSTILE_TEXTS[1], last_new_item_at=at(-5))],
    )  # fmt: skip


def test_digest_html_is_inert_and_well_formed() -> None:
    page = digest_html(hostile_digest(), charts={})
    markup = assert_inert_html(page, allowed_links=WEB_LINKS, own_tags={"meta"})
    assert SAFE_URL in markup.hrefs()
    shown = text_of(markup)  # a digest shows the top stories only: most of these
    assert sum(" ".join(text.split()) in shown for text in HOSTILE_TEXTS) >= 5
    ET.fromstring(page.split("\n", 1)[1])  # still XML: strict parsers read what browsers read


@cache
def rendered_hostile_digest() -> RenderedDigest:
    return render_digest(hostile_digest())  # draws a chart: once for the module


def test_digest_email_html_and_text_parts_are_inert() -> None:
    rendered = rendered_hostile_digest()
    mail = email.message_from_bytes(
        build_digest_email(email_config(), rendered).as_bytes(), policy=email.policy.default
    )
    assert isinstance(mail, EmailMessage)
    html_part = mail.get_body(("html",))
    text_part = mail.get_body(("plain",))
    assert html_part is not None
    assert text_part is not None
    markup = assert_inert_html(html_part.get_content(), allowed_links=WEB_LINKS, own_tags={"meta"})
    assert all(src.startswith("cid:") for tag, a in markup.tags if tag == "img"
               for src in [a.get("src") or ""])  # fmt: skip
    for line in text_part.get_content().splitlines():
        assert_single_line(line)
        assert not line.startswith("Bcc:")
    assert_single_line(str(mail["Subject"]))


def test_digest_markdown_cannot_form_links_or_html() -> None:
    page = digest_markdown(hostile_digest())
    targets = re.findall(r"\]\(([^)]*)\)", page)
    assert targets
    assert all(t.startswith("https://") for t in targets), targets
    assert not re.search(r"(?<!\\)<(script|img|a |iframe)", page)  # "\<" is a literal "<"
    assert "](javascript" not in page.lower()


# -- (a) web pages --------------------------------------------------------------------------------

WHEN = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def hostile_hits() -> list[dict[str, Any]]:
    hits = []
    for n, text in enumerate(HOSTILE_TEXTS):
        hit = SearchHit(
            article_id=f"a{n}", score=0.9, url=SAFE_URL, title=text,
            language=f'en" onmouseover="alert({n})',
            source=text, published_at=WHEN, passage=f"{text} talks", passage_index=0,
            story_id=None,
        )  # fmt: skip
        hits.append(hit_json(hit))
    for n, url in enumerate(HOSTILE_URLS + TRICKY_WEB_URLS):
        hit = SearchHit(
            article_id=f"u{n}", score=0.5, url=url, title="", language="en", source="s",
            published_at=WHEN, passage="p", passage_index=0, story_id=None,
        )  # fmt: skip
        hits.append(hit_json(hit))
    return hits


def render_page(name: str, **context: Any) -> str:
    def link(route: str, **params: str) -> str:
        return "/" + "/".join([route, *params.values()])

    return template_environment().get_template(name).render(link=link, **context)


def assert_web_page_inert(page: str) -> Markup:
    markup = assert_inert_html(page, allowed_links=WEB_LINKS, own_tags={"meta", "link"})
    assert not [tag for tag, attrs in markup.tags if tag == "svg" and "onload" in attrs]
    return markup


def test_search_page_escapes_the_query_hits_and_outlets() -> None:
    query = HOSTILE_TEXTS[1] + " talks"
    hits = hostile_hits()
    page = render_page(
        "search.html",
        form=SearchForm(q=query, lang=(HOSTILE_TEXTS[2],), source=(HOSTILE_TEXTS[0],)),
        languages=["en", HOSTILE_TEXTS[2]],
        sources=[HOSTILE_TEXTS[0], "ok"],
        searched=True,
        hits=hits,
        groups=[{"story": {"headline": HOSTILE_TEXTS[3], "article_count": 1,
                           "languages": [HOSTILE_TEXTS[0]], "sources": [HOSTILE_TEXTS[1]],
                           "first_seen": WHEN, "last_seen": WHEN}, "articles": hits[:2]}],
        found_languages=[HOSTILE_TEXTS[0]],
        error=HOSTILE_TEXTS[5],
    )  # fmt: skip
    markup = assert_web_page_inert(page)
    assert [tag for tag, _ in markup.tags].count("mark") >= 1  # highlighting still works
    shown = text_of(markup)
    assert " ".join(HOSTILE_TEXTS[0].split()) in shown
    inputs = {a.get("name"): a.get("value") for tag, a in markup.tags if tag == "input"}
    assert inputs["q"] == query  # the query survives the round trip as a value, unbroken
    grouped = render_page(
        "search.html", form=SearchForm(q="talks", by_story=True), languages=[], sources=[],
        searched=True, hits=hits, found_languages=[],
        groups=[{"story": None, "articles": hits}],
    )  # fmt: skip
    assert_web_page_inert(grouped)


def test_feeds_topic_and_error_pages_escape_stored_text() -> None:
    hostile_feed = FeedState(
        name=HOSTILE_TEXTS[0], url="javascript:alert(1)", language=HOSTILE_TEXTS[1],
        last_error=HOSTILE_TEXTS[2], title=HOSTILE_TEXTS[3], permanent_redirect=HOSTILE_TEXTS[4],
        last_polled_at=WHEN, consecutive_failures=1,
    )  # fmt: skip
    web_feed = replace(hostile_feed, name="ok", url=SAFE_URL)
    page = render_page("feeds.html", feeds=[feed_health(hostile_feed), feed_health(web_feed)])
    markup = assert_web_page_inert(page)
    assert SAFE_URL in markup.hrefs()

    article = {**hostile_hits()[0], "threshold": 0.5, "reason": HOSTILE_TEXTS[4],
               "keywords": list(HOSTILE_TEXTS[:2])}  # fmt: skip
    alert = {
        "id": HOSTILE_TEXTS[0], "headline": HOSTILE_TEXTS[1], "created_at": WHEN,
        "updated_at": WHEN, "story": None, "articles": [article, *hostile_hits()[-4:]],
        "messages": [{"kind": HOSTILE_TEXTS[2], "created_at": WHEN, "reason": HOSTILE_TEXTS[3],
                      "articles": 1}],
        "deliveries": {HOSTILE_TEXTS[4]: {"status": '"><b>', "attempts": 2,
                                          "next_attempt_at": None, "last_error": HOSTILE_TEXTS[5]}},
    }  # fmt: skip
    rows = [(date(2026, 11, 27), {HOSTILE_TEXTS[0]: 2, "en": 1})]
    topic = SimpleNamespace(
        id="t", name=HOSTILE_TEXTS[0], description=HOSTILE_TEXTS[1], languages=("en",),
        sources=(HOSTILE_TEXTS[2],), channels=(HOSTILE_TEXTS[3],), include=(HOSTILE_TEXTS[4],),
        exclude=(HOSTILE_TEXTS[5],), threshold=0.3,
    )  # fmt: skip
    backtest = {"articles_matched": 1, "stories_alerted": 1,
                "stories": [{"headline": HOSTILE_TEXTS[6], "articles": [article]}],
                "near_misses": [article], "changed_by_labels": [article]}  # fmt: skip
    page = render_page(
        "topic.html", topic=topic, days=30, alerts=[alert], coverage=rows,
        chart=coverage_svg(rows), coverage_languages=[HOSTILE_TEXTS[0], "en"],
        backtest=backtest, backtest_since=HOSTILE_TEXTS[7], error=HOSTILE_TEXTS[8],
    )  # fmt: skip
    markup = assert_web_page_inert(page)
    assert [tag for tag, _ in markup.tags].count("svg") == 1  # the chart, and only it
    assert " ".join(HOSTILE_TEXTS[0].split()) in text_of(markup)

    error = render_page("error.html", title=HOSTILE_TEXTS[0], error=HOSTILE_TEXTS[1])
    assert_web_page_inert(error)


def test_web_templates_autoescape_everything() -> None:
    env = template_environment()
    assert env.autoescape is True or env.autoescape("page.html")  # type: ignore[operator]
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


# -- (b) Slack ------------------------------------------------------------------------------------

_OWN_LINK = re.compile(r"<([^<>|]*)\|([^<>]*)>")
_ENTITY_OR_PLAIN = re.compile(r"(?:[^&<>]|&amp;|&lt;|&gt;)*")


def mrkdwn_texts(node: object) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """(text object or None for the top-level fallback, text) for every text in a payload."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield (node if node.get("type") == "mrkdwn" else None), value
            else:
                yield from mrkdwn_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from mrkdwn_texts(item)


def slack_target(url: str) -> str:
    """How ``alerts.render.slack_link`` writes a URL inside ``<…|…>``."""
    encoded = url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
    return encoded.replace("&", "&amp;")


def assert_inert_slack(payload: dict[str, Any], allowed_links: set[str]) -> list[str]:
    """Nothing in the payload can ping, link or break out, except our own links to
    ``allowed_links``; returns the link targets found."""
    allowed = {slack_target(url) for url in allowed_links}
    targets = []
    texts = list(mrkdwn_texts(payload))
    assert texts
    for obj, text in texts:
        if obj is not None:
            assert obj.get("verbatim") is True, obj  # no auto-links, no #channel links
        for found in _OWN_LINK.finditer(text):
            target, label = found.groups()
            assert target in allowed, f"unexpected link {found.group()!r}"
            assert "|" not in label
            targets.append(target)
        rest = _OWN_LINK.sub("", text)
        assert "<" not in rest, text
        assert ">" not in rest.replace("\n>", "\n").removeprefix(">"), text  # quote marks only
        assert _ENTITY_OR_PLAIN.fullmatch(_OWN_LINK.sub("", text).replace(">", "")), text
        assert not re.search(r"@(channel|here|everyone)\b", text, re.IGNORECASE), text
    return targets


def test_slack_alert_cannot_ping_or_link() -> None:
    message = hostile_message()
    payload = slack_payload(message)
    targets = assert_inert_slack(payload, WEB_LINKS)
    assert slack_target(SAFE_URL) in targets
    body = json.dumps(payload, ensure_ascii=False)
    for sequence in ("<!channel>", "<!here", "<!everyone>", "<@U123ABC>", "<#C1>", "<!subteam",
                     "<http://evil", "<https://evil", "<mailto:"):  # fmt: skip
        assert sequence not in body
    assert "&lt;!channel&gt;" in body  # shown as text
    assert "@\u2060channel" in body  # defused with a word joiner, still readable


def test_slack_digest_cannot_ping_or_link() -> None:
    payload = digest_slack(hostile_digest())
    assert_inert_slack(payload, WEB_LINKS)
    assert payload == rendered_hostile_digest().slack


def test_webhook_json_carries_hostile_text_as_plain_data() -> None:
    message = hostile_message()
    document = json.loads(encode_body(message))
    assert document == webhook_payload(message)
    assert [a["title"] for a in document["articles"]][: len(HOSTILE_TEXTS)] == list(HOSTILE_TEXTS)
    assert document["story"]["headline"] == message.headline  # verbatim: a program reads it
    digest = rendered_hostile_digest()
    assert json.loads(encode_digest_body(digest)) == digest.json


# -- (c) secrets ----------------------------------------------------------------------------------

SLACK_TOKEN = "sLaCkToKeNsEcReT0123456789"
SECRETS = {
    "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{{port}}/services/T0SECRET/B0SECRET/{SLACK_TOKEN}",
    "SMTP_USER": "smtp-user-secret-42",
    "SMTP_PASSWORD": "wrong-smtp-p@ss:word/99",
    "NEWSMON_API_TOKEN": "api-token-secret-0123456789",
    "HOOK_SECRET": "hmac-key-secret-777",
    "HOOK_AUTH": "Bearer hook-bearer-secret-555",
    "QDRANT_API_KEY": "qdrant-key-secret-333",
}


def secret_values(env: dict[str, str]) -> list[str]:
    values = list(env.values())
    return [*values, SLACK_TOKEN, "hook-bearer-secret-555", "p@ss:word/99", "p%40ss%3Aword%2F99"]


class HostileSmtpServer:
    """An SMTP server that refuses every login and quotes the credentials back in its reply,
    as chatty servers do: whatever smtplib or the channel does with the reply must not put
    them into a log line."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.logins = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 hostile ESMTP\r\n")
            for raw in lines:
                command = raw.decode("latin-1").strip()
                verb = command.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    conn.sendall(b"250-hostile\r\n250 AUTH PLAIN LOGIN\r\n")
                elif verb == "AUTH":
                    self.logins += 1
                    token = command.split(" ")[-1]
                    try:
                        said = base64.b64decode(token).replace(b"\x00", b" ").decode("latin-1")
                    except ValueError:
                        said = token
                    conn.sendall(f"535 5.7.8 login failed for '{said}'\r\n".encode("latin-1"))
                elif verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"503 5.5.1 log in first\r\n")

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def hostile_smtp() -> Iterator[HostileSmtpServer]:
    server = HostileSmtpServer()
    yield server
    server.close()


@pytest.fixture
def all_log_records() -> Iterator[list[str]]:
    """Every log record of every logger, formatted with its traceback, at DEBUG level."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_no_secret_reaches_a_log_line_of_a_run_whose_channels_fail(
    tmp_path: Path,
    http_server: LocalServer,
    hostile_smtp: HostileSmtpServer,
    all_log_records: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``run --once`` with an unreachable Slack webhook, an SMTP server refusing the password
    (and quoting it), and a webhook receiver echoing the request's Authorization header in its
    500 answer; then ``digest --send`` over the same channels."""
    env = {**SECRETS, "SLACK_WEBHOOK_URL": SECRETS["SLACK_WEBHOOK_URL"].format(port=free_port())}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def echo(request: Request) -> Response:  # as receivers that explain a refusal do
        said = {k.lower(): v for k, v in request.headers.items()}.get("authorization")
        return Response(f"invalid credentials {said!r} for {request.path}".encode(), status=500)

    hook = http_server.route("/hook", echo)
    feeds = {k: v for k, v in site_feeds(serve_site(http_server)).items() if k == "World News"}
    channels = {
        "mail": {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": hostile_smtp.port,
                 "starttls": False, "username": "${SMTP_USER}", "password": "${SMTP_PASSWORD}",
                 "from": "newsmon@example.org", "to": "desk@example.org", "timeout": "5s"},
        "slack": {"type": "slack", "webhook_url": "${SLACK_WEBHOOK_URL}", "timeout": "3s"},
        "hook": {"type": "webhook", "url": hook, "secret": "${HOOK_SECRET}",
                 "headers": {"Authorization": "${HOOK_AUTH}"}, "timeout": "3s"},
    }  # fmt: skip
    config = write_config(
        tmp_path, feeds,
        topics=[{"id": "all", "name": "Everything", "description": "any news at all",
                 "channels": list(channels), "threshold": -1.0}],
        channels=channels,
        alert_backfill="3650d",
        delivery={"first_retry": "1s", "wait": "2s"},
        digest={"channels": list(channels)},
        qdrant={"api_key": "${QDRANT_API_KEY}"},
        api={"token": "${NEWSMON_API_TOKEN}"},
    )  # fmt: skip
    monkeypatch.setattr("monitor.service.make_embedder", lambda _config: HashEmbedder())
    setup = cli._setup_logging

    def chatty_logging(args: Any) -> None:
        setup(args)
        for name in ("httpx", "httpcore", "apscheduler"):  # third parties at their chattiest
            logging.getLogger(name).setLevel(logging.DEBUG)

    monkeypatch.setattr("monitor.cli._setup_logging", chatty_logging)
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "apscheduler")}
    try:
        assert main(["--config", str(config), "--log-level", "DEBUG", "run", "--once"]) == 0
        assert main(["--config", str(config), "digest", "--since", "3650d", "--send"]) == 1
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out, err = capsys.readouterr()

    log = "\n".join(all_log_records)
    # the scenario happened: every channel failed, and said so
    assert hostile_smtp.logins >= 1
    assert any(r.path == "/hook" for r in http_server.requests)
    for channel in ("mail", "slack", "hook"):
        assert f"channel {channel!r}" in log, channel
    assert "login failed" in log
    assert MASK in log  # the receivers quoted secrets, and they were masked
    for secret in secret_values(env):
        assert secret not in log, f"secret {secret!r} in the log"
        assert secret not in out
        assert secret not in err


def test_redaction_masks_library_messages_and_tracebacks() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
    redactor = SecretRedactor([url, urlsplit(url).path, "pw@1234", "ab"])
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger = logging.getLogger("test.redaction.library")
    logger.propagate = False
    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    uninstall = install(redactor)
    try:
        logger.warning("HTTP Request: POST %s %r", url, {"password": "pw@1234"})
        try:
            raise ConnectionError(f"cannot reach {url.replace('https://', '')} as u:pw%401234")
        except ConnectionError:
            logger.exception("sending failed")
        logger.warning("path only: %s", "/services/T000/B000/XXXXsecretXXXX")
        logger.warning("bad format %s %s", "pw@1234")  # a bug in a format string
        logger.warning("short values stay: ab cab")
    finally:
        uninstall()
        logger.removeHandler(handler)
    logger.warning("after uninstall: %s", "pw@1234")  # not redacted, not captured either
    text = "\n".join(lines)
    assert "XXXXsecretXXXX" not in text
    assert "pw@1234" not in text
    assert "pw%401234" not in text  # the password as it appears inside a URL
    assert "Traceback" in text  # the traceback is kept, redacted
    assert "ConnectionError: cannot reach hooks.slack.com*** as u:***" in text
    assert "short values stay: ab cab" in text
    assert logging.getLogRecordFactory() is logging.LogRecord


def test_config_secrets_names_every_secret() -> None:
    text = yaml.safe_dump({
        "state_url": "postgresql+psycopg://newsmon:db-pass-secret@db.example/newsmon",
        "feeds": [{"name": "A", "url": "https://a.example/rss", "language": "en"}],
        "channels": {
            "mail": {"type": "email", "smtp_host": "mx.example", "username": "mail-user-secret",
                     "password": "mail-pass-secret", "from": "a@example.org",
                     "to": "b@example.org"},
            "slack": {"type": "slack",
                      "webhook_url": "https://hooks.slack.com/services/T0/B0/slack-tok-secret"},
            "hook": {"type": "webhook", "url": "https://u:hook-url-pass@h.example/x",
                     "secret": "hook-key-secret", "headers": {"X-Api-Key": "hook-header-secret"}},
        },
        "qdrant": {"url": "https://q:qdrant-url-pass@q.example", "api_key": "qdrant-key-secret"},
        "api": {"host": "0.0.0.0", "token": "api-token-secret"},
    })  # fmt: skip
    config = parse_config(text)
    redactor = SecretRedactor(config_secrets(config))
    for secret in ("db-pass-secret", "mail-user-secret", "mail-pass-secret", "slack-tok-secret",
                   "/services/T0/B0/slack-tok-secret", "hook-url-pass", "hook-key-secret",
                   "hook-header-secret", "qdrant-url-pass", "qdrant-key-secret",
                   "api-token-secret"):  # fmt: skip
        assert redactor.redact(f"error: {secret}!") == f"error: {MASK}!", secret


def test_check_config_shows_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        **SECRETS,
        "SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/T0/B0/{SLACK_TOKEN}",
        "DATABASE_URL": "postgresql+psycopg://newsmon:db-secret-pass@db.example:5432/newsmon",
        "HOOK_URL": "https://hookuser:hook-url-secret@hooks.example/in",
        "QDRANT_URL": "https://qd:qdrant-url-secret@qdrant.example:6333",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "state_url: ${DATABASE_URL}\n"
        "feeds:\n  - {name: A, url: 'https://a.example/rss', language: en}\n"
        "channels:\n"
        "  mail: {type: email, smtp_host: mx.example, username: '${SMTP_USER}',\n"
        "         password: '${SMTP_PASSWORD}', from: a@example.org, to: b@example.org}\n"
        "  slack: {type: slack, webhook_url: '${SLACK_WEBHOOK_URL}'}\n"
        "  hook: {type: webhook, url: '${HOOK_URL}', secret: '${HOOK_SECRET}',\n"
        "         headers: {Authorization: '${HOOK_AUTH}'}}\n"
        "qdrant: {url: '${QDRANT_URL}', api_key: '${QDRANT_API_KEY}'}\n"
        "api: {host: 0.0.0.0, token: '${NEWSMON_API_TOKEN}'}\n",
        "utf-8",
    )
    assert main(["--config", str(path), "check-config"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out.split("\n", 1)[1])
    assert shown["channels"]["hook"]["url"] == f"https://hookuser:{MASK}@hooks.example/in"
    assert shown["qdrant"]["url"] == f"https://qd:{MASK}@qdrant.example:6333"
    assert shown["state_url"] == "postgresql+psycopg://newsmon:***@db.example:5432/newsmon"
    for secret in [*secret_values(env), "db-secret-pass", "hook-url-secret", "qdrant-url-secret"]:
        assert secret not in out + err, secret


# -- (d) the API's address and token --------------------------------------------------------------

FEED = "feeds:\n  - {name: A, url: 'https://a.example/rss', language: en}\n"


def test_the_api_listens_on_loopback_by_default_without_a_token() -> None:
    config = parse_config(FEED)
    assert config.api.host == "127.0.0.1"
    assert config.api.token is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "LOCALHOST", "::1"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback_host(host)
    assert parse_config(FEED + f"api: {{host: '{host}'}}\n").api.token is None


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "192.168.1.10", "example.org", "localhost.", "::ffff:127.0.0.1", "127.1"],
)
def test_any_other_host_without_a_token_is_a_config_error(host: str) -> None:
    assert not is_loopback_host(host)
    for api in (f"{{host: '{host}'}}", f"{{host: '{host}', token: '${{UNSET_TOKEN:-}}'}}"):
        with pytest.raises(ConfigError) as caught:
            parse_config(FEED + f"api: {api}\n", source="feeds.yaml", env={})
        [problem] = caught.value.problems
        assert problem == (
            f"feeds.yaml:3: api.token: a token is required when the API listens on {host!r}, "
            "which is not a loopback address (set api.token, e.g. from ${NEWSMON_API_TOKEN})"
        )
    config = parse_config(FEED + f"api: {{host: '{host}', token: t0ken-value}}\n")
    assert config.api.token is not None


def test_every_data_route_needs_the_token_off_loopback() -> None:
    config = parse_config(FEED + "api: {host: 0.0.0.0, token: s3cret-token-value}\n")

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"{name} was reached without the token")

    app = SimpleNamespace(config=config, store=Untouchable(), searcher=Untouchable(),
                          indexer=Untouchable())  # fmt: skip
    api = create_api(app)  # type: ignore[arg-type]
    client = TestClient(api)
    public = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/ui/login"}
    paths = [path for r in api.routes if (path := getattr(r, "path", "")) not in public | {""}]
    paths += ["/", "/ui/topics", "/ui/topics/t", "/ui/feeds", "/ui/static/web.css"]
    assert "/health" in paths
    for path in paths:
        concrete = path.replace("{topic_id}", "t")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            method = "POST" if path == "/reindex" else "GET"
            answer = client.request(method, concrete, headers=headers, follow_redirects=False)
            if path.startswith("/ui/") or path == "/":
                assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")
            else:
                assert answer.status_code == 401, (path, headers)
    wrong = client.post("/ui/login", data={"token": "guess"}, follow_redirects=False)
    assert wrong.status_code == 401
    assert "newsmon_token" not in wrong.headers.get("set-cookie", "")
    assert "s3cret-token-value" not in wrong.text
    # and the docs show the schema only, no data and no secret
    assert "s3cret-token-value" not in client.get("/openapi.json").text
    assert html.escape("s3cret") not in client.get("/docs").text
