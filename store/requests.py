"""Requests a provider decides one by one: routes and outcomes (run through ``Store.transact``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable


def set_request_routes(db: sqlite3.Connection, routes: Iterable[tuple[str, str, str]]) -> None:
    """Replace the (collection, provider, kind) request routes with the configured ones."""
    db.execute("DELETE FROM request_routes")
    db.executemany(
        "INSERT INTO request_routes (collection, provider, kind) VALUES (?, ?, ?)", list(routes)
    )


def record_outcomes(
    db: sqlite3.Connection,
    provider: str,
    outcomes: Iterable[tuple[str, str, int, str, str | None, str | None]],
    *,
    now: int,
) -> None:
    """Keep each (collection, key, updated_at, status, reason, remote_ref) decision."""
    db.executemany(
        "INSERT INTO request_outcomes (provider, collection, key, updated_at, status, reason, "
        "remote_ref, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (provider, collection, key) DO UPDATE SET updated_at = excluded.updated_at, "
        "status = excluded.status, reason = excluded.reason, remote_ref = excluded.remote_ref, "
        "decided_at = excluded.decided_at",
        [(provider, *outcome, now) for outcome in outcomes],
    )
