"""Retention: what the store forgets after a while, so its size stays flat for months.

* ``inbox``: processed rows (not ``pending``) received before the cut-off go, except
  what ``dropsync why`` and the pulls still need: the row of each current version
  (``records.change_id``) and, per key and provider, the newest row that provider
  supplied (``remove_outdated`` asks whether a provider ever supplied a key: such a row, or
  the current version's ``records.origin``).
* ``deliveries``: finished attempts (``confirmed``, ``rejected``, ``failed``,
  ``dry-run``, and ``accepted`` of a provider that never confirms) made before the
  cut-off go, except those ``delivered`` still names or that carry an unfinished request
  (``entries``). ``sent`` attempts, and ``accepted`` ones awaiting a confirmation, stay
  until they are settled.
* ``held_jobs``: a job's outcome held for a batch that was never recorded goes with the
  deliveries of its time.
* Drop files filed in ``.done/`` are removed by the daemon (``daemon.process.retention``);
  before one goes, it is marked (``files.removed_at``) and the bodies of its versions the
  inbox still lists are copied into those rows (``keep_bodies``); a version of it still
  current then is logged with its body from ``records`` when a later one displaces it
  (``store.merge``), so no version is lost with the file.

Sync functions on the connection, run in the store's thread; each call deletes at
most ``limit`` rows, so the writer is never held for long.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import orjson

from .merge import LARGEST_ID, LOCAL_ORIGINS

SMALLEST_ID = -LARGEST_ID - 1  # SQLite's smallest rowid
BEFORE_FIRST_ID = SMALLEST_ID - 1  # ``prune_inbox`` from the first id (never bound)


def prune_inbox(
    db: sqlite3.Connection, *, before: int, after_id: int, limit: int
) -> tuple[int, int]:
    """Delete up to ``limit`` prunable inbox rows with ids above ``after_id``
    (``BEFORE_FIRST_ID``: every id; other programs may give rows any id, negative too).

    Returns (rows deleted, the highest id looked at): the next call starts after it.
    Rows kept are looked at again only in a later pass from the start.
    """
    # SQLite takes no integer below its smallest id: "from the smallest, included" instead.
    above, low = (">", after_id) if after_id >= SMALLEST_ID else (">=", SMALLEST_ID)
    window = db.execute(
        f"SELECT MAX(id) FROM (SELECT id FROM inbox WHERE id {above} ? AND received_at < ? "
        "ORDER BY id LIMIT ?)",
        (low, before, limit),
    ).fetchone()
    upto = window[0] if window else None
    if upto is None:
        return 0, after_id
    deleted = db.execute(
        "DELETE FROM inbox WHERE id IN ("
        f" SELECT i.id FROM inbox i WHERE i.id {above} ? AND i.id <= ? AND i.received_at < ?"
        " AND i.status <> 'pending'"
        " AND NOT EXISTS (SELECT 1 FROM records r WHERE r.collection = i.collection"
        "  AND r.key = i.key AND r.change_id = i.id)"
        " AND (i.status = 'rejected' OR i.origin IN (SELECT value FROM json_each(?))"
        "  OR EXISTS (SELECT 1 FROM inbox j WHERE j.collection = i.collection"
        "   AND j.key = i.key AND j.origin = i.origin AND j.id > i.id)))",
        (low, upto, before, orjson.dumps(LOCAL_ORIGINS).decode()),
    ).rowcount
    return deleted, int(upto)


def prune_deliveries(db: sqlite3.Connection, *, before: int, limit: int) -> int:
    """Delete up to ``limit`` finished delivery attempts made before ``before``, and the job
    outcomes held since before then for a batch that was never recorded (``held_jobs``)."""
    db.execute("DELETE FROM held_jobs WHERE received_at < ?", (before,))
    return db.execute(
        "DELETE FROM deliveries WHERE id IN ("
        " SELECT id FROM deliveries WHERE attempted_at < ?"
        " AND (state IN ('confirmed', 'rejected', 'failed', 'dry-run')"
        "  OR (state = 'accepted' AND provider IN"
        "   (SELECT name FROM providers WHERE confirm_timeout_ms IS NULL)))"
        " AND entries IS NULL"  # an unfinished request's entries are still to be sent
        " AND id NOT IN (SELECT delivery_id FROM delivered)"
        " ORDER BY id LIMIT ?)",
        (before, limit),
    ).rowcount


def done_files_before(
    db: sqlite3.Connection, *, before: int, after_id: int, limit: int
) -> list[tuple[int, str]]:
    """(id, path) of files filed as ``done`` before ``before``, ids above ``after_id``."""
    rows = db.execute(
        "SELECT id, path FROM files WHERE id > ? AND status = 'done' AND finished_at < ? "
        "AND removed_at IS NULL "
        "ORDER BY id LIMIT ?",
        (after_id, before, limit),
    ).fetchall()
    return [(int(file_id), str(path)) for file_id, path in rows]


def mark_removed(db: sqlite3.Connection, file_id: int, *, now: int | None) -> None:
    """Note that the file is about to be removed from ``.done/`` (``now``), or was kept
    after all (None). Marked before its versions' bodies are copied: a version displaced
    from then on takes its body from ``records`` in the merge (``store.merge``)."""
    db.execute("UPDATE files SET removed_at = ? WHERE id = ?", (now, file_id))


def versions_without_body(db: sqlite3.Connection, file_id: int) -> dict[int, int]:
    """doc_index -> inbox id of the file's versions the inbox lists without a body."""
    rows = db.execute(
        "SELECT doc_index, id FROM inbox WHERE file_id = ? AND body IS NULL "
        "AND op = 'upsert' AND doc_index IS NOT NULL",
        (file_id,),
    ).fetchall()
    return {int(index): int(row_id) for index, row_id in rows}


def keep_bodies(db: sqlite3.Connection, bodies: Iterable[tuple[int, str]]) -> None:
    """Copy bodies into inbox rows (id, canonical JSON text): their file is about to go."""
    db.executemany(
        "UPDATE inbox SET body = ? WHERE id = ? AND body IS NULL",
        [(body, row_id) for row_id, body in bodies],
    )
