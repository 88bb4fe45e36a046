"""Rendering of alert messages: pure functions, checked on hostile and multilingual input."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from alerts.render import (
    PASSAGE_CHARS,
    SLACK_MAX_BLOCKS,
    SLACK_SECTION_CHARS,
    SUBJECT_CHARS,
    email_subject,
    render_html,
    render_text,
    slack_escape,
    slack_payload,
    trim_words,
    webhook_payload,
)
from alerts.types import (
    AlertArticle,
    AlertMessage,
    MessageKind,
    alert_id_for,
    message_from_json,
    message_id_for,
    message_to_json,
)

CREATED = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)

#: (language, outlet, title, passage): one story as four outlets report it
COVERAGE = (
    (
        "de",
        "tagesschau",
        "Waffenruhe: Verhandlungen in Kairo gehen weiter",
        "Die Delegationen trafen sich am Montag erneut in Kairo, um über eine Waffenruhe zu "
        "verhandeln.",
    ),
    (
        "en",
        "bbc-world",
        "Ceasefire talks resume in Cairo",
        "Negotiators met again in Cairo on Monday to discuss a ceasefire and hostage releases.",
    ),
    (
        "ru",
        "meduza",
        "Переговоры о прекращении огня возобновились в Каире",
        "В понедельник делегации вновь встретились в Каире, чтобы обсудить прекращение огня.",
    ),
    (
        "uk",
        "ukrinform",
        "Переговори про припинення вогню відновилися в Каїрі",
        "У понеділок делегації знову зустрілися в Каїрі, щоб обговорити припинення вогню.",
    ),
)


def make_article(index: int = 0, **changes: Any) -> AlertArticle:
    language, source, title, passage = COVERAGE[index % len(COVERAGE)]
    article = AlertArticle(
        article_id=f"art-{index}",
        url=f"https://{source}.example/news/{index}?ref=rss&lang={language}",
        title=title,
        language=language,
        source=source,
        published_at=datetime(2026, 3, 2, 8, index % 60, tzinfo=UTC),
        score=0.8731 - index * 0.01,
        passage=passage,
        keywords=("Kairo", "Waffenruhe") if language == "de" else (),
    )
    return replace(article, **changes)


def make_message(
    *,
    sequence: int = 0,
    headline: str = "Переговоры о прекращении огня в Каире",
    articles: tuple[AlertArticle, ...] | None = None,
    **changes: Any,
) -> AlertMessage:
    alert_id = alert_id_for("gaza-ceasefire", "story-1")
    arts = articles if articles is not None else tuple(make_article(i) for i in range(4))
    message = AlertMessage(
        id=message_id_for(alert_id, sequence),
        alert_id=alert_id,
        sequence=sequence,
        kind=MessageKind.FOLLOW_UP if sequence else MessageKind.NEW,
        topic_id="gaza-ceasefire",
        topic_name="Gaza ceasefire",
        story_id="story-1",
        headline=headline,
        created_at=CREATED,
        reason="first coverage in uk" if sequence else "new story",
        articles=arts,
        story_languages=tuple(sorted({a.language for a in arts})),
        story_sources=tuple(sorted({a.source for a in arts})),
        story_article_count=len(arts),
    )
    return replace(message, **changes)


HOSTILE = "Breaking <!channel> & <b>x</b> @here"


def slack_texts(node: object) -> Iterator[str]:
    """Every ``text`` string anywhere in a Block Kit payload."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from slack_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from slack_texts(item)


# -- subject ------------------------------------------------------------------------------------


def test_subject_names_topic_and_headline() -> None:
    assert email_subject(make_message()) == (
        "[newsmon] Gaza ceasefire: Переговоры о прекращении огня в Каире"
    )


def test_follow_up_subject_says_update() -> None:
    subject = email_subject(make_message(sequence=2))
    assert subject == "[newsmon] Gaza ceasefire: Переговоры о прекращении огня в Каире (update)"


def test_subject_is_one_line_without_control_characters() -> None:
    subject = email_subject(make_message(headline="Talks\r\nBcc: victim@example.org\x00\t end"))
    assert subject == "[newsmon] Gaza ceasefire: Talks Bcc: victim@example.org end"
    assert not re.search(r"[\x00-\x1f\x7f]", subject)


