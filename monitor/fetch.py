"""Async HTTP fetching of feeds and article pages, hardened for URLs nobody vetted.

Feed entries point anywhere, so every fetch defends itself:

* **huge bodies and decompression bombs**: the body is decoded here, in pieces of at most
  64 KiB, and the fetch stops as soon as the decoded size passes ``max_bytes``;
* **slow servers**: connect/read timeouts per socket operation, plus one deadline around each
  whole exchange (headers and body) so a server trickling bytes cannot hold a fetch forever;
* **SSRF**: unless private addresses are allowed, every hop's host must resolve to public
  addresses only, and the address actually connected to is checked again when the headers
  arrive (DNS rebinding). The operator's own feed URL (``trusted``) is exempt on its first hop;
  where it redirects to is always checked;
* **hammering one host**: a semaphore per host caps concurrent requests to it.

Redirects are followed here rather than by httpx so that every hop passes the same checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Protocol, Self

import httpx

from monitor.errors import (
    BlockedAddressError,
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    NetworkError,
    ResponseTooLargeError,
    TooManyRedirectsError,
)
from monitor.types import FetchResult, as_utc, utcnow

__all__ = [
    "FetchSettings",
    "Fetcher",
    "HttpFetcher",
    "address_block_reason",
    "parse_retry_after",
]

_PERMANENT_REDIRECTS = frozenset({301, 308})
_FETCHABLE_SCHEMES = frozenset({"http", "https"})
# Only the codings decoded below, in steps of bounded size; br is not offered because no brotli
# decoder is a dependency (and httpx's would inflate each network read in one go).
_ACCEPT_ENCODING = "gzip, deflate"
# The most decoded body produced in one step, whatever the compression ratio: a 64 KiB read of
# a gzip bomb would otherwise inflate to ~64 MB before any size check could run.
_DECODE_STEP_BYTES = 64 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# One pool for all hosts (per-host fairness is the semaphores' job); keep-alive connections
# are few because most hosts are fetched once per poll interval.
_POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)


class Fetcher(Protocol):
    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        trusted: bool = False,
        accept: str | None = None,
    ) -> FetchResult: ...

    async def aclose(self) -> None: ...


class FetchSettings(Protocol):
    """What ``HttpFetcher.from_config`` reads (properties, so a frozen pydantic model fits)."""

    @property
    def user_agent(self) -> str: ...
    @property
    def timeout(self) -> timedelta: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def per_host_concurrency(self) -> int: ...
    @property
    def allow_private_addresses(self) -> bool: ...
    @property
    def max_redirects(self) -> int: ...


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one hop of a fetch got: a redirect (``location`` set), or the final answer."""

    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes = b""
    location: str | None = None


@dataclass(slots=True)
class _HostSlots:
    semaphore: asyncio.Semaphore
    waiting_or_running: int = 0


