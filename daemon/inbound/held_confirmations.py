"""Sync statuses (``adapters.inbound.SentBefore``), held for a while after they arrive.

A provider's sync status covers every upload sent before a moment (a callback's timestamp).
It can arrive before the daemon has recorded the upload it is about: the provider may sync
and call back before its answer to the upload reaches the daemon, and a big upload is
recorded a chunk of records per transaction. A provider may not send its callback again
when it is not answered 2xx, so refusing it would lose it. So each accepted sync status is
applied at once to what is recorded, then held (in memory) for its ``hold_s`` (the kind's
allowed callback age): every ``RECHECK_S`` seconds it is applied again to uploads recorded
since that were sent before its moment, and now and then (``FIXUP_AFTER_S``, doubling) to
records of the deliveries it settled that were recorded after it settled them. Applying it
again changes only what it has not settled yet. One that settled nothing by the end of its
hold is logged (``sync_status_unmatched``).

Held sync statuses are not kept across a restart. An upload whose 2xx the daemon never
recorded is sent again after a restart (and confirmed by the callback for that sending); an
upload recorded but not yet matched when the daemon stopped shows as ``unconfirmed`` after
``confirm_timeout_s`` (``dropsync resync NAME --unconfirmed``).
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


@dataclass(frozen=True)
class Applied:
    """What applying a sync status (or a recheck of the held ones) did, per sync status."""

    callback: HeldCallback
    deliveries: int
    queued: int


class HeldConfirmations:
    """Held sync statuses: applied on arrival, applied again while held."""

    def __init__(self, store: Store, wake: Callable[[list[str]], None]) -> None:
        self.store = store
        self.wake = wake
        self.held: list[HeldCallback] = []

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
            # The callbacks held before it first (oldest covering wins): one transaction.
            return self._apply(db, [*self.held, callback], now)

        outcome = await self.store.transact(apply)
        if outcome is None:
            return None
        self.held.append(callback)
        if len(self.held) > MAX_HELD:
            self._release(self.held.pop(0))
        mine = [a for a in outcome if a.callback is callback]
        self._report([a for a in outcome if a.callback is not callback])
        return mine[0]

    async def run(self) -> None:
        """Apply the held sync statuses again every RECHECK_S until cancelled (then once more)."""
        try:
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
        applied = await self.store.transact(lambda db: self._apply(db, held, now_ms(), due))
        self._report(applied)
        for callback in held:
            if final or moment >= callback.until:
                self.held.remove(callback)
                self._release(callback)

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
                callback.fixup_at = time.monotonic() + FIXUP_AFTER_S
                callback.fixup_every = FIXUP_AFTER_S
            elif fixups and any(c is callback for c in fixups):
                queued += callbacks.settle_records(
                    db, callback.provider, callback.settled, failed=callback.failed, now=now
                )
                callback.fixup_every *= 2
                callback.fixup_at = time.monotonic() + callback.fixup_every
            done.append(Applied(callback, len(ids), queued))
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
        if not callback.settled:
            log.warning(
                "sync_status_unmatched",
                provider=callback.provider,
                status=400 if callback.failed else 200,
                timestamp=callback.before,
                reason="no upload sent before its timestamp was recorded while it was held "
                "(max_callback_age_s): it confirmed nothing",
            )
