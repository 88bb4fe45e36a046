"""HttpFetcher against the real local HTTP server: validators, encodings, limits, redirects."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import tracemalloc
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.errors import (
    BlockedAddressError,
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    NetworkError,
    ResponseTooLargeError,
    TooManyRedirectsError,
)
from monitor.fetch import HttpFetcher, address_block_reason, parse_retry_after
from monitor.types import FetchResult
from tests.support.httpserver import LocalServer, Request, Response

USER_AGENT = "newsmon-test/0.1 (+https://example.invalid/newsmon)"
MAX_BYTES = 1_000_000
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


def make_fetcher(**overrides: Any) -> HttpFetcher:
    settings: dict[str, Any] = {
        "user_agent": USER_AGENT,
        "timeout": 5.0,
        "max_bytes": MAX_BYTES,
        "per_host_concurrency": 4,
        # the test server lives on 127.0.0.1; the SSRF tests switch this off
        "allow_private_addresses": True,
    }
    return HttpFetcher(**(settings | overrides))


def fetch(url: str, fetcher: HttpFetcher | None = None, **kwargs: Any) -> FetchResult:
    async def run() -> FetchResult:
        async with fetcher or make_fetcher() as f:
            return await f.fetch(url, **kwargs)

    return asyncio.run(run())


def redirect(status: int, location: str) -> Response:
    return Response(status=status, headers={"Location": location})


# -- plain and conditional GET ------------------------------------------------------------------


def test_200_records_validators_then_304_on_conditional_request(
    http_server: LocalServer,
) -> None:
    url = http_server.route("/feed", Response(b"<rss/>", etag='"v1"', last_modified=LAST_MODIFIED))

    first = fetch(url)
    second = fetch(url, etag=first.etag, last_modified=first.last_modified)

    assert (first.status, first.content, first.etag, first.last_modified) == (
        200,
        b"<rss/>",
        '"v1"',
        LAST_MODIFIED,
    )
    assert second.not_modified
    assert second.content == b""
    assert (second.etag, second.last_modified) == ('"v1"', LAST_MODIFIED)
    conditional = http_server.requests[1].headers
    assert conditional["if-none-match"] == '"v1"'
    assert conditional["if-modified-since"] == LAST_MODIFIED


def test_304_without_validators_keeps_the_ones_sent(http_server: LocalServer) -> None:
    url = http_server.route("/feed", Response(status=304))

    result = fetch(url, etag='"old"', last_modified=LAST_MODIFIED)

    assert result.status == 304
    assert (result.etag, result.last_modified) == ('"old"', LAST_MODIFIED)


def test_result_headers_urls_time_and_request_headers(http_server: LocalServer) -> None:
    url = http_server.route(
        "/page", Response(b"hi", headers={"X-Custom-Thing": "yes"}, content_type="text/plain")
    )
    before = datetime.now(UTC)

    result = fetch(url, accept="application/rss+xml")

    assert result.url == result.final_url == url
    assert result.headers["x-custom-thing"] == "yes"
    assert result.content_type == "text/plain"
    assert all(name == name.lower() for name in result.headers)
    assert result.fetched_at.tzinfo is not None
    assert before <= result.fetched_at <= datetime.now(UTC)
    assert result.etag is None
    assert result.permanent_redirect is None
    sent = http_server.requests[0].headers
    assert sent["user-agent"] == USER_AGENT
    assert sent["accept"] == "application/rss+xml"


# -- content encodings --------------------------------------------------------------------------


def test_gzip_body_is_decoded(http_server: LocalServer) -> None:
    text = "Nachrichten – новости – ニュース\n".encode() * 2000
    url = http_server.route("/gz", Response(text, gzip=True))

    result = fetch(url)

    assert result.content == text
    assert result.headers["content-encoding"] == "gzip"
    assert "gzip" in http_server.requests[0].headers["accept-encoding"]


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("compress", [zlib.compress, _raw_deflate], ids=["zlib", "raw"])
def test_deflate_body_is_decoded_with_or_without_zlib_wrapper(
    http_server: LocalServer, compress: Any
) -> None:
    text = b"deflated " * 5000
    url = http_server.route(
        "/deflate", Response(compress(text), headers={"Content-Encoding": "deflate"})
    )

    assert fetch(url).content == text


def test_unknown_content_encoding_is_an_error(http_server: LocalServer) -> None:
    url = http_server.route("/br", Response(b"\x00\x01", headers={"Content-Encoding": "br"}))

    with pytest.raises(FetchError, match="unsupported Content-Encoding"):
        fetch(url)


# -- size limits --------------------------------------------------------------------------------


def test_declared_content_length_over_limit_is_refused(http_server: LocalServer) -> None:
    url = http_server.route("/big", Response(bytes(MAX_BYTES + 1)))

    with pytest.raises(ResponseTooLargeError, match="Content-Length"):
        fetch(url)


def test_streamed_body_over_limit_is_refused(http_server: LocalServer) -> None:
    url = http_server.route("/chunked", Response(bytes(3 * MAX_BYTES), chunked=True))

    with pytest.raises(ResponseTooLargeError, match=f"larger than {MAX_BYTES} bytes"):
        fetch(url)
    assert http_server.requests  # the server did answer, without a Content-Length


def _gzip_bomb(decompressed_mib: int) -> bytes:
    # Built in 1 MiB steps so the test itself never holds the decompressed size.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(decompressed_mib)]
    return b"".join([*parts, compressor.flush()])


def test_gzip_bomb_is_refused_with_bounded_memory(http_server: LocalServer) -> None:
    bomb = _gzip_bomb(50)
    assert len(bomb) < MAX_BYTES  # small on the wire: only decoding reveals the size
    url = http_server.route(
        "/bomb", Response(bomb, headers={"Content-Encoding": "gzip"}, chunked=True)
    )

    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLargeError):
            fetch(url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # the limit plus a few decode steps, nowhere near the 50 MiB the body inflates to
    assert peak < 4 * MAX_BYTES


# -- timeouts and network failures --------------------------------------------------------------


def test_slow_trickle_hits_the_overall_deadline(http_server: LocalServer) -> None:
    # 64 bytes every 50 ms: never quiet long enough for the read timeout, 20 s in all
    url = http_server.route("/slow", Response(bytes(25_600), chunk_size=64, chunk_delay=0.05))
    started = time.monotonic()

    with pytest.raises(FetchTimeoutError, match="no complete response within 1s"):
        fetch(url, make_fetcher(timeout=1.0))

    assert 0.9 < time.monotonic() - started < 2.0


def test_server_silent_before_headers_times_out(http_server: LocalServer) -> None:
    url = http_server.route("/silent", Response(b"late", delay=3.0))
    started = time.monotonic()

    with pytest.raises(FetchTimeoutError, match=r"0\.5s"):
        fetch(url, make_fetcher(timeout=0.5))

    assert time.monotonic() - started < 1.5


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_connection_refused_is_a_network_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/feed"

    with pytest.raises(NetworkError, match="connection refused") as caught:
        fetch(url)

    assert caught.value.url == url
    assert caught.value.__cause__ is not None


def test_dropped_connection_is_a_network_error(http_server: LocalServer) -> None:
    url = http_server.route("/drop", Response(drop_connection=True))

    with pytest.raises(NetworkError, match=url):
        fetch(url)


def test_unresolvable_host_is_a_network_error() -> None:
    fetcher = make_fetcher(allow_private_addresses=False)

    with pytest.raises(NetworkError, match="could not resolve"):
        fetch("http://no-such-host.invalid/feed", fetcher)


# -- HTTP errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 410, 500])
def test_error_status_raises_with_status(http_server: LocalServer, status: int) -> None:
    url = http_server.route("/error", Response(b"no", status=status))

    with pytest.raises(HTTPStatusError) as caught:
        fetch(url)

    assert caught.value.status == status
    assert caught.value.retry_after is None
    assert caught.value.url == url


def test_429_carries_retry_after_seconds(http_server: LocalServer) -> None:
    url = http_server.route(
        "/busy", Response(b"slow down", status=429, headers={"Retry-After": "120"})
    )

    with pytest.raises(HTTPStatusError) as caught:
        fetch(url)

    assert (caught.value.status, caught.value.retry_after) == (429, 120.0)


def test_503_carries_retry_after_date(http_server: LocalServer) -> None:
    later = datetime.now(UTC) + timedelta(minutes=10)
    url = http_server.route(
        "/down",
        Response(status=503, headers={"Retry-After": later.strftime("%a, %d %b %Y %H:%M:%S GMT")}),
    )

    with pytest.raises(HTTPStatusError) as caught:
        fetch(url)

    assert caught.value.retry_after is not None
    assert 590 <= caught.value.retry_after <= 600


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Wed, 01 May 2024 12:01:30 GMT", 90.0),
        ("Wed, 01 May 2024 12:00:00 -0000", 0.0),
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),  # already past
        ("Wednesday, 01-May-24 12:00:10 GMT", 10.0),  # obsolete RFC 850 form
        ("1.5", None),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


# -- redirects ----------------------------------------------------------------------------------


def test_redirect_chain_records_the_permanent_part(http_server: LocalServer) -> None:
    http_server.route("/old", redirect(301, "/moved"))
    moved = http_server.route("/moved", redirect(302, "today"))  # relative Location
    final = http_server.route("/today", Response(b"<rss/>"))

    result = fetch(http_server.url("/old"))

    assert result.final_url == final
    assert result.url == http_server.url("/old")
    # 301 then 302: poll /moved from now on, since /today is only its temporary answer
    assert result.permanent_redirect == moved
    assert result.content == b"<rss/>"


def test_all_permanent_chain_points_at_the_final_url(http_server: LocalServer) -> None:
    http_server.route("/a", redirect(301, "/b"))
    http_server.route("/b", redirect(308, "/c"))
    final = http_server.route("/c", Response(b"ok"))

    assert fetch(http_server.url("/a")).permanent_redirect == final


def test_temporary_first_hop_means_no_permanent_redirect(http_server: LocalServer) -> None:
    http_server.route("/a", redirect(302, "/b"))
    http_server.route("/b", redirect(301, "/c"))
    final = http_server.route("/c", Response(b"ok"))

    result = fetch(http_server.url("/a"))

    assert result.final_url == final
    assert result.permanent_redirect is None


def test_redirect_loop_is_refused(http_server: LocalServer) -> None:
    http_server.route("/ping", redirect(302, "/pong"))
    http_server.route("/pong", redirect(302, "/ping"))

    with pytest.raises(TooManyRedirectsError, match="loop"):
        fetch(http_server.url("/ping"))

    assert len(http_server.requests) == 6  # the first request and the 5 allowed redirects


def test_chain_longer_than_the_limit_is_refused(http_server: LocalServer) -> None:
    for hop in range(4):
        http_server.route(f"/{hop}", redirect(307, f"/{hop + 1}"))
    http_server.route("/4", Response(b"too far"))

    with pytest.raises(TooManyRedirectsError, match="more than 2 redirects"):
        fetch(http_server.url("/0"), make_fetcher(max_redirects=2))


def test_redirect_to_other_scheme_is_refused(http_server: LocalServer) -> None:
    url = http_server.route("/ftp", redirect(302, "file:///etc/passwd"))

    with pytest.raises(FetchError, match="only http"):
        fetch(url)


# -- SSRF guard ---------------------------------------------------------------------------------


def test_untrusted_private_url_is_refused_before_connecting(http_server: LocalServer) -> None:
    url = http_server.route("/internal", Response(b"secret"))

    with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.1, a loopback address") as caught:
        fetch(url, make_fetcher(allow_private_addresses=False))

    assert caught.value.url == url
    assert http_server.requests == []


def test_private_url_allowed_when_configured(http_server: LocalServer) -> None:
    url = http_server.route("/internal", Response(b"fine"))

    assert fetch(url, make_fetcher(allow_private_addresses=True)).content == b"fine"


def test_trusted_first_hop_may_be_private(http_server: LocalServer) -> None:
    url = http_server.route("/feed", Response(b"<rss/>"))

    result = fetch(url, make_fetcher(allow_private_addresses=False), trusted=True)

    assert result.content == b"<rss/>"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_redirect_from_trusted_url_to_private_address_is_refused(
    http_server: LocalServer, host: str
) -> None:
    target = f"http://{host}:{http_server.port}/admin"
    url = http_server.route("/feed", redirect(302, target))
    http_server.route("/admin", Response(b"secret"))

    with pytest.raises(BlockedAddressError) as caught:
        fetch(url, make_fetcher(allow_private_addresses=False), trusted=True)

    assert caught.value.url == target
    assert http_server.hits("/admin") == 0


class _LyingResolver(HttpFetcher):
    """A DNS answer that changes between the check and the connection (rebinding)."""

    async def _resolve(self, url: str, host: str, port: int) -> list[str]:
        return ["93.184.216.34"]


def test_dns_rebinding_is_caught_by_the_connected_address(http_server: LocalServer) -> None:
    url = http_server.route("/internal", Response(b"secret"))
    fetcher = _LyingResolver(
        USER_AGENT,
        timeout=5.0,
        max_bytes=MAX_BYTES,
        per_host_concurrency=2,
        allow_private_addresses=False,
    )

    with pytest.raises(BlockedAddressError, match=r"connected to 127\.0\.0\.1"):
        fetch(url, fetcher)

    assert http_server.hits("/internal") == 1  # the request went out; its answer was dropped


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.5.6.7", "loopback"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "non-public"),
        ("100.127.255.254", "non-public"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_block_reason(address: str, reason: str | None) -> None:
    assert address_block_reason(address) == reason


@pytest.mark.parametrize(
    "address",
    # documentation, benchmarking, future-use and broadcast ranges; which reason ipaddress
    # gives them varies between Python versions, but none is reachable on purpose
    ["192.0.2.1", "198.18.0.1", "240.0.0.1", "255.255.255.255", "2001:db8::1", "::ffff:0.0.0.0"],
)
def test_other_special_purpose_addresses_are_blocked(address: str) -> None:
    assert address_block_reason(address) is not None


def test_address_block_reason_rejects_non_addresses() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        address_block_reason("example.com")


# -- per-host concurrency and configuration -----------------------------------------------------


def test_per_host_concurrency_never_exceeds_the_limit(http_server: LocalServer) -> None:
    lock = threading.Lock()
    active = peak = 0

    def slow(_: Request) -> Response:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.1)
        with lock:
            active -= 1
        return Response(b"ok")

    url = http_server.route("/slow", slow)
    fetcher = make_fetcher(per_host_concurrency=2)

    async def run() -> None:
        async with fetcher:
            await asyncio.gather(*(fetcher.fetch(url) for _ in range(8)))

    asyncio.run(run())

    assert http_server.hits("/slow") == 8
    assert peak == 2  # never more, and the limit is really used
    assert fetcher._hosts == {}  # idle hosts are forgotten


@dataclass(frozen=True)
class _FetchConfig:
    user_agent: str = USER_AGENT
    timeout: timedelta = timedelta(seconds=5)
    max_bytes: int = MAX_BYTES
    per_host_concurrency: int = 2
    allow_private_addresses: bool = True
    max_redirects: int = 1


def test_from_config_reads_a_config_object(http_server: LocalServer) -> None:
    http_server.route("/a", redirect(302, "/b"))
    http_server.route("/b", redirect(302, "/c"))
    http_server.route("/c", Response(b"ok"))

    fetcher = HttpFetcher.from_config(_FetchConfig())

    with pytest.raises(TooManyRedirectsError, match="more than 1 redirects"):
        fetch(http_server.url("/a"), fetcher)
    assert http_server.requests[0].headers["user-agent"] == USER_AGENT


@pytest.mark.parametrize(
    "bad",
    [{"timeout": 0}, {"max_bytes": 0}, {"per_host_concurrency": 0}, {"max_redirects": -1}],
)
def test_invalid_settings_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_fetcher(**bad)


@pytest.mark.parametrize("url", ["ftp://example.com/feed", "/relative/feed", "mailto:x@y.z"])
def test_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch(url)

    assert caught.value.url == url
