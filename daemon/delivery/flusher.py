"""The delivery engine: one flusher per provider, written once for every adapter.

A flusher is one loop, whatever the provider takes; what differs between kinds is its
sender (``daemon.delivery.sending.Sender``): the batch sender (``daemon.delivery.batches``:
requests of records, written ahead) or the file sender (``daemon.delivery.filebatch``: files
uploaded). The loop

* waits for the provider's health (``daemon.delivery.provider_health``): its backoff, a
  ``Retry-After``, ``auth-failed``; ``dropsync resync NAME`` ends each of them;
* lets the sender take the oldest pending entries (``take``) and drop to dead letters
  what the adapter's local check refuses (``dead_letter_refused``);
* sends each request (``send``) and decides what the answer means, by the error's type
  (``adapters.errors``), in this one place:

  - success: returned to the sender, which records it (``delivered``): entries leave the
    outbox, ``delivered`` and ``deliveries`` record it; the provider is ``online``
  - ProviderUnavailable: provider ``offline``; RetryableError (an unexpected answer and a
    misconfigured provider included): ``backing-off``; the next attempt waits the
    provider's ``Retry-After`` (within ``max_retry_after_s``), else backoff
    (``backoff_base_s`` .. ``backoff_cap_s``); the moment is stored (a restart keeps it,
    ``status`` shows it)
  - AuthError: ``auth-failed``; every entry is kept; a reload, ``dropsync resync``, or a
    restart (which tries once) resumes. For a provider with lanes (``adapters.base.Laned``:
    a request carries one lane's entries), it is that lane's refusal: returned to the
    sender, which sets the lane's entries aside (``daemon.delivery.lanes``); the pass goes on with
    the other lanes, and ends only when every lane is refused
  - PermanentError: returned to the sender, which finds the refused records (halves of a
    batch, one file of an upload) and dead-letters them with the provider's reason

  A failure is stored by the provider's health, in one transaction with the sender's
  note of the attempt, and ends the pass (``Paused``).

The order of writes is a structure: the batch sender records a delivered request in the
transaction of the loop's next write, before that write's own work (mostly the next
request written ahead: one commit a request); a failure or a dead letter written before
that recording would be overwritten by it (the provider shown ``online`` after it went
down). So the loop's store writes all go through ``write``, which records what was
delivered first (``settle`` records it alone); senders never touch the store but through
the loop (a test holds this).
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import structlog
from dropsync.adapters.base import Laned, Provider
from dropsync.adapters.errors import AuthError, PermanentError, ProviderError
from dropsync.store import outbox
from dropsync.store.handle import Store
from dropsync.store.merge import MergeResult

from .. import metrics
from ..clock import now_ms
from ..config import ProviderConfig
from ..places import spool_folder
from .batches import BatchSender
from .filebatch import FileSender
from .provider_health import Failure, Flow, ProviderHealth
from .sending import (
    Answer,
    AnswerRecorder,
    Attempt,
    FailureNote,
    Paused,
    Sender,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Flushers are woken by merges and by commits of other programs; this is a safety net.
IDLE_RECHECK_S = 30.0

# A delivery to record: its unit of work (in the store's thread) and what follows it.
_Delivered = tuple[Callable[[sqlite3.Connection], Any], Callable[[Any], None]]


def sender_for(store_path: Path, provider: Provider) -> Sender:
    """The sender a provider needs: files for the kinds that take files, else requests."""
    if provider.limits.file_batches:
        return FileSender(spool_folder(store_path), provider.name)
    return BatchSender()


class Flusher:
    """Delivers one provider's outbox, forever (or once through, in dry-run mode)."""

    def __init__(
        self,
        store: Store,
        config: ProviderConfig,
        provider: Provider,
        *,
        dry_run: bool = False,
        rng: random.Random | None = None,
        record_answer: AnswerRecorder | None = None,
        on_merge: Callable[[MergeResult], None] = lambda result: None,
        health: ProviderHealth | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.name = config.name
        self.provider = provider
        self.dry_run = dry_run
        # Shared with the provider's pulls, and kept by the supervisor across reloads.
        self.health = health or ProviderHealth(store, config, rng=rng)
        self.sender = sender or sender_for(store.path, provider)
        # A provider with lanes: each request carries one lane's entries (daemon.delivery.lanes).
        self.laned: Laned | None = provider if isinstance(provider, Laned) else None
        self.lanes = self.health.lanes
        self.record_answer = record_answer
        self.on_merge = on_merge
        self.batch_limit = min(
            config.batch_max_items or provider.limits.max_items, provider.limits.max_items
        )
        self.paused = False
        self._wake = anyio.Event()
        # Delivered requests not recorded yet (see write).
        self._unrecorded: list[_Delivered] = []

    def wake(self) -> None:
        """New entries are waiting (or the store changed): stop idling."""
        self._wake.set()

    async def _idle(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def run(self) -> None:
        """Flush until cancelled."""
        if not self.provider.limits.can_push:
            return
        await self.sender.start(self)
        while True:
            # Woken by new entries or a change of the store, it looks again: a resync or a
            # reload may have ended the wait.
            await self.health.wait_turn(Flow.PUSH, self._idle)
            if not await self.flush_once() and not self.paused:
                await self._idle(IDLE_RECHECK_S)

    async def flush_once(self) -> bool:
        """Send until the outbox is empty (or the provider pauses); False if nothing was sent."""
        self.paused = False
        sent = False
        error: Exception | None = None  # raised as itself, not inside an ExceptionGroup
        if self.laned is not None:
            if not self.lanes.started:  # a flusher of its own (the supervisor starts them)
                if self.dry_run:
                    self.lanes.available = frozenset(self.laned.lanes())
                else:
                    await self.lanes.start(self.laned.lanes())
            await self.lanes.refresh()  # a resync may have resumed lanes
        try:
            sent = await self.sender.send_pending(self)
        except Paused:
            self.paused = True  # run() goes back to waiting for the provider's health
        except Exception as exc:
            error = exc
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.settle()
                except Exception as exc:
                    error = error or exc
        if error is not None:
            raise error
        return sent and not self.paused

    # -- for the senders: reading --------------------------------------------------------

    async def take(self, after_id: int) -> list[outbox.OutboxEntry]:
        """The oldest pending entries after ``after_id``, up to the batch limit."""
        # From the read-only connection: taking the next batch does not wait for the
        # recording of the previous one (whose entries it skips: they are before after_id).
        async with self.store.snapshot() as db:
            return await outbox.take_batch(db, self.name, self.batch_limit, after_id=after_id)

    async def unfinished(self) -> list[outbox.UnfinishedRequest]:
        """The requests written ahead whose answer is not final, oldest first."""
        async with self.store.read() as db:
            return await outbox.unfinished_requests(db, self.name)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, ...)`` in the store's thread, between transactions: a read, or the
        scratch notes of the file spool (which are not the store)."""
        return await self.store.call(fn, *args, **kwargs)

    # -- for the senders: sending --------------------------------------------------------

    def stop_if_held(self) -> None:
        """Raise ``Paused`` while a ``Retry-After`` holds the provider (one answered to a
        pull meanwhile, say): nothing is sent before it."""
        if self.health.held():
            raise Paused

    async def send(
        self, push: Callable[[], Awaitable[R]], note: FailureNote, *, lane: str | None = None
    ) -> Answer[R]:
        """Send one request (``push()``) and sort its answer: the provider's result, or its
        permanent refusal, is returned to the sender, and so is a refusal of ``lane``'s
        credentials (a request of one lane); any other failure is stored by the provider's
        health, with ``note``'s record of the attempt in the same transaction, and ends the
        pass (``Paused``)."""
        self.stop_if_held()
        attempt = Attempt(now_ms(), time.perf_counter())
        try:
            result = await metrics.timed_request(self.name, push)
        except PermanentError as exc:
            return Answer(attempt, refused=exc)
        except AuthError as exc:
            if lane is None:
                await self._failed(attempt, exc, note)
                raise Paused from exc
            return Answer(attempt, lane_refused=exc)
        except ProviderError as exc:
            await self._failed(attempt, exc, note)
            raise Paused from exc
        return Answer(attempt, result)

    async def _failed(self, attempt: Attempt, exc: ProviderError, note: FailureNote) -> None:
        """A retryable answer (or none), or refused credentials: the request stays
        unfinished, sent again as it is after the wait (the provider may have applied it)."""
        self.health.answered(exc, Flow.PUSH)  # at once: a reload may cut the write short

        def store(conn: sqlite3.Connection) -> tuple[Failure, int]:
            now = now_ms()
            items = note(conn, attempt, exc, now)
            return self.health.push_failure(conn, exc, now), items

        failure, items = await self.write(store)
        self.health.failure_stored(failure, items=items)

    async def pause_locally(self, error: str, event: str) -> NoReturn:
        """What was to be sent could not be prepared (its files could not be written): the
        provider backs off as after a failure, ``event`` says why; nothing is lost."""
        failure = await self.write(self.health.local_failure, error, now_ms())
        self.health.failure_stored(failure, event=event)
        raise Paused

    async def dead_letter_refused(self, refused: dict[str, list[outbox.OutboxEntry]]) -> None:
        """Dead-letter the entries the adapter's local check refuses, a group per reason
        (said in dry-run mode too, written only outside it)."""
        for reason, group in refused.items():
            log.warning(
                "dead_lettered",
                provider=self.name,
                items=len(group),
                reason=reason,
                local=True,
                dry_run=self.dry_run,
            )
            if not self.dry_run:
                await self.write(
                    outbox.dead_letter,
                    self.name,
                    group,
                    reason=reason,
                    http_status=None,
                    now=now_ms(),
                )
                metrics.dead_lettered(self.name, len(group))

    # -- writing: every write goes through write, which records the deliveries first ------

    def delivered(self, work: Callable[[sqlite3.Connection], T], then: Callable[[T], None]) -> None:
        """A request was taken: ``work`` records it (in the store's thread), then ``then(its
        result)``; in the transaction of the next write (before that write's own work), or
        by ``settle``."""
        self._unrecorded.append((work, then))

    async def settle(self) -> None:
        """Record every delivered request now (the pass ends, or something is read that
        must see them)."""
        if self._unrecorded:
            await self.write(_nothing)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The flusher's one way to write: ``fn(conn, *args, **kwargs)`` whole in the store's
        thread (tried again whole after a busy store or a full disk), in one transaction
        after the recording of every delivered request not recorded yet. So every write
        comes in the order things happened, and the batch sender's request written ahead
        commits with the previous request's delivery: one commit a request."""
        batches, self._unrecorded = self._unrecorded, []
        if not batches:
            return await self.store.transact(fn, *args, **kwargs)
        stage = "waiting"

        def record_then_write(conn: sqlite3.Connection) -> tuple[list[Any], T]:
            nonlocal stage
            stage = "recording"
            recorded = [work(conn) for work, _ in batches]
            stage = "writing"
            return recorded, fn(conn, *args, **kwargs)

        try:
            recorded, result = await self.store.transact(record_then_write)
        except BaseException:
            # Not committed. Unless a recording itself failed (raised, as it was before a
            # write: its request stays unfinished and is sent again), the deliveries wait
            # for the next write or settle.
            if stage != "recording":
                self._unrecorded[:0] = batches
            raise
        for (_, then), value in zip(batches, recorded, strict=True):
            then(value)
        return result


def _nothing(conn: sqlite3.Connection) -> None:
    """A write of nothing: the recordings before it are the point."""
