"""Which outbox entries went into which file of a file batch in flight.

A file batch can hold millions of entries, too many to keep in memory: the
delivery engine notes them here, in a scratch database attached to the writer's
connection (``spool``), next to the files themselves. It is not part of the
store's schema: it is recreated at start and emptied once each outcome is
recorded. Plain functions over a ``sqlite3.Connection`` (the store's thread).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from . import outbox
from .removal import remove_inside


def attach(db: sqlite3.Connection, path: Path) -> None:
    """Attach (a fresh) scratch database at ``path`` as ``spool``, if not attached yet."""
    names = [row[1] for row in db.execute("PRAGMA database_list")]
    if "spool" in names:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_inside(path, path.parent)
    db.execute("ATTACH DATABASE ? AS spool", (str(path),))
    db.execute("PRAGMA spool.journal_mode = OFF")
    db.execute("PRAGMA spool.synchronous = OFF")
    db.execute(
        "CREATE TABLE IF NOT EXISTS spool.entries ("
        "batch INTEGER NOT NULL, part INTEGER NOT NULL, entry_id INTEGER NOT NULL, "
        "collection TEXT NOT NULL, key TEXT NOT NULL, updated_at INTEGER NOT NULL, "
        "attempts INTEGER NOT NULL)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS spool.entries_part ON entries (batch, part)")


def add(
    db: sqlite3.Connection,
    batch: int,
    rows: Sequence[tuple[int, int, str, str, int, int]],
) -> None:
    """Note (part, entry_id, collection, key, updated_at, attempts) rows of a batch."""
    db.executemany(
        "INSERT INTO spool.entries (batch, part, entry_id, collection, key, updated_at, "
        "attempts) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(batch, *row) for row in rows],
    )


# Entries a statement. An upsert keeps the original of every page it changes in a statement
# journal, in memory with temp_store = MEMORY: about one page per entry of a big store (a
# 20,000-entry statement took 76 MB), so statements stay small.
CHUNK = 2_000


def _chunks(db: sqlite3.Connection, batch: int, part: int) -> list[tuple[int, int]]:
    """Rowid ranges of the part's notes, ``CHUNK`` rows or fewer each."""
    row = db.execute(
        "SELECT MIN(rowid), MAX(rowid) FROM spool.entries WHERE batch = ? AND part = ?",
        (batch, part),
    ).fetchone()
    if row is None or row[0] is None:
        return []
    low, high = int(row[0]), int(row[1])
    return [(start, min(start + CHUNK - 1, high)) for start in range(low, high + 1, CHUNK)]


_IN_CHUNK = "s.batch = ? AND s.part = ? AND s.rowid BETWEEN ? AND ?"


def _deliver_range(
    db: sqlite3.Connection,
    provider: str,
    batch: int,
    part: int,
    low: int,
    high: int,
    state: str,
    delivery_id: int,
    now: int,
) -> None:
    db.execute(
        "INSERT INTO delivered (provider, collection, key, updated_at, state, "
        "delivery_id, at) SELECT ?, s.collection, s.key, s.updated_at, ?, ?, ? "
        f"FROM spool.entries s WHERE {_IN_CHUNK} AND 1 "
        "ON CONFLICT (provider, collection, key) DO UPDATE SET "
        "updated_at = excluded.updated_at, state = excluded.state, "
        "delivery_id = excluded.delivery_id, at = excluded.at",
        (provider, state, delivery_id, now, batch, part, low, high),
    )
    _delete_sent(db, batch, part, low, high)


def _delete_sent(db: sqlite3.Connection, batch: int, part: int, low: int, high: int) -> None:
    # An entry whose version changed while in flight stays: the newer one is still to send.
    db.execute(
        "DELETE FROM outbox WHERE id IN (SELECT o.id FROM spool.entries s "
        f"JOIN outbox o ON o.id = s.entry_id AND o.updated_at = s.updated_at WHERE {_IN_CHUNK})",
        (batch, part, low, high),
    )


