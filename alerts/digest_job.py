"""Sending the weekly digest: when it is due (pure), and sending it once per channel.

The digest covers the complete ISO week before its scheduled time (``digest.schedule`` in
``digest.timezone``). ``due_digest`` names the latest scheduled time at or before ``now`` and
the week it covers, so a service that was down at 07:00 on Monday sends the digest when it is
back (the scheduler's own job store is in memory and remembers nothing), and ``run --once`` from
cron sends it on its first run after the scheduled time.

What was sent is recorded per (digest id, channel) in the state store: the digest id is stable
per week and topic set, so a restart, a second ``run --once`` or a retry never sends a channel
the same digest twice, and a channel that failed is tried again on the next occasion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from alerts.digest import DigestSource, DigestWindow, NamedTopic, load_digest, week_window
from alerts.render_digest import render_digest
from monitor.errors import ChannelError

if TYPE_CHECKING:
    from alerts.channels import Channel

log = logging.getLogger("newsmon.alerts.digest")

#: a digest not sent within this long after its scheduled time is skipped (a month-old
#: "weekly" digest is noise); the on-demand `newsmon digest --week ... --send` still sends it
MAX_LATENESS = timedelta(days=3)


@dataclass(frozen=True, slots=True)
class DueDigest:
    scheduled_at: datetime  # aware UTC
    window: DigestWindow


def due_digest(now: datetime, weekday: int, at: time, zone: ZoneInfo) -> DueDigest | None:
    """The latest scheduled digest at or before ``now`` (None when it is more than
    ``MAX_LATENESS`` ago, which cannot happen with a weekly schedule and a running service)."""
    local = now.astimezone(zone)
    days_back = (local.weekday() - weekday) % 7
    day = local.date() - timedelta(days=days_back)
    scheduled = datetime.combine(day, at, tzinfo=zone)
    if scheduled > local:
        scheduled -= timedelta(days=7)
    if local - scheduled > MAX_LATENESS:
        return None
    # the complete ISO week before the one the scheduled time falls in
    iso_year, iso_week, _ = (scheduled.date() - timedelta(days=7)).isocalendar()
    window = week_window(f"{iso_year}-W{iso_week:02d}", zone)
    return DueDigest(scheduled.astimezone(ZoneInfo("UTC")), window)


class DigestLog(Protocol):
    def digest_sent(self, digest_id: str, channel: str) -> bool: ...

    def record_digest(
        self, digest_id: str, channel: str, *, error: str | None, now: datetime
    ) -> None: ...


class DigestStore(DigestSource, DigestLog, Protocol):
    pass


@dataclass(frozen=True, slots=True)
class DigestReport:
    digest_id: str
    sent: tuple[str, ...] = ()
    already_sent: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (channel, error)


async def send_digest(
    store: DigestStore,
    topics: Sequence[NamedTopic],
    window: DigestWindow,
    channels: Mapping[str, Channel],
    now: datetime,
    *,
    force: bool = False,
) -> DigestReport:
    """Build the window's digest and send it on every channel that has not had it (``force``:
    on every channel, for ``newsmon digest --send``). A failing channel never stops another."""
    digest = load_digest(store, topics, window, now)
    rendered = render_digest(digest)
    sent: list[str] = []
    skipped: list[str] = []
    failed: list[tuple[str, str]] = []
    for name, channel in channels.items():
        if not force and store.digest_sent(rendered.id, name):
            skipped.append(name)
            continue
        try:
            await channel.send_digest(rendered)
        except ChannelError as e:
            log.error("digest %s on channel %r failed: %s", rendered.id, name, e)
            store.record_digest(rendered.id, name, error=str(e), now=now)
            failed.append((name, str(e)))
            continue
        store.record_digest(rendered.id, name, error=None, now=now)
        log.info("digest %s sent on channel %r", rendered.id, name)
        sent.append(name)
    return DigestReport(rendered.id, tuple(sent), tuple(skipped), tuple(failed))
