"""The page stage: text choice, language decision, extraction of fixture pages, hostile input,
and the two page processors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trafilatura
from lxml.html import HtmlElement

from monitor.errors import ExtractionError
from monitor.extract import MAX_ELEMENTS, canonical_url, extract_page, parse_published
from monitor.language import (
    MIN_DECISIVE_CHARS,
    LanguageIdentifier,
    decide_language,
    get_identifier,
    normalize_language_tag,
)
from monitor.pages import (
    InlinePageProcessor,
    ProcessPoolPageProcessor,
    choose_text,
    fetch_failure_reason,
    looks_like_wall,
    make_page_processor,
    process_page,
)
from monitor.types import ExtractedPage, LanguageGuess, ProcessedText, TextSource

FIXTURES = Path(__file__).parent / "fixtures" / "pages"
MIN_CHARS = 300
LONG = "x" * 2000


@dataclass(frozen=True)
class Fixture:
    file: str
    url: str
    language: str
    title: str
    author: str
    canonical: str
    published: datetime
    must_contain: tuple[str, ...]
    must_drop: tuple[str, ...]


FIXTURE_PAGES = (
    Fixture(
        file="de_friedensgespraeche.html",
        url="https://www.rheinische-abendpost.example/politik/ausland/artikel-100.html?utm_source=rss",
        language="de",
        title="Friedensgespräche in Genf: Delegationen einigen sich auf Gefangenenaustausch",
        author="Katharina Wendt",
        # relative in the page, resolved against the page URL
        canonical="https://www.rheinische-abendpost.example/politik/ausland/friedensgespraeche-genf-gefangenenaustausch-100.html",
        published=datetime(2024, 3, 12, 13, 35, tzinfo=UTC),
        must_contain=("jeweils 200 Gefangene freilassen", "Arbeitsgruppen auf Expertenebene"),
        must_drop=("Impressum", "Newsletter", "Mehr zum Thema", "Teilen:", "Startseite"),
    ),
    Fixture(
        file="en_ceasefire.html",
        url="https://northern-ledger.example/world/ceasefire-talks?ref=feed",
        language="en",
        title="Ceasefire talks resume in Istanbul as mediators push for humanitarian corridors",
        author="Daniel Okafor",
        canonical="https://northern-ledger.example/world/2024/05/06/ceasefire-talks-resume-istanbul",
        published=datetime(2024, 5, 6, tzinfo=UTC),
        must_contain=("second round of ceasefire talks", "no press conference was planned"),
        must_drop=("We use cookies", "Most read", "Subscribe now", "Terms of use"),
    ),
    Fixture(
        file="ru_peregovory.html",  # windows-1251 bytes: trafilatura has to sniff the encoding
        url="https://vechernij-kurier.example/world/20240312/peregovory-zheneva.html",
        language="ru",
        title="Переговоры в Женеве: стороны договорились об обмене пленными",
        author="Анна Соколова",
        canonical="https://vechernij-kurier.example/world/20240312/peregovory-zheneva.html",
        published=datetime(2024, 3, 12, 13, 20, tzinfo=UTC),
        must_contain=("договорились об обмене пленными", "Следующий раунд переговоров"),
        must_drop=("Читайте также", "Все права защищены", "Поделиться"),
    ),
    Fixture(
        file="uk_peremovyny.html",
        url="https://vechirnii-visnyk.example/svit/2024/03/12/peremovyny-zheneva/",
        language="uk",
        title="Переговори в Женеві: сторони домовилися про обмін полоненими",
        author="Олена Гнатюк",
        canonical="https://vechirnii-visnyk.example/svit/2024/03/12/peremovyny-zheneva/",
        published=datetime(2024, 3, 12, tzinfo=UTC),  # htmldate takes the URL's date here
        must_contain=("домовилися про обмін полоненими", "Наступний раунд переговорів"),
        must_drop=("Читайте також", "Усі права захищено", "Поділитися", "оформіть передплату"),
    ),
)
FEED_SUMMARY = {
    "de": "In Genf haben sich die Delegationen auf einen Gefangenenaustausch geeinigt.",
    "en": "Ceasefire talks resumed in Istanbul on Monday.",
    "ru": "В Женеве стороны договорились об обмене пленными.",
    "uk": "У Женеві сторони домовилися про обмін полоненими.",
}


def _html(fixture: Fixture) -> bytes:
    return (FIXTURES / fixture.file).read_bytes()


def _page(text: str) -> ExtractedPage:
    return ExtractedPage(text=text, title="T", canonical_url="https://example.org/a")


# -- decide_language (pure) --------------------------------------------------------------------


def test_decide_language_empty_text_is_undecidable_even_with_a_prior() -> None:
    assert decide_language({}, "de", 0) == LanguageGuess(None, 0.0)


def test_decide_language_short_text_takes_the_prior() -> None:
    guess = decide_language({"en": 0.9, "de": 0.1}, "de", MIN_DECISIVE_CHARS - 1)
    assert guess == LanguageGuess("de", 0.1)


def test_decide_language_short_text_without_prior_is_undecidable() -> None:
    assert decide_language({"en": 1.0}, None, 10) == LanguageGuess(None, 0.0)


def test_decide_language_prior_within_margin_wins() -> None:
    assert decide_language({"uk": 0.52, "ru": 0.48}, "ru", 500) == LanguageGuess("ru", 0.48)


def test_decide_language_short_texts_give_the_prior_a_wider_margin() -> None:
    # "Ceasefire talks resumed in Istanbul on Monday." in lingua's low-accuracy mode
    confidences = {"ro": 0.74, "en": 0.26}
    assert decide_language(confidences, "en", 46) == LanguageGuess("en", 0.26)
    assert decide_language(confidences, "en", 500) == LanguageGuess("ro", 0.74)
    assert decide_language({"uk": 0.9, "ru": 0.1}, "ru", 46) == LanguageGuess("uk", 0.9)


def test_decide_language_detector_wins_when_prior_is_far_behind() -> None:
    assert decide_language({"uk": 0.97, "ru": 0.03}, "ru", 500) == LanguageGuess("uk", 0.97)


def test_decide_language_prior_unknown_to_the_detector() -> None:
    assert decide_language({"de": 0.99, "en": 0.01}, "sv", 500) == LanguageGuess("de", 0.99)


def test_decide_language_without_prior_takes_the_best() -> None:
    assert decide_language({"de": 0.2, "en": 0.8}, None, 500) == LanguageGuess("en", 0.8)


def test_decide_language_all_zero_is_undecidable() -> None:
    assert decide_language({"de": 0.0, "en": 0.0}, "de", 500) == LanguageGuess(None, 0.0)


def test_decide_language_normalises_the_prior() -> None:
    assert decide_language({"uk": 0.95, "ru": 0.05}, "UA", 500) == LanguageGuess("uk", 0.95)
    assert decide_language({"en": 0.95}, "en-GB", 10) == LanguageGuess("en", 0.95)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("de-DE", "de"), ("en_US", "en"), ("RU", "ru"), ("ua", "uk"), ("ukr", "uk"), (" de ", "de")],
)
def test_normalize_language_tag(tag: str, expected: str) -> None:
    assert normalize_language_tag(tag) == expected


@pytest.mark.parametrize("tag", [None, "", "x", "deutsch", "12", "-de"])
def test_normalize_language_tag_rejects_non_codes(tag: str | None) -> None:
    assert normalize_language_tag(tag) is None


# -- choose_text (pure) ------------------------------------------------------------------------


def test_choose_text_prefers_a_long_page() -> None:
    text, source, reason = choose_text(
        _page(LONG), "short summary", min_chars=MIN_CHARS, page_error=None
    )
    assert (text, source, reason) == (LONG, TextSource.PAGE, None)


def test_choose_text_without_page_uses_feed_and_the_given_reason() -> None:
    text, source, reason = choose_text(
        None, "  summary  ", min_chars=MIN_CHARS, page_error="page blocked: HTTP 403"
    )
    assert (text, source, reason) == ("summary", TextSource.FEED, "page blocked: HTTP 403")


def test_choose_text_short_page_is_kept_when_the_feed_text_is_shorter() -> None:
    text, source, reason = choose_text(_page("z" * 150), "y" * 50, min_chars=300, page_error=None)
    assert (text, source, reason) == ("z" * 150, TextSource.PAGE, None)
    text, source, reason = choose_text(_page("z" * 150), "", min_chars=300, page_error=None)
    assert (text, source, reason) == ("z" * 150, TextSource.PAGE, None)


def test_choose_text_page_too_short() -> None:
    text, source, reason = choose_text(_page("z" * 123), "y" * 200, min_chars=300, page_error=None)
    assert (text, source, reason) == ("y" * 200, TextSource.FEED, "page text too short (123 chars)")


def test_choose_text_page_shorter_than_feed() -> None:
    # A feed with full content beats a page that only gave a teaser or part of the article.
    _, source, reason = choose_text(_page("z" * 800), "y" * 900, min_chars=300, page_error=None)
    assert source is TextSource.FEED
    assert reason == "page text shorter than feed text (800 < 900 chars)"


def test_choose_text_equal_lengths_keep_the_page() -> None:
    _, source, _ = choose_text(_page("z" * 100), "y" * 100, min_chars=300, page_error=None)
    assert source is TextSource.PAGE


def test_choose_text_empty_page_text() -> None:
    assert choose_text(_page("  "), "", min_chars=300, page_error=None)[1:] == (
        TextSource.FEED,
        "page has no text",
    )


CONSENT_DE = (
    "Wir verwenden Cookies und ähnliche Technologien. Mit Ihrer Zustimmung können Sie unser "
    "Angebot mit Werbung nutzen oder werbefrei im PUR-Abo."
)
PAYWALL_EN = "This article is for subscribers only. Subscribe to continue reading."
PAYWALL_RU = "Этот материал доступен только для подписчиков. Подпишитесь, чтобы читать дальше."
PAYWALL_UK = "Цей матеріал доступний лише для передплатників. Оформіть передплату, щоб читати далі."


@pytest.mark.parametrize("stub", [CONSENT_DE, PAYWALL_EN, PAYWALL_RU, PAYWALL_UK])
def test_choose_text_prefers_feed_over_a_wall_stub(stub: str) -> None:
    # Even when the stub is longer than the feed text and over min_chars.
    page = _page(stub * 3)
    text, source, reason = choose_text(page, "Kurz.", min_chars=100, page_error=None)
    assert (text, source) == ("Kurz.", TextSource.FEED)
    assert reason is not None
    assert reason.startswith("page looks like a consent or paywall stub")


def test_long_articles_mentioning_consent_words_are_not_walls() -> None:
    article = (
        "Die Zustimmung des Parlaments zum Friedensplan gilt als sicher. " * 10
        + "Datenschutz spielte in der Debatte keine Rolle. " * 20
    )
    assert len(article) > 1500
    assert not looks_like_wall(article)
    short_news = (
        "Die Zustimmung des Parlaments zum Friedensplan gilt als sicher, sagte der Sprecher.",
        "Talks about the ceasefire will continue on Monday, officials said.",
        "Суд избрал обвиняемому меру пресечения в виде подписки о невыезде.",
        "Стороны согласились продолжить переговоры на следующей неделе.",
        "Згодом сторони погодилися продовжити переговори наступного тижня.",
    )
    for text in short_news:  # at most one generic word: not enough
        assert not looks_like_wall(text), text


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("HTTP 403", "page blocked: HTTP 403"),
        ("https://a.example/x: HTTP 451", "page blocked: https://a.example/x: HTTP 451"),
        ("HTTP 500", "page not fetched: HTTP 500"),
        ("read timeout", "page not fetched: read timeout"),
        (None, "page not fetched"),
    ],
)
def test_fetch_failure_reason(error: str | None, reason: str) -> None:
    assert fetch_failure_reason(error) == reason


# -- extract_page helpers ------------------------------------------------------------------------


def _tree(head: str) -> HtmlElement:
    tree = trafilatura.load_html(f"<html><head>{head}</head><body><p>x</p><p>y</p></body></html>")
    assert tree is not None
    return tree


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ('<link rel="canonical" href="/a/b?id=1#top">', "https://news.example/a/b?id=1"),
        ('<link rel="Canonical" href="//cdn.example/x">', "https://cdn.example/x"),
        ('<meta property="og:url" content="https://news.example/og">', "https://news.example/og"),
        ('<link rel="canonical" href="https://news.example/">', None),  # home page: ignored
        ('<link rel="canonical" href="javascript:alert(1)">', None),
        ('<link rel="canonical" href="mailto:a@b.example">', None),
        ('<link rel="canonical" href="   ">', None),
        ("", None),
    ],
)
def test_canonical_url(head: str, expected: str | None) -> None:
    tree = _tree(head)
    assert canonical_url(tree, "https://news.example/2024/article?utm=rss") == expected


def test_canonical_falls_back_to_og_url_when_the_link_is_unusable() -> None:
    head = (
        '<link rel="canonical" href="ftp://files.example/a">'
        '<meta property="og:url" content="https://news.example/story">'
    )
    assert canonical_url(_tree(head), "https://news.example/x") == "https://news.example/story"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-12T14:35:00+0100", datetime(2024, 3, 12, 13, 35, tzinfo=UTC)),
        ("2024-03-12T14:35:00", datetime(2024, 3, 12, 14, 35, tzinfo=UTC)),
        ("2024-03-12", datetime(2024, 3, 12, tzinfo=UTC)),
        ("March 2024", None),
        (None, None),
    ],
)
def test_parse_published(value: str | None, expected: datetime | None) -> None:
    assert parse_published(value) == expected


# -- extraction and process_page on the fixture pages ---------------------------------------------


@pytest.mark.parametrize("fixture", FIXTURE_PAGES, ids=lambda f: f.language)
def test_extract_page_fixture(fixture: Fixture) -> None:
    page = extract_page(_html(fixture), fixture.url)
    assert page.title == fixture.title
    assert page.author == fixture.author
    assert page.canonical_url == fixture.canonical
    assert page.published == fixture.published
    assert page.language == fixture.language  # from <html lang>
    for snippet in fixture.must_contain:
        assert snippet in page.text
    for snippet in fixture.must_drop:
        assert snippet not in page.text
    assert "\n" in page.text  # paragraphs stay apart


def test_extract_page_accepts_str() -> None:
    fixture = FIXTURE_PAGES[0]
    as_text = _html(fixture).decode("utf-8")
    assert extract_page(as_text, fixture.url) == extract_page(_html(fixture), fixture.url)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "cp1251"])
def test_extract_page_sniffs_encodings(encoding: str) -> None:
    fixture = FIXTURE_PAGES[3]  # Ukrainian
    html = _html(fixture).decode("utf-8").encode(encoding)
    page = extract_page(html, fixture.url)
    assert page.title == fixture.title
    assert fixture.must_contain[0] in page.text


def test_extract_page_decodes_gzip_bodies() -> None:
    fixture = FIXTURE_PAGES[3]
    assert extract_page(gzip.compress(_html(fixture)), fixture.url).title == fixture.title


@pytest.mark.parametrize("fixture", FIXTURE_PAGES, ids=lambda f: f.language)
def test_process_page_fixture(fixture: Fixture) -> None:
    result = process_page(
        _html(fixture),
        fixture.url,
        FEED_SUMMARY[fixture.language],
        fixture.language,
        min_chars=MIN_CHARS,
        page_error=None,
    )
    assert result.text_source is TextSource.PAGE
    assert result.fallback_reason is None
    assert result.language == fixture.language
    assert result.language_confidence > 0.9
    assert (result.title, result.author) == (fixture.title, fixture.author)
    assert result.canonical_url == fixture.canonical
    assert result.published == fixture.published
    assert fixture.must_contain[0] in result.text


@pytest.mark.parametrize(("file", "declared", "actual"), [("uk", "ru", "uk"), ("ru", "uk", "ru")])
def test_process_page_detects_uk_ru_despite_a_wrong_feed_language(
    file: str, declared: str, actual: str
) -> None:
    fixture = next(f for f in FIXTURE_PAGES if f.language == file)
    result = process_page(
        _html(fixture), fixture.url, "", declared, min_chars=MIN_CHARS, page_error=None
    )
    assert result.language == actual


def test_process_page_blocked_page_uses_feed_text() -> None:
    result = process_page(
        None,
        "https://a.example/x",
        FEED_SUMMARY["uk"],
        "uk",
        min_chars=MIN_CHARS,
        page_error="HTTP 403",
    )
    assert result == ProcessedText(
        text=FEED_SUMMARY["uk"],
        text_source=TextSource.FEED,
        language="uk",
        language_confidence=result.language_confidence,
        fallback_reason="page blocked: HTTP 403",
    )


def test_process_page_ignores_the_body_of_a_failed_fetch() -> None:
    fixture = FIXTURE_PAGES[0]
    result = process_page(
        _html(fixture), fixture.url, "Kurz.", "de", min_chars=MIN_CHARS, page_error="HTTP 500"
    )
    assert (result.text, result.fallback_reason) == ("Kurz.", "page not fetched: HTTP 500")


def test_process_page_consent_wall_falls_back_to_feed() -> None:
    html = (FIXTURES / "de_consent_wall.html").read_bytes()
    feed = FEED_SUMMARY["de"]
    result = process_page(html, "https://a.example/x", feed, "de", min_chars=100, page_error=None)
    assert (result.text, result.text_source) == (feed, TextSource.FEED)
    assert result.fallback_reason is not None
    assert "consent or paywall" in result.fallback_reason
    assert result.title is None
    assert result.canonical_url is None
    assert result.language == "de"


def test_process_page_short_page() -> None:
    html = b"<html><body><article><p>Kurze Meldung: Gespraeche vertagt.</p></article></body></html>"
    url = "https://a.example/x"
    result = process_page(html, url, "y" * 200, "de", min_chars=MIN_CHARS, page_error=None)
    assert (result.text_source, result.fallback_reason) == (
        TextSource.FEED,
        "page text too short (34 chars)",
    )
    result = process_page(html, url, "", "de", min_chars=MIN_CHARS, page_error=None)
    assert (result.text, result.text_source) == (
        "Kurze Meldung: Gespraeche vertagt.",
        TextSource.PAGE,
    )


def test_process_page_extraction_failure_becomes_the_reason() -> None:
    result = process_page(
        b"", "https://a.example/x", FEED_SUMMARY["en"], "en", min_chars=MIN_CHARS, page_error=None
    )
    assert result.text_source is TextSource.FEED
    assert result.fallback_reason == "extraction failed: empty page"
    assert result.language == "en"


# -- hostile input -------------------------------------------------------------------------------

_PARA = (
    "<p>Die Delegationen verhandelten am Montag in Genf weiter über eine Waffenruhe und den "
    "Austausch von Gefangenen, teilte das Außenministerium mit.</p>"
)
_NAV = "<div class='teaser'><a href='/x'>Weitere Meldungen aus der Region</a></div>"


def _five_mb(block: str) -> bytes:
    repeat = 5_000_000 // len(block.encode())
    return f"<html><body><article>{_PARA * 3}</article>{block * repeat}</body></html>".encode()


HOSTILE = {
    "empty": b"",
    "whitespace": b" \n\t ",
    "random-bytes": random.Random(7).randbytes(200_000),
    "html-then-random": b"<html><body>" + random.Random(8).randbytes(100_000),
    "nul-bytes": b"\x00" * 50_000,
    "pdf": b"%PDF-1.4\n" + random.Random(9).randbytes(20_000),
    "deeply-nested": b"<html><body>" + b"<div>" * 100_000 + b"x" + b"</div>" * 100_000,
    "unclosed-tags": b"<html><body>" + b"<p><b><i><span>" * 20_000,
    "5mb-link-farm": _five_mb(_NAV),
    "5mb-paragraphs": _five_mb(_PARA),
    "gzip-bomb": gzip.compress(b"<html><body>" + b"<p>aaaa</p>" * 3_000_000),
    "not-html": b"just some words, no markup at all",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_neither_crashes_nor_hangs(name: str) -> None:
    html = HOSTILE[name]
    # Every outcome but these two (a crash, a hang, another exception) fails the test.
    with contextlib.suppress(ExtractionError):
        assert extract_page(html, "https://a.example/hostile").text
    result = process_page(
        html, "https://a.example/hostile", "Feed text.", "de", min_chars=MIN_CHARS, page_error=None
    )
    assert result.text_source in (TextSource.PAGE, TextSource.FEED)


def test_binary_junk_is_refused_as_binary() -> None:
    with pytest.raises(ExtractionError, match="binary"):
        extract_page(HOSTILE["random-bytes"], "https://a.example/x")


def test_huge_trees_are_refused_before_extraction() -> None:
    html = (
        b"<html><body>"
        + b"<div><a href='/x'>link</a></div>" * (MAX_ELEMENTS // 2)
        + b"</body></html>"
    )
    with pytest.raises(ExtractionError, match="too complex"):
        extract_page(html, "https://a.example/x")


# -- language identifier -------------------------------------------------------------------------


def test_ukrainian_with_i_and_shcha_is_not_kazakh() -> None:
    # lingua's letter rules call a text with both "і" and "щ" Kazakh; kk is kept out of the set.
    text = (
        "стані не більше 150 км від місця виконання робіт.\nТакож вимоги щодо розташування "
        "асфальтного заводу неподалік від місця робіт виявились у тендерній до"
    )
    assert get_identifier().identify(text).language == "uk"


def test_identify_empty_and_symbols() -> None:
    identifier = get_identifier()
    assert identifier.identify("   ", prior="de") == LanguageGuess(None, 0.0)
    assert (
        identifier.identify("12345 67890 !!! 2024-03-12 ... 0000000000", prior=None).language
        is None
    )


def test_identifier_rejects_unknown_codes() -> None:
    with pytest.raises(ValueError, match="xx"):
        LanguageIdentifier(["de", "xx"])


def test_get_identifier_is_one_per_process_across_threads() -> None:
    with ThreadPoolExecutor(8) as pool:
        identifiers = list(pool.map(lambda _: get_identifier(), range(16)))
    assert all(i is identifiers[0] for i in identifiers)


def test_lazy_build_happens_once_under_concurrency() -> None:
    identifier = LanguageIdentifier(["de", "en"])
    text = "Die Delegationen verhandelten am Montag in Genf weiter über eine Waffenruhe."
    with ThreadPoolExecutor(8) as pool:
        guesses = list(pool.map(lambda _: identifier.identify(text), range(16)))
    assert {g.language for g in guesses} == {"de"}


# -- concurrency and processors ------------------------------------------------------------------


def test_extract_page_from_many_threads_at_once() -> None:
    # Unserialised, concurrent trafilatura calls crash the interpreter (adbar/trafilatura#925).
    barrier = threading.Barrier(8)

    def work(i: int) -> str:
        barrier.wait()
        fixture = FIXTURE_PAGES[i % len(FIXTURE_PAGES)]
        return extract_page(_html(fixture), fixture.url).text

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(work, range(32)))
    assert len(set(texts)) == len(FIXTURE_PAGES)


def _fixture_jobs() -> list[tuple[bytes | None, str, str, str, str | None]]:
    jobs: list[tuple[bytes | None, str, str, str, str | None]] = [
        (_html(f), f.url, FEED_SUMMARY[f.language], f.language, None) for f in FIXTURE_PAGES
    ]
    jobs.append(
        (
            (FIXTURES / "de_consent_wall.html").read_bytes(),
            "https://a.example/w",
            "Kurz.",
            "de",
            None,
        )
    )
    jobs.append((None, "https://a.example/blocked", "Summary text.", "en", "HTTP 403"))
    jobs.append((b"\x00\x01" * 1000, "https://a.example/junk", "Summary text.", "en", None))
    return jobs


def _expected() -> list[ProcessedText]:
    return [
        process_page(html, url, feed, lang, min_chars=MIN_CHARS, page_error=error)
        for html, url, feed, lang, error in _fixture_jobs()
    ]


async def _run_all(
    processor: InlinePageProcessor | ProcessPoolPageProcessor,
) -> list[ProcessedText]:
    return list(
        await asyncio.gather(
            *(
                processor.process(html, url, feed, lang, page_error=error)
                for html, url, feed, lang, error in _fixture_jobs()
            )
        )
    )


def test_inline_processor_matches_process_page() -> None:
    processor = make_page_processor(0, MIN_CHARS)
    assert isinstance(processor, InlinePageProcessor)
    try:
        assert asyncio.run(_run_all(processor)) == _expected()
    finally:
        processor.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_process_pool_matches_inline_and_survives_a_worker_crash() -> None:
    processor = make_page_processor(2, MIN_CHARS)
    assert isinstance(processor, ProcessPoolPageProcessor)
    try:
        assert asyncio.run(_run_all(processor)) == _expected()

        # Kill a worker the way a segfault would; the next page fails cleanly, then all is well.
        crash = processor._current_pool().submit(os._exit, 11)
        with pytest.raises(BrokenProcessPool):
            crash.result(timeout=60)
        fixture = FIXTURE_PAGES[0]

        async def one() -> ProcessedText:
            return await processor.process(_html(fixture), fixture.url, "", "de")

        with pytest.raises(ExtractionError, match="crashed"):
            asyncio.run(one())
        assert processor.restarts == 1
        assert asyncio.run(one()).language == "de"
    finally:
        processor.close()


def _ends(pid: int | None, within: float = 10.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``within`` seconds. Not
    ``Process.is_alive()``: when the pool's own thread reaps the worker first, that reports a
    dead process as alive for good."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_page_past_the_time_limit_replaces_the_stuck_worker() -> None:
    """A worker cannot be interrupted: past ``extract.timeout`` it is killed, the pool replaced,
    and the page fails with a retryable error; the next page goes to a fresh worker."""
    processor = make_page_processor(1, MIN_CHARS, timeout=60)
    assert isinstance(processor, ProcessPoolPageProcessor)
    fixture = FIXTURE_PAGES[0]

    async def one() -> ProcessedText:
        return await processor.process(_html(fixture), fixture.url, "", "de")

    try:
        assert asyncio.run(one()).language == "de"  # the worker is up
        pool = processor._current_pool()
        [worker] = pool._processes.values()  # type: ignore[attr-defined]
        # a page that never ends, as a pathological document would: the worker sleeps
        stuck = processor._current_pool().submit(time.sleep, 600)
        processor.timeout = 1.0

        async def stuck_page() -> ProcessedText:
            # the pool is busy with the stuck job, so the page waits for it, then times out
            return await asyncio.wait_for(one(), 30)

        with pytest.raises(ExtractionError, match="longer than 1s; worker replaced"):
            asyncio.run(stuck_page())
        assert _ends(worker.pid)
        assert processor.restarts == 1
        with pytest.raises(BrokenProcessPool):
            stuck.result(timeout=10)
        processor.timeout = 60.0
        assert asyncio.run(one()).language == "de"
    finally:
        processor.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_feeds_are_parsed_in_the_workers_under_the_same_time_limit() -> None:
    from monitor.errors import FeedParseError
    from monitor.feeds import parse_feed

    feed = (FIXTURES.parent / "feeds" / "uk_rdf.xml").read_bytes()
    url = "https://novyny.example/rss/"
    processor = make_page_processor(1, MIN_CHARS, timeout=60)
    inline = make_page_processor(0, MIN_CHARS)
    try:
        expected = parse_feed(feed, url, {})
        assert asyncio.run(processor.parse_feed(feed, url, {})) == expected
        assert asyncio.run(inline.parse_feed(feed, url, {})) == expected
        stuck = processor._current_pool().submit(time.sleep, 600)  # a parse that never ends
        processor.timeout = 1.0
        with pytest.raises(FeedParseError, match="parsing took longer than 1s"):
            asyncio.run(asyncio.wait_for(processor.parse_feed(feed, url, {}), 30))
        with pytest.raises(BrokenProcessPool):
            stuck.result(timeout=10)
        processor.timeout = 60.0
        assert asyncio.run(processor.parse_feed(feed, url, {})) == expected
    finally:
        processor.close()
        inline.close()


def test_make_page_processor_validates() -> None:
    with pytest.raises(ValueError, match="processes"):
        make_page_processor(-1, MIN_CHARS)
    pool = make_page_processor(1, MIN_CHARS)  # workers start on the first page, not here
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(pool.process(None, "https://a.example/x", "", "de"))
