"""Channel faults end to end (issue #6, item 3): a real SMTP server (aiosmtpd, in this process)
that is down, refuses the login or answers 4xx; Slack and webhook receivers (a local HTTP server)
that answer 429 with Retry-After, 5xx, or stall past the channel's timeout.

For every fault: nothing is dropped (the deliveries stay pending, retried on the configured
backoff), the failure shows in ``newsmon alerts`` with the channel and its error, the other
channels are not held up, and once the channel recovers every alert reaches its receiver exactly
once with a stable id - in the same service run and after a restart (a new ``make_app`` on the
same data directory). Time is the dispatcher's injected clock, never a long sleep; the service
loop tests run on the real clock with sub-second retry delays.

The outbox is filled through the state store's own API (``save_alert_message``), exactly what
the alert stage does after matching, so no embedding model is involved.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from alerts.channels.email import message_id_header
from alerts.types import AlertMessage, Delivery, DeliveryStatus, alert_id_for, message_id_for
from indexer.embed import HashEmbedder
from monitor.cli import main
from monitor.config import load_config
from monitor.service import App, make_app
from monitor.types import utcnow
from tests.support.httpserver import LocalServer, Response
from tests.support.newsfixtures import free_port, write_config
from tests.support.receivers import Endpoint, MailDrop, smtp_server
from tests.test_render import make_message

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
USER, PASSWORD = "newsmon", "correct horse battery staple"
WRONG_PASSWORD = "hunter2-wrong"
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY_INTERVAL = timedelta(minutes=2)
MAX_ATTEMPTS = 5
#: the channels' timeout (s) where a receiver stalls (each stalled attempt costs this much);
#: elsewhere it is generous, so a slow test machine cannot fail a healthy post
HTTP_TIMEOUT = 0.5
STALL = 2.0


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    """One newsmon installation (config file + data dir) and its three receivers."""

    tmp_path: Path
    http: LocalServer
    smtp_port: int = field(default_factory=free_port)
    drop: MailDrop = field(default_factory=MailDrop)
    slack: Endpoint = field(default_factory=Endpoint)
    hook: Endpoint = field(default_factory=Endpoint)
    clock: Clock = field(default_factory=Clock)
    smtp_auth: bool = False
    http_timeout: float = 5.0
    password: str | None = None
    delivery: dict[str, Any] = field(default_factory=dict)
    servers: ExitStack = field(default_factory=ExitStack)
    smtp_running: bool = False

    def __post_init__(self) -> None:
        self.http.route("/slack/T000/B000/secret", self.slack)
        self.http.route("/hook", self.hook)
        self.http.route("/feed.rss", Response(EMPTY_FEED, content_type="application/rss+xml"))

    @property
    def config_path(self) -> Path:
        return self.tmp_path / "feeds.yaml"

    def write_config(self) -> Path:
        mail: dict[str, Any] = {
            "type": "email", "smtp_host": "127.0.0.1", "smtp_port": self.smtp_port,
            "starttls": False, "from": "newsmon@example.org", "to": "desk@example.org",
            "timeout": "2s",
        }  # fmt: skip
        if self.password is not None:
            mail |= {"username": USER, "password": self.password}
        channels = {
            "mail": mail,
            "slack": {
                "type": "slack",
                "webhook_url": self.http.url("/slack/T000/B000/secret"),
                "timeout": self.http_timeout,
            },
            "hook": {
                "type": "webhook",
                "url": self.http.url("/hook"),
                "secret": "s3cret",
                "timeout": self.http_timeout,
            },
        }
        delivery = {
            "first_retry": f"{FIRST_RETRY.total_seconds():g}s",
            "max_retry_interval": f"{MAX_RETRY_INTERVAL.total_seconds():g}s",
            "max_attempts": MAX_ATTEMPTS,
            "wait": "0s",
            **self.delivery,
        }
        feeds = {"Local": (self.http.url("/feed.rss"), "en")}
        return write_config(self.tmp_path, feeds, channels=channels, delivery=delivery)

    def start_smtp(self) -> None:
        self.servers.enter_context(smtp_server(self.drop, self.smtp_port, auth=self.smtp_auth))
        self.smtp_running = True

    def app(self, *, real_clock: bool = False) -> App:
        config = load_config(self.write_config())
        if real_clock:
            return make_app(config, embedder=HashEmbedder())
        app = make_app(config, embedder=HashEmbedder(), clock=self.clock)
        app.dispatcher.rand = lambda: 0.0  # no jitter: retry times are exact
        return app


EMPTY_FEED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>Local</title>'
    b"<link>http://127.0.0.1/</link><description>nothing new</description></channel></rss>"
)


@pytest.fixture(scope="module")
def trust_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-certificate CA bundle (see ``rig``)."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def rig(
    tmp_path: Path, http_server: LocalServer, trust_store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    # every connection here is plain HTTP/SMTP; without this, each channel and the fetcher
    # of every make_app parse the whole system CA bundle for their TLS set-up (~50 ms each)
    monkeypatch.setenv("SSL_CERT_FILE", str(trust_store))
    rig = Rig(tmp_path, http_server)
    with rig.servers:
        yield rig


def alert(n: int) -> AlertMessage:
    """The first message of alert ``n`` (its own story), created ``n`` seconds after T0."""
    alert_id = alert_id_for("gaza-ceasefire", f"story-{n}")
    return make_message(
        id=message_id_for(alert_id, 0), alert_id=alert_id, story_id=f"story-{n}",
        headline=f"Ceasefire talks, round {n}", created_at=T0 + timedelta(seconds=n),
    )  # fmt: skip


def queue(app: App, *messages: AlertMessage, channels: tuple[str, ...]) -> None:
    """Write messages to the outbox as the alert stage does: one pending delivery per channel."""
    for message in messages:
        assert app.store.save_alert_message(message, article_ids=[], channels=list(channels),
                                            now=app.dispatcher.clock())  # fmt: skip


def deliveries(app: App, channel: str) -> dict[str, Delivery]:
    """message id -> its delivery on ``channel``."""
    return {
        d.message_id: d
        for record in app.store.list_alerts()
        for d in record.deliveries
        if d.channel == channel
    }


def cli_alerts(rig: Rig, capsys: pytest.CaptureFixture[str]) -> tuple[str, list[dict[str, Any]]]:
    """``newsmon alerts`` as printed, and its ``--json`` rows (the store opened by the CLI)."""
    capsys.readouterr()
    assert main(["--config", str(rig.config_path), "alerts"]) == 0
    text = capsys.readouterr().out
    assert main(["--config", str(rig.config_path), "alerts", "--json"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return text, rows


def slack_headline(payload: dict[str, Any]) -> str:
    """The headline of a Slack post (they carry no id): ":newspaper: *topic* · kind\n*headline*"."""
    return str(payload["blocks"][0]["text"]["text"].split("*")[3])


def headlines(endpoint: Endpoint) -> list[str]:
    """What a Slack-like receiver accepted, by headline."""
    return [slack_headline(payload) for payload in endpoint.accepted_json()]


# -- the fault cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A channel broken one way, and how it is repaired in the running service (the receiver
    comes back) or for a restart (the operator fixes the config, or the receiver is back)."""

    id: str
    channel: str
    #: a channel that works meanwhile (its deliveries must not wait for the broken one)
    healthy: str
    #: substrings of the error ``newsmon alerts`` shows (after "channel '<name>': ")
    errors: tuple[str, ...]
    breaks: Callable[[Rig], None]
    repairs: Callable[[Rig], None]
    repairs_for_restart: Callable[[Rig], None] | None = None
    #: the wait the channel asked for (Retry-After): it pauses the whole channel
    retry_after: timedelta | None = None
    #: the failure is the channel's, not the message's: the channel pauses until the retry
    whole_channel: bool = False
    #: what must never appear in the output
    secret: str | None = None


