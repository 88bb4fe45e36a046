"""The labelled retrieval set of bench/quality.py is consistent: a query's relevant set is every
article of its event, in every language, and the splits do not overlap."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "retrieval"


def test_relevance_labels_follow_the_events() -> None:
    articles = [
        json.loads(line)
        for line in (FIXTURES / "articles.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    queries = json.loads((FIXTURES / "queries.json").read_text("utf-8"))["queries"]
    by_event: dict[str, set[str]] = defaultdict(set)
    for article in articles:
        by_event[article["event"]].add(article["id"])
    assert len({a["id"] for a in articles}) == len(articles)
    per_language = defaultdict(int)
    for article in articles:
        per_language[article["language"]] += 1
    assert min(per_language[lang] for lang in ("de", "en", "ru", "uk")) >= 30
    for query in queries:
        assert set(query["relevant"]) == by_event[query["event"]], query["id"]
        assert query["split"] in {"calibration", "report"}
    assert {q["language"] for q in queries} == {"de", "en", "ru", "uk"}
    assert len({q["id"] for q in queries}) == len(queries)
