"""The delivery engine: one flusher per provider, written once for every adapter.

A flusher takes the oldest outbox entries up to the provider's batch limit,
drops (to dead letters) what the adapter's local check refuses, sends the rest,
and records the outcome in one transaction. What the provider's answer means is
decided by the error's type (``adapters.errors``):

* success: entries leave the outbox, ``delivered`` and ``deliveries`` record it
* ProviderUnavailable: provider ``offline``; RetryableError (an unexpected answer
  and a misconfigured provider included): ``backing-off``; the next attempt waits
  ``Retry-After`` when given, up to ``max_retry_after_s`` (``retry_after_capped`` is
  logged beyond it), else exponential backoff with full jitter (``backoff_base_s``
  .. ``backoff_cap_s``); the time is stored, so a restart keeps it
* AuthError: ``auth-failed``; every entry is kept; a reload, ``dropsync resync``,
  or a restart (which probes once) resumes
* PermanentError: the batch is split in halves until the offending records are
  alone; those go to ``dead_letters`` with the provider's reason

Delivery is at least once; each batch carries an idempotency key derived from
the (provider, collection, key, version) of its entries.

While the outbox has more, the flusher keeps going, three batches at a time: while
one batch's request is in flight, the next is taken and prepared (decoded,
checked) and the previous one's delivery is recorded in the store's thread. The
next batch is taken after the entries in flight, which stay in the outbox until
their delivery is recorded. Every other write goes through ``Flusher._write``, which
waits for that recording first, so the provider's state is always written in the
order things happened (a test holds that no other method writes).
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import aiosqlite
import anyio
import structlog
from dropsync.adapters.base import (
    OutgoingChange,
    Provider,
    PushResult,
    batch_idempotency_key,
    change_idempotency_key,
)
from dropsync.adapters.errors import (
    AuthError,
    PermanentError,
    ProviderError,
    ProviderUnavailable,
    RetryableError,
)
from dropsync.daemon.clock import now_ms
from dropsync.daemon.config import ProviderConfig
from dropsync.daemon.jsontext import load_outgoing
from dropsync.store import outbox
from dropsync.store.handle import Store
from dropsync.store.merge import MergeResult

log = structlog.get_logger(__name__)

# Flushers are woken by merges and by commits of other programs; this is a safety net.
IDLE_RECHECK_S = 30.0
_MIN_DELAY_S = 0.05


# A batch the provider took, not yet recorded: entries, batch key, latency (ms), result.
_Delivered = tuple[list[outbox.OutboxEntry], str, float, PushResult]
# Records a push's per-request outcomes and proven records, in the delivery's transaction.
AnswerRecorder = Callable[
    [sqlite3.Connection, Sequence[outbox.OutboxEntry], PushResult, int], MergeResult
]


class _Paused(Exception):
    """The provider stops taking batches for now (backoff or auth failure)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter."""

    base_s: float
    cap_s: float

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after ``failures`` consecutive failures."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(failures - 1, 62)))
        return max(_MIN_DELAY_S, rng.uniform(0, ceiling))


def to_outgoing(provider: str, entry: outbox.OutboxEntry) -> OutgoingChange:
    """The adapter's view of an outbox entry."""
    body = load_outgoing(entry.body) if entry.body is not None else None
    return OutgoingChange(  # positional: thousands are made per batch
        entry.id,
        entry.collection,
        entry.key,
        entry.updated_at,
        entry.deleted,
        body if isinstance(body, dict) else None,
        change_idempotency_key(provider, entry.collection, entry.key, entry.updated_at),
    )


