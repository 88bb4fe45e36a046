"""Pure scheduling decisions: when to poll a feed next.

No I/O and no clock: callers pass ``now`` and a random number, so every decision is
reproducible in tests.

Policy (miniflux-like, adapted to news feeds):

* a healthy feed starts at its configured ``interval`` (or the default) and adapts within
  ``[min_interval, max_interval]``: faster when a poll brought several new items, slower when it
  brought none, so busy outlets are seen early and idle ones cost little;
* the feed's own hints are a floor: RSS ``ttl``, ``sy:updatePeriod``/``sy:updateFrequency``
  and ``Cache-Control: max-age`` (capped at ``max_interval`` so a hint can never park a feed);
* a failure backs off exponentially from the current interval up to ``max_backoff``, and a
  server's ``Retry-After`` is always honoured;
* jitter spreads polls so that feeds configured together do not fire together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

#: when a poll brings at least this many new items, the feed is "busy"
BUSY_ITEMS = 3
SPEED_UP = 0.67
SLOW_DOWN = 1.25


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    default_interval: timedelta = timedelta(minutes=15)
    min_interval: timedelta = timedelta(minutes=2)
    max_interval: timedelta = timedelta(hours=6)
    jitter: float = 0.1
    max_backoff: timedelta = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What a poll found out, as far as scheduling cares."""

    ok: bool
    items_new: int = 0
    consecutive_failures: int = 0  # including this poll, when it failed
    #: seconds; from ttl / sy:updatePeriod in the feed, or Cache-Control max-age
    update_hint: float | None = None
    retry_after: float | None = None  # seconds, from the server


@dataclass(frozen=True, slots=True)
class NextPoll:
    at: datetime
    interval: float  # the feed's healthy interval to remember (seconds), without backoff/jitter


def next_poll(
    policy: SchedulePolicy,
    *,
    now: datetime,
    outcome: PollOutcome,
    configured: timedelta | None,
    previous_interval: float | None,
    rand: float,
) -> NextPoll:
    """When to poll next. ``rand`` is uniform in [-1, 1] and scales the jitter."""
    interval = adapt_interval(policy, outcome, configured, previous_interval)
    delay = interval
    if not outcome.ok:
        delay = backoff_delay(policy, interval, outcome.consecutive_failures)
    delay *= 1.0 + policy.jitter * max(-1.0, min(1.0, rand))
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, policy.max_backoff.total_seconds()))
    return NextPoll(at=now + timedelta(seconds=delay), interval=interval)


def adapt_interval(
    policy: SchedulePolicy,
    outcome: PollOutcome,
    configured: timedelta | None,
    previous_interval: float | None,
) -> float:
    """The healthy interval after this poll, in seconds."""
    lo = policy.min_interval.total_seconds()
    hi = policy.max_interval.total_seconds()
    base = previous_interval or (configured or policy.default_interval).total_seconds()
    if outcome.ok:
        if outcome.items_new >= BUSY_ITEMS:
            base *= SPEED_UP
        elif outcome.items_new == 0:
            base *= SLOW_DOWN
    if outcome.update_hint:
        base = max(base, min(outcome.update_hint, hi))
    return max(lo, min(hi, base))


def backoff_delay(policy: SchedulePolicy, interval: float, failures: int) -> float:
    """Exponential backoff: interval x 2^(failures-1), capped at ``max_backoff``."""
    exponent = max(0, min(failures - 1, 16))
    return min(interval * float(1 << exponent), policy.max_backoff.total_seconds())


def first_poll_at(now: datetime, stored_next: datetime | None, *, stagger: float) -> datetime:
    """When a feed is first polled after start-up: its stored time (if already due, at once,
    spread over ``stagger`` seconds so a restart does not hit every outlet at the same moment).
    """
    if stored_next is not None and stored_next > now:
        return stored_next
    return now + timedelta(seconds=max(0.0, stagger))


# -- hints from the wire ----------

_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-)?max-age\s*=\s*\"?(\d+)")
_PERIOD_SECONDS = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 7 * 86400.0,
    "monthly": 30 * 86400.0,
    "yearly": 365 * 86400.0,
}


def cache_control_max_age(value: str | None) -> float | None:
    """``max-age`` of a Cache-Control header in seconds (``no-cache``/``no-store``: None)."""
    if not value:
        return None
    lowered = value.lower()
    if "no-cache" in lowered or "no-store" in lowered:
        return None
    match = _MAX_AGE.search(lowered)
    return float(match.group(1)) if match else None


def feed_update_hint(
    ttl_minutes: str | None, update_period: str | None, update_frequency: str | None
) -> float | None:
    """Seconds between updates the feed announces itself (RSS ttl, RSS 1.0 syndication)."""
    hints: list[float] = []
    ttl = _count(ttl_minutes)
    if ttl is not None:
        hints.append(ttl * 60.0)
    period = _PERIOD_SECONDS.get((update_period or "").strip().lower())
    if period:
        hints.append(period / (_count(update_frequency) or 1))
    return max(hints) if hints else None


def _count(text: str | None) -> int | None:
    """A feed's whole number, or None: ``str.isdigit`` also admits "²", which ``int`` refuses,
    and ``int`` refuses more than 4300 digits; a hint is capped at ``max_interval`` anyway."""
    value = (text or "").strip()
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    return int(value)
