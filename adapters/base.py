"""The provider Protocol every adapter implements, and the values it exchanges.

The shape follows httpx's ``AsyncBaseTransport``: one small interface, errors
mapped at the boundary (see ``adapters.errors``). The delivery engine in
``daemon.delivery`` is the only caller; batching, retry, backoff and dead
letters live there, never in an adapter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NamedTuple, Protocol, Self, runtime_checkable

JSONObject = Mapping[str, Any]


class OutgoingChange(NamedTuple):
    """One outbox entry to deliver: the latest version of a record for one provider.

    A NamedTuple: thousands are made per batch, and it is the cheapest immutable record.
    """

    entry_id: int
    collection: str
    key: str
    updated_at: int  # epoch ms UTC
    deleted: bool
    body: JSONObject | None  # None for a tombstone whose body was never known
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class IncomingChange:
    """One change pulled from a provider, on its way to the inbox."""

    collection: str
    key: str
    updated_at: int  # epoch ms UTC
    deleted: bool
    body: JSONObject | None


@dataclass(frozen=True, slots=True)
class PushResult:
    """What the provider said about a whole batch it took.

    ``state`` is ``confirmed`` when the response itself proves the data is
    applied, ``accepted`` when the provider only queued it (a later callback
    confirms); ``remote_ref`` is the provider's job id, if any.
    """

    state: Literal["accepted", "confirmed"]
    status: int
    remote_ref: str | None = None


@dataclass(frozen=True, slots=True)
class PullPage:
    """A page of remote changes; ``cursor`` is stored and handed back on the next pull."""

    changes: Sequence[IncomingChange]
    cursor: str | None
    more: bool = False


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """Hard limits of one request to the provider."""

    max_items: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    can_push: bool = True
    can_pull: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """An external system dropsync delivers to and (optionally) pulls from."""

    name: str
    limits: ProviderLimits

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def check(self, change: OutgoingChange) -> str | None:
        """Return why ``change`` can never be sent (it is dead-lettered locally), or None."""
        ...

    async def push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        """Send one batch; raise an ``adapters.errors`` type on failure."""
        ...

    async def pull(self, cursor: str | None) -> PullPage:
        """Fetch changes since ``cursor`` (None: everything)."""
        ...


IDEMPOTENCY_HEADER = "Idempotency-Key"


def change_idempotency_key(provider: str, collection: str, key: str, updated_at: int) -> str:
    """The idempotency key of one (provider, collection, key, version): the four, joined.

    Requests carry ``batch_idempotency_key``, a hash of these; the item keys themselves
    are never sent, so they need not be short.
    """
    return f"{provider}\x1f{collection}\x1f{key}\x1f{updated_at}"


def batch_idempotency_key(batch: Sequence[OutgoingChange]) -> str:
    """The header value for a batch: the same set of versions always gives the same key."""
    digest = hashlib.sha256()
    for item_key in sorted(change.idempotency_key for change in batch):
        digest.update(item_key.encode())
    return digest.hexdigest()
