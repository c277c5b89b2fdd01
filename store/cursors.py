"""Pull cursors: how far each provider has been read (run through ``Store.call``).

A stream pulled with remove-outdated also has a row ``<stream>:full`` whose ``updated_at``
is when its last complete full pull ended (``full_pull_done``).
"""

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


FULL = ":full"  # suffix of the row that dates a stream's last complete full pull


def last_full_pull(db: sqlite3.Connection, provider: str, stream: str) -> int | None:
    """When the last complete (settled) full pull of ``stream`` ended (epoch ms), or None."""
    row = db.execute(
        "SELECT updated_at FROM cursors WHERE provider = ? AND name = ?", (provider, stream + FULL)
    ).fetchone()
    return None if row is None else int(row[0])


def full_pull_done(db: sqlite3.Connection, provider: str, stream: str, *, now: int) -> None:
    """Record that a full pull of ``stream`` settled now (a ``resync`` forgets it too)."""
    set_cursor(db, provider, str(now), now=now, name=stream + FULL)
