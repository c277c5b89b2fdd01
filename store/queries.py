"""Read-only questions the CLI asks: status, the LWW audit (``why``; its versions of a key
in ``store.history``), dead letters.

Plain functions over a ``sqlite3.Connection``: the CLI runs them on a read-only
connection of its own (no event loop needed, so ``status`` starts fast: nothing but
sqlite3 imported, not even typing); the daemon runs them in its store thread with
``Store.call``.
"""

from __future__ import annotations

import sqlite3

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any


def _rows(db: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cursor = db.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# The paused users (lanes) ``status`` lists at most; the provider_users view has them all.
PAUSED_USERS_SHOWN = 100


def status_summary(db: sqlite3.Connection) -> dict[str, Any]:
    """Everything ``dropsync status`` shows; each query uses an index (fast on big stores).

    Each provider's ``paused_users``: its users (lanes, ``provider_users``) whose credentials
    were refused, and those without credentials whose entries wait (at most
    ``PAUSED_USERS_SHOWN`` in all).
    """
    providers = _rows(db, "SELECT * FROM pending_by_provider ORDER BY provider")
    inbox = _rows(db, "SELECT COUNT(*) AS pending FROM inbox WHERE status = 'pending'")
    counts = dict(db.execute("SELECT status, files FROM files_by_status").fetchall())
    quarantined = _rows(
        db,
        "SELECT id, collection, name, path, error, finished_at FROM files "
        "WHERE status = 'quarantined' ORDER BY id DESC LIMIT 5",
    )
    version = _rows(db, "PRAGMA user_version")
    integration_errors = _rows(
        db,
        "SELECT id, provider, fetched_at, url, substr(body, 1, 500) AS body, error "
        "FROM integration_errors ORDER BY id DESC LIMIT 3",
    )
    paused = _rows(
        db,
        "SELECT provider, user, state, since, reason, pending FROM provider_users "
        "WHERE state = 'auth-failed' OR (state <> 'active' AND pending > 0) "
        "ORDER BY provider, state, user LIMIT ?",
        (PAUSED_USERS_SHOWN,),
    )
    for row in providers:
        row["paused_users"] = [
            {k: v for k, v in user.items() if k != "provider"}
            for user in paused
            if user["provider"] == row["provider"]
        ]
    return {
        "schema_version": version[0]["user_version"],
        "providers": providers,
        "inbox_pending": inbox[0]["pending"],
        "files": {k: counts.get(k, 0) for k in ("processing", "quarantined", "done")},
        "recent_quarantined": quarantined,
        "integration_errors": integration_errors,
    }


def current_record(db: sqlite3.Connection, collection: str, key: str) -> dict[str, Any] | None:
    """The ``records`` row of (collection, key), if any."""
    rows = _rows(db, "SELECT * FROM records WHERE collection = ? AND key = ?", (collection, key))
    return rows[0] if rows else None


def outbox_for_key(db: sqlite3.Connection, collection: str, key: str) -> list[dict[str, Any]]:
    """Pending outbox entries and delivery state of (collection, key), per provider."""
    pending = _rows(
        db,
        "SELECT provider, updated_at, enqueued_at, attempts, 'pending' AS state FROM outbox "
        "WHERE collection = ? AND key = ?",
        (collection, key),
    )
    delivered = _rows(
        db,
        "SELECT provider, updated_at, at AS enqueued_at, NULL AS attempts, state "
        "FROM delivered WHERE collection = ? AND key = ?",
        (collection, key),
    )
    dead = _rows(
        db,
        "SELECT provider, updated_at, created_at AS enqueued_at, attempts, "
        "'dead-letter: ' || reason AS state FROM dead_letters WHERE collection = ? AND key = ?",
        (collection, key),
    )
    return pending + delivered + dead


def dead_letters(
    db: sqlite3.Connection, provider: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Dead letters, newest first, optionally for one provider."""
    if provider:
        return _rows(
            db,
            "SELECT * FROM dead_letters WHERE provider = ? ORDER BY id DESC LIMIT ?",
            (provider, limit),
        )
    return _rows(db, "SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))


_REQUESTS_BY_STATUS = (
    "SELECT CASE WHEN o.updated_at = r.updated_at THEN o.status ELSE 'pending' END, COUNT(*) "
    "FROM request_routes t JOIN records r ON r.collection = t.collection AND r.deleted = 0 "
    "LEFT JOIN request_outcomes o "
    "ON o.provider = t.provider AND o.collection = r.collection AND o.key = r.key GROUP BY 1"
)


def progress_summary(db: sqlite3.Connection) -> dict[str, Any]:
    """What ``dropsync demo`` shows as it runs (full counts: meant for small stores).

    ``records`` per collection; per provider its ``state``, ``pending``, delivered records
    by state (``accepted``, ``confirmed``) and ``dead_letters``; ``files`` by status;
    ``requests`` (the live records of request collections, ``request_routes``) by status:
    ``pending`` until their provider decided their current version; ``shortfalls`` (see
    ``shortfalls``).
    """
    providers = {
        name: {"kind": kind, "state": state, "pending": 0, "accepted": 0, "confirmed": 0}
        for name, kind, state in db.execute("SELECT name, kind, state FROM providers ORDER BY 1")
    }
    for name, pending in db.execute("SELECT provider, pending FROM outbox_pending"):
        if name in providers:
            providers[name]["pending"] = pending
    for name, state, count in db.execute(
        "SELECT provider, state, COUNT(*) FROM delivered GROUP BY 1, 2"
    ):
        if name in providers:
            providers[name][state] = count
    for row in providers.values():
        row["dead_letters"] = 0
    for name, count in db.execute("SELECT provider, COUNT(*) FROM dead_letters GROUP BY 1"):
        if name in providers:
            providers[name]["dead_letters"] = count
    return {
        "shortfalls": shortfalls(db),
        "records": dict(db.execute("SELECT collection, COUNT(*) FROM records GROUP BY 1")),
        "providers": providers,
        "files": dict(db.execute("SELECT status, files FROM files_by_status")),
        "requests": dict(db.execute(_REQUESTS_BY_STATUS)),
        "inbox_pending": db.execute(
            "SELECT COUNT(*) FROM inbox WHERE status = 'pending'"
        ).fetchone()[0],
        "unsettled": db.execute(
            "SELECT COUNT(*) FROM deliveries d JOIN providers p ON p.name = d.provider "
            "WHERE d.state IN ('sent', 'accepted') AND p.confirm_timeout_ms IS NOT NULL"
        ).fetchone()[0],
    }


def shortfalls(db: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
    """What did not get where it was going (full scans: meant for small stores, the demo's).

    ``dead_letters``: per provider, the count and the latest reason; ``files``: each file
    quarantined or with rejected documents, and why; ``inbox_rejected``: per collection, the
    count of inbox rows refused and the latest reason.
    """
    return {
        "dead_letters": _rows(
            db,
            "SELECT provider, COUNT(*) AS count, (SELECT reason FROM dead_letters l "
            "WHERE l.provider = d.provider ORDER BY l.id DESC LIMIT 1) AS reason "
            "FROM dead_letters d GROUP BY provider ORDER BY provider",
        ),
        "files": _rows(
            db,
            "SELECT collection, name, status, docs_rejected, error FROM files "
            "WHERE status = 'quarantined' OR docs_rejected > 0 ORDER BY id",
        ),
        "inbox_rejected": _rows(
            db,
            "SELECT collection, COUNT(*) AS count, (SELECT reason FROM inbox r "
            "WHERE r.status = 'rejected' AND r.collection IS i.collection "
            "ORDER BY r.id DESC LIMIT 1) AS reason "
            "FROM inbox i WHERE status = 'rejected' GROUP BY collection ORDER BY collection",
        ),
    }
