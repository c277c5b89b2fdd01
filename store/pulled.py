"""Pulled collections: what a full pull did not return, derived records, record look-ups.

Run through ``Store.call`` / ``Store.transact`` (sync functions on the connection).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import orjson


def outdated_records(
    db: sqlite3.Connection, collection: str, provider: str, returned: Iterable[str]
) -> list[tuple[str, int]]:
    """Live records of ``collection`` that ``provider`` supplied and did not return now.

    "Supplied" means a version of the key came from that provider: the current version
    (``records.origin``; a pulled first version is in ``records`` only) or an ``inbox`` row
    with ``origin`` = the provider. Records created only locally are never among them.
    Returns (key, updated_at) pairs. The returned keys are compared here, not in SQL:
    ``json_each`` cuts a text at its first NUL, and a key is any text the provider chose.
    """
    rows = db.execute(
        "SELECT r.key, r.updated_at FROM records r "
        "WHERE r.collection = ? AND r.deleted = 0 "
        "AND (r.origin = ? OR EXISTS (SELECT 1 FROM inbox i WHERE i.collection = r.collection "
        "AND i.key = r.key AND i.origin = ?))",
        (collection, provider, provider),
    )
    listed = returned if isinstance(returned, set | frozenset) else set(returned)
    return [(str(key), int(updated_at)) for key, updated_at in rows if key not in listed]


def collection_records(
    db: sqlite3.Connection, collection: str
) -> list[tuple[str, int, bool, dict[str, Any] | None]]:
    """Every record of a (small) collection: (key, updated_at, deleted, body)."""
    rows = db.execute(
        "SELECT key, updated_at, deleted, body FROM records WHERE collection = ?", (collection,)
    ).fetchall()
    found = []
    for key, updated_at, deleted, body in rows:
        value = orjson.loads(body) if body is not None else None
        found.append((key, updated_at, bool(deleted), value if isinstance(value, dict) else None))
    return found


def find_records(
    db: sqlite3.Connection, collection: str, fields: Mapping[str, str]
) -> list[tuple[str, int, dict[str, Any]]]:
    """Live records of ``collection`` whose body has these top-level text values."""
    sql = "SELECT key, updated_at, body FROM records WHERE collection = ? AND deleted = 0"
    params: list[object] = [collection]
    for name, value in fields.items():
        sql += " AND CAST(json_extract(body, ?) AS TEXT) = ?"
        params += ["$." + orjson.dumps(name).decode(), value]
    found: list[tuple[str, int, dict[str, Any]]] = []
    for key, updated_at, body in db.execute(sql, params).fetchall():
        document = orjson.loads(body) if body is not None else None
        if isinstance(document, dict):
            found.append((key, updated_at, document))
    return found
