"""Digest rendering (``alerts.render_digest``) and digest delivery on every channel, against
the real local receivers of tests/test_channels.py (aiosmtpd, LocalServer)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from alerts.channels import Channel, RecordingChannel
from alerts.channels.webhook import encode_digest_body
from alerts.digest import Digest, since_window
from alerts.render import SLACK_MAX_BLOCKS, SLACK_SECTION_CHARS
from alerts.render_digest import (
    CHART_SIZE,
    MAX_STORIES,
    RenderedDigest,
    coverage_chart_png,
    digest_html,
    digest_json,
    digest_markdown,
    digest_slack,
    digest_subject,
    digest_text,
    render_digest,
)
from alerts.types import StoredMatch, Topic
from monitor.errors import ChannelError
from tests.support.httpserver import LocalServer, Response
from tests.test_channels import (
    SECRET,
    SLACK_PATH,
    Inbox,
    email_channel,
    email_config,
    slack_channel,
    smtp_server,
    webhook_channel,
)
from tests.test_digest import NOW, TOPICS, at, digest_of, feed, match, story
from tests.test_render import COVERAGE, HOSTILE, slack_texts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RU_HEADLINE = "Переговоры о прекращении огня возобновились в Каире"
SCRIPT = "<script>alert(1)</script>"


def coverage(story_id: str = "cairo", count: int = 8, **changes: Any) -> list[StoredMatch]:
    """``count`` articles of one story in four languages (tests/test_render.py's outlets)."""
    matches = []
    for i in range(count):
        language, source, title, passage = COVERAGE[i % len(COVERAGE)]
        article_id = f"{story_id}-{i}"
        values: dict[str, Any] = {
            "published": at(i % 7, 9 + i % 5),
            "language": language,
            "source": source,
            "title": title,
            "passage": passage,
            "score": 0.9 - i / 100,
            **changes,
        }
        matches.append(match(article_id, story_id, **values))
    return matches


def sample() -> Digest:
    """Two topics (one empty), an alerted Cyrillic story, a hostile digest-only one, feeds."""
    hostile = match(
        "evil",
        "hostile",
        published=at(3),
        title=f"{HOSTILE} {SCRIPT}",
        passage=f"{SCRIPT} <!here> \n Bcc: victim@example.org",
        source="evil\nBcc: victim@example.org",
        url="javascript:alert(1)",
    )
    matches = [*coverage(message_id="al_x.0"), hostile]
    return digest_of(
        matches,
        stories={"cairo": story("cairo", RU_HEADLINE, at(-1), at(6))},
        feeds=[
            feed("quiet", last_new_item_at=at(-4)),
            feed("broken", consecutive_failures=4, last_error=f"HTTP 500 {SCRIPT}"),
        ],
    )


def parse_html(page: str) -> ET.Element:
    """A strict XML parse, after the one thing XML does not know (the HTML5 doctype)."""
    doctype = re.match(r"<!DOCTYPE html>\r?\n", page)  # a mail's text parts have CRLF lines
    assert doctype is not None
    return ET.fromstring(page[doctype.end() :])


def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def text_of(root: ET.Element) -> str:
    return " ".join("".join(root.itertext()).split())


# -- HTML -------------------------------------------------------------------------------------


def test_html_is_well_formed_with_an_inline_chart() -> None:
    root = parse_html(digest_html(sample()))
    (img,) = root.iter("img")  # the empty topic has no chart
    src = img.attrib["src"]
    assert src.startswith("data:image/png;base64,")
    png = base64.b64decode(src.removeprefix("data:image/png;base64,"))
    assert png_size(png) == CHART_SIZE
    assert "Daily coverage per language" in img.attrib["alt"]
    assert root.find("head/meta").attrib == {"charset": "utf-8"}  # type: ignore[union-attr]


def test_html_refers_to_the_chart_by_content_id() -> None:
    digest = sample()
    root = parse_html(digest_html(digest, chart_cids={"gaza": "chart-1.d@newsmon"}))
    assert [img.attrib["src"] for img in root.iter("img")] == ["cid:chart-1.d@newsmon"]
    no_charts = parse_html(digest_html(digest, charts={}))
    assert list(no_charts.iter("img")) == []


def test_html_lists_stories_with_status_and_feed_notes() -> None:
    root = parse_html(digest_html(sample()))
    text = text_of(root)
    assert "1. " + RU_HEADLINE + " alerted" in text
    assert "digest only" in text
    assert "8 articles · de 2 · en 2 · ru 2 · uk 2" in text
    assert "What this digest could not see" in text
    assert "broken: failing (4 failed polls in a row" in text
    assert "quiet: silent (no new item since" in text
    assert "No coverage in this period." in text  # the empty topic
    links = [a.attrib["href"] for a in root.iter("a")]
    assert "https://meduza.example/cairo-2" in links


def test_cyrillic_survives_in_every_format() -> None:
    digest = sample()
    assert RU_HEADLINE in text_of(parse_html(digest_html(digest)))
    assert RU_HEADLINE in digest_text(digest)
    assert COVERAGE[3][2] in digest_markdown(digest)  # a Ukrainian title
    document = json.dumps(digest_json(digest), ensure_ascii=False)
    assert RU_HEADLINE in document
    assert "Энергетика" in document  # a topic name
    assert any(RU_HEADLINE in text for text in slack_texts(digest_slack(digest)))


def test_hostile_text_is_inert_in_html() -> None:
    page = digest_html(sample())
    root = parse_html(page)  # still well-formed
    assert "<script" not in page
    assert "javascript:" not in "".join(a.attrib["href"] for a in root.iter("a"))
    assert all(a.attrib["href"].startswith("https://") for a in root.iter("a"))
    assert "&lt;script&gt;" in page
    assert HOSTILE in text_of(root)  # shown as text, not dropped


def test_characters_xml_forbids_are_dropped() -> None:
    odd = match("odd", "s", published=at(1), title="a\ufffeb\x0bc\x00d", passage="e\uffff\x1bf")
    root = parse_html(digest_html(digest_of([odd]), charts={}))
    assert "ab c d" in text_of(root)


# -- text and Markdown ------------------------------------------------------------------------


def test_text_keeps_every_field_on_its_line() -> None:
    text = digest_text(sample())
    assert not any(line.startswith("Bcc:") for line in text.splitlines())
    assert "evil Bcc: victim@example.org" in text
    assert "[ALERTED] " + RU_HEADLINE in text
    assert "[DIGEST ONLY]" in text
    assert "  Daily coverage   total" in text
    assert "- broken: failing" in text


def test_markdown_escapes_markup() -> None:
    page = digest_markdown(sample())
    assert "<script>" not in page
    assert r"\<script\>" in page
    assert "](javascript" not in page
    assert f"[{COVERAGE[2][2]}](https://meduza.example/cairo-2)" in page
    assert "| day | total | en | de | ru | uk |" in page


def test_long_topics_are_cut_in_the_human_formats_only() -> None:
    matches = [m for n in range(MAX_STORIES + 5) for m in coverage(f"s{n:02}", count=1)]
    digest = digest_of(matches)
    assert "… and 5 more stories" in digest_text(digest)
    assert "… and 5 more stories" in digest_markdown(digest)
    assert "… and 5 more stories" in digest_html(digest, charts={})
    assert len(digest_json(digest)["topics"][0]["stories"]) == MAX_STORIES + 5


# -- JSON -------------------------------------------------------------------------------------


def test_json_lists_topics_stories_and_articles() -> None:
    digest = sample()
    document = digest_json(digest)
    assert json.loads(json.dumps(document)) == document
    assert document["type"] == "digest"
    assert document["id"] == digest.id
    assert document["window"] == {
        "start": "2026-01-25T23:00:00Z",
        "end": "2026-02-01T23:00:00Z",
        "timezone": "Europe/Berlin",
        "label": "2026-W05",
    }
    gaza, energy = document["topics"]
    assert (gaza["id"], gaza["story_count"], gaza["alerted_story_count"]) == ("gaza", 2, 1)
    assert energy["stories"] == []
    assert len(gaza["daily"]) == 7
    assert gaza["daily"][0] == {
        "date": "2026-01-26",
        "total": 2,
        "languages": {"en": 0, "de": 1, "ru": 0, "uk": 1},
    }
    cairo = gaza["stories"][0]
    assert (cairo["headline"], cairo["alerted"], cairo["article_count"]) == (RU_HEADLINE, True, 8)
    first = cairo["articles"][0]
    assert {"url", "language", "source", "title", "published", "passage"} <= set(first)
    assert (first["language"], first["source"]) == ("de", "tagesschau")
    assert [f["feed"] for f in document["feeds"]] == ["broken", "quiet"]
    assert document["feeds"][0]["problem"] == "failing"


# -- Slack ------------------------------------------------------------------------------------


def test_slack_summary_is_escaped() -> None:
    payload = digest_slack(sample())
    body = json.dumps(payload, ensure_ascii=False)
    assert "<!channel>" not in body
    assert "<!here>" not in body
    assert "&lt;!channel&gt;" in body
    assert "<https://meduza.example" not in body  # the best article of the story is linked
    assert "<https://tagesschau.example/cairo-0|" in body
    assert payload["text"] == digest_subject(sample())


def test_slack_blocks_are_capped_and_long_lines_fit() -> None:
    topics = [Topic(id=f"t{n:02}", name=f"Topic {n}", description="d") for n in range(40)]
    long_url = "https://example.org/" + "x" * 900
    matches = [
        match(f"a{n}-{s}", f"s{n}-{s}", topic=t.id, published=at(1), title="Ж" * 400, url=long_url)
        for n, t in enumerate(topics)
        for s in range(8)
    ]
    payload = digest_slack(digest_of(matches, topics=topics))
    blocks = payload["blocks"]
    assert len(blocks) <= SLACK_MAX_BLOCKS
    assert any("more topics in the email digest" in t for t in slack_texts(blocks))
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= SLACK_SECTION_CHARS
    assert any("more stories in the email digest" in t for t in slack_texts(blocks))


# -- subject and chart ------------------------------------------------------------------------


def test_subjects() -> None:
    assert digest_subject(sample()) == "[newsmon] Weekly digest 2026-W05: 2 stories in 2 topics"
    single = digest_of(coverage(count=1), topics=TOPICS[1:])
    assert digest_subject(single) == "[newsmon] Weekly digest 2026-W05 · Энергетика: 0 stories"
    ad_hoc = digest_of([], window=since_window(NOW, timedelta(days=3)), topics=TOPICS[:1])
    assert digest_subject(ad_hoc) == "[newsmon] Digest · Gaza ceasefire: 0 stories"


def test_chart_is_a_deterministic_png() -> None:
    topic = sample().topics[0]
    png = coverage_chart_png(topic)
    assert png_size(png) == CHART_SIZE
    assert png == coverage_chart_png(topic)
    assert b"matplotlib" not in png  # no Software tag


def test_chart_copes_with_many_languages_and_days() -> None:
    odd_languages = [f"l{n}" for n in range(11)] + ["$x$", "_hidden"]
    matches = [
        match(f"a{n}", "s", published=NOW - timedelta(days=n), language=lang)
        for n, lang in enumerate(odd_languages * 4)
    ]
    window = since_window(NOW, timedelta(days=60))
    png = coverage_chart_png(digest_of(matches, window=window).topics[0])
    assert png_size(png) == CHART_SIZE


# -- the bundle -------------------------------------------------------------------------------


def test_render_digest_shares_content_ids_between_html_and_charts() -> None:
    digest = sample()
    rendered = render_digest(digest)
    assert rendered.id == digest.id
    (chart,) = rendered.charts  # only the topic with coverage
    assert chart.topic_id == "gaza"
    assert chart.content_id.endswith(f".{digest.id}@newsmon")
    assert f'src="cid:{chart.content_id}"' in rendered.html
    assert chart.png.startswith(PNG_SIGNATURE)
    assert rendered.json == digest_json(digest)
    assert rendered.slack == digest_slack(digest)
    parse_html(rendered.html)


def test_an_empty_digest_renders() -> None:
    rendered = render_digest(digest_of([]))
    assert rendered.charts == ()
    assert "No coverage in this period." in rendered.text
    assert "Every feed delivered new items in this period." in rendered.text
    assert list(parse_html(rendered.html).iter("img")) == []
    assert rendered.subject.endswith(": 0 stories in 2 topics")


# -- channels ---------------------------------------------------------------------------------


def send(make: Callable[[], Channel], *digests: RenderedDigest) -> None:
    async def scenario() -> None:
        channel = make()
        try:
            for digest in digests:
                await channel.send_digest(digest)
        finally:
            await channel.aclose()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def rendered() -> RenderedDigest:
    return render_digest(sample())


def test_email_digest_has_the_chart_inline(rendered: RenderedDigest) -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        send(lambda: email_channel(email_config(port)), rendered, rendered)
    mail, again = inbox.mails()
    assert mail["Message-ID"] == again["Message-ID"] == f"<{rendered.id}@newsmon>"
    assert mail["Subject"] == rendered.subject
    assert mail["X-Newsmon-Digest"] == rendered.id
    assert mail.get_content_type() == "multipart/alternative"
    text, html_part = (mail.get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None
    assert html_part is not None
    assert RU_HEADLINE in text.get_content()
    html = html_part.get_content()
    assert RU_HEADLINE in html
    parse_html(html)
    (related,) = [p for p in mail.walk() if p.get_content_type() == "multipart/related"]
    (image,) = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    (cid,) = re.findall(r'src="cid:([^"]+)"', html)
    assert image["Content-ID"] == f"<{cid}>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == rendered.charts[0].png


def test_slack_digest_posts_the_summary(http_server: LocalServer, rendered: RenderedDigest) -> None:
    url = http_server.route(SLACK_PATH, Response(b"ok", content_type="text/plain"))
    send(lambda: slack_channel(url), rendered)
    (request,) = http_server.requests
    assert json.loads(request.body) == rendered.slack
    assert b"<!channel>" not in request.body


def test_slack_digest_keeps_the_error_semantics(
    http_server: LocalServer, rendered: RenderedDigest
) -> None:
    url = http_server.route(
        SLACK_PATH, Response(b"slow down", status=429, headers={"Retry-After": "9"})
    )
    with pytest.raises(ChannelError) as caught:
        send(lambda: slack_channel(url), rendered)
    assert (caught.value.permanent, caught.value.retry_after) == (False, 9)
    assert "s3cr3tT0k3n" not in str(caught.value)


def test_webhook_digest_is_signed_json(http_server: LocalServer, rendered: RenderedDigest) -> None:
    url = http_server.route("/hook", Response(status=204))
    send(lambda: webhook_channel(url, secret=SECRET), rendered)
    (request,) = http_server.requests
    assert request.body == encode_digest_body(rendered)
    document = json.loads(request.body)
    assert (document["type"], document["id"]) == ("digest", rendered.id)
    assert RU_HEADLINE.encode() in request.body  # raw UTF-8
    signed = f"{request.headers['x-newsmon-timestamp']}.".encode() + request.body
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-newsmon-signature"], expected)


def test_webhook_digest_client_error_is_permanent(
    http_server: LocalServer, rendered: RenderedDigest
) -> None:
    url = http_server.route("/hook", Response(status=400))
    with pytest.raises(ChannelError) as caught:
        send(lambda: webhook_channel(url), rendered)
    assert caught.value.permanent


def test_recording_channel_records_digests(rendered: RenderedDigest) -> None:
    channel = RecordingChannel("rec")
    channel.fail_next(1)
    with pytest.raises(ChannelError):
        send(lambda: channel, rendered)
    send(lambda: channel, rendered)
    assert channel.digests == [rendered]
    assert channel.digest_attempts == [rendered, rendered]
    assert channel.sent == []
