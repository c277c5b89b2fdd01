"""Read-only questions of the listener's status page (``daemon.inbound.status_page``) that
``status`` does not ask: deliveries per hour and the newest dead letters' reasons.

Plain functions over a ``sqlite3.Connection`` (the page's own read-only one), each
answered through an index or a range of rowids, so a page costs the same on a store
of a million deliveries as on an empty one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

HOUR_MS = 3_600_000
# How far a request's ``attempted_at`` may lag behind the order of ``deliveries.id``: an
# upload's row is written when it ends, dated when it started (``store.spool``); a request
# written ahead is dated again when answered (``outbox.finish_attempt``). A request longer
# than half of this is still counted, only perhaps not at the very edge of the window.
ORDER_SLACK_MS = 6 * HOUR_MS

# One rowid seek: the first row at or after an id.
PROBE_SQL = "SELECT id, attempted_at FROM deliveries WHERE id >= ? ORDER BY id LIMIT 1"
# A range of rowids (from the cut found by halving), grouped.
BY_HOUR_SQL = (
    "SELECT provider, (attempted_at - ?) / ?, state, COUNT(*), COALESCE(SUM(items), 0) "
    "FROM deliveries WHERE id >= ? AND attempted_at >= ? AND attempted_at < ? "
    "AND state <> 'sent' GROUP BY 1, 2, 3"
)
# The provider's index (dead_letters_by_provider), newest first.
DEAD_LETTERS_SQL = (
    "SELECT id, collection, http_status, attempts, created_at, "
    "substr(reason, 1, ?) AS reason, length(reason) > ? AS reason_cut "
    "FROM dead_letters WHERE provider = ? ORDER BY id DESC LIMIT ?"
)


@contextmanager
def read_snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """One read transaction around several questions, so that their figures agree (in WAL a
    reader takes no lock and never holds up the writer); ended when the block ends."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.rollback()


class HourCount(NamedTuple):
    """One provider's finished requests of one state in one hour of the window."""

    provider: str
    hour: int  # 0: the window's first hour
    state: str  # accepted, confirmed, rejected, failed, dry-run
    requests: int
    items: int  # records (or files' records) the requests carried


def first_delivery_from(db: sqlite3.Connection, moment: int) -> int | None:
    """The lowest ``deliveries.id`` whose ``attempted_at`` is at or after ``moment`` (epoch
    ms), found by halving the id range: ids grow with time, and each look is one rowid seek
    (``deliveries`` has no index on ``attempted_at``: none is needed for this). None when no
    request is that recent."""
    low, high = db.execute("SELECT MIN(id), MAX(id) FROM deliveries").fetchone()
    if low is None:
        return None
    found = None
    while low <= high:
        middle = (low + high) // 2
        row = db.execute(PROBE_SQL, (middle,)).fetchone()
        if row is None:  # the rows above were removed meanwhile (retention)
            high = middle - 1
            continue
        row_id, attempted_at = int(row[0]), row[1]
        if isinstance(attempted_at, int) and attempted_at >= moment:
            found = row_id
            high = middle - 1
        else:
            low = row_id + 1
    return found


def deliveries_by_hour(
    db: sqlite3.Connection, *, start: int, hours: int, hour_ms: int = HOUR_MS
) -> list[HourCount]:
    """Finished requests from ``start`` (epoch ms) for ``hours`` hours, counted per provider,
    hour and state (``sent``, still under way, is left out).

    Reads only the rows from about ``ORDER_SLACK_MS`` before ``start`` on, by rowid.
    """
    cut = first_delivery_from(db, start - ORDER_SLACK_MS)
    if cut is None:
        return []
    rows = db.execute(BY_HOUR_SQL, (start, hour_ms, cut, start, start + hours * hour_ms)).fetchall()
    return [HourCount(str(p), int(h), str(s), int(n), int(i)) for p, h, s, n, i in rows]


def recent_dead_letters(
    db: sqlite3.Connection, provider: str, *, limit: int, reason_chars: int
) -> list[dict[str, Any]]:
    """The provider's newest ``limit`` dead letters, newest first: when, collection, HTTP
    status, attempts and the reason's first ``reason_chars`` characters (``reason_cut``: 1
    if there is more). Neither the key nor the record is read: the page shows no personal
    data (``dropsync dead-letters list`` on the box does)."""
    cursor = db.execute(DEAD_LETTERS_SQL, (reason_chars, reason_chars, provider, limit))
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
