"""What the delivery loop (``daemon.delivery.flusher.Flusher``) and its senders share.

A sender is the part of delivery that differs between kinds of provider: the batch sender
(``daemon.delivery.batches``: requests of records, written ahead and sent again as they were) and
the file sender (``daemon.delivery.filebatch``: records streamed into files, uploaded). A sender
forms what is sent and reads the answer's details; the loop does the rest (see its
module): it waits for the provider's health, takes entries, sends (``Flusher.send`` sorts
every answer), writes in order, records deliveries and dead letters.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from dropsync.adapters.base import OutgoingChange, PushResult, change_idempotency_key
from dropsync.adapters.errors import AuthError, PermanentError, ProviderError
from dropsync.store import outbox
from dropsync.store.merge import MergeResult

from ..jsontext import load_outgoing, load_outgoing_many

if TYPE_CHECKING:
    from .flusher import Flusher

R = TypeVar("R")

# Records a push's per-request outcomes and proven records, in the delivery's transaction.
AnswerRecorder = Callable[
    [sqlite3.Connection, Sequence[outbox.OutboxEntry], PushResult, int], MergeResult
]
# Notes a failed attempt in the failure's transaction (conn, attempt, error, now); returns
# the number of records it carried.
FailureNote = Callable[[sqlite3.Connection, "Attempt", ProviderError, int], int]


class Paused(Exception):
    """The pass stops: the provider failed (its health now says when to try again), a
    ``Retry-After`` holds it, or what was to be sent could not be prepared."""


class Sender(Protocol):
    """How one kind of provider is sent to, behind the delivery loop."""

    async def start(self, loop: Flusher) -> None:
        """Before the first pass (leftovers of a killed run are removed here)."""

    async def send_pending(self, loop: Flusher) -> bool:
        """Send what is pending, until the outbox is empty or the provider fails (``Paused``);
        True if anything was sent (or dead-lettered: the outbox may hold more)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One sending of a request: when it started (wall clock, and perf_counter)."""

    sent_at: int
    started: float

    def latency_ms(self) -> float:
        """Milliseconds since the request was sent."""
        return (time.perf_counter() - self.started) * 1000


@dataclass(frozen=True, slots=True)
class Answer(Generic[R]):
    """What a request got: the provider's result, or its permanent refusal (``refused``:
    the sender finds which records are refused), or, for a request of one lane, that
    lane's refused credentials (``lane_refused``: the sender sets its entries aside).
    Failures never get here (``Paused``)."""

    attempt: Attempt
    result: R | None = None
    refused: PermanentError | None = None
    lane_refused: AuthError | None = None


def to_outgoing(provider: str, entry: outbox.OutboxEntry) -> OutgoingChange:
    """The adapter's view of an outbox entry (``to_outgoing_many`` for a batch)."""
    body = load_outgoing(entry.body) if entry.body is not None else None
    return OutgoingChange(
        entry.id,
        entry.collection,
        entry.key,
        entry.updated_at,
        entry.deleted,
        body if isinstance(body, dict) else None,
        change_idempotency_key(
            provider, entry.collection, entry.key, entry.updated_at, entry.enqueued_at
        ),
    )


def to_outgoing_many(provider: str, entries: Sequence[outbox.OutboxEntry]) -> list[OutgoingChange]:
    """``to_outgoing`` of each entry of a batch, the bodies decoded together."""
    bodies = load_outgoing_many([entry.body for entry in entries])
    # tuple.__new__ makes the NamedTuple without the Python frame of its __new__: a third
    # of this function's time for a batch of 1000. The key is change_idempotency_key's,
    # written out here for the same reason (tests hold the two to the same text).
    new = tuple.__new__
    return [
        new(
            OutgoingChange,
            (
                entry_id,
                collection,
                record_key,
                updated_at,
                deleted,
                body if isinstance(body, dict) else None,
                f"{provider}\x1f{collection}\x1f{record_key}\x1f{updated_at}\x1f{enqueued_at}",
            ),
        )
        for (entry_id, collection, record_key, updated_at, deleted, _, _, enqueued_at), body in zip(
            entries, bodies, strict=True
        )
    ]