class HttpFetcher:
    """The ``Fetcher`` on httpx; one instance serves a whole event loop and all hosts."""

    def __init__(
        self,
        user_agent: str,
        timeout: float,
        max_bytes: int,
        per_host_concurrency: int,
        allow_private_addresses: bool,
        max_redirects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        _require(timeout > 0, f"timeout must be positive, got {timeout}")
        _require(max_bytes > 0, f"max_bytes must be positive, got {max_bytes}")
        _require(
            per_host_concurrency >= 1,
            f"per_host_concurrency must be >= 1, got {per_host_concurrency}",
        )
        _require(max_redirects >= 0, f"max_redirects must be >= 0, got {max_redirects}")
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._per_host_concurrency = per_host_concurrency
        self._allow_private_addresses = allow_private_addresses
        self._max_redirects = max_redirects
        self._hosts: dict[str, _HostSlots] = {}
        self._client = httpx.AsyncClient(
            headers={"User-Agent": user_agent, "Accept-Encoding": _ACCEPT_ENCODING},
            timeout=httpx.Timeout(timeout),
            limits=_POOL_LIMITS,
            follow_redirects=False,
            # No proxies from the environment: the SSRF guard must see the real peer address.
            trust_env=False,
            # No cookies: a poller has no sessions to keep, and one jar shared by every site
            # would only grow (and carry one site's state into the next request).
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            transport=transport,
        )

    @classmethod
    def from_config(
        cls, config: FetchSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> HttpFetcher:
        return cls(
            user_agent=config.user_agent,
            timeout=config.timeout.total_seconds(),
            max_bytes=config.max_bytes,
            per_host_concurrency=config.per_host_concurrency,
            allow_private_addresses=config.allow_private_addresses,
            max_redirects=config.max_redirects,
            transport=transport,
        )

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        trusted: bool = False,
        accept: str | None = None,
    ) -> FetchResult:
        """GET ``url``, following redirects; a 2xx or 304 answer, else a ``FetchError``.

        ``etag``/``last_modified`` make the request conditional. ``trusted`` (the operator's
        configured URL) exempts the first hop from the private-address guard.
        """
        headers = _request_headers(etag, last_modified, accept)
        chain = _RedirectChain(url, self._max_redirects)
        guarded = not trusted
        while True:
            answer = await self._fetch_hop(chain.current, headers, guarded=guarded)
            if answer.location is None:
                return _result(url, answer, chain.permanent_target, etag, last_modified)
            chain.follow(answer.status, answer.location)
            guarded = True  # a redirect target is the server's choice, never the operator's

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- one hop --------------------------------------------------------------------------------

    async def _fetch_hop(self, url: str, headers: Mapping[str, str], *, guarded: bool) -> _Answer:
        target = _parse_fetchable_url(url)
        check_addresses = guarded and not self._allow_private_addresses
        progress = _Progress()
        # Waiting for a host slot is our own queueing, so the deadline starts once we hold one.
        async with self._host_slot(target.host):
            try:
                async with asyncio.timeout(self._timeout):
                    if check_addresses:
                        progress.stage = "resolving"
                        await self._refuse_private_host(url, target)
                        progress.stage = "connecting"
                    return await self._exchange(
                        url, target, headers, check_peer=check_addresses, progress=progress
                    )
            except TimeoutError as e:
                raise FetchTimeoutError(
                    url, f"no complete response within {self._timeout:g}s: {progress.stalled()}"
                ) from e
            except httpx.TransportError as e:
                raise _transport_failure(url, e, self._timeout) from e

    async def _exchange(
        self,
        url: str,
        target: httpx.URL,
        headers: Mapping[str, str],
        *,
        check_peer: bool,
        progress: _Progress,
    ) -> _Answer:
        request = self._client.build_request(
            "GET", target, headers=headers, extensions={"trace": progress.trace}
        )
        response = await self._client.send(request, stream=True)
        try:
            if check_peer:
                _refuse_private_peer(url, response)
            return await self._answer(url, response, progress)
        finally:
            await response.aclose()

    async def _answer(self, url: str, response: httpx.Response, progress: _Progress) -> _Answer:
        status = response.status_code
        headers = {name.lower(): value for name, value in response.headers.items()}
        if response.has_redirect_location:
            return _Answer(url, status, headers, location=_redirect_target(url, response))
        if status == 304:
            return _Answer(url, status, headers)
        if response.is_success:
            return _Answer(url, status, headers, await self._read_body(url, response, progress))
        retry_after = parse_retry_after(response.headers.get("retry-after"), utcnow())
        raise HTTPStatusError(url, status, retry_after=retry_after)

    async def _read_body(self, url: str, response: httpx.Response, progress: _Progress) -> bytes:
        declared = _declared_length(response)
        if declared is not None and declared > self._max_bytes:
            raise ResponseTooLargeError(
                url, f"response larger than {self._max_bytes} bytes (Content-Length: {declared})"
            )
        encoding = response.headers.get("content-encoding", "")
        decoder = _decoder_for(url, encoding)
        body = bytearray()
        try:
            async for raw in response.aiter_raw():
                progress.received += len(raw)
                for piece in decoder.decode(raw):
                    body += piece
                    if len(body) > self._max_bytes:
                        raise ResponseTooLargeError(
                            url, f"response larger than {self._max_bytes} bytes"
                        )
        except zlib.error as e:
            raise FetchError(url, f"corrupt {encoding} body: {e}") from e
        return bytes(body)

    # -- guards ---------------------------------------------------------------------------------

    async def _refuse_private_host(self, url: str, target: httpx.URL) -> None:
        port = target.port or (443 if target.scheme == "https" else 80)
        for address in await self._resolve(url, target.raw_host.decode("ascii"), port):
            # an address literal "resolves to" itself: say it once
            what = "" if address == target.host else f"{target.host} resolves to "
            _refuse_blocked_address(url, address, what)

    async def _resolve(self, url: str, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to (all must be public: the connection may use any)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as e:
            raise NetworkError(url, f"could not resolve host {host!r} ({e.strerror})") from e
        return [str(info[4][0]) for info in infos]

    @contextlib.asynccontextmanager
    async def _host_slot(self, host: str) -> AsyncIterator[None]:
        """Holds one of ``host``'s concurrency slots; idle hosts are forgotten to bound memory."""
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = _HostSlots(asyncio.Semaphore(self._per_host_concurrency))
        slots.waiting_or_running += 1
        try:
            async with slots.semaphore:
                yield
        finally:
            slots.waiting_or_running -= 1
            if slots.waiting_or_running == 0:
                del self._hosts[host]


_STALLED = {
    "resolving": "resolving the host name timed out",
    "connecting": "connect timed out",
    "tls": "TLS handshake timed out",
    "waiting": "no response headers (the server took the request and did not answer)",
}


class _Progress:
    """How far one exchange got, so that a timeout says where the server stalled it."""

    def __init__(self) -> None:
        self.stage = "connecting"
        self.received = 0  # body bytes, as they came over the wire

    async def trace(self, event: str, info: Mapping[str, object]) -> None:
        """httpcore's trace hook: one call per step of the exchange."""
        if event == "connection.start_tls.started":
            self.stage = "tls"
        elif event.endswith(".send_request_headers.started"):
            self.stage = "waiting"
        elif event.endswith(".receive_response_headers.complete"):
            self.stage = "reading"

    def stalled(self) -> str:
        if self.stage == "reading":
            return f"body not complete ({self.received} bytes received)"
        return _STALLED[self.stage]


class _RedirectChain:
    """The URLs one fetch went through: enforces the limit and tracks permanent moves."""

    def __init__(self, url: str, max_redirects: int) -> None:
        self.current = url
        #: where the leading run of 301/308 hops led: the URL to poll from now on. A temporary
        #: hop ends the run, because the URL before it must keep being used.
        self.permanent_target: str | None = None
        self._visited = [url]
        self._max_redirects = max_redirects
        self._still_permanent = True

    def follow(self, status: int, location: str) -> None:
        if len(self._visited) > self._max_redirects:
            loop = ", a redirect loop" if location in self._visited else ""
            raise TooManyRedirectsError(
                self._visited[0],
                f"more than {self._max_redirects} redirects{loop} (last to {location})",
            )
        self._still_permanent = self._still_permanent and status in _PERMANENT_REDIRECTS
        if self._still_permanent:
            self.permanent_target = location
        self._visited.append(location)
        self.current = location


# -- pure helpers -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date.

    None when absent or unreadable; a date already past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    # HTTP-dates are GMT; parsedate_to_datetime leaves "-0000" dates naive.
    return max(0.0, (as_utc(when) - as_utc(now)).total_seconds())


def address_block_reason(address: str) -> str | None:
    """Why the SSRF guard refuses an IP address ("loopback", "private", ...); None if public.

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is judged by the IPv4 address it carries,
    since that is where the connection goes. Raises ``ValueError`` for a non-address.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Order matters: 127.0.0.1 is also "private" to ipaddress, but "loopback" says more.
    checks: tuple[tuple[str, bool], ...] = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        # The rest of IANA's special-purpose ranges, CGNAT 100.64.0.0/10 among them.
        ("non-public", not ip.is_global),
    )
    return next((reason for reason, applies in checks if applies), None)


def _refuse_blocked_address(url: str, address: str, what: str) -> None:
    try:
        reason = address_block_reason(address)
    except ValueError:
        reason = "unrecognised"
    if reason is not None:
        article = "an" if reason[0] in "aeiou" else "a"
        raise BlockedAddressError(url, f"refused: {what}{address}, {article} {reason} address")


def _refuse_private_peer(url: str, response: httpx.Response) -> None:
    """Checks the address actually connected to: DNS may have answered differently by then."""
    address = _connected_address(response)
    if address is not None:
        _refuse_blocked_address(url, address, "connected to ")


def _connected_address(response: httpx.Response) -> str | None:
    # A custom transport (a mock, say) may expose no socket; the resolution check then stands.
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    server_addr = stream.get_extra_info("server_addr")
    return str(server_addr[0]) if server_addr else None


def _parse_fetchable_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise FetchError(url, f"invalid URL ({e})") from e
    if parsed.scheme not in _FETCHABLE_SCHEMES:
        raise FetchError(url, f"cannot fetch a {parsed.scheme or 'relative'!r} URL, only http(s)")
    if not parsed.host:
        raise FetchError(url, "URL has no host")
    return parsed


def _redirect_target(url: str, response: httpx.Response) -> str:
    location = response.headers["location"]
    try:
        return str(response.url.join(location))
    except httpx.InvalidURL as e:
        raise FetchError(url, f"redirect to an invalid URL {location!r}") from e


def _request_headers(
    etag: str | None, last_modified: str | None, accept: str | None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    if accept:
        headers["Accept"] = accept
    return headers


def _declared_length(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _result(
    url: str,
    answer: _Answer,
    permanent_redirect: str | None,
    etag: str | None,
    last_modified: str | None,
) -> FetchResult:
    # A 304 need not repeat the validators; the ones sent are still the current ones then.
    not_modified = answer.status == 304
    return FetchResult(
        url=url,
        final_url=answer.url,
        status=answer.status,
        headers=answer.headers,
        content=answer.content,
        fetched_at=utcnow(),
        etag=answer.headers.get("etag") or (etag if not_modified else None),
        last_modified=answer.headers.get("last-modified")
        or (last_modified if not_modified else None),
        permanent_redirect=permanent_redirect,
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# -- body decoding ------------------------------------------------------------------------------


class _Decoder(Protocol):
    def decode(self, data: bytes) -> Iterator[bytes]: ...


class _Identity:
    def decode(self, data: bytes) -> Iterator[bytes]:
        yield data


class _Inflater:
    """Incremental gzip/deflate decoding that yields at most ``_DECODE_STEP_BYTES`` per step.

    httpx's own decoders inflate a whole network read at once, which is why the body is read
    raw and decoded here.
    """

    def __init__(self, coding: str) -> None:
        self._zlib = zlib.decompressobj(_GZIP_WBITS if coding == "gzip" else zlib.MAX_WBITS)
        # Some servers send "deflate" without the zlib wrapper the standard asks for.
        self._may_be_raw_deflate = coding == "deflate"

    def decode(self, data: bytes) -> Iterator[bytes]:
        # Bytes after the end of the compressed stream are ignored, as httpx does.
        while data and not self._zlib.eof:
            piece = self._inflate(data)
            data = self._zlib.unconsumed_tail
            if piece:
                yield piece

    def _inflate(self, data: bytes) -> bytes:
        try:
            piece = self._zlib.decompress(data, _DECODE_STEP_BYTES)
        except zlib.error:
            if not self._may_be_raw_deflate:
                raise
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            piece = self._zlib.decompress(data, _DECODE_STEP_BYTES)
        self._may_be_raw_deflate = False
        return piece


def _decoder_for(url: str, content_encoding: str) -> _Decoder:
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return _Identity()
    if len(codings) == 1 and codings[0] in {"gzip", "x-gzip", "deflate"}:
        return _Inflater("deflate" if codings[0] == "deflate" else "gzip")
    raise FetchError(url, f"unsupported Content-Encoding {content_encoding!r}")


# -- error translation --------------------------------------------------------------------------


def _transport_failure(url: str, error: httpx.TransportError, timeout: float) -> FetchError:
    after = f"after {timeout:g}s"
    if isinstance(error, httpx.ConnectTimeout):
        return FetchTimeoutError(url, f"connect timed out {after}")
    if isinstance(error, httpx.ReadTimeout):
        return FetchTimeoutError(url, f"read timed out {after}")
    if isinstance(error, httpx.WriteTimeout):
        return FetchTimeoutError(url, f"sending the request timed out {after}")
    if isinstance(error, httpx.PoolTimeout):
        return FetchTimeoutError(url, f"no free connection in the pool {after}")
    if isinstance(error, httpx.TimeoutException):
        return FetchTimeoutError(url, f"timed out {after}")
    return NetworkError(url, _describe_network_failure(error))


def _describe_network_failure(error: httpx.TransportError) -> str:
    # httpx wraps httpcore's error, which wraps the OS or TLS error that says what happened.
    for cause in _cause_chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(cause, socket.gaierror):
            return f"could not resolve the host ({cause.strerror})"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not accepted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})"
    if isinstance(error, httpx.RemoteProtocolError):
        return f"the server broke off or garbled the response ({error})"
    if isinstance(error, httpx.ReadError):
        return f"connection lost while reading the response ({error})"
    if isinstance(error, httpx.ConnectError):
        return f"could not connect ({error})"
    return f"network error ({type(error).__name__}: {error})"


def _cause_chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
