"""Inbound routes: what a provider sends the daemon (signed callbacks, webhooks), per kind.

The daemon's listener (``daemon.inbound.listener``) owns the HTTP server, the limits on what it
reads, the store transaction, the replay memory and the summaries of the log; a kind owns
its paths, how a call is verified and how it is read. A kind with inbound routes names their
module in ``Kind.inbound``; the module's ``INBOUND`` lists them. The listener serves each
route and hands its handler a ``Call``: the request, and what the daemon does for it. The
handler returns the JSON object answered, or raises ``Refused`` (answered with its status,
logged summarised as ``callback_refused``).

What a call says of deliveries is a typed confirmation the daemon applies in one transaction
(``Call.settle``): ``SentBefore`` (every batch sent before a moment; held a while and applied
again to batches recorded later) or ``JobDone`` (the batches that carry one of the provider's
jobs). Rows of the kind's own tables are written by the kind's functions on the daemon's
connection, in the daemon's transaction (``Call.write``, ``Call.settle(then=...)``); a replay
key (a signature) makes the daemon refuse the same call twice, whenever it comes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from .base import Provider

T = TypeVar("T")


class Refused(Exception):
    """The call is answered ``status`` with ``message``, and changes nothing.

    The message is answered and logged: it never holds a secret.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class SentBefore:
    """Every batch of the provider sent at or before ``before`` (epoch ms) and accepted is
    confirmed, or, when ``failed``, failed with ``error`` and its records queued again once.

    The daemon holds it ``hold_s`` seconds and applies it again to batches recorded meanwhile
    (a provider may call back before its answer to the upload reaches the daemon).
    """

    before: int
    failed: bool
    error: str
    hold_s: float


@dataclass(frozen=True, slots=True)
class JobDone:
    """What the provider says of its job ``job`` (a batch's ``remote_ref``, alone or among
    several): ``confirmed``, ``failed`` (with ``error``: the records queued again once), or
    None when it says nothing final (the batches that carry it are only counted)."""

    job: str
    state: Literal["confirmed", "failed"] | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Settled:
    """What applying a confirmation did: the batches it is about (for a job, those carrying
    it), the batches settled now, the records queued again."""

    carried: int
    deliveries: int
    queued: int
    # A final outcome of a job no recorded batch carries yet: kept, and applied when a
    # batch carrying it is recorded (its answer may still be on its way, or the request
    # be sent again after a stop and answered with the same job).
    held: bool = False


@dataclass(frozen=True, slots=True)
class InboundProvider:
    """A configured provider, as a kind's inbound route sees it: its options and the values
    of its kind's own secrets (``Kind.secrets``, by name; one that cannot be read is absent)."""

    name: str
    options: Mapping[str, Any]
    secrets: Mapping[str, str]


class Call(Protocol):
    """One request to a kind's route, and what the daemon does for it."""

    @property
    def route(self) -> str:
        """The route's name (in log lines, and in the replay memory)."""
        ...

    @property
    def path_params(self) -> Mapping[str, str]:
        """The values of the route's path parameters."""
        ...

    @property
    def providers(self) -> Sequence[InboundProvider]:
        """The configured providers of the route's kind."""
        ...

    async def body(self) -> bytes:
        """The request's body, at most the route's cap, within the listener's deadline (else
        ``Refused``: 413, 408)."""
        ...

    async def json(self) -> Any:
        """The body as JSON text (else ``Refused`` 400): no NaN or Infinity, no lone
        surrogate."""
        ...

    def now(self) -> int:
        """The daemon's clock, epoch ms."""
        ...

    @property
    def clock_skew_ms(self) -> int:
        """How far ahead of the daemon's clock a moment may be (``max_clock_skew_s``)."""
        ...

    async def settle(
        self,
        provider: str,
        confirmation: SentBefore | JobDone,
        *,
        replay: str | None = None,
        then: Callable[[sqlite3.Connection, Settled], None] | None = None,
    ) -> Settled:
        """Apply ``confirmation`` to ``provider``'s deliveries, and ``then`` (the kind's own
        rows, given what was settled) in the same transaction. ``replay``: the key of this
        call (a signature); one accepted before is ``Refused`` (401). The provider is woken
        when records were queued again."""
        ...

    async def write(
        self, provider: str, write: Callable[[sqlite3.Connection], T], *, replay: str | None = None
    ) -> T:
        """Run ``write`` (the kind's own rows) in one transaction; ``replay`` as ``settle``."""
        ...

    async def save_error_log(
        self, provider: str, *, url: str | None, body: str | None, error: str | None
    ) -> None:
        """Keep an error log the provider offers (``integration_errors``), or why it could not
        be had."""
        ...

    def adapter(self, provider: str) -> Provider | None:
        """The running adapter of ``provider``, if it runs."""
        ...

    def wake(self, provider: str) -> None:
        """Tell the provider's flusher that entries may be sent now."""
        ...

    def start(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in the background, after the answer (it catches its own errors)."""
        ...

    def warning(self, event: str, key: Hashable, **fields: Any) -> None:
        """Log a warning a caller can cause, summarised when it floods (per event and key)."""
        ...


Handler = Callable[[Call], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Route:
    """One ``POST`` route of a kind: its path (Starlette's syntax, ``{name}`` parameters),
    its name, its handler, and the most bytes its body may have (None: the listener's
    ``MAX_BODY``, 1 MiB). A larger cap suits a route whose caller the handler checks before
    it reads the body (an unguessable path), so a stranger never gets past 1 MiB."""

    path: str
    name: str
    handler: Handler
    max_body: int | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """A kind's inbound routes, and the options its adapters get while the listener runs.

    ``adapter_options(public_url, provider)``: options added to the provider's own when its
    adapter is built (the URL of its webhook, which the provider is told with each batch).
    """

    routes: Sequence[Route]
    adapter_options: Callable[[str, InboundProvider], Mapping[str, Any]] | None = None
