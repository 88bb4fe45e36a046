"""``newsmon`` command line: a thin layer over ``service.make_app`` and the state store.

Exit codes: 0 success; 2 usage or configuration error; 3 state store error; 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

from monitor.errors import ConfigError, NewsmonError, StorageError
from monitor.types import Article, FeedState, utcnow

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_STORAGE = 0, 1, 2, 3
DEFAULT_CONFIG = "feeds.yaml"

log = logging.getLogger("newsmon")
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    from monitor.redaction import SecretRedactor, config_secrets, installed

    args = _parser().parse_args(argv)
    _setup_logging(args)
    redactor = SecretRedactor(())  # config errors name no secret (monitor.config masks them)
    try:
        config = _load_config(args.config)
        # every log line from here on, whoever writes it (httpx, a driver, a traceback)
        redactor = SecretRedactor(config_secrets(config))
        with installed(redactor):
            return int(args.handler(args, config))
    except ConfigError as e:
        print(f"newsmon: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as e:
        print(f"newsmon: state store error: {redactor.redact(str(e))}", file=sys.stderr)
        return EXIT_STORAGE
    except NewsmonError as e:
        print(f"newsmon: {redactor.redact(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="newsmon", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        default=os.environ.get("NEWSMON_CONFIG", DEFAULT_CONFIG),
        help="configuration file (default: $NEWSMON_CONFIG or ./feeds.yaml)",
    )
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default) or ERROR")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service (scheduler)")
    run.add_argument("--once", action="store_true", help="poll every feed once, finish, exit")
    run.set_defaults(handler=cmd_run)

    feeds = sub.add_parser("feeds", help="feed health: last poll, status, items, errors")
    feeds.add_argument("--json", action="store_true")
    feeds.set_defaults(handler=cmd_feeds)

    arts = sub.add_parser("articles", help="stored articles")
    arts.add_argument("--json", action="store_true")
    arts.add_argument("--since", type=_duration_arg, help="e.g. 7d, 12h (by discovery time)")
    arts.add_argument("--feed", help="only this feed (by name)")
    arts.add_argument("--limit", type=int, default=50, help="at most N (default 50; 0 = all)")
    arts.add_argument("--full", action="store_true", help="include the full text")
    arts.set_defaults(handler=cmd_articles)

    search = sub.add_parser("search", help="semantic search over all coverage, any language")
    search.add_argument("query")
    search.add_argument("--lang", help="only these languages, e.g. de,uk")
    search.add_argument("--source", action="append", help="only this feed (repeatable)")
    search.add_argument("--since", help="e.g. 7d, 12h or 2026-11-01")
    search.add_argument("--until", help="e.g. 2026-11-28 or 1d")
    search.add_argument("--limit", type=int, default=10, help="at most N hits (default 10)")
    search.add_argument("--by-story", action="store_true", help="fold hits into stories")
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=cmd_search)

    reindex = sub.add_parser("reindex", help="re-embed stored articles with the configured model")
    reindex.add_argument(
        "--all", action="store_true", help="re-embed everything, not only other models' vectors"
    )
    reindex.set_defaults(handler=cmd_reindex)

    alerts = sub.add_parser("alerts", help="decided alerts and their delivery per channel")
    alerts.add_argument("--json", action="store_true")
    alerts.add_argument("--topic", help="only this topic (by id)")
    alerts.add_argument("--since", type=_duration_arg, help="e.g. 7d, 12h (by last update)")
    alerts.add_argument("--limit", type=int, default=50, help="at most N (default 50; 0 = all)")
    alerts.add_argument(
        "--retry-failed", nargs="?", const="*", metavar="CHANNEL",
        help="queue the failed deliveries (of CHANNEL, or all) again, once the cause is fixed",
    )  # fmt: skip
    alerts.set_defaults(handler=cmd_alerts)

    topics = sub.add_parser("topics", help="tracked topics: list, backtest, relevance labels")
    tsub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    tlist = tsub.add_parser("list", help="the configured topics, with match and alert counts")
    tlist.add_argument("--json", action="store_true")
    tlist.set_defaults(handler=cmd_topics_list)
    ttest = tsub.add_parser("test", help="backtest: what the topic would have alerted on")
    ttest.add_argument("topic", metavar="ID")
    ttest.add_argument("--since", default="30d", help="stored coverage since (default 30d)")
    ttest.add_argument("--until", help="and until (default now)")
    ttest.add_argument("--json", action="store_true")
    ttest.set_defaults(handler=cmd_topics_test)
    tlabel = tsub.add_parser("label", help="judge an article for a topic (matching learns it)")
    tlabel.add_argument("topic", metavar="ID")
    tlabel.add_argument("url", metavar="URL")
    verdict = tlabel.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--relevant", dest="relevant", action="store_true")
    verdict.add_argument("--not-relevant", dest="relevant", action="store_false")
    tlabel.set_defaults(handler=cmd_topics_label)

    digest = sub.add_parser("digest", help="the weekly digest: print, write or send it")
    when = digest.add_mutually_exclusive_group()
    when.add_argument("--week", help="an ISO week, e.g. 2026-W05 (default: the last complete)")
    when.add_argument("--since", help="a period up to now instead, e.g. 7d")
    digest.add_argument("--topic", help="only this topic (by id)")
    digest.add_argument("--format", choices=("text", "html", "md", "json"), default="text")
    digest.add_argument("--out", help="write to this file instead of standard output")
    digest.add_argument("--send", action="store_true",
                        help="send it on the digest's channels (digest.channels)")  # fmt: skip
    digest.set_defaults(handler=cmd_digest)

    serve = sub.add_parser("serve", help="the HTTP API and web page alone, without polling")
    serve.set_defaults(handler=cmd_serve)

    check = sub.add_parser("check-config", help="validate the configuration and show it")
    check.set_defaults(handler=cmd_check_config)
    return p


def _duration_arg(text: str) -> timedelta:
    from monitor.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _setup_logging(args: argparse.Namespace) -> None:
    default = "INFO" if args.command == "run" else "WARNING"
    level = (args.log_level or os.environ.get("NEWSMON_LOG_LEVEL") or default).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # third-party chatter (one line per HTTP request) drowns the service's own log
    for noisy in ("httpx", "httpcore", "apscheduler", "trafilatura", "htmldate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load_config(path: str) -> Any:
    from monitor.config import load_config

    return load_config(path)


# -- commands ----------


def cmd_run(args: argparse.Namespace, config: Any) -> int:
    from monitor.service import make_app

    app = make_app(config)
    if not args.once:
        asyncio.run(_closing(app, app.run_forever()))
        return EXIT_OK
    progress_line = ProgressLine(sys.stderr)
    app.progress.on_change = progress_line.update
    summary = asyncio.run(_closing(app, app.run_once()))
    progress_line.done()
    print(_format_summary(summary))
    return EXIT_OK


async def _closing(app: Any, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` and close the app in the same event loop (its HTTP client lives there)."""
    try:
        return await work
    finally:
        await app.aclose()


