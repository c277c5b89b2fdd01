"""Errors raised by provider adapters.

Every adapter translates its transport's failures (httpx exceptions, HTTP
status codes) into this tree at its boundary, so the delivery engine decides
what to do from the *type* alone:

    ProviderError                  base of everything an adapter raises
    ├── RetryableError             try the same batch again later (408, 409, 425, 5xx ...)
    │   ├── ProviderUnavailable    connection refused/reset, timeout: provider offline
    │   ├── ProviderThrottled      429/503, possibly with a Retry-After delay
    │   ├── UnexpectedAnswer       an answer not in the kind's documented success shape (a
    │   │                          200 with an HTML page, a 201 without the job id, a list
    │   │                          that is not a list): nothing is known to be stored
    │   └── ProviderMisconfigured  3xx (with its Location), 404, 405 ...: the request cannot
    │                              succeed as configured, whatever the records hold
    ├── AuthError                  401/403: pause the provider, keep every entry
    └── PermanentError             the provider refused the batch (other 4xx); the engine
                                   splits the batch to isolate the offending records and
                                   dead-letters them

Messages never carry a secret: ``adapters.http.HttpAdapter`` passes every error
leaving an adapter through ``redact``. A cause is chained (``raise ... from exc``)
only when its own text cannot quote a secret (socket-level errors); httpx's protocol
errors quote headers and answers, so they are not.
"""

from __future__ import annotations

from collections.abc import Callable


class ProviderError(Exception):
    """Base class: a provider call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def redact(self, redact: Callable[[str], str]) -> None:
        """Pass every text this error carries through ``redact`` (in place)."""
        self.args = tuple(redact(a) if isinstance(a, str) else a for a in self.args)


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


class UnexpectedAnswer(RetryableError):
    """The provider answered, but not with the kind's documented success answer."""


class ProviderMisconfigured(RetryableError):
    """The request cannot succeed as configured (a redirect, a missing endpoint)."""


class AuthError(ProviderError):
    """The provider rejected our credentials (401/403)."""


class PermanentError(ProviderError):
    """The provider refused the request; repeating it unchanged will fail again.

    ``reason`` is the provider's status and body, kept for the dead-letter row.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message, status=status)
        self.reason = reason or message

    def redact(self, redact: Callable[[str], str]) -> None:
        """Pass the message and the reason through ``redact`` (in place)."""
        super().redact(redact)
        self.reason = redact(self.reason)
