"""The web page in a real headless browser: Debian's chromium, driven by Playwright (never a
downloaded browser), against the app served by uvicorn on a free port, over the fixture site
indexed in four languages with the real bundled model. Skipped with the reason when either is
missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.website import TOPIC, indexed_site, serving, web_api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: apt-get install chromium (Playwright's own browsers are "
        "never downloaded)",
        allow_module_level=True,
    )
try:
    from playwright.sync_api import Browser, Page, Request, sync_playwright
except ImportError as e:
    pytest.skip(
        f"playwright (Python) is not importable ({e}): pip install playwright; no browser "
        f"download is needed, the test drives {CHROMIUM}",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with (
        indexed_site(tmp_path_factory.mktemp("browser")) as site,
        serving(web_api(site.app)) as url,
    ):
        yield url


@pytest.fixture(scope="module")
def browser(base_url: str) -> Iterator[Browser]:
    # after base_url: Playwright's sync API keeps an event loop running in this thread, where
    # the indexing's asyncio.run could not start one
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[tuple[Page, list[str]]]:
    """A fresh page, and every URL it requested that is not the app's."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(10_000)
    elsewhere: list[str] = []

    def note(request: Request) -> None:
        if not request.url.startswith((base_url, "data:")):
            elsewhere.append(request.url)

    page.on("request", note)
    yield page, elsewhere
    context.close()


def test_a_search_in_the_browser_finds_coverage_in_several_languages(
    page: tuple[Page, list[str]], base_url: str, tmp_path: Path
) -> None:
    tab, elsewhere = page
    errors: list[Any] = []
    tab.on("pageerror", lambda error: errors.append(error))
    tab.goto(f"{base_url}/")
    assert tab.title() == "Search · newsmon"
    tab.get_by_label("Query, in any language").fill("peace talks in Abu Dhabi")
    tab.get_by_role("button", name="Search").click()
    tab.wait_for_selector("#results blockquote")

    results = tab.locator("#results")
    heading = results.get_by_role("heading", level=2).inner_text()
    assert heading.endswith("in de, en, ru, uk")
    languages = results.locator("blockquote").evaluate_all("els => els.map(e => e.lang)")
    assert len(set(languages)) >= 2
    assert {"de", "en", "ru", "uk"} <= set(languages)
    assert "Abu Dhabi" in results.locator("mark").all_inner_texts()
    assert "q=peace+talks+in+Abu+Dhabi" in tab.url  # a shareable address
    # the stylesheet applied: the marks are highlighted
    colour = results.locator("mark").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(255, 229, 138)"

    shot = tmp_path / "search.png"
    tab.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not errors
    assert not elsewhere, f"the page loaded resources from elsewhere: {elsewhere}"


def test_the_topic_page_draws_its_coverage_chart(
    page: tuple[Page, list[str]], base_url: str, tmp_path: Path
) -> None:
    tab, elsewhere = page
    tab.goto(f"{base_url}/ui/topics")
    tab.get_by_role("link", name=str(TOPIC["name"])).click()
    chart = tab.get_by_role("img", name="Matched articles per day and language")
    box = chart.bounding_box()
    assert box is not None
    assert box["width"] > 300
    assert box["height"] > 80
    tab.get_by_role("button", name="Run backtest").click()
    tab.wait_for_selector("#backtest .summary")
    assert "matched in" in tab.locator("#backtest .summary").inner_text()
    tab.screenshot(path=str(tmp_path / "topic.png"), full_page=True)
    assert not elsewhere


def test_an_article_is_judged_with_the_topic_pages_button(
    page: tuple[Page, list[str]], base_url: str
) -> None:
    """The browser's own form post passes the cross-site guard (it says Sec-Fetch-Site:
    same-origin and names this origin), and the page comes back with the judgement."""
    tab, elsewhere = page
    tab.goto(f"{base_url}/ui/topics/{TOPIC['id']}")
    first = tab.locator("#alerts form.label").first
    first.get_by_role("button", name="Not relevant").click()
    tab.wait_for_selector(".notice")
    assert "Saved: not relevant to this topic." in tab.locator(".notice").inner_text()
    assert "labelled=not-relevant" in tab.url
    judged = tab.locator("#alerts form.label").first
    assert judged.locator(".labelled").inner_text() == "You judged it not relevant."
    assert judged.get_by_role("button", name="Not relevant").get_attribute("aria-pressed") == "true"
    assert not elsewhere