def _smtp_down(rig: Rig) -> None:
    """Nothing listens on the SMTP port (the hook channel has its receiver)."""


def _smtp_up(rig: Rig) -> None:
    rig.start_smtp()


def _smtp_wrong_password(rig: Rig) -> None:
    rig.smtp_auth, rig.drop.password, rig.password = True, PASSWORD, WRONG_PASSWORD
    rig.start_smtp()


def _smtp_account_reset(rig: Rig) -> None:
    rig.drop.password = WRONG_PASSWORD  # the server now accepts what newsmon is configured with


def _smtp_password_fixed(rig: Rig) -> None:
    rig.password = PASSWORD  # the operator corrects the config and restarts


def _smtp_replies(data: str = "250 OK", rcpt: str = "250 OK") -> Callable[[Rig], None]:
    def script(rig: Rig) -> None:
        rig.drop.data_reply, rig.drop.rcpt_reply = data, rcpt
        if not rig.smtp_running:  # started once, then scripted while it runs
            rig.start_smtp()

    return script


def _http(name: str, status: int, headers: dict[str, str] | None = None) -> Callable[[Rig], None]:
    def script(rig: Rig) -> None:
        rig.start_smtp()  # mail is the healthy channel here
        getattr(rig, name).fail(status, headers)

    return script


