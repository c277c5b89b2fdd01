"""The delivery engine: one flusher per provider, written once for every adapter.

A flusher takes the oldest outbox entries up to the provider's batch limit,
drops (to dead letters) what the adapter's local check refuses, cuts the rest into
requests, writes each request ahead (a ``deliveries`` row in state ``sent`` with
the entries exactly as they are sent), sends it, and records the outcome on that
row. What the provider's answer means is decided by the error's type
(``adapters.errors``):

* success: entries leave the outbox, ``delivered`` and ``deliveries`` record it;
  the request is finished
* ProviderUnavailable: provider ``offline``; RetryableError (an unexpected answer
  and a misconfigured provider included): ``backing-off``; the next attempt waits
  ``Retry-After`` when given, up to ``max_retry_after_s`` (``retry_after_capped`` is
  logged beyond it), else exponential backoff with full jitter (``backoff_base_s``
  .. ``backoff_cap_s``); the moment is stored (a restart keeps it, ``status`` shows
  it), the wait is counted on the monotonic clock (a wall clock set back does not
  stretch it)
* AuthError: ``auth-failed``; every entry is kept; a reload, ``dropsync resync``,
  or a restart (which probes once) resumes
* PermanentError: the request is finished; the batch is split in halves (new
  requests) until the offending records are alone; those go to ``dead_letters``
  with the provider's reason

Delivery is at least once; each request carries an idempotency key derived from
the (provider, collection, key, version) of its entries. A request whose answer is
not final (a retryable failure, which may come after the provider applied it, or a
kill while it was in flight) stays unfinished: before any new batch is formed it is
sent again exactly as it was (same entries and bodies, same key), so the provider
applies it once. A newer version of one of its entries waits in the outbox and goes
after it (docs/providers.md, "requests are written ahead").

While the outbox has more, the flusher keeps going, three batches at a time: while
one batch's request is in flight, the next is taken, prepared (decoded, checked,
written ahead) and the previous one's delivery is recorded in the store's thread.
The next batch is taken after the entries in flight, which stay in the outbox until
their delivery is recorded. The order of writes is a structure: a delivery is
recorded (``_record_delivered``) before anything after it is written, because every
other write goes through ``Flusher._transact``, which first waits for that recording
(``_settle``); a test holds that no other method writes.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

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
from dropsync.store.backoff import backoff_s
from dropsync.store.handle import Store
from dropsync.store.merge import MergeResult

log = structlog.get_logger(__name__)
T = TypeVar("T")

NOT_SENT_AGAIN = (
    "not sent again: the provider's local check now refuses some of its entries (the "
    "config changed); its entries go in new batches"
)
# Flushers are woken by merges and by commits of other programs; this is a safety net.
IDLE_RECHECK_S = 30.0
_MIN_DELAY_S = 0.05


@dataclass(slots=True)
class _Request:
    """One request to the provider: its entries, its Idempotency-Key, and its
    ``deliveries`` row written ahead (None in dry-run mode)."""

    entries: list[outbox.OutboxEntry]
    key: str
    delivery_id: int | None = None


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One sending of a request: when it started (wall clock, and perf_counter)."""

    request: _Request
    sent_at: int
    started: float

    def latency_ms(self) -> float:
        """Milliseconds since the request was sent."""
        return (time.perf_counter() - self.started) * 1000


# A request the provider took, not yet recorded: the attempt, its latency (ms), the answer.
_Delivered = tuple[_Attempt, float, PushResult]
# Records a push's per-request outcomes and proven records, in the delivery's transaction.
AnswerRecorder = Callable[
    [sqlite3.Connection, Sequence[outbox.OutboxEntry], PushResult, int], MergeResult
]


@dataclass(frozen=True, slots=True)
class _Failure:
    """A request failed (not refused): the provider's state after it and, once counted, the
    consecutive failures, the seconds until the next attempt and the provider's Retry-After
    if it was capped (an auth failure is not counted: it waits for a reload, not a time)."""

    exc: ProviderError
    state: str
    failures: int = 0
    delay: float | None = None
    capped: float | None = None


