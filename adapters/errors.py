"""Errors raised by provider adapters.

Every adapter translates its transport's failures (httpx exceptions, HTTP
status codes) into this tree at its boundary, so the delivery engine decides
what to do from the *type* alone:

    ProviderError                  base of everything an adapter raises
    ├── RetryableError             try the same batch again later
    │   ├── ProviderUnavailable    connection refused/reset, timeout: provider offline
    │   └── ProviderThrottled      429/503, possibly with a Retry-After delay
    ├── AuthError                  401/403: pause the provider, keep every entry
    └── PermanentError             the provider refused the batch (4xx other than
                                   auth/throttle); the engine splits the batch to
                                   isolate the offending records and dead-letters them
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class: a provider call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(ProviderError):
    """The same request may succeed later; ``retry_after`` is the provider's hint in seconds."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ProviderUnavailable(RetryableError):
    """The provider could not be reached (connection error or timeout)."""


class ProviderThrottled(RetryableError):
    """The provider asked us to slow down (429, 503)."""


class AuthError(ProviderError):
    """The provider rejected our credentials (401/403)."""


class PermanentError(ProviderError):
    """The provider refused the request; repeating it unchanged will fail again.

    ``reason`` is the provider's status and body, kept for the dead-letter row.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message, status=status)
        self.reason = reason or message
