"""The provider Protocol every adapter implements, and the values it exchanges.

The shape follows httpx's ``AsyncBaseTransport``: one small interface, errors
mapped at the boundary (see ``adapters.errors``). The delivery engine in
``daemon.delivery`` is the only caller; batching, retry, backoff and dead
letters live there, never in an adapter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
    # A partial success (file batches): (part index, the provider's reason) of each part it
    # skipped; the engine sends each such part once more on its own, then dead-letters it.
    skipped: tuple[tuple[int, str], ...] = ()


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
    # True: the provider takes batches as files (see FileBatchProvider); max_bytes is then
    # the most one upload carries.
    file_batches: bool = False
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


@dataclass(frozen=True, slots=True)
class FilePart:
    """One file of a file batch, written by the engine from the adapter's documents."""

    path: Path
    meta: Mapping[str, Any]  # what the provider is told about this file (e.g. brand, table)
    items: int
    size: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """A change that cannot be sent yet (it stays queued); ``reason`` is shown by ``status``."""

    reason: str


@runtime_checkable
class FileBatchProvider(Provider, Protocol):
    """A provider that takes batches as files (``limits.file_batches``).

    The engine streams the pending entries into files on disk, one group of files per
    ``group_of`` value, each at most ``max_file_bytes``, as a JSON array of ``document``s;
    then ``push_files`` uploads them. ``mapped`` is what the provider's callbacks told us
    (for churn: client brand id -> its brand id), read from the store before each batch.
    """

    max_file_bytes: int

    def group_of(self, change: OutgoingChange, mapped: Mapping[str, int]) -> Hashable | Waiting:
        """Which group of files ``change`` goes into, or why it must wait."""
        ...

    def file_meta(self, group: Hashable) -> Mapping[str, Any]:
        """What the provider is told about a file of ``group``."""
        ...

    def document(self, change: OutgoingChange) -> bytes:
        """The JSON text of one array element for ``change``."""
        ...

    def verify_file(self, part: FilePart) -> str | None:
        """Check a written file again before sending it once more; why it is unusable, or None."""
        ...

    async def push_files(self, parts: Sequence[FilePart], *, idempotency_key: str) -> PushResult:
        """Upload the files in one request; ``PushResult.skipped`` names refused parts."""
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
