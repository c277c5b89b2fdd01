"""Every version of a key the store has seen: the LWW audit's question (``dropsync why``).

Apart from ``store.queries`` because its answer is a NamedTuple (typing), which ``status``,
reading ``queries``, does without.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple


class VersionSeen(NamedTuple):
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


def versions_seen(db: sqlite3.Connection, collection: str, key: str) -> list[VersionSeen]:
    """Every version seen of (collection, key), oldest first.

    That is the inbox log, plus the current version when it is the key's first,
    from a drop file or a pull, and was never displaced (such versions are
    described by ``records`` alone; see ``store.merge``).
    """
    rows = db.execute(
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