def _format_summary(summary: Any) -> str:
    s = summary
    return (
        f"polled {s.feeds_polled} feeds ({s.feeds_failed} failed); "
        f"{s.articles_new} new articles; {s.articles_fetched} stored "
        f"({s.articles_from_feed_text} from feed text), {s.articles_duplicate} duplicates, "
        f"{s.articles_failed} failed, {s.articles_pending} pending; "
        f"{s.alerts_queued} alert messages, {s.deliveries_pending} deliveries pending"
    )


def cmd_feeds(args: argparse.Namespace, config: Any) -> int:
    with _store(config) as store:
        stored = {f.name: f for f in store.list_feeds()}
    rows = [
        feed_row(stored.get(f.name) or FeedState(name=f.name, url=f.url, language=f.language))
        for f in config.feeds
    ]
    if args.json:
        _print_json(rows)
    else:
        _print_table(
            [_without_own_url(row) for row in rows],
            [
                ("name", 22), ("language", 4), ("last_polled_at", 20), ("last_status", 6),
                ("items_seen", 5), ("items_new", 4), ("error_count", 5), ("next_poll_at", 20),
                ("last_error", 60),
            ],
        )  # fmt: skip
    return EXIT_OK


def _without_own_url(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its error's leading "<the feed's URL>: " dropped: the table has room for
    60 characters of error, and the URL took most of them (a redirect target stays shown)."""
    error = row["last_error"]
    for url in (row["url"], row["permanent_redirect"]):
        if error and url and error.startswith(f"{url}: "):
            return {**row, "last_error": error[len(url) + 2 :]}
    return row


def feed_row(f: FeedState) -> dict[str, Any]:
    return {
        "name": f.name,
        "url": f.url,
        "language": f.language,
        "title": f.title,
        "last_polled_at": _iso(f.last_polled_at),
        "last_status": f.last_status,
        "items_seen": f.items_seen,
        "items_new": f.items_new,
        "total_articles": f.total_articles,
        "last_new_item_at": _iso(f.last_new_item_at),
        "last_error": f.last_error,
        "error_count": f.error_count,
        "consecutive_failures": f.consecutive_failures,
        "next_poll_at": _iso(f.next_poll_at),
        "interval_seconds": f.interval_seconds,
        "permanent_redirect": f.permanent_redirect,
        "malformed_reason": f.malformed_reason,
    }


def cmd_articles(args: argparse.Namespace, config: Any) -> int:
    if args.feed and args.feed not in {f.name for f in config.feeds}:
        print(f"newsmon: no feed named {args.feed!r} in {config.source}", file=sys.stderr)
        return EXIT_CONFIG
    since = utcnow() - args.since if args.since else None
    with _store(config) as store:
        articles = store.list_articles(since=since, feed=args.feed, limit=args.limit or None)
    rows = [article_row(a, full=args.full) for a in articles]
    if args.json:
        _print_json(rows)
    else:
        _print_table(
            rows,
            [("published", 20), ("language", 4), ("source", 18), ("text_source", 4),
             ("text_length", 6), ("title", 70)],
        )  # fmt: skip
        if args.full:
            for row in rows:
                print(f"\n== {row['title']}\n{row['url']}\n\n{row['text'] or ''}")
    return EXIT_OK


def article_row(a: Article, *, full: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": a.id,
        "url": a.url,
        "canonical_url": a.canonical_url,
        "title": a.title,
        "source": a.feed,
        "language": a.language,
        "published": _iso(a.published_at),
        "discovered_at": _iso(a.discovered_at),
        "fetched_at": _iso(a.fetched_at),
        "status": str(a.status),
        "text_source": str(a.text_source) if a.text_source else None,
        "text_length": a.text_length,
        "last_error": a.last_error,
    }
    if full:
        row["text"] = a.text
    return row


def cmd_search(args: argparse.Namespace, config: Any) -> int:
    from monitor.api import search_filter
    from monitor.remote import ServiceClient

    if not 1 <= args.limit <= 100:
        print("newsmon: --limit must be between 1 and 100", file=sys.stderr)
        return EXIT_CONFIG
    try:
        flt = search_filter(args.lang, args.source, args.since, args.until)
    except ValueError as e:
        print(f"newsmon: {e}", file=sys.stderr)
        return EXIT_CONFIG
    client = ServiceClient.from_config(config)
    if client.running():
        rows = client.search(
            args.query, lang=args.lang, sources=args.source, since=args.since,
            until=args.until, limit=args.limit, by_story=args.by_story,
        )  # fmt: skip
    else:
        rows = _search_locally(config, args.query, flt, args.limit, args.by_story)
    if args.json:
        _print_json(rows)
    elif args.by_story:
        _print_story_hits(rows)
    else:
        _print_hits(rows)
    return EXIT_OK


def _search_locally(
    config: Any, query: str, flt: Any, limit: int, by_story: bool
) -> list[dict[str, Any]]:
    from indexer.search import hit_json, story_hit_json
    from monitor.service import open_searcher

    with open_searcher(config) as searcher:
        if by_story:
            return [story_hit_json(h) for h in searcher.search_stories(query, filter=flt,
                                                                       limit=limit)]  # fmt: skip
        return [hit_json(h) for h in searcher.search(query, filter=flt, limit=limit)]


def _print_hits(rows: list[dict[str, Any]], indent: str = "") -> None:
    if not rows and not indent:
        print("no matches")
    for n, row in enumerate(rows, 1):
        when = (row["published"] or "")[:16].replace("T", " ")
        print(f"{indent}{n:>2}. {row['score']:.3f}  [{row['language']}] {row['source']} · {when}")
        print(f"{indent}    {row['title']}")
        print(f"{indent}    {row['url']}")
        passage = " ".join(str(row["passage"]).split())
        print(f"{indent}    > {passage[:300]}{'…' if len(passage) > 300 else ''}")


def _print_story_hits(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no matches")
    for row in rows:
        story = row["story"]
        if story:
            print(f"■ {story['headline']}  ({story['article_count']} articles; "
                  f"{', '.join(story['languages'])}; {len(story['sources'])} outlets; "
                  f"{story['first_seen'][:10]} → {story['last_seen'][:10]})")  # fmt: skip
        else:
            print("■ (no story yet)")
        _print_hits(row["articles"], indent="   ")
        print()


def cmd_reindex(args: argparse.Namespace, config: Any) -> int:
    from monitor.remote import ServiceClient

    client = ServiceClient.from_config(config)
    if client.running():
        reset = client.reindex(everything=args.all)
        print(f"{reset} articles queued for re-embedding by the running service")
        return EXIT_OK
    from monitor.service import make_app

    app = make_app(config)
    model = None if args.all else app.indexer.embedder.model_id
    reset = app.store.reset_index(model, utcnow())
    progress_line = ProgressLine(sys.stderr)
    app.progress.on_change = progress_line.update
    summary = asyncio.run(_closing(app, app.index_pending()))
    progress_line.done()
    print(f"{reset} articles re-embedded with {app.indexer.embedder.model_id} "
          f"({summary.articles_indexed} indexed)")  # fmt: skip
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace, config: Any) -> int:
    from alerts.report import alert_json

    if args.retry_failed is not None:
        return _retry_failed(config, None if args.retry_failed == "*" else args.retry_failed)
    since = utcnow() - args.since if args.since else None
    names = {t.id: t.name for t in config.topics}
    with _store(config) as store:
        records = store.list_alerts(topic_id=args.topic, since=since, limit=args.limit or None)
    rows = [alert_json(r, names) for r in records]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no alerts")
    for row in rows:
        status = ", ".join(f"{name}: {d['status']}" + (f" ({d['last_error']})"
                           if d["status"] != "sent" and d["last_error"] else "")
                           for name, d in row["deliveries"].items()) or "no channels"  # fmt: skip
        print(f"{row['created_at'][:16].replace('T', ' ')}  [{row['topic']}] {row['headline']}")
        print(f"    {len(row['articles'])} articles, {len(row['messages'])} messages; {status}")
        for article in row["articles"][:5]:
            print(f"    {article['score']:.2f} [{article['language']}] {article['source']}: "
                  f"{article['title']}")  # fmt: skip
    return EXIT_OK


def _retry_failed(config: Any, channel: str | None) -> int:
    if channel is not None and channel not in config.channels:
        known = ", ".join(sorted(config.channels)) or "none"
        print(f"newsmon: no channel {channel!r} in the config (channels: {known})",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    with _store(config) as store:
        count = store.retry_failed_deliveries(channel, utcnow())
    where = f"channel {channel!r}" if channel else "all channels"
    print(f"{count} failed deliveries on {where} queued again; the running service (or the "
          "next `run --once`) sends them")  # fmt: skip
    return EXIT_OK


def cmd_topics_list(args: argparse.Namespace, config: Any) -> int:
    with _store(config) as store:
        matches = store.list_matches()
        records = store.list_alerts()
        labels = store.topic_labels()
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "channels": list(t.channels),
            "languages": list(t.languages),
            "threshold": t.threshold,
            "compete": t.compete,
            "confirm": t.confirm,
            "matches": sum(1 for m in matches if m.topic_id == t.id),
            "alerts": sum(1 for r in records if r.topic_id == t.id),
            "labels": sum(1 for topic, _, _ in labels if topic == t.id),
        }
        for t in config.topics
    ]
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no topics configured (add them under `topics:` in the config)")
    else:
        _print_table(rows, [("id", 24), ("name", 36), ("matches", 8), ("alerts", 7),
                            ("labels", 7)])  # fmt: skip
    return EXIT_OK


def cmd_topics_test(args: argparse.Namespace, config: Any) -> int:
    from indexer.search import parse_when
    from monitor.remote import ServiceClient

    if args.topic not in {t.id for t in config.topics}:
        print(f"newsmon: no topic {args.topic!r} in {config.source}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        since = parse_when(args.since, utcnow())
        until = parse_when(args.until, utcnow()) if args.until else None
    except ValueError as e:
        print(f"newsmon: {e}", file=sys.stderr)
        return EXIT_CONFIG
    client = ServiceClient.from_config(config)
    if client.running():
        result = client.topic_test(args.topic, since=args.since, until=args.until)
    else:
        result = _topic_test_locally(config, args.topic, since, until)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        _print_backtest(result)
    return EXIT_OK


def _topic_test_locally(config: Any, topic: str, since: datetime, until: datetime | None) -> Any:
    from monitor.api import topic_backtest
    from monitor.service import make_app

    app = make_app(config, channels={})

    async def run() -> Any:
        return await asyncio.to_thread(topic_backtest, app, topic, since=since, until=until)

    return asyncio.run(_closing(app, run()))


#: a match below the threshold is one its story's clear match carried (its reason says which)
_CARRIED = "  (just below the threshold: its story matched clearly)"


def _print_backtest(result: dict[str, Any]) -> None:
    print(f"topic {result['topic']}: {result['stories_alerted']} stories would have alerted "
          f"({result['articles_matched']} matching articles)")  # fmt: skip
    refinement = result.get("refinement")
    if refinement is not None and refinement < 1:
        print(f"queries refined on stored coverage: {refinement:.0%} (little confident coverage "
              f"of the topic stored yet: scored mostly by its description; meanwhile a story's "
              f"first alert waits for a second outlet or a clear match, unless the topic sets "
              f"confirm: false)")  # fmt: skip
    for story in result["stories"]:
        print(f"■ {story['headline']}")
        for row in story["articles"]:
            note = _CARRIED if row["score"] < row["threshold"] else ""
            print(f"   {row['score']:.3f}  [{row['language']}] {row['source']}: {row['title']}"
                  f"{note}")  # fmt: skip
    if result["near_misses"]:
        print("closest misses:")
        for row in result["near_misses"]:
            print(f"   {row['score']:.3f} < {row['threshold']:.3f}  [{row['language']}] "
                  f"{row['title']}")  # fmt: skip
    for row in result["changed_by_labels"]:
        before = row["without_labels"]
        print(f"labels changed: {row['title']}: {before['matched']} ({before['score']:.3f}) -> "
              f"{row['matched']} ({row['score']:.3f})")  # fmt: skip


def cmd_topics_label(args: argparse.Namespace, config: Any) -> int:
    from alerts.labels import UnknownArticleError, label_article

    topic_ids = {t.id for t in config.topics}
    if args.topic not in topic_ids:
        print(f"newsmon: no topic {args.topic!r} in {config.source}", file=sys.stderr)
        return EXIT_CONFIG
    with _store(config) as store:
        try:
            article = label_article(store, topic_ids, args.topic, args.url,
                                    relevant=args.relevant, now=utcnow())  # fmt: skip
        except UnknownArticleError:
            print(f"newsmon: no stored article at {args.url}", file=sys.stderr)
            return EXIT_ERROR
    verdict = "relevant" if args.relevant else "not relevant"
    print(f"labelled {article.title!r} {verdict} for topic {args.topic}")
    return EXIT_OK


def cmd_digest(args: argparse.Namespace, config: Any) -> int:
    from alerts.render_digest import digest_html, digest_json, digest_markdown, digest_text
    from monitor.api import build_digest_for

    try:
        with _store(config) as store:
            digest = build_digest_for(config, store, week=args.week, since=args.since,
                                      topic=args.topic)  # fmt: skip
    except ValueError as e:
        print(f"newsmon: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.format == "json":
        output = json.dumps(digest_json(digest), indent=2, ensure_ascii=False)
    else:
        render = {"text": digest_text, "html": digest_html, "md": digest_markdown}[args.format]
        output = render(digest)
    if args.out:
        Path(args.out).write_text(output, "utf-8")
    elif not args.send:
        print(output)
    if args.send:
        return _send_digest(config, digest.window, args.topic)
    return EXIT_OK


def _send_digest(config: Any, window: Any, topic: str | None) -> int:
    from alerts.digest_job import send_digest
    from monitor.service import make_channels

    channels = {n: c for n, c in make_channels(config).items() if n in config.digest.channels}
    if not channels:
        print("newsmon: no enabled channel in digest.channels to send it on", file=sys.stderr)
        return EXIT_CONFIG
    topics = [t for t in config.topics if topic is None or t.id == topic]

    async def send() -> Any:
        try:
            with _store(config) as store:
                return await send_digest(store, topics, window, channels, utcnow(), force=True)
        finally:
            for channel in channels.values():
                await channel.aclose()

    report = asyncio.run(send())
    for name in report.sent:
        print(f"digest {report.digest_id} sent on {name}")
    for name, error in report.failed:
        print(f"newsmon: digest on {name} failed: {error}", file=sys.stderr)
    return EXIT_ERROR if report.failed else EXIT_OK


def cmd_serve(args: argparse.Namespace, config: Any) -> int:
    from monitor.service import make_app

    app = make_app(config, channels={})
    asyncio.run(_closing(app, app.serve_api()))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace, config: Any) -> int:
    topics = len(config.topics)
    channels = len(config.channels)
    print(f"{config.source}: OK ({len(config.feeds)} feeds, {topics} topics, {channels} channels)")
    print(json.dumps(config.redacted_dict(), indent=2, ensure_ascii=False, default=str))
    return EXIT_OK


# -- helpers ----------


class _store:
    """Open the configured state store for one command (SQLite allows a running service)."""

    def __init__(self, config: Any) -> None:
        from monitor.service import state_url
        from monitor.state import open_state_store

        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._store = open_state_store(state_url(config))

    def __enter__(self) -> Any:
        return self._store

    def __exit__(self, *exc: object) -> None:
        self._store.close()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _print_json(rows: Iterable[dict[str, Any]]) -> None:
    print(json.dumps(list(rows), indent=2, ensure_ascii=False))


def _print_table(rows: list[dict[str, Any]], columns: list[tuple[str, int]]) -> None:
    def cell(value: Any, width: int) -> str:
        text = "-" if value is None else str(value).replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    columns = [(name, max(width, len(name))) for name, width in columns]
    print("  ".join(name.ljust(width) for name, width in columns).rstrip())
    for row in rows:
        print("  ".join(cell(row.get(n), w).ljust(w) for n, w in columns).rstrip())


class ProgressLine:
    """A one-line progress display on a terminal; silent when output is not a TTY."""

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] | None = None) -> None:
        import time

        self._stream = stream
        self._enabled = stream.isatty()
        self._clock = clock or time.monotonic
        self._last = 0.0

    def update(self, progress: Any) -> None:
        now = self._clock()
        if not self._enabled or now - self._last < 0.1:
            return
        self._last = now
        # deferred bodies are embedded after the backlog: show that the run is not stuck
        bodies = progress.bodies_deferred
        self._stream.write(
            f"\rfeeds {progress.feeds_done}/{progress.feeds_total}  "
            f"articles {progress.articles_done}/{progress.articles_queued}   "
            + (f"bodies {progress.bodies_indexed}/{bodies}   " if bodies else "")
        )
        self._stream.flush()

    def done(self) -> None:
        if self._enabled:
            self._stream.write("\r\033[K")
            self._stream.flush()


if __name__ == "__main__":
    sys.exit(main())
