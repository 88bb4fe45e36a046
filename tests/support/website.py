"""The web page's test setup: the fixture site ingested and indexed with the real bundled model
(four languages), a topic whose alert went out through a local webhook, and the app that serves
the pages, in-process (TestClient) or as a real uvicorn server on a free port."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from monitor.api import ApiServer, create_api
from monitor.config import load_config
from monitor.service import App, make_app
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import (
    TALKS_TOPIC,
    free_port,
    run_once,
    serve_site,
    site_feeds,
    write_config,
)

TOPIC = {**TALKS_TOPIC, "channels": ["hook"]}
BROKEN_FEED = "Broken"


@dataclass(frozen=True)
class Site:
    app: App
    base_url: str  # the fixture news site


@contextlib.contextmanager
def indexed_site(tmp_path: Path) -> Iterator[Site]:
    """``newsmon run --once`` over the fixture site (plus a feed answering 503), then a fresh
    app on the same data, as ``newsmon run`` serves it."""
    with LocalServer() as server:
        feeds = site_feeds(serve_site(server))
        broken = server.route("/broken.rss", Response(b"down", status=503))
        feeds[BROKEN_FEED] = (broken, "en")
        server.route("/hook", Response(b"ok", content_type="text/plain"))
        config = load_config(write_config(
            tmp_path, feeds, topics=[TOPIC],
            channels={"hook": {"type": "webhook", "url": server.url("/hook")}},
            alert_backfill="3650d",  # the fixture entries are days old: alert on them
        ))  # fmt: skip
        run_once(make_app(config))
        app = make_app(config)
        try:
            yield Site(app, server.base_url)
        finally:
            app.pages.close()
            app.indexer.vectors.close()
            app.store.close()


def web_api(app: App) -> FastAPI:
    """The API with its pages (``create_api`` mounts them)."""
    return create_api(app)


@contextlib.contextmanager
def serving(api: FastAPI) -> Iterator[str]:
    """``api`` behind a real uvicorn server on a free port, in a thread; yields its base URL."""
    port = free_port()
    server = ApiServer(api, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the web server did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
