"""Which outbox entries went into which file of a file batch in flight.

A file batch can hold millions of entries, too many to keep in memory: the
delivery engine notes them here, in a scratch database attached to the writer's
connection (``spool``), next to the files themselves, with where each one's document
is in its file (a file the provider skipped is split in halves by those offsets). It
is not part of the store's schema: it is recreated at start and emptied once each
outcome is recorded. Plain functions over a ``sqlite3.Connection`` (the store's thread).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
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
        "attempts INTEGER NOT NULL, doc_offset INTEGER NOT NULL, doc_length INTEGER NOT NULL)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS spool.entries_part ON entries (batch, part)")


# (part, entry_id, collection, key, updated_at, attempts, offset, length): where the entry's
# document is in its part's file (bytes from the file's start, and its length; 0, 0 for an
# entry that is in no file).
Row = tuple[int, int, str, str, int, int, int, int]


def add(db: sqlite3.Connection, batch: int, rows: Sequence[Row]) -> None:
    """Note ``Row``s of a batch."""
    db.executemany(
        "INSERT INTO spool.entries (batch, part, entry_id, collection, key, updated_at, "
        "attempts, doc_offset, doc_length) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    # The delivery may be settled already (a callback can come while a big upload's records
    # are still being moved): its records take that state as they are recorded, so nothing
    # depends on the callback being applied again after them (nor on the daemon running on).
    row = db.execute("SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    settled = row[0] if row is not None and state == "accepted" else None
    failed = settled == "failed"  # queued again once: they stay in the outbox
    db.execute(
        "INSERT INTO delivered (provider, collection, key, updated_at, state, "
        "delivery_id, at, requeued) SELECT ?, s.collection, s.key, s.updated_at, ?, ?, ?, ? "
        f"FROM spool.entries s WHERE {_IN_CHUNK} AND 1 "
        "ON CONFLICT (provider, collection, key) DO UPDATE SET "
        "updated_at = excluded.updated_at, state = excluded.state, "
        "delivery_id = excluded.delivery_id, at = excluded.at, "
        "requeued = CASE WHEN excluded.requeued THEN 1 ELSE requeued END",
        (
            provider,
            "confirmed" if settled == "confirmed" else state,
            delivery_id,
            now,
            int(failed),
            batch,
            part,
            low,
            high,
        ),
    )
    if not failed:
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


def add_rows(db: sqlite3.Connection, batch: int, rows: Sequence[Row]) -> None:
    """``add`` in one transaction of the scratch database only."""
    db.execute("BEGIN")
    try:
        add(db, batch, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


@dataclass(frozen=True, slots=True)
class Half:
    """One half of a split part: its new part number, entries, and the bytes of its
    documents in the old part's file (``start`` up to ``end``, separators between included)."""

    part: int
    items: int
    start: int
    end: int


def split_part(db: sqlite3.Connection, batch: int, part: int, first: int) -> tuple[Half, Half]:
    """Split the notes of a part of two or more entries in two, in file order: the first
    half (``items // 2``) becomes part ``first``, the rest part ``first + 1``. Each entry's
    offset is made relative to its half's own file, which the caller writes as ``[`` and the
    half's bytes and ``]``. One transaction of the scratch database only."""

    def nth(index: int) -> tuple[int, int, int]:
        row = db.execute(
            "SELECT rowid, doc_offset, doc_length FROM spool.entries WHERE batch = ? "
            "AND part = ? ORDER BY rowid LIMIT 1 OFFSET ?",
            (batch, part, index),
        ).fetchone()
        assert row is not None, "a part is split only while its notes are there"
        return int(row[0]), int(row[1]), int(row[2])

    items = part_sizes(db, batch).get(part, 0)
    if items < 2:
        raise ValueError(f"part {part} of batch {batch} has {items} entries: nothing to split")
    half = items // 2
    low, last_low, high, last = nth(0), nth(half - 1), nth(half), nth(items - 1)
    halves = (
        Half(first, half, low[1], last_low[1] + last_low[2]),
        Half(first + 1, items - half, high[1], last[1] + last[2]),
    )
    db.execute("BEGIN")
    try:
        for piece, below in zip(halves, (high[0], None), strict=True):
            db.execute(
                "UPDATE spool.entries SET part = ?, doc_offset = doc_offset - ? + 1 "
                "WHERE batch = ? AND part = ?" + (" AND rowid < ?" if below else ""),
                (piece.part, piece.start, batch, part, *((below,) if below else ())),
            )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return halves


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
