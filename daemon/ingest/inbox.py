"""The SQL inbox applier: picks up rows other programs INSERT into ``inbox``.

No polling: it reads ``PRAGMA data_version``, which only changes when another
connection commits, and reads the inbox only then. It looks the moment the store's
write-ahead log is written to (every commit, by any program, writes there;
``daemon.ingest.wal_watch``), and on a slow tick (``daemon.inbox_poll_s``) as a safety net for
file systems without change notification. Bad rows are marked ``rejected`` with a
reason; nothing raises.

A commit is written to the log before it is published (after the writer's fsync, in the
log's index): a look at the first write may come too early. So a look after a write that
finds nothing is made again 1, 4, 16 and 64 ms later; and while writes keep coming that
are not another program's (the daemon's own), looks are spaced by that growing interval,
so a busy daemon does not look at every write it makes.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable

import anyio
import structlog
from dropsync.store.db import unavailable
from dropsync.store.errors import InboxTriggerFailed
from dropsync.store.handle import PauseListener, Store, retrying
from dropsync.store.merge import (
    Change,
    MergeResult,
    apply_changes,
    data_version,
    inbox_triggers,
    pending_inbox,
    reject_inbox_rows,
)

from .. import metrics
from ..clock import now_ms
from ..config import Config
from ..documents import NUL, FutureLimit, inbox_change
from ..errors import DocumentError
from .wal_watch import LogWatch

log = structlog.get_logger(__name__)

# Rows per transaction: small enough that a program inserting into the inbox is rarely kept
# waiting for the write lock (SQLite's busy handler then sleeps in coarse steps).
BATCH = 1000
BATCH_MAX_BYTES = 16 << 20  # of bodies: a batch of large bodies is cut short
FIRST_RECHECK_S = 0.001  # a look after a write that found nothing is made again this much later,
RECHECK_FACTOR = 4  # then this many times longer each time,
LAST_RECHECK_S = 0.064  # up to this: 1, 4, 16, 64 ms


class _Unreported:
    """Pauses no one is told about (a ``Store`` opened without a listener: tests)."""

    def paused(self, work: str, condition: str, detail: str, retry_in_s: float) -> None:
        """Not reported."""

    def resumed(self, work: str, condition: str) -> None:
        """Not reported."""


_NO_PAUSES: PauseListener = _Unreported()


def _trigger_failed(exc: BaseException) -> str | None:
    """The inbox waits out a trigger of another program's that fails (until it is fixed or
    dropped: each try finds out), with backoff, said in ``status``."""
    return exc.condition if isinstance(exc, InboxTriggerFailed) else None


class InboxApplier:
    """Applies pending SQL inbox rows through the one LWW merge."""

    def __init__(
        self,
        store: Store,
        config: Config,
        on_merge: Callable[[MergeResult], None],
        on_external_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.config = config
        self.on_merge = on_merge
        # Another program committed (an inbox INSERT, `dropsync resync`, a dead-letter retry).
        self.on_external_change = on_external_change
        self._version: int | None = None
        self._wal_written = anyio.Event()

    def _apply_batch(
        self, conn: sqlite3.Connection
    ) -> tuple[int, bool, MergeResult, list[tuple[int, str]]]:
        """One transaction (in the store's thread): validate and merge up to BATCH rows.

        A trigger another program put on ``inbox`` that fails on these writes is an
        ``InboxTriggerFailed`` naming it (the batch is rolled back whole).
        """
        try:
            return self._merge_batch(conn)
        except (sqlite3.OperationalError, sqlite3.IntegrityError) as exc:
            if unavailable(exc, self.store.path) is not None:
                raise  # a busy store, a full disk: the store waits those out
            triggers = inbox_triggers(conn)
            if not triggers:
                raise
            raise InboxTriggerFailed(
                f"inbox trigger {', '.join(triggers)} failed on the daemon's own write to "
                f"the inbox ({exc}); no inbox row is applied while it does: make it work on "
                'any connection, or DROP TRIGGER it (docs/schema.md, "inbox")'
            ) from exc

    def _merge_batch(
        self, conn: sqlite3.Connection
    ) -> tuple[int, bool, MergeResult, list[tuple[int, str]]]:
        limits = self.config.json_limits
        rows, more = pending_inbox(
            conn, BATCH, max_body_bytes=limits.max_bytes, max_total_bytes=BATCH_MAX_BYTES
        )
        now = now_ms()
        future = FutureLimit.at(now, self.config.max_clock_skew_ms)
        changes: list[Change] = []
        rejected: list[tuple[int, str]] = []
        requests = set(self.config.request_collections())
        seen: dict[object, tuple[str | None, str | None]] = {}  # stored -> (name, unit)
        for given in rows:
            known = seen.get(given[1])
            if known is None:
                name = self._collection_name(given[1])
                unit = None if name is None else self.config.collection(name).timestamp_unit
                known = seen[given[1]] = (name, unit)
            name, unit = known
            # A request without a time is dated when it is read.
            row = (*given[:5], now) if given[5] is None and name in requests else given
            # A request dated here has its time in ms; any other row, its collection's unit.
            unit = unit if row is given else "ms"
            try:
                change = inbox_change(row, future=future, limits=limits, unit=unit)
                changes.append(change if name in (None, change.collection) else
                               change._replace(collection=name))  # fmt: skip
            except DocumentError as exc:
                row_id = row[0]
                assert isinstance(row_id, int)
                rejected.append((row_id, str(exc)))
        if rejected:
            reject_inbox_rows(conn, rejected, now=now)
        merged = apply_changes(conn, changes, self.config.routes(), now=now)
        return len(rows), more, merged, rejected

    def _collection_name(self, stored: object) -> str | None:
        """The collection a row's ``collection`` (its stored bytes, see ``pending_inbox``)
        names: the text itself, or the configured collection it is in another Unicode form
        (compared in NFC, as a drop folder's name: ``Config.collection``). None for bytes
        that are not UTF-8 and for no text at all (``inbox_change`` says why the row is
        refused)."""
        if not isinstance(stored, bytes):
            return None
        try:
            text = stored.decode()
        except UnicodeDecodeError:
            return None
        if not text or NUL in text:
            return None
        configured = self.config.collection(text).name
        return configured if configured in self.config.collections else text

    async def apply_pending(self) -> int:
        """Apply every pending row; returns how many rows were processed."""
        total = 0
        while True:
            count, more, merged, rejected = await retrying(
                lambda: self.store.transact(self._apply_batch),
                self.store.pauses or _NO_PAUSES,
                "inbox",
                _trigger_failed,
            )
            if not count:
                break
            total += count
            metrics.inbox_rows(merged.applied, merged.unchanged, len(rejected))
            for row_id, reason in rejected[:20]:
                log.warning("inbox_row_rejected", inbox_id=row_id, reason=reason)
            log.info(
                "inbox_applied",
                rows=count,
                applied=merged.applied,
                unchanged=merged.unchanged,
                rejected=len(rejected),
            )
            self.on_merge(merged)
            if not more:
                break
        return total

    async def changed(self) -> bool:
        """True when another connection committed since the last call."""
        version = await self.store.call(data_version)
        changed = version != self._version
        self._version = version
        return changed

    def _watch_wal(self) -> LogWatch | None:
        """The watch of the store's write-ahead log (None: the kernel refused it; only the
        slow tick is left then, logged)."""
        try:
            return LogWatch(self.store.path)
        except OSError as exc:
            log.warning("inbox_watch_unavailable", error=str(exc), tick_s=self.config.inbox_poll_s)
            return None

    async def run(self) -> None:
        """Apply pending rows now, then whenever another process commits."""
        watch = self._watch_wal()  # in place before the first look: no commit is missed
        try:
            # Read the version before applying, so a commit made meanwhile is seen next time.
            await self.changed()
            await self.apply_pending()
            await self._follow(watch)
        finally:
            if watch is not None:
                watch.close()

    async def _follow(self, watch: LogWatch | None) -> None:
        """Look at each write of the log (spaced while they find nothing), else every tick."""
        gap = 0.0  # the least time between two looks while looks find nothing
        last_look = last_write = -math.inf
        recheck = False  # a write was seen that no look explained yet
        while True:
            wait = self.config.inbox_poll_s
            if recheck:
                wait = min(wait, last_look + gap - anyio.current_time())
            if watch is None:
                await anyio.sleep(wait)
                written = False
            else:
                written = await watch.written(wait)
            if written:
                now = anyio.current_time()
                if now - last_write > gap:
                    gap = 0.0  # the first write after a quiet spell: look at once
                last_write = now
                if now < last_look + gap:
                    await anyio.sleep(last_look + gap - now)  # writes it does not explain
            last_look = anyio.current_time()
            if await self.changed():
                gap, recheck = 0.0, False
                self.on_external_change()
                await self.apply_pending()
                continue
            # Nothing published yet, or the daemon's own commit: look again, later each time.
            recheck = (written or recheck) and gap < LAST_RECHECK_S
            gap = min(max(RECHECK_FACTOR * gap, FIRST_RECHECK_S), LAST_RECHECK_S)
