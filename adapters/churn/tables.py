"""The churn kind's own table: ``brands``, the tool's brand id of each client brand id.

Plain functions over the daemon's ``sqlite3.Connection``, run in the store's thread (the
listener's transaction for a brand callback; a read before each file batch). The table
itself is made by the store's migrations (``store/migrations/0004_callbacks.sql``).
"""

from __future__ import annotations

import sqlite3


def save_brand(
    db: sqlite3.Connection, provider: str, client_brand_id: str, stop_churn_id: int, *, now: int
) -> bool:
    """Map a client brand to the churn tool's id; False if it was already mapped so."""
    cursor = db.execute(
        "INSERT INTO brands (provider, client_brand_id, stop_churn_brand_id, received_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (provider, client_brand_id) DO UPDATE SET "
        "stop_churn_brand_id = excluded.stop_churn_brand_id, received_at = excluded.received_at "
        "WHERE stop_churn_brand_id IS NOT excluded.stop_churn_brand_id",
        (provider, client_brand_id, stop_churn_id, now),
    )
    return cursor.rowcount == 1


def brand_map(db: sqlite3.Connection, provider: str) -> dict[str, int]:
    """Client brand id -> the churn tool's brand id, for one provider."""
    return dict(
        db.execute(
            "SELECT client_brand_id, stop_churn_brand_id FROM brands WHERE provider = ?",
            (provider,),
        ).fetchall()
    )