def split_by_bytes(
    entries: Sequence[outbox.OutboxEntry], max_items: int, max_bytes: int
) -> list[list[outbox.OutboxEntry]]:
    """Cut a batch into requests within the item and byte limits (one oversized entry alone)."""
    requests: list[list[outbox.OutboxEntry]] = []
    current: list[outbox.OutboxEntry] = []
    size = 0
    for entry in entries:
        entry_size = len(entry.body or "") + 64
        if current and (len(current) >= max_items or size + entry_size > max_bytes):
            requests.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_size
    if current:
        requests.append(current)
    return requests


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
    ) -> None:
        self.store = store
        self.record_answer = record_answer
        self.on_merge = on_merge
        self.config = config
        self.name = config.name
        self.provider = provider
        self.dry_run = dry_run
        self.backoff = Backoff(config.backoff_base_s, config.backoff_cap_s)
        self.rng = rng or random.Random()
        self.batch_limit = min(
            config.batch_max_items or provider.limits.max_items, provider.limits.max_items
        )
        self._wake = anyio.Event()
        self._dry_run_after = 0
        self._outgoing: dict[int, OutgoingChange] = {}
        self.paused = False
        # Delivered batches not yet recorded, and the recording under way (see _settle).
        self._unrecorded: list[_Delivered] = []
        self._recording: anyio.Event | None = None
        self._recording_error: Exception | None = None

    def wake(self) -> None:
        """New entries are waiting: stop idling."""
        self._wake.set()

    async def _idle(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def run(self) -> None:
        """Flush until cancelled."""
        if not self.provider.limits.can_push:
            return
        probe = True  # after a restart, an auth-failed provider gets one attempt
        while True:
            async with self.store.read() as db:
                state = await outbox.provider_state(db, self.name)
            now = now_ms()
            if state is not None and state.state == "auth-failed" and not probe:
                await self._idle(IDLE_RECHECK_S)  # resync/reload changes the state
                continue
            probe = False
            if state is not None and state.next_attempt_at and state.next_attempt_at > now:
                # The loop re-checks the clock, so a timer that fires early cannot send early.
                await anyio.sleep((state.next_attempt_at - now) / 1000 + 0.002)
                continue
            if not await self.flush_once() and not self.paused:
                await self._idle(IDLE_RECHECK_S)

    async def flush_once(self) -> bool:
        """Send until the outbox is empty (or the provider pauses); False if nothing was sent."""
        entries = await self._take(self._dry_run_after)
        self.paused = False
        if not entries:
            return False
        if self.dry_run:
            self._dry_run_after = entries[-1].id
            await self._flush_batch(entries)
            return True
        error: Exception | None = None  # raised as itself, not inside an ExceptionGroup
        async with anyio.create_task_group() as recorder:
            try:
                requests = await self._prepare(entries)
                while entries:
                    entries, requests = await self._send_and_prepare_next(entries, requests)
                    # The next batch was taken before this recording starts: no waiting on it.
                    self._record_in_background(recorder)
            except _Paused:
                self.paused = True  # run() goes back to waiting for the stored next attempt
            except Exception as exc:
                error = exc
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._settle()
                    except Exception as exc:
                        error = error or exc
        if error is not None:
            raise error
        return not self.paused

    async def _take(self, after_id: int) -> list[outbox.OutboxEntry]:
        # From the read-only connection: taking the next batch does not wait for the
        # recording of the previous one (whose entries it skips: they are before after_id).
        async with self.store.snapshot() as db:
            return await outbox.take_batch(db, self.name, self.batch_limit, after_id=after_id)

    async def _flush_batch(self, entries: list[outbox.OutboxEntry]) -> None:
        for request in await self._prepare(entries):
            await self._send(request)
        self._forget(entries)

    async def _prepare(self, entries: list[outbox.OutboxEntry]) -> list[list[outbox.OutboxEntry]]:
        """Decode the batch, dead-letter what the adapter refuses, cut the rest into requests."""
        # Each entry is decoded once; its OutgoingChange rides along through retries and splits.
        self._outgoing.update((e.id, to_outgoing(self.name, e)) for e in entries)
        sendable = await self._drop_unsendable(entries)
        return split_by_bytes(sendable, self.batch_limit, self.provider.limits.max_bytes)

    def _forget(self, entries: list[outbox.OutboxEntry]) -> None:
        for entry in entries:
            self._outgoing.pop(entry.id, None)

    async def _send_and_prepare_next(
        self, entries: list[outbox.OutboxEntry], requests: list[list[outbox.OutboxEntry]]
    ) -> tuple[list[outbox.OutboxEntry], list[list[outbox.OutboxEntry]]]:
        """Send a prepared batch; while it is in flight, take and prepare the one after it."""
        following: list[outbox.OutboxEntry] = []
        prepared: list[list[outbox.OutboxEntry]] = []
        errors: list[BaseException] = []  # raised as themselves, not in an ExceptionGroup

        async def take_next() -> None:
            try:
                following.extend(await self._take(entries[-1].id))
                prepared.extend(await self._prepare(following))
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as ahead:
            ahead.start_soon(take_next)
            try:
                for request in requests:
                    await self._send(request)
            except Exception as exc:  # _Paused included: the next batch is not sent
                ahead.cancel_scope.cancel()
                errors.insert(0, exc)
        self._forget(entries)
        if errors:
            self._forget(following)
            raise errors[0]
        return following, prepared

    def _record_in_background(self, recorder: anyio.abc.TaskGroup) -> None:
        """Start recording the delivered batches; ``_settle`` waits for it."""
        batches, self._unrecorded = self._unrecorded, []
        if not batches:
            return
        done = self._recording = anyio.Event()

        async def record() -> None:
            try:
                await self._record_all(batches)
            except Exception as exc:  # raised by _settle, in the flusher's own flow
                self._recording_error = exc
            finally:
                done.set()

        recorder.start_soon(record)

    async def _settle(self) -> None:
        """Wait until every delivered batch is recorded: called before any other write."""
        if self._recording is not None:
            await self._recording.wait()
            self._recording = None
        if self._recording_error is not None:
            error, self._recording_error = self._recording_error, None
            raise error
        batches, self._unrecorded = self._unrecorded, []
        await self._record_all(batches)

    async def _record_all(self, batches: list[_Delivered]) -> None:
        for batch in batches:
            await self._record_delivered(*batch)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """The flusher's one way to write (besides recording deliveries): settle first.

        Delivered batches are recorded in the background while the next one is sent;
        a failure or a dead letter written before that recording would be overwritten by
        it (the provider shown ``online`` after it went down). Waiting here keeps every
        write in the order things happened.
        """
        await self._settle()
        async with self.store.write() as db:
            yield db

    async def _drop_unsendable(self, entries: list[outbox.OutboxEntry]) -> list[outbox.OutboxEntry]:
        refused: dict[str, list[outbox.OutboxEntry]] = {}
        sendable = []
        for entry in entries:
            reason = self.provider.check(self._outgoing[entry.id])
            if reason is None:
                sendable.append(entry)
            else:
                refused.setdefault(reason, []).append(entry)
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
                async with self._write() as db:
                    await outbox.dead_letter(
                        db, self.name, group, reason=reason, http_status=None, now=now_ms()
                    )
        return sendable

    async def _send(self, entries: list[outbox.OutboxEntry]) -> None:
        changes = [self._outgoing[e.id] for e in entries]
        key = batch_idempotency_key(changes)
        if self.dry_run:
            log.info(
                "dry_run_batch",
                provider=self.name,
                items=len(changes),
                batch_id=key,
                keys=[c.key for c in changes[:10]],
                bytes=sum(len(e.body or "") for e in entries),
            )
            return
        started = time.perf_counter()
        try:
            result = await self.provider.push(changes, idempotency_key=key)
        except AuthError as exc:
            await self._failed(entries, key, started, exc, state="auth-failed")
            raise _Paused from exc
        except RetryableError as exc:
            state = "offline" if isinstance(exc, ProviderUnavailable) else "backing-off"
            await self._failed(entries, key, started, exc, state=state)
            raise _Paused from exc
        except PermanentError as exc:
            await self._rejected(entries, key, started, exc)
            return
        await self._delivered(entries, key, started, result)

    def _delay(self, exc: ProviderError, failures: int) -> tuple[float, float | None]:
        """Seconds until the next attempt, and the provider's Retry-After if it was capped."""
        asked = exc.retry_after if isinstance(exc, RetryableError) else None
        if asked is None:
            return self.backoff.delay(failures, self.rng), None
        ceiling = self.config.max_retry_after_s
        if asked > ceiling:
            return max(ceiling, _MIN_DELAY_S), asked
        return max(asked, _MIN_DELAY_S), None

    async def _failed(
        self,
        entries: list[outbox.OutboxEntry],
        key: str,
        started: float,
        exc: ProviderError,
        *,
        state: str,
    ) -> None:
        delay: float | None = None
        capped: float | None = None
        failures = 0
        async with self._write() as db:
            now = now_ms()
            if state != "auth-failed":  # auth-failed waits for a reload, not for a time
                current = await outbox.provider_state(db, self.name)
                failures = (current.failures if current else 0) + 1
                delay, capped = self._delay(exc, failures)
            # Rounded up, plus 1 ms for the truncation of now_ms(): never a moment early.
            next_attempt = None if delay is None else now + math.ceil(delay * 1000) + 1
            await self._log_attempt(db, entries, key, started, "failed", exc.status, str(exc), now)
            await outbox.count_attempt(db, [e.id for e in entries])
            await outbox.set_provider_state(
                db,
                self.name,
                state=state,
                now=now,
                next_attempt_at=next_attempt,
                failures=failures,
                last_error=str(exc),
            )
        if capped is not None:
            log.warning(
                "retry_after_capped",
                provider=self.name,
                retry_after_s=capped,
                max_retry_after_s=self.config.max_retry_after_s,
            )
        log.warning(
            f"provider_{state.replace('-', '_')}",
            provider=self.name,
            error=str(exc),
            retry_in_s=delay,
            failures=failures,
            items=len(entries),
        )

    async def _log_attempt(
        self,
        db: aiosqlite.Connection,
        entries: list[outbox.OutboxEntry],
        key: str,
        started: float,
        state: str,
        status: int | None,
        error: str,
        now: int,
    ) -> None:
        await outbox.record_attempt(
            db,
            provider=self.name,
            batch_id=key,
            items=len(entries),
            state=state,
            now=now,
            http_status=status,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=error,
        )

    async def _rejected(
        self, entries: list[outbox.OutboxEntry], key: str, started: float, exc: PermanentError
    ) -> None:
        async with self._write() as db:
            now = now_ms()
            await self._log_attempt(
                db, entries, key, started, "rejected", exc.status, exc.reason, now
            )
            if len(entries) == 1:
                await outbox.dead_letter(
                    db, self.name, entries, reason=exc.reason, http_status=exc.status, now=now
                )
        if len(entries) == 1:
            log.warning(
                "dead_lettered",
                provider=self.name,
                key=entries[0].key,
                collection=entries[0].collection,
                status=exc.status,
                reason=exc.reason,
            )
            return
        middle = len(entries) // 2
        await self._send(entries[:middle])
        await self._send(entries[middle:])

    async def _delivered(
        self, entries: list[outbox.OutboxEntry], key: str, started: float, result: PushResult
    ) -> None:
        """The provider took the batch: recorded by ``flush_once`` (or the next write)."""
        self._unrecorded.append((entries, key, (time.perf_counter() - started) * 1000, result))

    async def _record_delivered(
        self, entries: list[outbox.OutboxEntry], key: str, latency: float, result: PushResult
    ) -> None:
        now = now_ms()
        deliver = partial(
            outbox.deliver_batch,
            provider=self.name,
            entries=entries,
            batch_id=key,
            state=result.state,
            http_status=result.status,
            latency_ms=latency,
            remote_ref=result.remote_ref,
            now=now,
        )
        record_answer = self.record_answer
        if record_answer is None or not (result.outcomes or result.changes):
            await self.store.transact(deliver)
        else:

            def deliver_and_answer(conn: sqlite3.Connection) -> MergeResult:
                deliver(conn)
                return record_answer(conn, entries, result, now)

            self.on_merge(await self.store.transact(deliver_and_answer))
        log.info(
            "batch_delivered",
            provider=self.name,
            items=len(entries),
            state=result.state,
            status=result.status,
            latency_ms=round(latency, 1),
            remote_ref=result.remote_ref,
        )
