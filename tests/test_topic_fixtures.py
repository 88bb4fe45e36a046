"""The labelled topic fixtures (tests/fixtures/topics) keep their README's format: the topic
benchmarks trust every file's ids, labels and events, and a malformed line would only show as a
wrong figure."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "topics"
FILES = sorted(FIXTURES.glob("*.jsonl"))
TOPICS = {"abu-dhabi-talks", "donbas-withdrawal", "security-guarantees"}
KEYS = {"id", "language", "source", "published", "title", "text", "story", "topics"}


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_article_keeps_the_fixture_format(path: Path) -> None:
    rows = _rows(path)
    assert rows
    for row in rows:
        assert set(row) == KEYS, row.get("id")
        assert row["language"] in {"de", "en", "ru", "uk"}, row["id"]
        topics = row["topics"]
        assert isinstance(topics, list), row["id"]
        assert set(topics) <= TOPICS, row["id"]
        assert len(topics) <= 2, row["id"]
        published = datetime.fromisoformat(str(row["published"]).replace("Z", "+00:00"))
        assert published.utcoffset() is not None, row["id"]
        words = len(str(row["text"]).split())
        assert 60 <= words <= 260, (row["id"], words)
    assert len({row["id"] for row in rows}) == len(rows)


def test_ids_events_and_outlets_belong_to_one_file() -> None:
    """No article id or event is in two files (a file reports on events of its own), and an
    outlet writes in one language."""
    ids: Counter[str] = Counter()
    stories: dict[str, str] = {}
    languages: dict[str, str] = {}
    for path in FILES:
        for row in _rows(path):
            ids[str(row["id"])] += 1
            story = str(row["story"])
            assert stories.setdefault(story, path.name) == path.name, story
            source = str(row["source"])
            assert languages.setdefault(source, str(row["language"])) == row["language"], source
    assert not [i for i, n in ids.items() if n > 1]


@pytest.mark.parametrize("name", ["report_h.jsonl", "report_i.jsonl"])
def test_the_newest_blind_files_hold_the_planned_mix(name: str) -> None:
    rows = _rows(FIXTURES / name)
    assert Counter(str(r["language"]) for r in rows) == {"de": 40, "en": 40, "ru": 40, "uk": 40}
    labels = Counter(t for r in rows for t in r["topics"])  # type: ignore[attr-defined]
    assert set(labels) == TOPICS
    assert min(labels.values()) >= 36
    assert sum(len(r["topics"]) == 2 for r in rows) == 8  # type: ignore[arg-type]
