"""A client for the running service's local HTTP API (used by the CLI while `newsmon run` owns
the embedded vector store)."""

from __future__ import annotations

from typing import Any

import httpx

from monitor.errors import NewsmonError

#: how long the CLI waits to find out whether a service is listening
PROBE_TIMEOUT = 0.5
REQUEST_TIMEOUT = 60.0


class ServiceError(NewsmonError):
    """The running service answered with an error."""


class ServiceClient:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, trust_env=False)

    @classmethod
    def from_config(cls, config: Any) -> ServiceClient:
        api = config.api
        host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        token = api.token.get_secret_value() if api.token else None
        return cls(f"http://{host}:{api.port}", token)

    def running(self) -> bool:
        """Whether a newsmon service answers on the configured address."""
        try:
            response = self._client.get("/health", timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("status") == "ok"

    def search(
        self,
        query: str,
        *,
        lang: str | None,
        sources: list[str] | None,
        since: str | None,
        until: str | None,
        limit: int,
        by_story: bool,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"q": query, "limit": limit, "by_story": by_story}
        optional = {"lang": lang, "since": since, "until": until, "source": sources}
        params.update({k: v for k, v in optional.items() if v})
        result: list[dict[str, Any]] = self._call("GET", "/search", params=params)
        return result

    def topic_test(self, topic_id: str, *, since: str, until: str | None) -> dict[str, Any]:
        params = {"since": since, **({"until": until} if until else {})}
        result: dict[str, Any] = self._call("GET", f"/topics/{topic_id}/test", params=params)
        return result

    def reindex(self, *, everything: bool) -> int:
        return int(self._call("POST", "/reindex", params={"all": everything})["reset"])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, timeout=REQUEST_TIMEOUT, **kwargs)
        except httpx.HTTPError as e:
            raise ServiceError(f"service at {self.base_url}: {e}") from e
        if response.status_code != 200:
            detail = (
                response.json().get("detail")
                if response.headers.get("content-type", "").startswith("application/json")
                else response.text[:200]
            )
            raise ServiceError(f"service at {self.base_url}{path}: HTTP {response.status_code}: "
                               f"{detail}")  # fmt: skip
        return response.json()