def test_long_subject_is_capped_on_a_word_and_keeps_the_update_marker() -> None:
    subject = email_subject(make_message(sequence=1, headline="слово " * 100))
    assert len(subject) <= SUBJECT_CHARS
    assert subject.endswith("слово… (update)")


def test_trim_words_cuts_on_a_word_boundary() -> None:
    assert trim_words("short", 10) == "short"
    assert trim_words("one two three four", 12) == "one two…"
    assert trim_words("x" * 50, 10) == "x" * 9 + "…"  # one huge word: cut inside it


# -- plain text ---------------------------------------------------------------------------------


def test_text_shows_everything_a_reader_needs() -> None:
    text = render_text(make_message())
    for expected in (
        "Gaza ceasefire",
        "gaza-ceasefire",
        "Story: Переговоры о прекращении огня в Каире",
        "Why: new story",
        "4 articles; languages de, en, ru, uk",
        "Переговори про припинення вогню відновилися в Каїрі",
        "ukrinform · UK · 2026-03-02 08:03 UTC · score 0.84",
        "https://meduza.example/news/2?ref=rss&lang=ru",
        "Keywords: Kairo, Waffenruhe",
        "В понедельник делегации вновь встретились в Каире",
        "tagesschau · DE · 2026-03-02 08:00 UTC · score 0.87",
    ):
        assert expected in text


def test_text_trims_long_passages_on_a_word_boundary() -> None:
    long_passage = " ".join(["прекращение"] * 200)
    text = render_text(make_message(articles=(make_article(2, passage=long_passage),)))
    shown = next(line for line in text.splitlines() if "прекращение" in line).strip()
    passage = shown.strip("“”")
    assert len(passage) <= PASSAGE_CHARS
    assert passage.endswith("прекращение…")


def test_text_fields_cannot_forge_lines() -> None:
    article = make_article(title="Real title\n\n2. Fake article\nhttps://evil.example")
    text = render_text(make_message(articles=(article,)))
    assert "\n2. Fake" not in text
    assert "Real title 2. Fake article https://evil.example" in text


# -- HTML ---------------------------------------------------------------------------------------


def test_html_escapes_hostile_text() -> None:
    article = make_article(
        title="<script>alert(1)</script>",
        source='<img src="x" onerror="alert(2)">',
        passage="a < b && c > d",
        keywords=("<b>",),
    )
    page = render_html(make_message(headline=HOSTILE, articles=(article,)))
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt; b &amp;&amp; c &gt; d" in page
    assert html.escape(HOSTILE) in page


def test_html_links_only_web_urls() -> None:
    articles = (
        make_article(0, url="https://example.org/a?x=1&y=2"),
        make_article(1, url="javascript:alert(1)"),
        make_article(2, url='https://example.org/"onmouseover="alert(1)'),
    )
    page = render_html(make_message(articles=articles))
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert "https://example.org/a?x=1&amp;y=2" in hrefs
    assert not any(h.startswith("javascript") for h in hrefs)
    assert "javascript:alert(1)" in page  # shown as text
    assert 'href="https://example.org/&quot;onmouseover=&quot;alert(1)"' in page


def test_html_loads_nothing_from_outside_and_keeps_cyrillic() -> None:
    page = render_html(make_message())
    assert not re.search(r"<(img|link|script|iframe)|src=|url\(|@import", page, re.IGNORECASE)
    assert "Переговори про припинення вогню" in page
    assert '<blockquote lang="ru"' in page
    assert "score 0.87" in page


# -- Slack --------------------------------------------------------------------------------------


def test_slack_escapes_control_sequences_everywhere() -> None:
    article = make_article(title=HOSTILE, passage="<!everyone> & <@U123>", source="<!here>")
    payload = slack_payload(make_message(headline=HOSTILE, articles=(article,)))
    texts = list(slack_texts(payload))
    assert texts
    for text in texts:
        # the only "<" left are our own links
        assert not re.search(r"<(?!https?://)", text), text
        assert "@here" not in text  # the word joiner after "@" defuses it
    assert "Breaking &lt;!channel&gt; &amp; &lt;b&gt;x&lt;/b&gt;" in payload["text"]


