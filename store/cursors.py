"""Pull cursors: how far each provider has been read (run through ``Store.call``)."""

from __future__ import annotations

import sqlite3


def get_cursor(db: sqlite3.Connection, provider: str, name: str = "default") -> str | None:
    """The stored cursor value, or None for a first (full) pull."""
    row = db.execute(
        "SELECT value FROM cursors WHERE provider = ? AND name = ?", (provider, name)
    ).fetchone()
    return None if row is None else str(row[0])


def set_cursor(
    db: sqlite3.Connection, provider: str, value: str | None, *, now: int, name: str = "default"
) -> None:
    """Store a cursor value."""
    db.execute(
        "INSERT INTO cursors (provider, name, value, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (provider, name) DO UPDATE SET value = excluded.value, "
        "updated_at = excluded.updated_at",
        (provider, name, value, now),
    )


def reset_cursors(db: sqlite3.Connection, provider: str) -> None:
    """Forget a provider's cursors: the next pull reads everything."""
    db.execute("DELETE FROM cursors WHERE provider = ?", (provider,))
