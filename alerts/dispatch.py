"""Delivering the outbox: every pending (message, channel) pair until the channel acknowledges.

The outbox (``alert_messages`` + ``deliveries`` in the state store) is the truth: a message is
written there, with one pending delivery per channel, before anything is sent; a delivery is
marked sent only after the channel acknowledged it. So a crash or restart loses nothing, and at
worst re-sends a message whose acknowledgement was not recorded (the email Message-ID and the
webhook's message id are stable, so receivers can drop the repeat).

Failures are retried with exponential backoff (``next_attempt``, pure); a channel that says
how long to wait (Slack's 429 ``Retry-After``) is paused for that long as a whole, and so is one
whose failure is the channel's own (rejected SMTP credentials: retried, not dropped, since a
password gets fixed). A permanent error (rejected recipient, 4xx) or running out of attempts
marks the delivery failed, with its error, for ``newsmon alerts`` to show. Channels are
independent: in the service each is worked through in a task of its own, so a slow or failing
one never holds up another, and ``run --once`` stops trying a failing channel at its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from alerts.types import AlertMessage, Delivery, DeliveryStatus
from monitor.errors import ChannelError, StorageError
from monitor.types import utcnow

if TYPE_CHECKING:
    from alerts.channels import Channel
    from monitor.state import StateStore

log = logging.getLogger("newsmon.alerts")

DUE_BATCH = 200
#: while a paused or busy channel's deliveries are due, the store cannot say when another
#: channel's next one is: look again this often
HELD_BACK_RECHECK = timedelta(seconds=1)
#: the store failed: try again after this long
STORE_RETRY = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)
    #: about a day of retries at the defaults before giving up
    max_attempts: int = 30
    jitter: float = 0.1  # +- share of the delay, so retries of many deliveries spread out


def next_attempt(
    attempts: int,
    error: ChannelError,
    now: datetime,
    policy: RetryPolicy,
    rand: float = 0.0,
) -> datetime | None:
    """When to try again after the ``attempts``-th failed attempt (1 = the first); None: give
    up. ``rand`` in [-1, 1] spreads the delay by ``policy.jitter``."""
    if error.permanent or attempts >= policy.max_attempts:
        return None
    backoff = policy.first_delay.total_seconds() * 2.0 ** min(attempts - 1, 30)
    seconds = min(backoff, policy.max_delay.total_seconds()) * (1 + policy.jitter * rand)
    delay = timedelta(seconds=seconds)
    if error.retry_after is not None:  # the receiver's word beats our schedule
        delay = max(delay, timedelta(seconds=error.retry_after))
    return now + delay


@dataclass(frozen=True, slots=True)
class DispatchReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


@dataclass
class Dispatcher:
    store: StateStore
    channels: Mapping[str, Channel]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] = utcnow
    rand: Callable[[], float] = lambda: random.uniform(-1.0, 1.0)
    #: channel -> time before which it is not tried (it asked for a pause, refused our
    #: credentials, or the store failed to record its last delivery)
    paused_until: dict[str, datetime] = field(default_factory=dict)

    async def deliver_due(self, deadline: float | None = None) -> DispatchReport:
        """One pass over the due deliveries: each channel's in order, channels in parallel.
        Past ``deadline`` (``time.monotonic()``), a channel that failed in this pass stops there
        (the rest stay due): a stalled receiver costs one timeout, not one per message."""
        due = await asyncio.to_thread(self.store.due_deliveries, self.clock(), DUE_BATCH)
        results = await asyncio.gather(
            *(self._deliver_channel(name, items, deadline) for name, items in _by_channel(due))
        )
        return DispatchReport(
            sent=sum(r.sent for r in results),
            retrying=sum(r.retrying for r in results),
            failed=sum(r.failed for r in results),
        )

    async def drain(self, timeout: float) -> int:
        """Deliver until nothing is pending or ``timeout`` seconds passed (``run --once``);
        returns how many deliveries are still pending."""
        deadline = time.monotonic() + timeout
        while True:
            await self.deliver_due(deadline)
            pending = await asyncio.to_thread(self.store.count_pending_deliveries)
            left = deadline - time.monotonic()
            if pending == 0 or left <= 0:
                return pending
            await asyncio.sleep(min(left, await self._until_next_due()))

    async def run(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        """The service's delivery loop: a pass whenever woken (a new message), when the
        earliest retry falls due or when a channel is through with its share. Each channel
        works in a task of its own: one that stalls (a receiver answering only at the timeout)
        keeps its own deliveries waiting, never another channel's."""
        working: dict[str, asyncio.Task[DispatchReport]] = {}
        try:
            while not stop.is_set():
                wake.clear()  # before looking: a message queued from now on wakes the next pass
                try:
                    due = await asyncio.to_thread(self.store.due_deliveries, self.clock(),
                                                  DUE_BATCH)  # fmt: skip
                    for name, items in _by_channel(due):
                        # a channel at work takes its due ones on its next turn
                        if name not in working and not self._paused(name):
                            working[name] = asyncio.create_task(self._deliver_channel(name, items))
                    pause = await self._until_next_due(busy=bool(working))
                except StorageError as e:  # the store is down: keep the loop, try again soon
                    log.error("alert delivery: %s; retrying in 30 s", e)
                    pause = STORE_RETRY.total_seconds()
                waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait([*waiters, *working.values()], timeout=pause,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                for waiter in waiters:
                    waiter.cancel()
                for name, task in list(working.items()):
                    if task.done():
                        del working[name]
                        if (error := task.exception()) is not None:  # the store failed mid-way
                            log.error("alert delivery on channel %r: %s; retrying in 30 s",
                                      name, error)  # fmt: skip
                            # not at once: what was sent but not recorded would go out again
                            self.paused_until[name] = self.clock() + STORE_RETRY
        finally:  # shutting down: a send cut short stays pending (sent again, same id)
            for task in working.values():
                task.cancel()
            await asyncio.gather(*working.values(), return_exceptions=True)

    async def _until_next_due(self, *, busy: bool = False) -> float:
        """Seconds until the next delivery falls due (at most a minute). Right after a pass,
        whatever is still due belongs to a paused channel or (``busy``) to one still at work
        (whose end wakes the loop): then look again at the end of the earliest pause, or
        sooner for the other channels' retries (HELD_BACK_RECHECK)."""
        now = self.clock()
        at = await asyncio.to_thread(self.store.next_delivery_at)
        if at is None:
            return 60.0
        pauses = [t for t in self.paused_until.values() if t > now]
        if at <= now and (pauses or busy):
            at = min([*pauses, now + HELD_BACK_RECHECK])
        return min(60.0, max(0.05, (at - now).total_seconds()))

    async def _deliver_channel(
        self,
        name: str,
        items: Sequence[tuple[Delivery, AlertMessage]],
        deadline: float | None = None,
    ) -> DispatchReport:
        sent = retrying = failed = 0
        for delivery, message in items:
            if self._paused(name):
                break  # the rest stay due; tried after the pause
            if retrying and deadline is not None and time.monotonic() >= deadline:
                break  # failing past the deadline (run --once): the rest stay due
            status = await self._deliver_one(name, delivery, message)
            sent += status is DeliveryStatus.SENT
            retrying += status is DeliveryStatus.PENDING
            failed += status is DeliveryStatus.FAILED
        return DispatchReport(sent, retrying, failed)

    def _paused(self, name: str) -> bool:
        until = self.paused_until.get(name)
        return until is not None and until > self.clock()

    async def _deliver_one(
        self, name: str, delivery: Delivery, message: AlertMessage
    ) -> DeliveryStatus:
        channel = self.channels.get(name)
        try:
            if channel is None:
                raise ChannelError(name, "channel is not configured (or disabled) any more",
                                   permanent=True)  # fmt: skip
            await channel.send(message)
        except ChannelError as e:
            return await self._record_failure(name, delivery, message, e)
        except Exception as e:  # a bug in a channel must not stop the others or the loop
            log.exception("channel %r: unexpected error sending %s", name, message.id)
            error = ChannelError(name, f"unexpected error: {type(e).__name__}: {e}")
            return await self._record_failure(name, delivery, message, error)
        await self._record(delivery, DeliveryStatus.SENT, None, None)
        log.info("alert %s sent on channel %r", message.id, name)
        return DeliveryStatus.SENT

    async def _record_failure(
        self, name: str, delivery: Delivery, message: AlertMessage, error: ChannelError
    ) -> DeliveryStatus:
        now = self.clock()
        retry_at = next_attempt(delivery.attempts + 1, error, now, self.policy, self.rand())
        if (error.retry_after is not None or error.whole_channel) and retry_at is not None:
            self.paused_until[name] = retry_at
        if retry_at is None:
            log.error("alert %s on channel %r failed for good after %d attempts: %s",
                      message.id, name, delivery.attempts + 1, error)  # fmt: skip
            await self._record(delivery, DeliveryStatus.FAILED, str(error), None)
            return DeliveryStatus.FAILED
        log.warning("alert %s on channel %r: %s; retrying at %s",
                    message.id, name, error, retry_at.isoformat())  # fmt: skip
        await self._record(delivery, DeliveryStatus.PENDING, str(error), retry_at)
        if name in self.paused_until:
            # the channel's other pending deliveries wait too, in the store: a restart during
            # the pause must not send them early (the pause above lives in this process only)
            await asyncio.to_thread(self.store.defer_deliveries, name, self.paused_until[name])
        return DeliveryStatus.PENDING

    async def _record(
        self,
        delivery: Delivery,
        status: DeliveryStatus,
        error: str | None,
        retry_at: datetime | None,
    ) -> None:
        await asyncio.to_thread(
            self.store.record_delivery, delivery.message_id, delivery.channel, status=status,
            error=error, next_attempt_at=retry_at, now=self.clock(),
        )  # fmt: skip


def _by_channel(
    due: Sequence[tuple[Delivery, AlertMessage]],
) -> list[tuple[str, list[tuple[Delivery, AlertMessage]]]]:
    """Due deliveries grouped by channel, each channel's in the store's (oldest first) order."""
    grouped: dict[str, list[tuple[Delivery, AlertMessage]]] = {}
    for delivery, message in due:
        grouped.setdefault(delivery.channel, []).append((delivery, message))
    return list(grouped.items())
