"""Read-only questions the CLI asks: status, the LWW audit (``why``), dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite


async def _rows(
    db: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    cursor = await db.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


async def status_summary(db: aiosqlite.Connection) -> dict[str, Any]:
    """Everything ``dropsync status`` shows; each query uses an index (fast on big stores)."""
    providers = await _rows(db, "SELECT * FROM pending_by_provider ORDER BY provider")
    inbox = await _rows(db, "SELECT COUNT(*) AS pending FROM inbox WHERE status = 'pending'")
    files = await _rows(
        db,
        "SELECT SUM(status = 'processing') AS processing, SUM(status = 'quarantined') AS "
        "quarantined, SUM(status = 'done') AS done FROM files",
    )
    quarantined = await _rows(
        db,
        "SELECT id, collection, name, path, error, finished_at FROM files "
        "WHERE status = 'quarantined' ORDER BY id DESC LIMIT 5",
    )
    version = await _rows(db, "PRAGMA user_version")
    return {
        "schema_version": version[0]["user_version"],
        "providers": providers,
        "inbox_pending": inbox[0]["pending"],
        "files": {k: v or 0 for k, v in files[0].items()},
        "recent_quarantined": quarantined,
    }


@dataclass(frozen=True, slots=True)
class VersionSeen:
    """One change to a key, as logged in the inbox."""

    inbox_id: int | None  # None: the current version, known from ``records`` only
    ts: int | None
    op: str | None
    origin: str
    status: str
    reason: str | None
    digest: str | None
    file_name: str | None
    doc_index: int | None
    received_at: int


async def versions_seen(db: aiosqlite.Connection, collection: str, key: str) -> list[VersionSeen]:
    """Every version seen of (collection, key), oldest first.

    That is the inbox log, plus the current version when it came from a drop
    file and was never displaced (such versions are described by ``records``
    alone; see ``store.merge``).
    """
    rows = await db.execute_fetchall(
        "SELECT i.id, i.ts, i.op, i.origin, i.status, i.reason, i.digest, f.name, i.doc_index, "
        "i.received_at FROM inbox i LEFT JOIN files f ON f.id = i.file_id "
        "WHERE i.collection = ? AND i.key = ? "
        "UNION ALL "
        "SELECT NULL, r.updated_at, CASE WHEN r.deleted THEN 'delete' ELSE 'upsert' END, "
        "r.origin, 'applied', NULL, r.digest, f.name, r.doc_index, r.merged_at "
        "FROM records r LEFT JOIN files f ON f.id = r.file_id "
        "WHERE r.collection = ? AND r.key = ? AND r.change_id IS NULL "
        "ORDER BY 10, 1",
        (collection, key, collection, key),
    )
    return [VersionSeen(*row) for row in rows]


async def current_record(
    db: aiosqlite.Connection, collection: str, key: str
) -> dict[str, Any] | None:
    """The ``records`` row of (collection, key), if any."""
    rows = await _rows(
        db, "SELECT * FROM records WHERE collection = ? AND key = ?", (collection, key)
    )
    return rows[0] if rows else None


async def outbox_for_key(
    db: aiosqlite.Connection, collection: str, key: str
) -> list[dict[str, Any]]:
    """Pending outbox entries and delivery state of (collection, key), per provider."""
    pending = await _rows(
        db,
        "SELECT provider, updated_at, enqueued_at, attempts, 'pending' AS state FROM outbox "
        "WHERE collection = ? AND key = ?",
        (collection, key),
    )
    delivered = await _rows(
        db,
        "SELECT provider, updated_at, at AS enqueued_at, NULL AS attempts, state "
        "FROM delivered WHERE collection = ? AND key = ?",
        (collection, key),
    )
    dead = await _rows(
        db,
        "SELECT provider, updated_at, created_at AS enqueued_at, attempts, "
        "'dead-letter: ' || reason AS state FROM dead_letters WHERE collection = ? AND key = ?",
        (collection, key),
    )
    return pending + delivered + dead


async def dead_letters(
    db: aiosqlite.Connection, provider: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Dead letters, newest first, optionally for one provider."""
    if provider:
        return await _rows(
            db,
            "SELECT * FROM dead_letters WHERE provider = ? ORDER BY id DESC LIMIT ?",
            (provider, limit),
        )
    return await _rows(db, "SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))
