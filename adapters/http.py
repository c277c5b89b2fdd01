"""The one place where httpx failures become ``adapters.errors`` types."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self

import httpx
from dropsync.adapters.errors import (
    AuthError,
    PermanentError,
    ProviderThrottled,
    ProviderUnavailable,
    RetryableError,
)

MAX_REASON = 2000


class HttpAdapter:
    """Base of the HTTP adapters: owns the httpx client, closes it on exit."""

    client: httpx.AsyncClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.client.aclose()


def make_client(
    base_url: str, timeout_s: float, headers: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """The shared client of one adapter."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s),
        headers=dict(headers or {}),
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def check_response(response: httpx.Response) -> None:
    """Raise the error type for a non-2xx response (the body becomes the reason)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = f"HTTP {status}: {response.text[:MAX_REASON]}"
    if status in (401, 403):
        raise AuthError(f"credentials refused ({reason})", status=status)
    if status in (429, 503):
        raise ProviderThrottled(
            reason,
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:
        raise RetryableError(reason, status=status)
    raise PermanentError(reason, status=status, reason=reason)


async def request(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """Send a request; transport failures become ProviderUnavailable; statuses are not checked."""
    try:
        return await client.request(method, url, **kwargs)
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise ProviderUnavailable(f"{type(exc).__name__}: {exc}") from None
    except httpx.HTTPError as exc:
        raise RetryableError(f"{type(exc).__name__}: {exc}") from None


async def send(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send a request; transport failures become ProviderUnavailable, statuses are checked."""
    response = await request(client, method, url, **kwargs)
    check_response(response)
    return response