def _hang(name: str) -> Callable[[Rig], None]:
    def script(rig: Rig) -> None:
        rig.start_smtp()
        rig.http_timeout = HTTP_TIMEOUT
        getattr(rig, name).hang(STALL)

    return script


def _recover(name: str) -> Callable[[Rig], None]:
    return lambda rig: getattr(rig, name).recover()


FAULTS = [
    Fault("smtp-down", "mail", "hook", ("SMTP 127.0.0.1:", "Connection refused"),
          _smtp_down, _smtp_up),
    Fault("smtp-auth", "mail", "hook", ("SMTP 127.0.0.1:", "login refused: 535"),
          _smtp_wrong_password, _smtp_account_reset, _smtp_password_fixed,
          whole_channel=True, secret=WRONG_PASSWORD),
    Fault("smtp-451-data", "mail", "hook", ("server replied: 451 4.3.0 try later",),
          _smtp_replies(data="451 4.3.0 try later"), _smtp_replies()),
    Fault("smtp-451-rcpt", "mail", "hook",
          ("all recipients refused: desk@example.org (451 4.7.1 greylisted",),
          _smtp_replies(rcpt="451 4.7.1 greylisted, come back later"), _smtp_replies()),
    Fault("slack-429", "slack", "mail", ("HTTP 429",),
          _http("slack", 429, {"Retry-After": "120"}), _recover("slack"),
          retry_after=timedelta(seconds=120)),
    Fault("slack-500", "slack", "mail", ("HTTP 500",), _http("slack", 500), _recover("slack")),
    Fault("slack-timeout", "slack", "mail", (f"no answer within {HTTP_TIMEOUT:g}s",),
          _hang("slack"), _recover("slack")),
    Fault("webhook-502", "hook", "mail", ("HTTP 502",), _http("hook", 502), _recover("hook")),
    Fault("webhook-503-retry-after", "hook", "mail", ("HTTP 503",),
          _http("hook", 503, {"Retry-After": "90"}), _recover("hook"),
          retry_after=timedelta(seconds=90)),
]  # fmt: skip


def received(rig: Rig, channel: str) -> list[str]:
    """What the receiver of ``channel`` accepted, as message ids (Slack: headlines)."""
    if channel == "mail":
        return rig.drop.message_ids()
    if channel == "slack":
        return headlines(rig.slack)
    return [p["id"] for p in rig.hook.accepted_json()]


def expected(channel: str, *messages: AlertMessage) -> list[str]:
    if channel == "mail":
        return [message_id_header(m.id) for m in messages]
    if channel == "slack":
        return [m.headline for m in messages]
    return [m.id for m in messages]


