"""The provider Protocol every adapter implements, and the values it exchanges.

The shape follows httpx's ``AsyncBaseTransport``: one small interface, errors
mapped at the boundary (see ``adapters.errors``). The delivery engine in
``daemon.delivery.flusher`` is the only caller; batching, retry, backoff and dead
letters live there, never in an adapter.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
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
    # skipped (positions in the upload's parts); the engine uploads their documents again in
    # halves until the refused ones are isolated, and dead-letters only those
    # (daemon.narrowing).
    skipped: tuple[tuple[int, str], ...] = ()
    # Request kinds (``RequestOutcome``): what the provider decided about each entry of the
    # batch, and records its answer proves (merged in the same transaction as the delivery).
    outcomes: Sequence[RequestOutcome] = ()
    changes: Sequence[IncomingChange] = ()


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """The provider's decision on one request record (e.g. a 2-way registration).

    A request is an outbox entry like any other; a kind that answers per request
    returns one outcome per decided entry. ``remote_ref`` is the provider's id of
    what it created (a registration id), ``reason`` its words when it refused.
    """

    entry_id: int
    status: Literal["confirmed", "refused"]
    reason: str | None = None
    remote_ref: str | None = None


@dataclass(frozen=True, slots=True)
class PullPage:
    """A page of remote changes; ``cursor`` is stored and handed back on the next pull.

    ``skipped`` counts listed items that did not have the documented shape.
    """

    changes: Sequence[IncomingChange]
    cursor: str | None
    more: bool = False
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class PullStream:
    """One resource a provider is pulled by, with a cursor of its own (``cursors.name``).

    ``remove_outdated``: after a complete *full* pull of this stream, the provider's
    records of ``collection`` that it no longer returned become tombstones. The daemon
    pulls such a stream in full whenever a removal is due: when its last complete full
    pull ended ``full_pull_interval_s`` or more ago (0: every pull), incremental between.
    ``derived``: after a pull of this stream, the daemon hands the collection's live
    records to ``StreamPuller.derive`` (records computed from others, e.g. master sessions).
    """

    name: str
    collection: str
    remove_outdated: bool = False
    derived: bool = False
    full_pull_interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamPage:
    """One page of a stream pull.

    ``cursor``: the greatest position seen so far in this pull (the provider's own
    value), stored once the pull is settled. ``last``: no page follows. On the last
    page, ``settled`` says the listing held still while it was paged (same total, every
    item read once), so the cursor may move and, for a ``full`` pull (not filtered by a
    cursor), records not returned are known to be gone.
    """

    changes: Sequence[IncomingChange]
    cursor: str | None
    last: bool = False
    settled: bool = False
    full: bool = False


@runtime_checkable
class StreamPuller(Protocol):
    """A provider pulled per resource, page by page (the daemon commits each page)."""

    def pull_streams(self) -> Sequence[PullStream]:
        """The streams to pull, in order."""
        ...

    def stream_pages(self, stream: PullStream, since: str | None) -> AsyncIterator[StreamPage]:
        """The pages of one pull of ``stream``; ``since`` is the stored cursor (None: full)."""
        ...

    def derive(
        self, stream: PullStream, records: Sequence[tuple[str, int, bool, JSONObject | None]]
    ) -> Sequence[IncomingChange]:
        """Changes that keep derived records right, given the collection's records
        as (key, updated_at, deleted, body)."""
        ...


Lookup = Callable[[str, Mapping[str, str]], Awaitable[Sequence[tuple[str, int, JSONObject]]]]
"""Live (key, updated_at, body) records of a collection whose body has these field values."""


@runtime_checkable
class NeedsLookup(Protocol):
    """A provider that reads current records while it sends (given by the daemon)."""

    def attach_lookup(self, lookup: Lookup) -> None:
        """Keep ``lookup`` for later use."""
        ...


@runtime_checkable
class Laned(Protocol):
    """A provider whose unit of failure is a lane (favourites: a user, with a token of their
    own): one lane's refused credentials pause that lane only.

    The engine sends each request with the entries of one lane (``lane_of``), pulls lane by
    lane (``pull_lane``), and pauses a lane whose request the provider answers with an
    ``AuthError``; the provider as a whole is ``auth-failed`` only when every lane with
    credentials is refused. Any other failure is the provider's, as for every kind.
    """

    def lanes(self) -> Sequence[str]:
        """The lanes that have credentials now."""
        ...

    def pull_lanes(self) -> Sequence[str]:
        """The lanes to pull, in order (those of ``lanes`` the config asks to pull)."""
        ...

    def lane_of(self, change: OutgoingChange) -> str:
        """The lane an outbox entry is sent in."""
        ...

    async def pull_lane(self, lane: str) -> PullPage:
        """Everything of one lane (the page's cursor is not kept)."""
        ...


@dataclass(frozen=True, slots=True)
class CredentialUpdate:
    """What reading a provider's credentials again found.

    ``values``: every credential value now in use (to be redacted everywhere before anything
    is said); ``changed``: lanes with a new or different credential (tried again at once);
    ``gone``: lanes whose credential was removed; ``problems``: (source, problem) of each
    source that could not be read or parsed (its previous credentials stay in use); the
    source is a path, or None for the provider's secret. Never a credential's value.
    """

    values: tuple[str, ...] = ()
    changed: frozenset[str] = frozenset()
    gone: frozenset[str] = frozenset()
    problems: tuple[tuple[str | None, str], ...] = ()


@runtime_checkable
class LiveCredentials(Protocol):
    """A provider whose credentials change while it runs (tokens written as users sign in):
    the daemon watches where they come from and hands them over without a reload."""

    def credential_paths(self) -> Sequence[Path]:
        """Files and folders the adapter reads credentials from (besides a ``secret_file``,
        which the daemon reads)."""
        ...

    def reload_credentials(
        self, secret: str | None, *, secret_read: bool, paths: Sequence[Path] | None = None
    ) -> CredentialUpdate:
        """Read the credentials again; ``secret`` is the provider's secret as read now
        (``secret_read`` False: it was not read again, or could not be: the previous one
        stays in use); ``paths``: only these entries of ``credential_paths``' folders
        changed (None: read everything)."""
        ...


@runtime_checkable
class NeedsCollections(Protocol):
    """A provider whose requests depend on the collections' own config (given by the daemon
    before its first request, and again on every reload)."""

    def attach_collections(self, timestamps: Mapping[str, str]) -> None:
        """Keep each collection's LWW timestamp field (a dotted path), by collection name."""
        ...


@runtime_checkable
class Probes(Protocol):
    """A provider that can tell whether its credentials work (``dropsync probe``)."""

    async def probe(self) -> str:
        """Send one cheap authenticated request that changes nothing at the provider.

        Returns what was asked (``POST /api/v1/login``). Raises the ``adapters.errors``
        type of the answer: ``AuthError`` (the credentials were refused),
        ``ProviderUnavailable`` (no answer), ``ProviderMisconfigured`` or
        ``UnexpectedAnswer`` (a redirect, a 404, a page of another shape), ...
        """
        ...


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
    (for churn: client brand id -> its brand id), read by ``mapping`` from the kind's own
    table before each batch.
    """

    max_file_bytes: int

    def mapping(self, db: sqlite3.Connection) -> Mapping[str, int]:
        """What the provider's callbacks told us, read in the store's thread (its kind's own
        table: ``adapters/<kind>/tables.py``)."""
        ...

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


def change_idempotency_key(
    provider: str, collection: str, key: str, updated_at: int, queued_at: int = 0
) -> str:
    """The idempotency key of one (provider, collection, key, version) as queued at
    ``queued_at`` (its outbox entry's ``enqueued_at``): the five, joined.

    A version queued again (a failure callback, ``resync``, ``dead-letters retry``) is a new
    entry with a new ``enqueued_at``, so its sending is a new request to the provider, not a
    replay of the one that failed (which a provider honouring the key would answer with the
    old result, processing nothing). Requests carry ``batch_idempotency_key``, a hash of
    these; the item keys themselves are never sent, so they need not be short.
    """
    return f"{provider}\x1f{collection}\x1f{key}\x1f{updated_at}\x1f{queued_at}"


def batch_idempotency_key(batch: Sequence[OutgoingChange]) -> str:
    """The header value for a batch: the same set of queued versions always gives the same
    key (a request sent again after a failure or a kill carries the one stored with it)."""
    # One update of the keys joined is the digest of updates one key each.
    keys = sorted([change.idempotency_key for change in batch])
    return hashlib.sha256("".join(keys).encode()).hexdigest()