def test_slack_links_escape_url_and_title() -> None:
    article = make_article(url="https://example.org/a?x=1&y=<2>|3", title="A | B > C")
    section = slack_payload(make_message(articles=(article,)))["blocks"][3]["text"]["text"]
    assert "*<https://example.org/a?x=1&amp;y=%3C2%3E%7C3|A ¦ B &gt; C>*" in section


def test_slack_does_not_link_other_schemes() -> None:
    article = make_article(url="javascript:alert(1)", title="Click")
    section = slack_payload(make_message(articles=(article,)))["blocks"][3]["text"]["text"]
    assert section.startswith("*Click*")
    assert "javascript" not in section


def test_slack_caps_blocks_and_counts_the_rest() -> None:
    articles = tuple(make_article(i) for i in range(100))
    blocks = slack_payload(make_message(articles=articles))["blocks"]
    assert len(blocks) == SLACK_MAX_BLOCKS
    assert blocks[-1]["type"] == "context"
    assert blocks[-1]["elements"][0]["text"] == "… and 54 more articles"


def test_slack_shows_every_article_when_they_fit() -> None:
    articles = tuple(make_article(i) for i in range(SLACK_MAX_BLOCKS - 3))
    blocks = slack_payload(make_message(articles=articles))["blocks"]
    assert len(blocks) == SLACK_MAX_BLOCKS
    assert not any("more articles" in text for text in slack_texts(blocks))


def test_slack_sections_stay_under_the_limit() -> None:
    huge = "&<>" * 5000
    article = make_article(
        url="https://example.org/" + "a" * 970, title=huge, passage=huge, source=huge
    )
    payload = slack_payload(make_message(headline=huge, reason=huge, articles=(article,)))
    for block in payload["blocks"]:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= SLACK_SECTION_CHARS
    assert "<https://example.org/aaa" in payload["blocks"][3]["text"]["text"]


@given(st.text(alphabet="a<>&@ hx!", max_size=60), st.integers(min_value=1, max_value=40))
def test_slack_escape_never_leaves_a_control_character(text: str, limit: int) -> None:
    escaped = slack_escape(text, limit)
    assert len(escaped) <= max(limit, 1)
    assert "<" not in escaped
    assert ">" not in escaped
    # every "&" starts one of the three entities: a cut never splits one
    assert re.fullmatch(r"(?:[^&]|&amp;|&lt;|&gt;)*", escaped)


# -- webhook ------------------------------------------------------------------------------------


def test_webhook_payload_is_the_documented_contract() -> None:
    message = make_message(sequence=1, articles=(make_article(3),))
    payload = webhook_payload(message)
    assert payload == {
        "type": "alert",
        "id": message.id,
        "alert_id": message.alert_id,
        "sequence": 1,
        "kind": "follow-up",
        "topic": {"id": "gaza-ceasefire", "name": "Gaza ceasefire"},
        "story": {
            "id": "story-1",
            "headline": "Переговоры о прекращении огня в Каире",
            "languages": ["uk"],
            "sources": ["ukrinform"],
            "article_count": 1,
        },
        "reason": "first coverage in uk",
        "created_at": "2026-03-02T09:30:15.123456Z",
        "articles": [
            {
                "url": "https://ukrinform.example/news/3?ref=rss&lang=uk",
                "title": "Переговори про припинення вогню відновилися в Каїрі",
                "language": "uk",
                "source": "ukrinform",
                "published": "2026-03-02T08:03:00Z",
                "score": 0.8431,
                "passage": COVERAGE[3][3],
                "keywords": [],
            }
        ],
    }
    json.dumps(payload)  # JSON-able as it is


def test_rendering_survives_the_outbox_round_trip() -> None:
    """A message re-sent after a restart (read back from the outbox) renders identically."""
    message = make_message(articles=tuple(make_article(i, score=0.134951) for i in range(4)))
    stored = message_from_json(json.loads(json.dumps(message_to_json(message))))
    for render in (email_subject, render_text, render_html, slack_payload, webhook_payload):
        assert render(stored) == render(message)
