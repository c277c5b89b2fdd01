"""The batch sender: records sent as requests, each written ahead (``daemon.delivery.sending``).

It takes the oldest outbox entries up to the provider's batch limit, drops (to dead
letters) what the adapter's local check refuses, cuts the rest into requests within the
item and byte limits, writes each request ahead (a ``deliveries`` row in state ``sent``
with the entries exactly as they are sent), sends it through the loop, and records the
outcome on that row. A permanent refusal finishes the request; the batch is split in
halves (new requests) until the refused records are alone, and those are dead-lettered
with the provider's reason.

Delivery is at least once; each request carries an idempotency key derived from the
(provider, collection, key, version) of its entries. A request whose answer is not final
(a retryable failure, which may come after the provider applied it, or a kill while it was
in flight) stays unfinished: before any new batch is formed it is sent again exactly as it
was (same entries and bodies, same key), so the provider applies it once. A newer version
of one of its entries waits in the outbox and goes after it (docs/providers.md, "requests
are written ahead").

A provider with lanes (``adapters.base.Laned``: a user each, say) gets requests of
one lane each. An entry whose lane may not send (its credentials refused, or none) is set
aside (``daemon.delivery.lanes``: the take skips it until the lane may send again); a request whose
lane the provider refuses (401, 403) is finished (``failed``: nothing was applied), its
entries set aside, and the other lanes' requests go on.

While the outbox has more, it keeps going, three batches at a time: while one batch's
request is in flight, the next is taken and prepared (decoded, checked, written ahead),
and the previous one's delivery is recorded in the transaction that writes the next one
ahead (the loop's ``write``). The next batch is taken after the entries in flight, which
stay in the outbox until their delivery is recorded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING

import anyio
import structlog
from dropsync.adapters.base import OutgoingChange, PushResult, batch_idempotency_key
from dropsync.adapters.errors import AuthError, PermanentError, ProviderError
from dropsync.store import callbacks, outbox
from dropsync.store.merge import MergeResult

from .. import metrics
from ..clock import now_ms
from .lanes import PUSH, hold_db
from .sending import Answer, Attempt, Paused, to_outgoing_many

if TYPE_CHECKING:
    from .flusher import Flusher

log = structlog.get_logger(__name__)

NOT_SENT_AGAIN = (
    "not sent again: the provider's local check now refuses some of its entries (the "
    "config changed); its entries go in new batches"
)
_BODY = itemgetter(5)  # OutboxEntry.body

LANE_WAITS = (
    "not sent again: its lane may not send now (its credentials were refused or removed); "
    "its entries wait for the lane and go in new batches"
)


@dataclass(slots=True)
class _Request:
    """One request to the provider: its entries, its Idempotency-Key, and its
    ``deliveries`` row written ahead (None in dry-run mode)."""

    entries: list[outbox.OutboxEntry]
    key: str
    delivery_id: int | None = None
    lane: str | None = None  # the lane of every entry (providers with lanes)


def split_by_bytes(
    entries: Sequence[outbox.OutboxEntry], max_items: int, max_bytes: int
) -> list[list[outbox.OutboxEntry]]:
    """Cut a batch into requests within the item and byte limits (one oversized entry alone)."""
    if not entries:
        return []
    # The usual batch fits whole: found by summing in C, not by the loop below.
    if len(entries) <= max_items and (
        sum(map(len, filter(None, map(_BODY, entries)))) + 64 * len(entries) <= max_bytes
    ):
        return [list(entries)]
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


class BatchSender:
    """Sends a provider's outbox as requests of records (``push``)."""

    def __init__(self) -> None:
        self._outgoing: dict[int, OutgoingChange] = {}
        # Requests written ahead and not sent yet (discarded when the pass stops early).
        self._ahead: dict[int, _Request] = {}
        self._dry_run_after = 0

    async def start(self, loop: Flusher) -> None:
        """Nothing to prepare."""

    async def send_pending(self, loop: Flusher) -> bool:
        """Send until the outbox is empty (or the provider pauses); False if nothing was sent.

        Requests whose answer never became final (the daemon stopped while one was in
        flight, or the provider failed it) are sent again first, as they were.
        """
        resent = await self._resend_unfinished(loop)
        entries = await loop.take(self._dry_run_after)
        if not entries:
            return resent
        if loop.dry_run:
            self._dry_run_after = entries[-1].id
            for request in await self._prepare(loop, entries):
                await self._send(loop, request)
            self._forget(entries)
            return True
        try:
            requests = await self._prepare(loop, entries)
            while entries:
                entries, requests = await self._send_and_prepare_next(loop, entries, requests)
        finally:
            with anyio.CancelScope(shield=True):
                await self._discard_unsent(loop)
        return True

    async def _resend_unfinished(self, loop: Flusher) -> bool:
        """Send again each request written ahead whose answer is not final, exactly as it
        was (entries, bodies, Idempotency-Key), oldest first; True if there were any.

        A newer version of one of its entries, queued meanwhile, stays in the outbox and
        goes in a later batch: the provider gets the versions in the order they were made.
        """
        if loop.dry_run:
            return False
        unfinished = await loop.unfinished()
        for old in unfinished:
            self._outgoing.update(
                zip(
                    [e.id for e in old.entries],
                    to_outgoing_many(loop.name, old.entries),
                    strict=True,
                )
            )
            refused = [e for e in old.entries if loop.provider.check(self._outgoing[e.id])]
            lane = self._lane(loop, old.entries)
            if lane is not None and not loop.lanes.may_send(lane, PUSH):
                # Its lane waits: the request is finished (a refused lane's was not applied);
                # its entries are set aside when they are taken, and sent once it may send.
                self._forget(old.entries)
                await loop.write(outbox.abandon_request, old.delivery_id, reason=LANE_WAITS)
                log.info(
                    "request_not_resent",
                    provider=loop.name,
                    batch_id=old.batch_id,
                    items=len(old.entries),
                    lane=lane,
                    reason=LANE_WAITS,
                )
                continue
            if refused:
                # The config changed since (a user's token removed, say): the adapter could
                # not send it. Its entries take the usual way: refused ones dead-lettered.
                self._forget(old.entries)
                await loop.write(outbox.abandon_request, old.delivery_id, reason=NOT_SENT_AGAIN)
                log.warning(
                    "request_not_resent",
                    provider=loop.name,
                    batch_id=old.batch_id,
                    items=len(old.entries),
                    refused=len(refused),
                    reason=NOT_SENT_AGAIN,
                )
                continue
            loop.stop_if_held()  # before it is reopened: not an attempt the daemon cut short
            delivery_id = await loop.write(outbox.reopen_request, old.delivery_id, now=now_ms())
            log.info(
                "request_resent",
                provider=loop.name,
                batch_id=old.batch_id,
                items=len(old.entries),
                interrupted=old.state == "sent",
            )
            try:
                await self._send(loop, _Request(old.entries, old.batch_id, delivery_id, lane))
            finally:
                self._forget(old.entries)
            await loop.settle()  # recorded before the next batch is taken
        return bool(unfinished)

    async def _prepare(self, loop: Flusher, entries: list[outbox.OutboxEntry]) -> list[_Request]:
        """Decode the batch, dead-letter what the adapter refuses, cut the rest into
        requests and write them ahead."""
        # Each entry is decoded once; its OutgoingChange rides along through retries and splits.
        changes = to_outgoing_many(loop.name, entries)
        self._outgoing.update(zip([e.id for e in entries], changes, strict=True))
        refused: dict[str, list[outbox.OutboxEntry]] = {}
        sendable = []
        check = loop.provider.check
        for entry, change in zip(entries, changes, strict=True):
            reason = check(change)
            if reason is None:
                sendable.append(entry)
            else:
                refused.setdefault(reason, []).append(entry)
        await loop.dead_letter_refused(refused)
        max_bytes = loop.provider.limits.max_bytes
        if loop.laned is None:
            groups = split_by_bytes(sendable, loop.batch_limit, max_bytes)
            return await self._requests(loop, [(None, group) for group in groups])
        by_lane = await self._by_lane(loop, sendable)
        return await self._requests(
            loop,
            [
                (lane, group)
                for lane, entries in by_lane.items()
                for group in split_by_bytes(entries, loop.batch_limit, max_bytes)
            ],
        )

    def _lane(self, loop: Flusher, entries: Sequence[outbox.OutboxEntry]) -> str | None:
        """The lane of these entries (None: the provider has no lanes, or they are not of one
        lane: a request written before lanes were)."""
        if loop.laned is None:
            return None
        found = {loop.laned.lane_of(self._outgoing[e.id]) for e in entries}
        return found.pop() if len(found) == 1 else None

    async def _by_lane(
        self, loop: Flusher, entries: list[outbox.OutboxEntry]
    ) -> dict[str, list[outbox.OutboxEntry]]:
        """The entries of each lane that may send, oldest lane first; the others' entries
        are set aside for their lane."""
        assert loop.laned is not None
        by_lane: dict[str, list[outbox.OutboxEntry]] = {}
        for entry in entries:
            by_lane.setdefault(loop.laned.lane_of(self._outgoing[entry.id]), []).append(entry)
        waiting = {
            lane: group for lane, group in by_lane.items() if not loop.lanes.may_send(lane, PUSH)
        }
        if waiting:
            for group in waiting.values():
                self._forget(group)
            if not loop.dry_run:
                held = {lane: [e.id for e in group] for lane, group in waiting.items()}
                await loop.write(hold_db, loop.name, held, now_ms())
        return {lane: group for lane, group in by_lane.items() if lane not in waiting}

    async def _requests(
        self, loop: Flusher, groups: list[tuple[str | None, list[outbox.OutboxEntry]]]
    ) -> list[_Request]:
        """Requests of these entries (each of one lane, if the provider has lanes), each
        recorded (``sent``, with its entries) before it can be sent: after a kill, the
        restarted daemon sends it again as it was."""
        requests = [
            _Request(group, batch_idempotency_key([self._outgoing[e.id] for e in group]), lane=lane)
            for lane, group in groups
        ]
        if loop.dry_run or not requests:
            return requests
        # Shielded: once written, a request is known here, so an unsent one is discarded.
        with anyio.CancelScope(shield=True):
            ids = await loop.write(
                outbox.open_requests,
                provider=loop.name,
                requests=[(r.key, r.entries) for r in requests],
                now=now_ms(),
            )
        for request, delivery_id in zip(requests, ids, strict=True):
            request.delivery_id = delivery_id
            self._ahead[delivery_id] = request
        return requests

    async def _discard_unsent(self, loop: Flusher) -> None:
        """Forget the requests written ahead that the pass stopped before sending."""
        unsent, self._ahead = list(self._ahead), {}
        if unsent:
            await loop.write(outbox.discard_requests, unsent)

    def _forget(self, entries: list[outbox.OutboxEntry]) -> None:
        for entry in entries:
            self._outgoing.pop(entry.id, None)

    async def _send_and_prepare_next(
        self, loop: Flusher, entries: list[outbox.OutboxEntry], requests: list[_Request]
    ) -> tuple[list[outbox.OutboxEntry], list[_Request]]:
        """Send a prepared batch; while it is in flight, take and prepare the one after it."""
        following: list[outbox.OutboxEntry] = []
        prepared: list[_Request] = []
        errors: list[BaseException] = []  # raised as themselves, not in an ExceptionGroup

        async def take_next() -> None:
            try:
                following.extend(await loop.take(entries[-1].id))
                prepared.extend(await self._prepare(loop, following))
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as ahead:
            ahead.start_soon(take_next)
            try:
                for request in requests:
                    await self._send(loop, request)
            except Exception as exc:  # Paused included: the next batch is not sent
                ahead.cancel_scope.cancel()
                errors.insert(0, exc)
        self._forget(entries)
        if errors:
            self._forget(following)
            raise errors[0]
        return following, prepared

    async def _send(self, loop: Flusher, request: _Request) -> None:
        """Send one request and act on the answer (see the module docstring)."""
        entries, key = request.entries, request.key
        changes = [self._outgoing[e.id] for e in entries]
        if loop.dry_run:
            log.info(
                "dry_run_batch",
                provider=loop.name,
                items=len(changes),
                batch_id=key,
                keys=[c.key for c in changes[:10]],
                bytes=sum(len(e.body or "") for e in entries),
            )
            return
        if request.lane is not None and not loop.lanes.may_send(request.lane, PUSH, attempt=True):
            await self._set_aside(loop, request)  # its lane was refused meanwhile
            return
        if request.delivery_id is not None:
            self._ahead.pop(request.delivery_id, None)  # from here on it may reach the provider
        answer = await loop.send(
            partial(loop.provider.push, changes, idempotency_key=key),
            partial(self._note_failure, loop, request),
            lane=request.lane,
        )
        if answer.lane_refused is not None:
            await self._lane_refused(loop, request, answer.attempt, answer.lane_refused)
            return
        if answer.refused is not None:
            await self._rejected(loop, request, answer.attempt, answer.refused)
            return
        assert answer.result is not None
        self._delivered(loop, request, answer)

    def _note_failure(
        self,
        loop: Flusher,
        request: _Request,
        db: sqlite3.Connection,
        attempt: Attempt,
        exc: ProviderError,
        now: int,
    ) -> int:
        """A failed attempt, on its row written ahead (the request stays unfinished) and in
        its entries' attempt counts."""
        self._finish_attempt(
            loop, db, request, attempt, "failed", exc.status, str(exc), final=False, now=now
        )
        outbox.count_attempt(db, [e.id for e in request.entries])
        return len(request.entries)

    def _finish_attempt(
        self,
        loop: Flusher,
        db: sqlite3.Connection,
        request: _Request,
        attempt: Attempt,
        state: str,
        status: int | None,
        error: str,
        *,
        final: bool,
        now: int,
    ) -> None:
        """Record the answer on the attempt's row written ahead (``final``: the request is
        finished, its entries are no longer kept there)."""
        if request.delivery_id is None:  # not written ahead (a test's flusher driven by hand)
            outbox.record_attempt(
                db,
                provider=loop.name,
                batch_id=request.key,
                items=len(request.entries),
                state=state,
                now=now,
                http_status=status,
                latency_ms=attempt.latency_ms(),
                error=error,
            )
            return
        outbox.finish_attempt(
            db,
            request.delivery_id,
            state=state,
            attempted_at=attempt.sent_at,
            http_status=status,
            latency_ms=attempt.latency_ms(),
            error=error,
            final=final,
        )

    async def _rejected(
        self, loop: Flusher, request: _Request, attempt: Attempt, exc: PermanentError
    ) -> None:
        """A permanent refusal: the request is finished; a single entry is dead-lettered,
        a batch is split in halves (new requests) until the offending entries are alone."""
        entries = request.entries

        def record(db: sqlite3.Connection) -> None:
            now = now_ms()
            self._finish_attempt(
                loop, db, request, attempt, "rejected", exc.status, exc.reason, final=True, now=now
            )
            if len(entries) == 1:
                outbox.dead_letter(
                    db, loop.name, entries, reason=exc.reason, http_status=exc.status, now=now
                )

        await loop.write(record)
        if len(entries) == 1:
            metrics.dead_lettered(loop.name, 1)
            log.warning(
                "dead_lettered",
                provider=loop.name,
                key=entries[0].key,
                collection=entries[0].collection,
                status=exc.status,
                reason=exc.reason,
            )
            return
        middle = len(entries) // 2
        for half in (entries[:middle], entries[middle:]):
            for part in await self._requests(loop, [(request.lane, half)]):
                await self._send(loop, part)

    async def _set_aside(self, loop: Flusher, request: _Request) -> None:
        """A request whose lane may not send: never sent, its entries set aside."""
        delivery_id = request.delivery_id
        if delivery_id is None:
            return
        self._ahead.pop(delivery_id, None)
        assert request.lane is not None
        held = {request.lane: [e.id for e in request.entries]}

        def record(db: sqlite3.Connection) -> None:
            outbox.discard_requests(db, [delivery_id])
            hold_db(db, loop.name, held, now_ms())

        await loop.write(record)

    async def _lane_refused(
        self, loop: Flusher, request: _Request, attempt: Attempt, exc: AuthError
    ) -> None:
        """The provider refused the credentials of the request's lane: the request is
        finished (nothing was applied), the lane waits with its entries set aside; the
        other lanes go on, unless every lane is refused now (``Paused``)."""
        lane = request.lane
        assert lane is not None
        error = str(exc)
        loop.lanes.answered(lane, error, PUSH)

        def record(db: sqlite3.Connection) -> bool:
            now = now_ms()
            self._finish_attempt(
                loop, db, request, attempt, "failed", exc.status, error, final=True, now=now
            )
            outbox.count_attempt(db, [e.id for e in request.entries])
            every = loop.lanes.refuse_db(db, lane, error, now)
            hold_db(db, loop.name, {lane: [e.id for e in request.entries]}, now)
            return every

        every = await loop.write(record)
        loop.lanes.refused(lane, error, every, PUSH, now_ms())
        if every:
            raise Paused

    def _delivered(self, loop: Flusher, request: _Request, answer: Answer[PushResult]) -> None:
        """The provider took the request: one transaction records the delivery on its row
        written ahead (the request is finished), the entries leave the outbox, and what the
        answer proves is merged; recorded by the loop (in the background, or before the
        next write)."""
        attempt, result = answer.attempt, answer.result
        assert result is not None
        latency = attempt.latency_ms()
        entries = request.entries
        oldest = entries[0].enqueued_at  # taken in queue order: the first is the oldest
        record_answer = loop.record_answer
        answers = record_answer is not None and bool(result.outcomes or result.changes)
        # The lane's attempt after a restart worked: it is active again.
        resumed = request.lane if request.lane and loop.lanes.was_refused(request.lane) else None

        def record(conn: sqlite3.Connection) -> tuple[MergeResult | None, tuple[int, int]]:
            now = now_ms()
            outbox.deliver_batch(
                conn,
                provider=loop.name,
                entries=entries,
                batch_id=request.key,
                state=result.state,
                http_status=result.status,
                latency_ms=latency,
                remote_ref=result.remote_ref,
                now=now,
                delivery_id=request.delivery_id,
                attempted_at=attempt.sent_at,
                held_until=loop.health.held_until(),
            )
            if resumed is not None:
                loop.lanes.accept_db(conn, resumed, now)
            # The provider told the job's outcome before this answer was recorded: apply it.
            held = (0, 0)
            if result.remote_ref:
                held = callbacks.settle_held_jobs(conn, loop.name, result.remote_ref, now=now)
            if record_answer is None or not answers:
                return None, held
            return record_answer(conn, entries, result, now), held

        def recorded(outcome: tuple[MergeResult | None, tuple[int, int]]) -> None:
            merged, (settled, queued) = outcome
            if settled:
                log.info(
                    "job_outcome_applied_late",
                    provider=loop.name,
                    remote_ref=result.remote_ref,
                    deliveries=settled,
                    queued_again=queued,
                )
            if resumed is not None:
                loop.lanes.accepted(resumed)
            confirmed = result.state == "confirmed"
            metrics.delivered(loop.name, len(entries), confirmed=confirmed, oldest_queued_at=oldest)
            if merged is not None:
                loop.on_merge(merged)
            log.info(
                "batch_delivered",
                provider=loop.name,
                items=len(entries),
                state=result.state,
                status=result.status,
                latency_ms=round(latency, 1),
                remote_ref=result.remote_ref,
            )

        loop.delivered(record, recorded)
