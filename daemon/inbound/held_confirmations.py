"""Sync statuses (``adapters.inbound.SentBefore``), held for a while after they arrive.

A provider's sync status covers every upload sent before a moment (a callback's timestamp).
It can arrive before the daemon has recorded the upload it is about: the provider may sync
and call back before its answer to the upload reaches the daemon, and a big upload is
recorded a chunk of records per transaction. A provider may not send its callback again
when it is not answered 2xx, so refusing it would lose it. So each accepted sync status is
applied at once to what is recorded, then held for its ``hold_s`` (the kind's allowed
callback age): every ``RECHECK_S`` seconds it is applied again to uploads recorded
since that were sent before its moment, and now and then (``FIXUP_AFTER_S``, doubling) to
records of the deliveries it settled that were recorded after it settled them. Applying it
again changes only what it has not settled yet. One that settled nothing by the end of its
hold is logged (``sync_status_unmatched``).

Each hold is also kept in the store (``held_confirmations``), so a stop or a kill does not
end it: at its next start the daemon holds those rows again and applies them at once, and
whatever was recorded before the stop that they cover is settled then (a hold whose time ran
out meanwhile is applied once more, then let go). Records moved after their delivery was
settled take its state as they are moved (``store.spool``), whether or not the sync status
is still held. A recheck reads the store and writes only when an upload was recorded since
the last one (holds last a day by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from dropsync.adapters.inbound import SentBefore
from dropsync.store import callbacks
from dropsync.store.handle import Store

from .. import metrics
from ..clock import now_ms

log = structlog.get_logger(__name__)

RECHECK_S = 1.0
FIXUP_AFTER_S = 1.0
MAX_HELD = 1000
FINAL_RECHECK_S = 2.0


@dataclass
class HeldCallback:
    """One accepted sync status, while it is held."""

    provider: str
    before: int  # uploads sent at or before it are covered
    failed: bool  # the sync failed (a callback's status 400)
    error: str  # the deliveries' error when it failed
    until: float  # monotonic time its hold ends
    settled: list[int] = field(default_factory=list)  # deliveries it confirmed or failed
    fixup_at: float | None = None  # when its settled deliveries' records are looked at again
    fixup_every: float = FIXUP_AFTER_S
    row: int | None = None  # its row in held_confirmations
    settled_earlier: int = 0  # deliveries it settled in an earlier run of the daemon


@dataclass(frozen=True)
class Applied:
    """What applying a sync status (or a recheck of the held ones) did, per sync status."""

    callback: HeldCallback
    deliveries: int
    queued: int
    confirmed: int = 0  # the records of the deliveries it confirmed now (for /metrics)


class HeldConfirmations:
    """Held sync statuses: applied on arrival, applied again while held."""

    def __init__(self, store: Store, wake: Callable[[list[str]], None]) -> None:
        self.store = store
        self.wake = wake
        self.held: list[HeldCallback] = []
        self._marks: dict[str, tuple[int, int]] = {}  # accepted deliveries at the last recheck

    async def receive(
        self,
        provider: str,
        status: SentBefore,
        *,
        replay: tuple[str, str] | None,
        now: int,
    ) -> Applied | None:
        """Apply a verified sync status, and hold it; None if its ``replay`` key (the route,
        the call's key) was accepted before."""
        callback = HeldCallback(
            provider, status.before, status.failed, status.error, time.monotonic() + status.hold_s
        )

        def apply(db: Any) -> list[Applied] | None:
            if replay is not None and not callbacks.remember_signature(
                db, provider, replay[0], replay[1], now=now
            ):
                return None
            callback.row = callbacks.hold(
                db,
                provider,
                sent_before=status.before,
                failed=status.failed,
                error=status.error,
                now=now,
                held_until=now + int(status.hold_s * 1000),
            )
            # The callbacks held before it first (oldest covering wins): one transaction.
            return self._apply(db, [*self.held, callback], now)

        outcome = await self.store.transact(apply)
        if outcome is None:
            return None
        _count_confirmed(outcome)
        self.held.append(callback)
        if len(self.held) > MAX_HELD:
            await self._end([self.held.pop(0)])
        mine = [a for a in outcome if a.callback is callback]
        self._report([a for a in outcome if a.callback is not callback])
        return mine[0]

    async def run(self) -> None:
        """Take up the holds a previous run kept, then apply the held sync statuses again every
        RECHECK_S until cancelled (then once more)."""
        try:
            try:
                await self.resume()
            except Exception as exc:  # the holds are tried again at the next recheck
                log.error("sync_status_recheck_failed", error=f"{type(exc).__name__}: {exc}")
            while True:
                await anyio.sleep(RECHECK_S)
                try:
                    await self.recheck()
                except Exception as exc:  # a recheck never takes the listener down
                    log.error("sync_status_recheck_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            # Once more for uploads recorded meanwhile, but a stop does not wait long for it.
            with anyio.move_on_after(FINAL_RECHECK_S, shield=True):
                await self.recheck(final=True)

    async def resume(self) -> None:
        """Hold again the sync statuses a previous run of the daemon held when it stopped (or
        was killed), and apply them at once; those whose hold ended meanwhile are applied once
        more, then let go."""
        now, moment = now_ms(), time.monotonic()
        rows = await self.store.call(callbacks.held)
        for row, provider, before, failed, error, until, settled in rows[-MAX_HELD:]:
            self.held.append(
                HeldCallback(
                    provider,
                    before,
                    failed,
                    error,
                    moment + max(0, until - now) / 1000,
                    row=row,
                    settled_earlier=settled,
                )
            )
        if rows[:-MAX_HELD]:
            await self.store.transact(callbacks.unhold, [r[0] for r in rows[:-MAX_HELD]])
        if self.held:
            log.info("sync_status_holds_resumed", held=len(self.held))
            await self.recheck()

    async def recheck(self, *, final: bool = False) -> None:
        """Apply the held sync statuses to what was recorded since; end the holds that are
        over."""
        if not self.held:
            return
        moment = time.monotonic()
        held = list(self.held)
        due = [
            c
            for c in held
            if c.fixup_at is not None and (final or moment >= min(c.fixup_at, c.until))
        ]
        # Held for a day by default: a recheck writes only when an upload was recorded since.
        marks = await self.store.call(callbacks.accepted_marks, sorted({c.provider for c in held}))
        if due or final or marks != self._marks:
            applied = await self.store.transact(lambda db: self._apply(db, held, now_ms(), due))
            _count_confirmed(applied)
            self._report(applied)
            self._marks = marks
        over = []
        for callback in held:
            if moment >= callback.until:
                over.append(callback)
            elif final:  # the daemon stops: the hold goes on at its next start (the store has it)
                self.held.remove(callback)
        if over:
            for callback in over:
                self.held.remove(callback)
            await self._end(over)

    async def _end(self, over: list[HeldCallback]) -> None:
        """The holds of ``over`` are over: forget them (a word for each that settled nothing)."""
        for callback in over:
            self._release(callback)
        rows = [c.row for c in over if c.row is not None]
        if rows:
            await self.store.transact(callbacks.unhold, rows)

    def _apply(
        self,
        db: Any,
        held: list[HeldCallback],
        now: int,
        fixups: list[HeldCallback] | None = None,
    ) -> list[Applied]:
        """In the store's thread, one transaction: each sync status, oldest moment first;
        for those in ``fixups``, also the records of the deliveries they settled before."""
        done = []
        for callback in sorted(held, key=lambda c: c.before):
            ids, queued = callbacks.settle_sync_status(
                db,
                callback.provider,
                callback.before,
                failed=callback.failed,
                error=callback.error,
                now=now,
            )
            if ids:
                callback.settled += ids
                if callback.row is not None:
                    callbacks.count_settled(db, callback.row, len(ids))
                callback.fixup_at = time.monotonic() + FIXUP_AFTER_S
                callback.fixup_every = FIXUP_AFTER_S
            elif fixups and any(c is callback for c in fixups):
                queued += callbacks.settle_records(
                    db, callback.provider, callback.settled, failed=callback.failed, now=now
                )
                callback.fixup_every *= 2
                callback.fixup_at = time.monotonic() + callback.fixup_every
            confirmed = 0 if callback.failed else callbacks.delivery_items(db, ids)
            done.append(Applied(callback, len(ids), queued, confirmed))
        return done

    def _report(self, applied: list[Applied]) -> None:
        """Log what a recheck settled, and wake the providers whose records were queued."""
        woken = set()
        for item in applied:
            if item.deliveries or item.queued:
                log.info(
                    "sync_status_applied_late",
                    provider=item.callback.provider,
                    status=400 if item.callback.failed else 200,
                    deliveries=item.deliveries,
                    queued_again=item.queued,
                )
            if item.queued:
                woken.add(item.callback.provider)
        if woken:
            self.wake(sorted(woken))

    @staticmethod
    def _release(callback: HeldCallback) -> None:
        if not callback.settled and not callback.settled_earlier:
            log.warning(
                "sync_status_unmatched",
                provider=callback.provider,
                status=400 if callback.failed else 200,
                timestamp=callback.before,
                reason="no upload sent before its timestamp was recorded while it was held "
                "(max_callback_age_s): it confirmed nothing",
            )


def _count_confirmed(applied: list[Applied]) -> None:
    for item in applied:
        metrics.confirmed(item.callback.provider, item.confirmed)
