"""When the weekly digest is due (pure) - the scheduler and `run --once` both ask this."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from alerts.digest_job import due_digest

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_7 = (0, time(7, 0))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(UTC)


def test_due_right_after_the_scheduled_time_for_the_week_before() -> None:
    due = due_digest(_at("2026-02-02T08:00"), *MONDAY_7, BERLIN)  # Monday of W06
    assert due is not None
    assert due.scheduled_at == _at("2026-02-02T07:00")
    assert due.window.label == "2026-W05"
    assert due.window.start == _at("2026-01-26T00:00")
    assert due.window.end == _at("2026-02-02T00:00")


def test_a_service_that_was_down_catches_up_within_three_days() -> None:
    due = due_digest(_at("2026-02-04T12:00"), *MONDAY_7, BERLIN)  # Wednesday
    assert due is not None
    assert due.window.label == "2026-W05"
    assert due_digest(_at("2026-02-06T12:00"), *MONDAY_7, BERLIN) is None  # Friday: too late


def test_before_the_scheduled_time_the_previous_digest_is_the_latest() -> None:
    # Monday 06:00: this week's digest is not due; last week's is a week old, past catching up
    assert due_digest(_at("2026-02-02T06:00"), *MONDAY_7, BERLIN) is None


def test_schedule_is_in_the_digest_time_zone_across_new_year() -> None:
    due = due_digest(_at("2026-01-05T07:30"), *MONDAY_7, BERLIN)
    assert due is not None
    assert due.window.label == "2026-W01"  # 2025-12-29 .. 2026-01-04
    sunday = due_digest(datetime(2026, 1, 4, 20, 0, tzinfo=UTC), 6, time(20, 0), ZoneInfo("UTC"))
    assert sunday is not None
    assert sunday.window.label == "2025-W52"  # the complete week before the one it falls in
