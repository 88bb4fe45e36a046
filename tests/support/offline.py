"""An httpx transport that only reaches this machine, for tests whose data names real hosts.

Feeds from the third-party corpus link to real outlets; a test must never contact them (nor ask
DNS about them), so every request to a non-loopback host fails like an unreachable server.
"""

from __future__ import annotations

import httpx

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class LoopbackOnlyTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host not in LOOPBACK_HOSTS:
            raise httpx.ConnectError(
                f"offline test: not contacting {request.url.host}", request=request
            )
        return await super().handle_async_request(request)
