"""The ``files`` ledger: every drop file claimed, its content hash, progress and outcome.

A row is made the moment a file is claimed (``sha256`` empty until the file is
hashed), so a file in ``.processing/`` is never without one for longer than a claim
takes. While the file is processed its ``path`` is its place in ``.processing/``; just
before it is moved to ``.done/`` or ``.quarantine/``, ``path`` becomes the place it
is moved to, still with status ``processing``, and the status is set once it is there.
So a row's path always says where its file is, or is being moved to. Changes that a
concurrent ingest may also make are conditional on the row being as the caller saw it.

Plain functions over a ``sqlite3.Connection``, run in the store's thread
(``Store.transact`` / ``Store.call``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite


@dataclass(frozen=True, slots=True)
class FileRow:
    """A row of the ``files`` ledger."""

    id: int
    collection: str
    name: str
    path: str
    sha256: str
    status: str
    docs_seen: int
    docs_applied: int
    docs_unchanged: int
    docs_rejected: int
    duplicate_of: int | None = None


_COLUMNS = (
    "id, collection, name, path, sha256, status, docs_seen, docs_applied, docs_unchanged, "
    "docs_rejected, duplicate_of"
)


def _one(db: sqlite3.Connection, where: str, params: tuple[object, ...]) -> FileRow | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM files WHERE {where} LIMIT 1", params).fetchone()
    return FileRow(*row) if row else None


def get_file(db: sqlite3.Connection, file_id: int) -> FileRow | None:
    """The row ``file_id``."""
    return _one(db, "id = ?", (file_id,))


def processing_at(db: sqlite3.Connection, paths: list[str]) -> FileRow | None:
    """The unfinished row whose file is (or is being moved) at one of ``paths``."""
    marks = ", ".join("?" * len(paths))
    return _one(db, f"status = 'processing' AND path IN ({marks}) ORDER BY id DESC", (*paths,))


def row_at(db: sqlite3.Connection, path: str) -> FileRow | None:
    """The newest row of the file at ``path``, whatever its status."""
    return _one(db, "path = ? ORDER BY id DESC", (path,))


def processing_rows(db: sqlite3.Connection) -> list[FileRow]:
    """Every unfinished row (an index keeps this cheap)."""
    rows = db.execute(f"SELECT {_COLUMNS} FROM files WHERE status = 'processing' ORDER BY id")
    return [FileRow(*row) for row in rows]


def latest_named(db: sqlite3.Connection, collection: str, name: str) -> FileRow | None:
    """The newest row of a file dropped as ``name`` into ``collection``."""
    return _one(db, "collection = ? AND name = ? ORDER BY id DESC", (collection, name))


def insert_claimed(
    db: sqlite3.Connection,
    *,
    collection: str,
    name: str,
    path: str,
    size: int,
    now: int,
    exists: Callable[[str], bool],
    held: Callable[[int], bool] = lambda file_id: False,
) -> int:
    """The row of a file about to be moved to ``path`` in ``.processing/``; returns its id.

    Written before the move (so no file is ever in ``.processing/`` without a row), with
    status ``processing`` and no hash yet. An earlier row of a file of that name that
    never got further (its ingest was killed before the move: no hash, nothing at its
    path) is the same file's: it is taken over instead of adding a second row. A row a
    live ingest still ``held`` is never taken over (its file was deleted under it).
    """
    stale = db.execute(
        "SELECT id, path FROM files WHERE status = 'processing' AND sha256 = '' "
        "AND collection = ? AND name = ? ORDER BY id",
        (collection, name),
    ).fetchall()
    for file_id, old_path in stale:
        if not held(file_id) and not exists(old_path):
            db.execute("UPDATE files SET path = ?, size = ? WHERE id = ?", (path, size, file_id))
            return int(file_id)
    return insert_file(
        db,
        collection=collection,
        name=name,
        path=path,
        sha256="",
        size=size,
        status="processing",
        now=now,
    )


def insert_file(
    db: sqlite3.Connection,
    *,
    collection: str,
    name: str,
    path: str,
    sha256: str,
    size: int,
    status: str,
    now: int,
    error: str | None = None,
) -> int:
    """Add a ledger row and return its id."""
    cursor = db.execute(
        "INSERT INTO files (collection, name, path, sha256, size, status, error, "
        "received_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            collection,
            name,
            path,
            sha256,
            size,
            status,
            error,
            now,
            None if status == "processing" else now,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def set_content(db: sqlite3.Connection, file_id: int, sha256: str, size: int) -> int | None:
    """Record a claimed file's hash; return the id of an earlier file with that content.

    That earlier file counts only if it was ingested (``done``): its documents are applied.
    One being ingested right now does not, though it will most likely apply them too: it
    may yet end without having applied them all (deleted under its ingest, or its row
    finished by a kill), and this one would then have been filed with nothing applied.
    Merging the same documents twice changes nothing (last-write-wins), so this file is
    ingested itself.
    """
    row = get_file(db, file_id)
    assert row is not None
    earlier = db.execute(
        "SELECT id FROM files WHERE sha256 = ? AND collection = ? AND id != ? "
        "AND status = 'done' ORDER BY id DESC LIMIT 1",
        (sha256, row.collection, file_id),
    ).fetchone()
    duplicate = int(earlier[0]) if earlier is not None else None
    db.execute(
        "UPDATE files SET sha256 = ?, size = ?, duplicate_of = ? WHERE id = ?",
        (sha256, size, duplicate, file_id),
    )
    return duplicate


def record_progress(
    db: sqlite3.Connection,
    file_id: int,
    *,
    docs_seen: int,
    applied: int,
    unchanged: int,
    rejected: int,
) -> None:
    """Store how far ingest of a file has come (in the same transaction as the merge)."""
    db.execute(
        "UPDATE files SET docs_seen = ?, docs_applied = ?, docs_unchanged = ?, "
        "docs_rejected = ? WHERE id = ?",
        (docs_seen, applied, unchanged, rejected, file_id),
    )


def move_if(db: sqlite3.Connection, file_id: int, *, was: str, path: str) -> bool:
    """Record that the unfinished file at ``was`` now is (or is being moved) at ``path``."""
    cursor = db.execute(
        "UPDATE files SET path = ? WHERE id = ? AND status = 'processing' AND path = ?",
        (path, file_id, was),
    )
    return cursor.rowcount == 1


def finish_if(
    db: sqlite3.Connection,
    file_id: int,
    *,
    path: str,
    status: str,
    error: str | None,
    now: int,
) -> bool:
    """Mark the unfinished file at ``path`` ``done`` or ``quarantined`` (False if it was not)."""
    cursor = db.execute(
        "UPDATE files SET status = ?, error = ?, finished_at = ? "
        "WHERE id = ? AND status = 'processing' AND path = ?",
        (status, error, now, file_id, path),
    )
    return cursor.rowcount == 1


def forget_unread(
    db: sqlite3.Connection, file_id: int, *, path: str, gone: Callable[[], bool]
) -> bool:
    """Delete the row of a file taken away before any of it was read (False if it was read).

    Only a row still ``processing`` at ``path`` with no hash and no document seen: its
    file was withdrawn between its claim and its move, so nothing of it is in the store.
    ``gone`` is asked inside the transaction: a claim of the same file come back takes the
    row over in a transaction of its own (``insert_claimed``), so it cannot slip between.
    """
    if not gone():
        return False
    cursor = db.execute(
        "DELETE FROM files WHERE id = ? AND status = 'processing' AND path = ? "
        "AND sha256 = '' AND docs_seen = 0",
        (file_id, path),
    )
    return cursor.rowcount == 1


async def documents_in_progress(db: aiosqlite.Connection) -> int | None:
    """Documents committed so far of the newest file being ingested (None: none is)."""
    row = await (
        await db.execute(
            "SELECT docs_seen FROM files WHERE status = 'processing' ORDER BY id DESC LIMIT 1"
        )
    ).fetchone()
    return int(row[0]) if row else None