class _Paused(Exception):
    """The provider stops taking batches for now (backoff or auth failure)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter."""

    base_s: float
    cap_s: float

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after ``failures`` consecutive failures."""
        jittered = backoff_s(failures, first_s=self.base_s, cap_s=self.cap_s, rng=rng)
        return max(_MIN_DELAY_S, jittered)


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


def failure_state(exc: ProviderError) -> str:
    """The provider's state after a request failed with ``exc`` (not a refusal):
    ``auth-failed``, ``offline`` (not reached) or ``backing-off``."""
    if isinstance(exc, AuthError):
        return "auth-failed"
    return "offline" if isinstance(exc, ProviderUnavailable) else "backing-off"


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


async def _provider_state(store: Store, name: str) -> outbox.ProviderState | None:
    """The provider's stored state (a read, between transactions)."""
    return await store.call(outbox.provider_state, name)


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
        holds: dict[str, float] | None = None,
    ) -> None:
        self.store = store
        # Per provider: no request before this moment (monotonic), set by a Retry-After the
        # moment it is read. The supervisor shares one mapping with every flusher it starts,
        # so the flusher a reload starts honours it even if the reload cut the recording short.
        self.holds = {} if holds is None else holds
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
        # Requests written ahead and not sent yet (discarded when the flush stops early).
        self._ahead: dict[int, _Request] = {}
        # The stored next attempt being waited for, and its end on the monotonic clock.
        self._backoff_end: tuple[int, float] | None = None

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
            state = await _provider_state(self.store, self.name)
            if state is not None and state.state == "auth-failed" and not probe:
                await self._idle(IDLE_RECHECK_S)  # resync/reload changes the state
                continue
            probe = False
            left = max(
                self._backoff_left(state.next_attempt_at if state is not None else None),
                self.holds.get(self.name, 0.0) - anyio.current_time(),
            )
            if left > 0:
                # Woken by new entries, it looks again: a resync or reload may have ended it.
                await self._idle(left)
                continue
            if not await self.flush_once() and not self.paused:
                await self._idle(IDLE_RECHECK_S)

    def _backoff_left(self, next_attempt_at: int | None) -> float:
        """Seconds still to wait for the stored next attempt, on the monotonic clock.

        ``next_attempt_at`` is a wall-clock moment (``status`` shows it, a restart keeps
        it); the wait it stands for is measured once, when this flusher stored it or first
        saw it, and then counted on the monotonic clock, never longer than the longest
        wait the config allows. The wall clock set back (or forward) meanwhile neither
        holds delivery back nor lets it go early.
        """
        if next_attempt_at is None:
            self._backoff_end = None
            return 0.0
        if self._backoff_end is None or self._backoff_end[0] != next_attempt_at:
            left = min(max(0.0, (next_attempt_at - now_ms()) / 1000), self.config.max_delay_s)
            self._backoff_end = (next_attempt_at, anyio.current_time() + left)
        return max(0.0, self._backoff_end[1] - anyio.current_time())

    def _backing_off(self, next_attempt_at: int | None, delay: float | None) -> None:
        """The next attempt was just stored, ``delay`` seconds from now (None: no time)."""
        self._backoff_end = (
            None
            if next_attempt_at is None or delay is None
            else (next_attempt_at, anyio.current_time() + delay)
        )

    async def flush_once(self) -> bool:
        """Send until the outbox is empty (or the provider pauses); False if nothing was sent.

        Requests whose answer never became final (the daemon stopped while one was in
        flight, or the provider failed it) are sent again first, as they were.
        """
        self.paused = False
        try:
            resent = await self._resend_unfinished()
        except _Paused:
            self.paused = True
            return False
        entries = await self._take(self._dry_run_after)
        if not entries:
            return resent
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
                        await self._discard_unsent()
                    except Exception as exc:
                        error = error or exc
        if error is not None:
            raise error
        return not self.paused

    async def _resend_unfinished(self) -> bool:
        """Send again each request written ahead whose answer is not final, exactly as it
        was (entries, bodies, Idempotency-Key), oldest first; True if there were any.

        A newer version of one of its entries, queued meanwhile, stays in the outbox and
        goes in a later batch: the provider gets the versions in the order they were made.
        """
        if self.dry_run:
            return False
        async with self.store.read() as db:
            unfinished = await outbox.unfinished_requests(db, self.name)
        for old in unfinished:
            self._outgoing.update((e.id, to_outgoing(self.name, e)) for e in old.entries)
            refused = [e for e in old.entries if self.provider.check(self._outgoing[e.id])]
            if refused:
                # The config changed since (a user's token removed, say): the adapter could
                # not send it. Its entries take the usual way: refused ones dead-lettered.
                self._forget(old.entries)
                await self._transact(outbox.abandon_request, old.delivery_id, reason=NOT_SENT_AGAIN)
                log.warning(
                    "request_not_resent",
                    provider=self.name,
                    batch_id=old.batch_id,
                    items=len(old.entries),
                    refused=len(refused),
                    reason=NOT_SENT_AGAIN,
                )
                continue
            delivery_id = await self._transact(outbox.reopen_request, old.delivery_id, now=now_ms())
            log.info(
                "request_resent",
                provider=self.name,
                batch_id=old.batch_id,
                items=len(old.entries),
                interrupted=old.state == "sent",
            )
            try:
                await self._send(_Request(old.entries, old.batch_id, delivery_id))
            finally:
                self._forget(old.entries)
            await self._settle()  # recorded before the next batch is taken
        return bool(unfinished)

    async def _take(self, after_id: int) -> list[outbox.OutboxEntry]:
        # From the read-only connection: taking the next batch does not wait for the
        # recording of the previous one (whose entries it skips: they are before after_id).
        async with self.store.snapshot() as db:
            return await outbox.take_batch(db, self.name, self.batch_limit, after_id=after_id)

    async def _flush_batch(self, entries: list[outbox.OutboxEntry]) -> None:
        for request in await self._prepare(entries):
            await self._send(request)
        self._forget(entries)

    async def _prepare(self, entries: list[outbox.OutboxEntry]) -> list[_Request]:
        """Decode the batch, dead-letter what the adapter refuses, cut the rest into
        requests and write them ahead."""
        # Each entry is decoded once; its OutgoingChange rides along through retries and splits.
        self._outgoing.update((e.id, to_outgoing(self.name, e)) for e in entries)
        sendable = await self._drop_unsendable(entries)
        groups = split_by_bytes(sendable, self.batch_limit, self.provider.limits.max_bytes)
        return await self._requests(groups)

    async def _requests(self, groups: list[list[outbox.OutboxEntry]]) -> list[_Request]:
        """Requests of these entries, each recorded (``sent``, with its entries) before it
        can be sent: after a kill, the restarted daemon sends it again as it was."""
        requests = [
            _Request(group, batch_idempotency_key([self._outgoing[e.id] for e in group]))
            for group in groups
        ]
        if self.dry_run or not requests:
            return requests
        # Shielded: once written, a request is known here, so an unsent one is discarded.
        with anyio.CancelScope(shield=True):
            ids = await self._transact(
                partial(
                    outbox.open_requests,
                    provider=self.name,
                    requests=[(r.key, r.entries) for r in requests],
                    now=now_ms(),
                )
            )
        for request, delivery_id in zip(requests, ids, strict=True):
            request.delivery_id = delivery_id
            self._ahead[delivery_id] = request
        return requests

    async def _discard_unsent(self) -> None:
        """Forget the requests written ahead that the flush stopped before sending."""
        unsent, self._ahead = list(self._ahead), {}
        if unsent:
            await self._transact(outbox.discard_requests, unsent)

    def _forget(self, entries: list[outbox.OutboxEntry]) -> None:
        for entry in entries:
            self._outgoing.pop(entry.id, None)

    async def _send_and_prepare_next(
        self, entries: list[outbox.OutboxEntry], requests: list[_Request]
    ) -> tuple[list[outbox.OutboxEntry], list[_Request]]:
        """Send a prepared batch; while it is in flight, take and prepare the one after it."""
        following: list[outbox.OutboxEntry] = []
        prepared: list[_Request] = []
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

    # -- writing: every write goes through _transact, which first waits for the recording

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

    async def _transact(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The flusher's one way to write (besides recording deliveries): settle first,
        then run ``fn(conn, *args, **kwargs)`` whole in the store's thread (tried again
        whole after a busy store or a full disk).

        Delivered batches are recorded in the background while the next one is sent;
        a failure or a dead letter written before that recording would be overwritten by
        it (the provider shown ``online`` after it went down). Waiting here keeps every
        write in the order things happened.
        """
        await self._settle()
        return await self.store.transact(fn, *args, **kwargs)

    async def _drop_unsendable(self, entries: list[outbox.OutboxEntry]) -> list[outbox.OutboxEntry]:
        refused: dict[str, list[outbox.OutboxEntry]] = {}
        sendable = []
        for entry in entries:
            reason = self.provider.check(self._outgoing[entry.id])
            if reason is None:
                sendable.append(entry)
            else:
                refused.setdefault(reason, []).append(entry)
        await self._dead_letter_refused(refused)
        return sendable

    async def _dead_letter_refused(self, refused: dict[str, list[outbox.OutboxEntry]]) -> None:
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
                await self._transact(
                    outbox.dead_letter,
                    self.name,
                    group,
                    reason=reason,
                    http_status=None,
                    now=now_ms(),
                )

    async def _send(self, request: _Request) -> None:
        """Send one request and act on the answer (see the module docstring)."""
        entries, key = request.entries, request.key
        changes = [self._outgoing[e.id] for e in entries]
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
        if request.delivery_id is not None:
            self._ahead.pop(request.delivery_id, None)  # from here on it may reach the provider
        attempt = _Attempt(request, now_ms(), time.perf_counter())
        try:
            result = await self.provider.push(changes, idempotency_key=key)
        except (AuthError, RetryableError) as exc:
            await self._failed(attempt, exc)
            raise _Paused from exc
        except PermanentError as exc:
            await self._rejected(attempt, exc)
            return
        # Recorded by flush_once (in the background, or by the next write): see _settle.
        self._unrecorded.append((attempt, attempt.latency_ms(), result))

    def _new_failure(self, exc: ProviderError) -> _Failure:
        """A failed request's answer, just read: its ``Retry-After`` (the wait ``_delay``
        gives it) goes into ``holds`` at once, before any await (see ``__init__``)."""
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            wait, _ = self._delay(exc, 0)  # a Retry-After's wait does not count failures
            until = anyio.current_time() + wait
            self.holds[self.name] = max(self.holds.get(self.name, 0.0), until)
        return _Failure(exc, failure_state(exc))

    def _delay(self, exc: ProviderError, failures: int) -> tuple[float, float | None]:
        """Seconds until the next attempt, and the provider's Retry-After if it was capped."""
        asked = exc.retry_after if isinstance(exc, RetryableError) else None
        if asked is None:
            return self.backoff.delay(failures, self.rng), None
        ceiling = self.config.max_retry_after_s
        if asked > ceiling:
            return max(ceiling, _MIN_DELAY_S), asked
        return max(asked, _MIN_DELAY_S), None

    async def _failed(self, attempt: _Attempt, exc: ProviderError) -> None:
        """A retryable answer (or none): the request stays unfinished, sent again as it is
        after the wait (the provider may have applied it: the same Idempotency-Key)."""
        failure = self._new_failure(exc)
        entries = attempt.request.entries

        def record(db: sqlite3.Connection) -> tuple[_Failure, int | None]:
            now = now_ms()
            counted = failure
            if failure.state != "auth-failed":  # auth-failed waits for a reload, not for a time
                counted = self._count_failure(db, failure)
            self._finish_attempt(db, attempt, "failed", exc.status, str(exc), final=False, now=now)
            outbox.count_attempt(db, [e.id for e in entries])
            return counted, self._store_failure(db, counted, now)

        counted, next_attempt = await self._transact(record)
        self._failure_stored(counted, next_attempt, items=len(entries))

    def _count_failure(self, db: sqlite3.Connection, failure: _Failure) -> _Failure:
        """The failure counted: the consecutive failures (those stored, and this one), the
        seconds until the next attempt, and the provider's Retry-After if it was capped."""
        current = outbox.provider_state(db, self.name)
        failures = (current.failures if current else 0) + 1
        delay, capped = self._delay(failure.exc, failures)
        return _Failure(failure.exc, failure.state, failures, delay, capped)

    def _store_failure(self, db: sqlite3.Connection, failure: _Failure, now: int) -> int | None:
        """Store the provider's state after the failure, with its error and the moment of
        the next attempt (returned; None: not at a time)."""
        delay = failure.delay
        # Rounded up, plus 1 ms for the truncation of now_ms(): never a moment early.
        next_attempt = None if delay is None else now + math.ceil(delay * 1000) + 1
        outbox.set_provider_state(
            db,
            self.name,
            state=failure.state,
            now=now,
            next_attempt_at=next_attempt,
            failures=failure.failures,
            last_error=str(failure.exc),
        )
        return next_attempt

    def _failure_stored(self, failure: _Failure, next_attempt: int | None, *, items: int) -> None:
        """Once the failure is stored: wait for the next attempt, and say so (and that the
        provider's Retry-After was capped, when it was)."""
        self._backing_off(next_attempt, failure.delay)
        if failure.capped is not None:
            log.warning(
                "retry_after_capped",
                provider=self.name,
                retry_after_s=failure.capped,
                max_retry_after_s=self.config.max_retry_after_s,
            )
        log.warning(
            f"provider_{failure.state.replace('-', '_')}",
            provider=self.name,
            error=str(failure.exc),
            retry_in_s=failure.delay,
            failures=failure.failures,
            items=items,
        )

    def _finish_attempt(
        self,
        db: sqlite3.Connection,
        attempt: _Attempt,
        state: str,
        status: int | None,
        error: str,
        *,
        final: bool,
        now: int,
    ) -> None:
        """Record the answer on the attempt's row written ahead (``final``: the request is
        finished, its entries are no longer kept there)."""
        delivery_id = attempt.request.delivery_id
        if delivery_id is None:  # not written ahead (a test's flusher driven by hand)
            outbox.record_attempt(
                db,
                provider=self.name,
                batch_id=attempt.request.key,
                items=len(attempt.request.entries),
                state=state,
                now=now,
                http_status=status,
                latency_ms=attempt.latency_ms(),
                error=error,
            )
            return
        outbox.finish_attempt(
            db,
            delivery_id,
            state=state,
            attempted_at=attempt.sent_at,
            http_status=status,
            latency_ms=attempt.latency_ms(),
            error=error,
            final=final,
        )

    async def _rejected(self, attempt: _Attempt, exc: PermanentError) -> None:
        """A permanent refusal: the request is finished; a single entry is dead-lettered,
        a batch is split in halves (new requests) until the offending entries are alone."""
        entries = attempt.request.entries

        def record(db: sqlite3.Connection) -> None:
            now = now_ms()
            self._finish_attempt(
                db, attempt, "rejected", exc.status, exc.reason, final=True, now=now
            )
            if len(entries) == 1:
                outbox.dead_letter(
                    db, self.name, entries, reason=exc.reason, http_status=exc.status, now=now
                )

        await self._transact(record)
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
        for half in (entries[:middle], entries[middle:]):
            for request in await self._requests([half]):
                await self._send(request)

    async def _record_delivered(
        self, attempt: _Attempt, latency: float, result: PushResult
    ) -> None:
        """The provider took the request: one transaction records the delivery on its row
        written ahead (the request is finished), the entries leave the outbox, and what the
        answer proves is merged."""
        request = attempt.request
        entries = request.entries
        now = now_ms()
        deliver = partial(
            outbox.deliver_batch,
            provider=self.name,
            entries=entries,
            batch_id=request.key,
            state=result.state,
            http_status=result.status,
            latency_ms=latency,
            remote_ref=result.remote_ref,
            now=now,
            delivery_id=request.delivery_id,
            attempted_at=attempt.sent_at,
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
