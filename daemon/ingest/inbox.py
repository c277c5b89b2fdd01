"""The SQL inbox applier: picks up rows other programs INSERT into ``inbox``.

No busy polling: it reads ``PRAGMA data_version``, which only changes when
another connection commits, and reads the inbox only then. It looks when the
store's write-ahead log is written to (every commit, by any program, writes
there; the file watcher reports it at once), and on a slow tick as a safety net
for file systems without change notification. Bad rows are marked ``rejected``
with a reason; nothing raises.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import anyio
import structlog
import watchfiles
from dropsync.store.handle import Store
from dropsync.store.merge import (
    Change,
    MergeResult,
    apply_changes,
    data_version,
    pending_inbox,
    reject_inbox_rows,
)

from .. import metrics
from ..clock import now_ms
from ..config import Config
from ..documents import FutureLimit, inbox_change
from ..errors import DocumentError

log = structlog.get_logger(__name__)

# Rows per transaction: small enough that a program inserting into the inbox is rarely kept
# waiting for the write lock (SQLite's busy handler then sleeps in coarse steps).
BATCH = 1000
BATCH_MAX_BYTES = 16 << 20  # of bodies: a batch of large bodies is cut short
BUSY_POLL_S = 0.05


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
        """One transaction (in the store's thread): validate and merge up to BATCH rows."""
        limits = self.config.json_limits
        rows, more = pending_inbox(
            conn, BATCH, max_body_bytes=limits.max_bytes, max_total_bytes=BATCH_MAX_BYTES
        )
        now = now_ms()
        future = FutureLimit.at(now, self.config.max_clock_skew_ms)
        changes: list[Change] = []
        rejected: list[tuple[int, str]] = []
        # Collections are read as their stored bytes (see pending_inbox).
        requests = {name.encode() for name in self.config.request_collections()}
        units = {c.name.encode(): c.timestamp_unit for c in self.config.collections.values()}
        for given in rows:
            # A request without a time is dated when it is read.
            row = (*given[:5], now) if given[5] is None and given[1] in requests else given
            # A request dated here has its time in ms; any other row, its collection's unit.
            collection = given[1]
            unit = units.get(collection) if isinstance(collection, bytes) else None
            unit = unit if row is given else "ms"
            try:
                changes.append(inbox_change(row, future=future, limits=limits, unit=unit))
            except DocumentError as exc:
                row_id = row[0]
                assert isinstance(row_id, int)
                rejected.append((row_id, str(exc)))
        if rejected:
            reject_inbox_rows(conn, rejected, now=now)
        merged = apply_changes(conn, changes, self.config.routes(), now=now)
        return len(rows), more, merged, rejected

    async def apply_pending(self) -> int:
        """Apply every pending row; returns how many rows were processed."""
        total = 0
        while True:
            count, more, merged, rejected = await self.store.transact(self._apply_batch)
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

    async def _watch_wal(self) -> None:
        """Wake the applier whenever the store's write-ahead log is written to."""
        store = self.store.path.resolve()
        wal = f"{store}-wal"
        try:
            async for _ in watchfiles.awatch(
                store.parent,
                debounce=50,
                step=100,  # how often the watcher thread looks; each look costs a little CPU
                rust_timeout=5000,
                recursive=False,
                yield_on_timeout=False,
                watch_filter=lambda change, name: name == wal,
                ignore_permission_denied=True,
            ):
                self._wal_written.set()
        except (OSError, RuntimeError) as exc:
            # Only the prompt pick-up is lost: the slow tick still finds every commit.
            log.warning("inbox_watch_unavailable", error=str(exc), tick_s=self.config.inbox_poll_s)

    async def run(self) -> None:
        """Apply pending rows now, then whenever another process commits."""
        # Read the version before applying, so a commit made meanwhile is seen next time.
        await self.changed()
        await self.apply_pending()
        busy_until = 0.0
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_wal)
            while True:
                # After a commit by another program, look again soon even without a
                # notification; once it has been quiet a second, back to the slow tick.
                quick = anyio.current_time() < busy_until
                with anyio.move_on_after(BUSY_POLL_S if quick else self.config.inbox_poll_s):
                    await self._wal_written.wait()
                self._wal_written = anyio.Event()
                if await self.changed():
                    busy_until = anyio.current_time() + 1.0
                    self.on_external_change()
                    await self.apply_pending()