def count_attempt(db: sqlite3.Connection, batch: int, parts: Sequence[int]) -> None:
    """One more failed attempt for the entries of these parts."""
    for part in parts:
        for low, high in _chunks(db, batch, part):
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id IN "
                f"(SELECT s.entry_id FROM spool.entries s WHERE {_IN_CHUNK})",
                (batch, part, low, high),
            )


def dead_letter_parts(
    db: sqlite3.Connection,
    provider: str,
    batch: int,
    parts: Sequence[int],
    *,
    reason: str,
    http_status: int | None,
    now: int,
) -> int:
    """Move the entries of these parts to ``dead_letters``; returns how many."""
    moved = 0
    for part in parts:
        for low, high in _chunks(db, batch, part):
            cursor = db.execute(
                "INSERT INTO dead_letters (provider, collection, key, updated_at, http_status, "
                "reason, attempts, created_at) SELECT ?, s.collection, s.key, s.updated_at, ?, "
                "?, s.attempts + 1, ? FROM spool.entries s JOIN outbox o ON o.id = s.entry_id "
                f"AND o.updated_at = s.updated_at WHERE {_IN_CHUNK}",
                (provider, http_status, reason, now, batch, part, low, high),
            )
            moved += max(cursor.rowcount, 0)
            _delete_sent(db, batch, part, low, high)
    return moved


def part_sizes(db: sqlite3.Connection, batch: int) -> dict[int, int]:
    """Entries per part of a batch."""
    return dict(
        db.execute(
            "SELECT part, COUNT(*) FROM spool.entries WHERE batch = ? GROUP BY part", (batch,)
        ).fetchall()
    )


def forget(db: sqlite3.Connection, batch: int) -> None:
    """The batch's outcome is recorded: drop its notes."""
    db.execute("DELETE FROM spool.entries WHERE batch = ?", (batch,))


def add_rows(
    db: sqlite3.Connection, batch: int, rows: Sequence[tuple[int, int, str, str, int, int]]
) -> None:
    """``add`` in one transaction of the scratch database only."""
    db.execute("BEGIN")
    try:
        add(db, batch, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def record_delivery(
    db: sqlite3.Connection,
    provider: str,
    batch: int,
    parts: Sequence[int],
    *,
    batch_id: str,
    state: str,
    http_status: int | None,
    latency_ms: float,
    remote_ref: str | None,
    now: int,
    sent_at: int | None = None,
    held_until: int | None = None,
) -> tuple[int, int]:
    """The provider took these parts: its ``deliveries`` row and state; returns (the row's id,
    the items). Their entries are then moved a chunk per transaction (``deliver_chunk``).

    ``deliveries.attempted_at`` is ``sent_at``, when the upload started (a confirmation
    callback covers uploads sent before its timestamp), else ``now``. ``held_until``: see
    ``outbox.provider_delivered``.
    """
    sizes = part_sizes(db, batch)
    items = sum(sizes.get(part, 0) for part in parts)
    cursor = db.execute(
        "INSERT INTO deliveries (provider, batch_id, items, state, http_status, latency_ms, "
        "remote_ref, attempted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (provider, batch_id, items, state, http_status, latency_ms, remote_ref, sent_at or now),
    )
    assert cursor.lastrowid is not None
    outbox.provider_delivered(db, provider, now=now, held_until=held_until)
    return cursor.lastrowid, items


def chunks(db: sqlite3.Connection, batch: int, parts: Sequence[int]) -> list[tuple[int, int, int]]:
    """(part, low rowid, high rowid) of every chunk of these parts' notes."""
    return [(part, low, high) for part in parts for low, high in _chunks(db, batch, part)]


def deliver_chunks(
    db: sqlite3.Connection,
    provider: str,
    batch: int,
    chunks: Sequence[tuple[int, int, int]],
    *,
    state: str,
    delivery_id: int,
    now: int,
) -> None:
    """The provider took these chunks (part, first and last rowid) of its parts: their
    entries leave the outbox (unless a newer version was queued meanwhile) and ``delivered``
    records them. A transaction takes some chunks only, so that recording a multi-GB upload
    never holds the store for long (a crash between transactions leaves the rest queued: it
    is sent again, at least once)."""
    for part, low, high in chunks:
        _deliver_range(db, provider, batch, part, low, high, state, delivery_id, now)
