"""A client of the extraction gateway, for batch jobs and the CLI: retries what the gateway sheds.

A 429 or 503 carries `Retry-After`; the client waits at least that long (with jitter, growing
per attempt) and tries again, a bounded number of times. Other errors are the row's own (a text
over the limit, say) and are returned as that row's error instead of failing the job.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import httpx

RETRY_STATUSES = (429, 502, 503, 504)


@dataclass(frozen=True)
class RowResult:
    """The gateway's answer for one text, or why there is none."""

    answer: dict[str, Any] | None
    error: str | None = None
    error_type: str | None = None
    # The gateway's HTTP status of an error answer; None when it never answered.
    status: int | None = None


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout_s: float = 60.0,
        max_connections: int = 64,
        max_attempts: int = 8,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self.max_attempts = max_attempts

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def extract(self, text: str, adapter: str | None) -> RowResult:
        body: dict[str, Any] = {"text": text}
        if adapter:
            body["adapter"] = adapter
        last = RowResult(None, "no attempt made", "unavailable")
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self._http.post("/v1/extract", json=body)
            except httpx.HTTPError as exc:
                last = RowResult(None, f"gateway unreachable ({type(exc).__name__})", "unavailable")
                await asyncio.sleep(_backoff(attempt, None))
                continue
            if response.status_code == 200:
                return RowResult(response.json())
            last = _row_error(response)
            if response.status_code not in RETRY_STATUSES:
                return last
            await asyncio.sleep(_backoff(attempt, response.headers.get("retry-after")))
        return last


def _backoff(attempt: int, retry_after: str | None) -> float:
    floor = float(retry_after) if retry_after and retry_after.isdigit() else 0.5
    return max(floor, min(30.0, 0.5 * 2 ** (attempt - 1))) * (1 + random.random() * 0.2)


def _row_error(response: httpx.Response) -> RowResult:
    try:
        error = response.json()["error"]
        return RowResult(
            None, str(error.get("message")), str(error.get("type")), response.status_code
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        status = response.status_code
        return RowResult(None, f"gateway answered {status}", "http_error", status)
