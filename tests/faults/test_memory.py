"""Memory stays bounded while the service meets 50 MB bodies and a gzip bomb, as feeds and as
article pages: the whole ``run_once`` is measured (Python allocations with tracemalloc, and the
process's peak resident size, which also sees zlib's and the sockets' native buffers)."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

from indexer.embed import HashEmbedder
from monitor.config import load_config
from monitor.service import RunSummary, make_app
from monitor.state import open_state_store, sqlite_url
from monitor.types import ArticleStatus, TextSource
from tests.faults.cases import (
    BIG_BODIES,
    BOMB_INFLATED,
    BY_NAME,
    HUGE,
    MAX_BYTES,
    RSS_TYPE,
    Item,
    rss,
    slug,
)
from tests.faults.server import HostileServer, Reply
from tests.support.httpserver import LocalServer
from tests.support.newsfixtures import (
    fixture_articles,
    run_once,
    serve_site,
    site_feeds,
    write_config,
)

MiB = 2**20
#: what the run may allocate at its peak: every big fetch in flight at once may hold up to
#: max_bytes (plus a 64 KiB decoding step); the hostile bodies (feeds and pages) add up to ~570 MB
PYTHON_PEAK_LIMIT = 4 * len(BIG_BODIES) * MAX_BYTES  # 16 MB; measured ~5 MiB
#: measured ~11 MiB on 2 cores; one 50 MB body read whole would exceed it on its own
RSS_GROWTH_LIMIT = 40 * MiB


def _run(config: Path) -> RunSummary:
    app = make_app(load_config(config), embedder=HashEmbedder())

    return run_once(app)


def _status_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, f"{field} missing from /proc/self/status"
    return int(match.group(1))


def _reset_peak_rss() -> bool:
    """Make VmHWM start again from the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def test_big_bodies_and_bombs_cost_bounded_memory(tmp_path: Path) -> None:
    # no timeout case here: a generous one, so that tracemalloc's overhead on a busy machine
    # cannot turn "too large" into "too slow"
    fetch = {"timeout": "20s", "max_bytes": MAX_BYTES, "per_host_concurrency": 64}
    with HostileServer() as hostile, LocalServer() as site:
        feeds = site_feeds(serve_site(site))
        # a run over the good feeds first: imports, models and caches are not what is measured
        (tmp_path / "warm").mkdir()
        _run(write_config(tmp_path / "warm", feeds, fetch=fetch))

        for name in BIG_BODIES:
            feeds[name] = (BY_NAME[name].install(hostile, f"/feed/{slug(name)}"), "en")
        items = [
            Item(f"Big page: {name}", BY_NAME[name].install(hostile, f"/page/{slug(name)}"),
                 f"Feed text of the {name} page.")
            for name in BIG_BODIES
        ]  # fmt: skip
        feeds["Big pages"] = (hostile.route("/big.rss", Reply(rss(items), content_type=RSS_TYPE)),
                              "en")  # fmt: skip
        (tmp_path / "hostile").mkdir()
        config = write_config(tmp_path / "hostile", feeds, fetch=fetch)

        peak_rss_measured = _reset_peak_rss()
        rss_before = _status_kib("VmRSS")
        tracemalloc.start()
        try:
            summary = _run(config)
            _, python_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rss_growth = (_status_kib("VmHWM") - rss_before) * 1024

        sent = {f"/{where}/{slug(n)}": hostile.bytes_sent(f"/{where}/{slug(n)}")
                for n in BIG_BODIES for where in ("feed", "page")}  # fmt: skip

    assert python_peak < PYTHON_PEAK_LIMIT, f"peak {python_peak / MiB:.1f} MiB"
    assert PYTHON_PEAK_LIMIT < HUGE < BOMB_INFLATED
    # (where the peak cannot be reset, VmHWM is the whole process's: only the above then holds)
    if peak_rss_measured:
        assert rss_growth < RSS_GROWTH_LIMIT, f"peak RSS grew {rss_growth / MiB:.1f} MiB"
    # the run itself went on: every big feed failed with its reason, the rest was indexed
    assert summary.feeds_failed == len(BIG_BODIES)
    store = open_state_store(sqlite_url(tmp_path / "hostile" / "data"))
    try:
        states = {f.name: f for f in store.list_feeds()}
        articles = store.list_articles()
    finally:
        store.close()
    for name in BIG_BODIES:
        assert f"larger than {MAX_BYTES} bytes" in (states[name].last_error or "")
    big_pages = [a for a in articles if a.feed == "Big pages"]
    assert len(big_pages) == len(BIG_BODIES)
    for article in big_pages:
        assert article.status is ArticleStatus.INDEXED
        assert article.text_source is TextSource.FEED
        assert "page refused: response larger than" in (article.last_error or "")
    assert len(articles) == len(fixture_articles()) + len(BIG_BODIES)
    assert max(sent.values()) < HUGE // 3, sent  # nobody read the 50 MB to the end
