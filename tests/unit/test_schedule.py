from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitor.schedule import (
    PollOutcome,
    SchedulePolicy,
    adapt_interval,
    backoff_delay,
    cache_control_max_age,
    feed_update_hint,
    first_poll_at,
    next_poll,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
POLICY = SchedulePolicy(
    default_interval=timedelta(minutes=15),
    min_interval=timedelta(minutes=2),
    max_interval=timedelta(hours=6),
    jitter=0.1,
    max_backoff=timedelta(hours=12),
)


def test_first_poll_uses_configured_interval_and_no_jitter_at_zero() -> None:
    nxt = next_poll(POLICY, now=NOW, outcome=PollOutcome(ok=True, items_new=1),
                    configured=timedelta(minutes=10), previous_interval=None, rand=0.0)  # fmt: skip
    assert nxt.interval == 600
    assert nxt.at == NOW + timedelta(minutes=10)


def test_busy_feed_speeds_up_and_idle_feed_slows_down_within_bounds() -> None:
    busy = adapt_interval(POLICY, PollOutcome(ok=True, items_new=10), None, 900)
    idle = adapt_interval(POLICY, PollOutcome(ok=True, items_new=0), None, 900)
    steady = adapt_interval(POLICY, PollOutcome(ok=True, items_new=1), None, 900)
    assert busy < steady == 900 < idle
    assert adapt_interval(POLICY, PollOutcome(ok=True, items_new=50), None, 121) == 120
    assert adapt_interval(POLICY, PollOutcome(ok=True, items_new=0), None, 6 * 3600) == 6 * 3600


def test_feed_hints_are_a_floor_but_capped_at_max_interval() -> None:
    assert adapt_interval(POLICY, PollOutcome(ok=True, items_new=1, update_hint=3600), None,
                          600) == 3600  # fmt: skip
    assert adapt_interval(POLICY, PollOutcome(ok=True, items_new=1, update_hint=10 * 86400),
                          None, 600) == 6 * 3600  # fmt: skip


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    delays = [backoff_delay(POLICY, 900, n) for n in range(1, 10)]
    assert delays[:4] == [900, 1800, 3600, 7200]
    assert delays[-1] == 12 * 3600
    assert delays == sorted(delays)


def test_failure_keeps_the_healthy_interval_to_return_to() -> None:
    nxt = next_poll(POLICY, now=NOW, outcome=PollOutcome(ok=False, consecutive_failures=3),
                    configured=None, previous_interval=900, rand=0.0)  # fmt: skip
    assert nxt.interval == 900
    assert nxt.at == NOW + timedelta(seconds=3600)


def test_retry_after_is_honoured_even_when_longer_than_backoff() -> None:
    outcome = PollOutcome(ok=False, consecutive_failures=1, retry_after=5000)
    nxt = next_poll(POLICY, now=NOW, outcome=outcome, configured=None, previous_interval=900,
                    rand=-1.0)  # fmt: skip
    assert nxt.at == NOW + timedelta(seconds=5000)


@pytest.mark.parametrize("rand", [-1.0, -0.3, 0.0, 0.5, 1.0, 7.0])
def test_jitter_stays_within_its_fraction(rand: float) -> None:
    nxt = next_poll(POLICY, now=NOW, outcome=PollOutcome(ok=True, items_new=1),
                    configured=None, previous_interval=1000, rand=rand)  # fmt: skip
    delay = (nxt.at - NOW).total_seconds()
    assert 900 <= delay <= 1100


def test_first_poll_at_keeps_future_times_and_staggers_overdue_ones() -> None:
    later = NOW + timedelta(minutes=5)
    assert first_poll_at(NOW, later, stagger=30) == later
    assert first_poll_at(NOW, NOW - timedelta(hours=1), stagger=30) == NOW + timedelta(seconds=30)
    assert first_poll_at(NOW, None, stagger=0) == NOW


@pytest.mark.parametrize(
    ("header", "expected"),
    [("max-age=300", 300.0), ("public, s-maxage=10, max-age=600", 600.0),
     ("no-cache, max-age=300", None), (None, None), ("private", None)],
)  # fmt: skip
def test_cache_control_max_age(header: str | None, expected: float | None) -> None:
    assert cache_control_max_age(header) == expected


def test_feed_update_hint() -> None:
    assert feed_update_hint("60", None, None) == 3600
    assert feed_update_hint(None, "hourly", "2") == 1800
    assert feed_update_hint(None, "daily", None) == 86400
    assert feed_update_hint("5", "hourly", "1") == 3600
    assert feed_update_hint("soon", "sometimes", "x") is None