def carried(rig: Rig, channel: str) -> dict[str, set[bytes]]:
    """What each attempt on ``channel`` carried, failed ones included: message id (Slack:
    headline) -> the distinct bodies (mail: Message-IDs) sent for it."""
    if channel == "mail":
        return {mid: {mid.encode()} for mid in rig.drop.data_ids}
    endpoint = rig.slack if channel == "slack" else rig.hook
    attempts: dict[str, set[bytes]] = {}
    for _, body in endpoint.seen:
        payload = json.loads(body)
        key = slack_headline(payload) if channel == "slack" else payload["id"]
        attempts.setdefault(key, set()).add(body)
    return attempts


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@pytest.mark.parametrize("restart", [False, True], ids=["same-run", "after-restart"])
@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_a_channel_fault_keeps_deliveries_pending_visible_and_delivers_once_on_recovery(
    rig: Rig, fault: Fault, restart: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = alert(1), alert(2)
    fault.breaks(rig)

    async def scenario() -> None:
        app = rig.app()
        try:
            queue(app, first, second, channels=(fault.channel, fault.healthy))
            started = time.monotonic()
            await app.dispatcher.deliver_due()
            elapsed = time.monotonic() - started
            broken = deliveries(app, fault.channel)
            # the healthy channel delivered both at once, whatever the broken one did
            assert received(rig, fault.healthy) == expected(fault.healthy, first, second)
            assert elapsed < 2 * STALL
            # nothing is dropped: both wait, the first until the backoff or the Retry-After
            assert {d.status for d in broken.values()} == {DeliveryStatus.PENDING}
            delay = max(FIRST_RETRY, fault.retry_after or FIRST_RETRY)
            assert broken[first.id].attempts == 1
            assert broken[first.id].next_attempt_at == T0 + delay
            paused = fault.retry_after is not None or fault.whole_channel
            if paused:  # the channel as a whole waits: the second is not tried meanwhile
                assert broken[second.id].attempts == 0
                assert broken[second.id].last_error is None
            else:
                assert broken[second.id].attempts == 1
                assert broken[second.id].next_attempt_at == T0 + delay
            assert received(rig, fault.channel) == []

            # visible in `newsmon alerts`: the channel, its state and the error
            text, rows = cli_alerts(rig, capsys)
            errors = (f"{fault.channel}: pending (channel '{fault.channel}': ", *fault.errors)
            by_message = {row["messages"][0]["id"]: row for row in rows}
            tried = [first.id] if paused else [first.id, second.id]
            for message_id, row in by_message.items():
                state = row["deliveries"][fault.channel]
                assert state["status"] == "pending"
                if message_id in tried:
                    assert state["last_error"].startswith(f"channel '{fault.channel}': ")
                    assert all(part in state["last_error"] for part in fault.errors), state
                else:  # not tried yet: pending, due now, no error of its own
                    assert (state["attempts"], state["last_error"]) == (0, None)
                assert row["deliveries"][fault.healthy]["status"] == "sent"
            lines = [line for line in text.splitlines() if f"{fault.channel}: pending" in line]
            assert len(lines) == 2, text
            shown = [line for line in lines if errors[0] in line]
            assert len(shown) == len(tried), text
            assert all(part in line for line in shown for part in errors), text
            assert f"{fault.healthy}: sent" in text
            if fault.secret:
                assert fault.secret not in text + json.dumps(rows)

            # the backoff is honoured: not tried again before it is due
            attempts = {mid: d.attempts for mid, d in broken.items()}
            rig.clock.now = T0 + delay - timedelta(seconds=1)
            await app.dispatcher.deliver_due()
            assert {
                mid: d.attempts for mid, d in deliveries(app, fault.channel).items()
            } == attempts

            # recovery
            if restart:
                await app.aclose()
                (fault.repairs_for_restart or fault.repairs)(rig)
                app = rig.app()
            else:
                fault.repairs(rig)
            rig.clock.now = T0 + delay
            report = await app.dispatcher.deliver_due()
            assert report.sent == 2, deliveries(app, fault.channel)
            assert received(rig, fault.channel) == expected(fault.channel, first, second)
            assert received(rig, fault.healthy) == expected(fault.healthy, first, second)
            done = deliveries(app, fault.channel)
            assert {d.status for d in done.values()} == {DeliveryStatus.SENT}
            assert all(d.last_error is None for d in done.values())

            # a retry repeats the message as it was: same Message-ID / id, same bytes
            sent_as = carried(rig, fault.channel)
            assert set(sent_as) <= set(expected(fault.channel, first, second))
            assert all(len(bodies) == 1 for bodies in sent_as.values()), sent_as
            if fault.channel != "mail":
                assert len(getattr(rig, fault.channel).seen) >= 3  # failed + retried ones
            elif fault.id == "smtp-451-data":  # both mails were refused once, then accepted
                assert sorted(rig.drop.data_ids) == sorted(expected("mail", first, second) * 2)

            # nothing more goes out later: each alert reached each receiver exactly once
            rig.clock.now = T0 + timedelta(days=1)
            assert await app.dispatcher.deliver_due() == type(report)()
            assert received(rig, fault.channel) == expected(fault.channel, first, second)
        finally:
            await app.aclose()
        capsys.readouterr()
        assert main(["--config", str(rig.config_path), "alerts"]) == 0
        text = capsys.readouterr().out
        assert text.count(f"{fault.channel}: sent") == 2, text
        assert "pending" not in text

    run(scenario)


# -- the delivery policy ---------------------------------------------------------------------------


def test_backoff_follows_the_delivery_policy_and_gives_up_visibly(
    rig: Rig, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """first_retry 30 s doubling up to max_retry_interval 2 min; after max_attempts (5) the
    delivery is failed with its last error: shown by `newsmon alerts`, logged, never retried
    and never removed (a restart leaves it as it is)."""
    rig.start_smtp()
    rig.hook.fail(500)
    message = alert(1)

    async def scenario() -> None:
        app = rig.app()
        try:
            queue(app, message, channels=("hook", "mail"))
            tried_at: list[datetime] = []
            retry_at: list[datetime | None] = []
            for _ in range(MAX_ATTEMPTS + 2):
                before = len(rig.hook.seen)
                await app.dispatcher.deliver_due()
                if len(rig.hook.seen) > before:
                    tried_at.append(rig.clock.now)
                    retry_at.append(deliveries(app, "hook")[message.id].next_attempt_at)
                due = deliveries(app, "hook")[message.id].next_attempt_at
                rig.clock.now = due if due is not None else rig.clock.now + timedelta(hours=1)
            delays = [(b - a).total_seconds() for a, b in itertools.pairwise(tried_at)]
            assert delays == [30, 60, 120, 120]  # doubling, capped at max_retry_interval
            assert retry_at[-1] is None
            [delivery] = deliveries(app, "hook").values()
            assert delivery.status is DeliveryStatus.FAILED
            assert delivery.attempts == MAX_ATTEMPTS
            assert delivery.last_error == "channel 'hook': HTTP 500: error 500"
            assert app.store.count_pending_deliveries() == 0
        finally:
            await app.aclose()
        assert len(rig.hook.seen) == MAX_ATTEMPTS  # nothing after giving up
        assert {body for _, body in rig.hook.seen} == {rig.hook.seen[0][1]}  # identical bytes
        assert "failed for good after 5 attempts: channel 'hook': HTTP 500" in caplog.text

        # a restart neither retries nor loses it
        rig.hook.recover()
        app = rig.app()
        try:
            rig.clock.now += timedelta(days=1)
            await app.dispatcher.deliver_due()
            assert deliveries(app, "hook")[message.id].status is DeliveryStatus.FAILED
        finally:
            await app.aclose()
        assert rig.hook.accepted == []

    run(scenario)
    text, [row] = cli_alerts(rig, capsys)
    assert "hook: failed (channel 'hook': HTTP 500: error 500)" in text
    assert "mail: sent" in text
    hook = row["deliveries"]["hook"]
    assert (hook["status"], hook["attempts"], hook["next_attempt_at"]) == ("failed", 5, None)
    assert hook["last_error"] == "channel 'hook': HTTP 500: error 500"
    assert rig.drop.message_ids() == [message_id_header(message.id)]

    # the operator fixed the receiver: `alerts --retry-failed` queues it again, once
    config = str(rig.config_path)
    assert main(["--config", config, "alerts", "--retry-failed", "nope"]) == 2
    assert "no channel 'nope' in the config" in capsys.readouterr().err
    assert main(["--config", config, "alerts", "--retry-failed", "hook"]) == 0
    assert "1 failed deliveries on channel 'hook' queued again" in capsys.readouterr().out

    async def resend() -> None:
        app = rig.app()
        try:
            rig.clock.now = utcnow() + timedelta(seconds=1)
            await app.dispatcher.deliver_due()
            await app.dispatcher.deliver_due()
        finally:
            await app.aclose()

    run(resend)
    assert len(rig.hook.accepted) == 1
    assert main(["--config", config, "alerts", "--retry-failed"]) == 0
    assert "0 failed deliveries on all channels" in capsys.readouterr().out


def test_retry_after_beyond_the_policy_is_honoured(rig: Rig) -> None:
    """A receiver asking for 10 min waits 10 min, past max_retry_interval (2 min), for the
    whole channel; the other channels carry on meanwhile."""
    rig.start_smtp()
    rig.slack.fail(429, {"Retry-After": "600"})
    first, second, third = alert(1), alert(2), alert(3)

    async def scenario() -> None:
        app = rig.app()
        try:
            queue(app, first, second, channels=("slack", "mail"))
            await app.dispatcher.deliver_due()
            assert deliveries(app, "slack")[first.id].next_attempt_at == T0 + timedelta(minutes=10)
            rig.clock.now = T0 + MAX_RETRY_INTERVAL  # the policy alone would retry here
            queue(app, third, channels=("slack", "mail"))
            await app.dispatcher.deliver_due()
            assert len(rig.slack.seen) == 1  # paused: neither retried nor the new one tried
            assert len(rig.drop.mails) == 3  # mail is not paused
            rig.slack.recover()
            rig.clock.now = T0 + timedelta(minutes=10)
            await app.dispatcher.deliver_due()
        finally:
            await app.aclose()
        assert headlines(rig.slack) == [m.headline for m in (first, second, third)]  # in order

    run(scenario)


# -- the service loop (real clock, sub-second retries) ---------------------------------------------

FAST = {"first_retry": "0.2s", "max_retry_interval": "0.4s", "max_attempts": 50}


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``condition`` held (polled); fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out waiting"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_the_service_retries_on_its_own_once_smtp_is_back(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    """`newsmon run`: the SMTP server is down when alerts are queued; the service keeps them
    pending (shown by `newsmon alerts` while it runs) and sends them when the server is up."""
    rig.delivery = FAST
    first, second = alert(1), alert(2)

    async def scenario() -> None:
        app = rig.app(real_clock=True)
        queue(app, first, second, channels=("mail", "hook"))
        stop = asyncio.Event()
        service = asyncio.create_task(app.run_forever(stop, serve_api=False))
        try:
            await until(lambda: all(d.attempts >= 2 for d in deliveries(app, "mail").values()))
            assert [p["id"] for p in rig.hook.accepted_json()] == [first.id, second.id]
            capsys.readouterr()
            assert await asyncio.to_thread(main, ["--config", str(rig.config_path), "alerts"]) == 0
            text = capsys.readouterr().out
            assert text.count("mail: pending (channel 'mail': SMTP 127.0.0.1:") == 2, text
            assert "Connection refused" in text
            rig.start_smtp()
            await until(lambda: len(rig.drop.mails) == 2)
            await until(lambda: app.store.count_pending_deliveries() == 0)
            await asyncio.sleep(0.5)  # several retry intervals: nothing is sent twice
        finally:
            stop.set()
            await service
            await app.aclose()
        # each exactly once (with jitter, the second's retry may fall due before the first's)
        assert sorted(rig.drop.message_ids()) == sorted(message_id_header(m.id)
                                                        for m in (first, second))  # fmt: skip
        assert len(rig.hook.accepted) == 2

    run(scenario)


def test_a_stalled_channel_does_not_hold_up_another_in_the_service_loop(rig: Rig) -> None:
    """Slack stalls past its timeout on a backlog of four alerts (a pass over them takes over
    a second); an alert queued meanwhile for mail goes out at once, not after Slack's pass."""
    rig.delivery = FAST
    rig.start_smtp()
    rig.slack.hang(STALL)
    rig.http_timeout = HTTP_TIMEOUT
    backlog = [alert(n) for n in range(1, 5)]
    urgent = alert(9)

    async def scenario() -> None:
        app = rig.app(real_clock=True)
        queue(app, *backlog, channels=("slack",))
        wake, stop = asyncio.Event(), asyncio.Event()
        loop = asyncio.create_task(app.dispatcher.run(wake, stop))  # as `newsmon run` does
        try:
            await until(lambda: len(rig.slack.seen) >= 1)
            queue(app, urgent, channels=("mail", "slack"))
            wake.set()  # what the alert stage does after queueing a message
            waited = await until(lambda: len(rig.drop.mails) == 1)
            assert waited < HTTP_TIMEOUT * 2, f"mail waited {waited:.2f}s for Slack"
            rig.slack.recover()
            await until(lambda: app.store.count_pending_deliveries() == 0)
        finally:
            stop.set()
            await loop
            await app.aclose()
        assert rig.drop.message_ids() == [message_id_header(urgent.id)]
        # each exactly once (retries that fell due at different times need not keep the order)
        assert sorted(headlines(rig.slack)) == sorted(m.headline for m in [*backlog, urgent])

    run(scenario)


def test_a_message_queued_while_a_pass_ends_is_not_left_waiting(rig: Rig) -> None:
    """The wake-up for an alert queued while the delivery loop finishes a pass (the alert
    stage runs in its own thread) is not lost: the alert goes out at once, not a minute later
    when the loop would look again by itself."""
    rig.start_smtp()
    message = alert(1)

    async def scenario() -> None:
        app = rig.app(real_clock=True)
        wake, stop = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        original = app.store.next_delivery_at
        raced: list[bool] = []

        def next_delivery_at() -> datetime | None:
            at = original()
            if not raced:  # right after the loop looked: the alert stage queues a message
                raced.append(True)
                queue(app, message, channels=("mail",))
                loop.call_soon_threadsafe(wake.set)
            return at

        app.store.next_delivery_at = next_delivery_at  # type: ignore[method-assign]
        task = asyncio.create_task(app.dispatcher.run(wake, stop))
        try:
            await until(lambda: len(rig.drop.mails) == 1, timeout=5.0)
        finally:
            stop.set()
            await task
            await app.aclose()

    run(scenario)


def test_run_once_waits_no_longer_than_delivery_wait_for_a_stalled_channel(rig: Rig) -> None:
    """`newsmon run --once` (a cron job) gives a stalled channel `delivery.wait`, not one
    timeout per pending alert; what is left stays pending for the next run."""
    rig.delivery = {"wait": "0.5s"}
    rig.start_smtp()
    rig.slack.hang(STALL)
    rig.http_timeout = HTTP_TIMEOUT
    backlog = [alert(n) for n in range(1, 9)]  # 8 x 0.3 s timeouts if tried one after another

    async def scenario() -> None:
        app = rig.app(real_clock=True)
        try:
            queue(app, *backlog, channels=("slack", "mail"))
            started = time.monotonic()
            summary = await app.run_once()
            took = time.monotonic() - started
        finally:
            await app.aclose()
        assert len(rig.drop.mails) == len(backlog)
        assert summary.deliveries_pending == len(backlog)
        assert took < 0.5 + 2 * HTTP_TIMEOUT + 0.5, f"run --once took {took:.2f}s"

    run(scenario)


def test_a_paused_channel_does_not_delay_another_channels_retries(rig: Rig) -> None:
    """Slack asks for a 30 s pause while the SMTP server is down; once the server is up, mail's
    retries go out on their own (sub-second) schedule, not when Slack's pause ends."""
    rig.delivery = FAST
    rig.slack.fail(429, {"Retry-After": "30"})
    messages = [alert(1), alert(2)]

    async def scenario() -> None:
        app = rig.app(real_clock=True)
        queue(app, *messages, channels=("mail", "slack"))
        looked: list[float] = []
        due_deliveries = app.store.due_deliveries

        def counted(now: datetime, limit: int) -> list[tuple[Delivery, AlertMessage]]:
            looked.append(time.monotonic())
            return due_deliveries(now, limit)

        app.store.due_deliveries = counted  # type: ignore[method-assign]
        wake, stop = asyncio.Event(), asyncio.Event()
        loop = asyncio.create_task(app.dispatcher.run(wake, stop))
        try:
            await until(lambda: all(d.attempts for d in deliveries(app, "mail").values()))
            rig.start_smtp()
            waited = await until(lambda: len(rig.drop.mails) == 2)
            assert waited < 2.0, f"mail waited {waited:.2f}s for Slack's pause"
            # while Slack's deliveries wait out the pause, the loop does not spin on them
            since = time.monotonic()
            await asyncio.sleep(1.5)
            assert len([t for t in looked if t >= since]) <= 3
        finally:
            stop.set()
            await loop
            await app.aclose()
        assert len(rig.slack.seen) == 1  # the pause holds for Slack: no second request

    run(scenario)


def test_a_delivery_the_store_cannot_record_is_not_resent_in_a_loop(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The receiver acknowledged but the store fails to record it: the loop waits before
    trying the channel again instead of re-sending the message over and over."""
    from monitor.errors import StorageError

    rig.delivery = FAST
    message = alert(1)

    async def scenario() -> None:
        app = rig.app(real_clock=True)
        queue(app, message, channels=("hook",))

        def record_delivery(*args: Any, **kwargs: Any) -> None:
            raise StorageError("record delivery failed in state store: disk I/O error")

        app.store.record_delivery = record_delivery  # type: ignore[method-assign]
        wake, stop = asyncio.Event(), asyncio.Event()
        loop = asyncio.create_task(app.dispatcher.run(wake, stop))
        try:
            await until(lambda: len(rig.hook.seen) >= 1)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await loop
            await app.aclose()
        assert [p["id"] for p in rig.hook.accepted_json()] == [message.id]

    run(scenario)
    assert "alert delivery on channel 'hook': record delivery failed" in caplog.text
