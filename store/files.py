"""The ``files`` ledger: every drop file claimed, its content hash, progress and outcome."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

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


_COLUMNS = (
    "id, collection, name, path, sha256, status, docs_seen, docs_applied, docs_unchanged, "
    "docs_rejected"
)


async def latest_with_content(
    db: aiosqlite.Connection, collection: str, sha256: str
) -> FileRow | None:
    """The newest ledger row of ``collection`` for a file with this content, if any."""
    row = await (
        await db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE sha256 = ? AND collection = ? "
            "ORDER BY (status = 'processing') DESC, id DESC LIMIT 1",
            (sha256, collection),
        )
    ).fetchone()
    return FileRow(*row) if row else None


async def insert_file(
    db: aiosqlite.Connection,
    *,
    collection: str,
    name: str,
    path: str,
    sha256: str,
    size: int,
    status: str,
    now: int,
    duplicate_of: int | None = None,
) -> int:
    """Add a ledger row and return its id."""
    cursor = await db.execute(
        "INSERT INTO files (collection, name, path, sha256, size, status, duplicate_of, "
        "received_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            collection,
            name,
            path,
            sha256,
            size,
            status,
            duplicate_of,
            now,
            None if status == "processing" else now,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


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


async def finish_file(
    db: aiosqlite.Connection, file_id: int, *, status: str, path: str, error: str | None, now: int
) -> None:
    """Mark a file done or quarantined at its final path."""
    await db.execute(
        "UPDATE files SET status = ?, path = ?, error = ?, finished_at = ? WHERE id = ?",
        (status, path, error, now, file_id),
    )


async def move_file(db: aiosqlite.Connection, file_id: int, path: str) -> None:
    """Record that a file now lives at ``path``."""
    await db.execute("UPDATE files SET path = ? WHERE id = ?", (path, file_id))


async def documents_in_progress(db: aiosqlite.Connection) -> int | None:
    """Documents committed so far of the newest file being ingested (None: none is)."""
    row = await (
        await db.execute(
            "SELECT docs_seen FROM files WHERE status = 'processing' ORDER BY id DESC LIMIT 1"
        )
    ).fetchone()
    return int(row[0]) if row else None
