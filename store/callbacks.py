"""What providers tell the daemon after a delivery: confirmations and failures (of every batch
sent before a moment, or of one job), integration error logs, and the replay memory of signed
callbacks.

Plain functions over a ``sqlite3.Connection``, run in the store's thread (``Store.transact``
or ``Store.call``), so that one callback is one transaction. A kind's own tables (what its
callbacks tell besides) are written by the kind's ``tables`` module in the same transaction
(docs/adding-a-kind.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any


def remember_signature(
    db: sqlite3.Connection, provider: str, kind: str, signature: str, *, now: int
) -> bool:
    """Record an accepted callback's signature; False if it was accepted before (a replay)."""
    cursor = db.execute(
        "INSERT INTO callback_signatures (signature, provider, kind, received_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (signature) DO NOTHING",
        (signature, provider, kind, now),
    )
    return cursor.rowcount == 1


def settle_sync_status(
    db: sqlite3.Connection, provider: str, before: int, *, failed: bool, error: str, now: int
) -> tuple[list[int], int]:
    """A sync status (the provider's word on every batch sent before a moment): every
    ``accepted`` delivery of ``provider`` attempted at or before ``before`` becomes
    ``confirmed`` with its records (or, when ``failed``, ``failed`` with ``error``, its
    records queued again unless a failure already queued them once).

    Returns (the deliveries settled, records queued again).
    """
    ids = _accepted_before(db, provider, before)
    _set_state(db, ids, "failed" if failed else "confirmed", error if failed else None)
    return ids, settle_records(db, provider, ids, failed=failed, now=now)


def settle_records(
    db: sqlite3.Connection, provider: str, ids: Sequence[int], *, failed: bool, now: int
) -> int:
    """The ``delivered`` records of settled deliveries ``ids`` still ``accepted`` (a big upload
    is recorded a chunk per transaction: records can follow their delivery's settlement):
    ``confirmed``, or when ``failed`` queued again once. Returns the records queued again."""
    if not failed:
        db.executemany(
            "UPDATE delivered SET state = 'confirmed', requeued = 0, at = ? "
            "WHERE provider = ? AND delivery_id = ? AND state = 'accepted'",
            [(now, provider, i) for i in ids],
        )
        return 0
    return sum(requeue_delivered(db, provider, i, now=now, once=True) for i in ids)


def requeue_delivered(
    db: sqlite3.Connection, provider: str, delivery_id: int, *, now: int, once: bool
) -> int:
    """Queue the records of one delivery again, at their record's current version (a key
    already queued keeps its place); returns how many were queued.

    ``once``: a failure reported by the provider queues a record again only once (it is
    marked ``requeued``; a second failure report does not); without it (the operator's
    ``resync --unconfirmed``) every record of the delivery is queued.
    """
    cursor = db.execute(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "SELECT d.provider, d.collection, d.key, r.updated_at, ? FROM delivered d "
        "JOIN records r ON r.collection = d.collection AND r.key = d.key "
        "WHERE d.provider = ? AND d.delivery_id = ? AND (NOT ? OR d.requeued = 0) "
        "ON CONFLICT (provider, collection, key) DO NOTHING",
        (now, provider, delivery_id, once),
    )
    if once:
        db.execute(
            "UPDATE delivered SET requeued = 1 WHERE provider = ? AND delivery_id = ? "
            "AND requeued = 0",
            (provider, delivery_id),
        )
    return max(cursor.rowcount, 0)


def hold(
    db: sqlite3.Connection,
    provider: str,
    *,
    sent_before: int,
    failed: bool,
    error: str,
    now: int,
    held_until: int,
) -> int:
    """Keep a sync status held until ``held_until`` (epoch ms); returns its row's id."""
    cursor = db.execute(
        "INSERT INTO held_confirmations (provider, sent_before, failed, error, received_at, "
        "held_until) VALUES (?, ?, ?, ?, ?, ?)",
        (provider, sent_before, int(failed), error, now, held_until),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def count_settled(db: sqlite3.Connection, row: int, deliveries: int) -> None:
    """A held sync status settled ``deliveries`` more."""
    db.execute(
        "UPDATE held_confirmations SET settled = settled + ? WHERE id = ?", (deliveries, row)
    )


def held(db: sqlite3.Connection) -> list[tuple[int, str, int, bool, str, int, int]]:
    """Every held sync status: (id, provider, sent_before, failed, error, held_until, settled),
    oldest first."""
    return [
        (int(r[0]), r[1], int(r[2]), bool(r[3]), r[4], int(r[5]), int(r[6]))
        for r in db.execute(
            "SELECT id, provider, sent_before, failed, error, held_until, settled "
            "FROM held_confirmations ORDER BY id"
        )
    ]


def unhold(db: sqlite3.Connection, rows: Sequence[int]) -> None:
    """Their holds are over."""
    db.executemany("DELETE FROM held_confirmations WHERE id = ?", [(row,) for row in rows])


def accepted_marks(db: sqlite3.Connection, providers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per provider, (how many deliveries are ``accepted``, the greatest id of those): when
    neither moved, no upload was recorded (nor settled) since."""
    marks = {}
    for provider in providers:
        row = db.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM deliveries "
            "WHERE provider = ? AND state = 'accepted'",
            (provider,),
        ).fetchone()
        marks[provider] = (int(row[0]), int(row[1]))
    return marks


def _accepted_before(db: sqlite3.Connection, provider: str, before: int) -> list[int]:
    return [
        row[0]
        for row in db.execute(
            "SELECT id FROM deliveries WHERE provider = ? AND state = 'accepted' "
            "AND attempted_at <= ? ORDER BY id",
            (provider, before),
        )
    ]


def _set_state(db: sqlite3.Connection, ids: Sequence[int], state: str, error: str | None) -> None:
    db.executemany(
        "UPDATE deliveries SET state = ?, error = COALESCE(?, error) WHERE id = ?",
        [(state, error, i) for i in ids],
    )


def job_deliveries(db: sqlite3.Connection, provider: str, job_id: str) -> list[tuple[int, str]]:
    """(id, state) of the deliveries that carry job ``job_id`` (alone or in their
    comma-separated ``remote_ref``)."""
    return [
        (row[0], row[1])
        for row in db.execute(
            "SELECT id, state FROM deliveries WHERE provider = ? AND remote_ref IS NOT NULL "
            "AND (remote_ref = ? OR instr(',' || remote_ref || ',', ',' || ? || ',') > 0) "
            "ORDER BY id",
            (provider, job_id, job_id),
        )
    ]


def settle_job(
    db: sqlite3.Connection, provider: str, job_id: str, *, failed: bool, error: str, now: int
) -> tuple[int, list[int], int]:
    """A provider's word about its job ``job_id``, which succeeded or ``failed``: the
    deliveries that carry it (alone or in their comma-separated ``remote_ref``).

    A success confirms those still ``accepted`` (with their records). A failure marks those
    ``accepted`` or ``confirmed`` ``failed`` with ``error`` (a batch of several jobs fails if
    one does, whatever the order the webhooks come in) and queues their records again once,
    as a failed sync status does (``settle_records``). Returns (the deliveries that carry the
    job, the deliveries settled now, records queued again).
    """
    rows = job_deliveries(db, provider, job_id)
    if not failed:
        ids = [i for i, state in rows if state == "accepted"]
        _set_state(db, ids, "confirmed", None)
        settle_records(db, provider, ids, failed=False, now=now)
        return len(rows), ids, 0
    ids = [i for i, state in rows if state in ("accepted", "confirmed")]
    _set_state(db, ids, "failed", error)
    db.executemany(
        "UPDATE delivered SET state = 'accepted', at = ? "
        "WHERE provider = ? AND delivery_id = ? AND state = 'confirmed'",
        [(now, provider, i) for i in ids],
    )
    return len(rows), ids, settle_records(db, provider, ids, failed=True, now=now)


def hold_job(
    db: sqlite3.Connection, provider: str, job_id: str, *, failed: bool, error: str, now: int
) -> None:
    """Keep a job's outcome that came before any delivery carrying the job was recorded;
    ``settle_held_jobs`` applies it when one is. A failure told once stays a failure."""
    db.execute(
        "INSERT INTO held_jobs (provider, job, failed, error, received_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (provider, job) DO UPDATE SET failed = MAX(failed, excluded.failed), "
        "error = CASE WHEN excluded.failed THEN excluded.error ELSE error END, "
        "received_at = excluded.received_at",
        (provider, job_id, failed, error, now),
    )


def settle_held_jobs(
    db: sqlite3.Connection, provider: str, remote_ref: str, *, now: int
) -> tuple[int, int]:
    """A delivery carrying ``remote_ref`` (one job id, or several comma-separated) was just
    recorded: apply the outcomes held for those jobs (``hold_job``), then forget them.
    Returns (deliveries settled, records queued again)."""
    jobs = [job for job in remote_ref.split(",") if job]
    held = db.execute(
        f"SELECT job, failed, error FROM held_jobs WHERE provider = ? "
        f"AND job IN ({', '.join('?' * len(jobs))})",
        (provider, *jobs),
    ).fetchall()
    settled = queued = 0
    for job, failed, error in held:
        _, ids, requeued = settle_job(db, provider, job, failed=bool(failed), error=error, now=now)
        settled += len(ids)
        queued += requeued
        db.execute("DELETE FROM held_jobs WHERE provider = ? AND job = ?", (provider, job))
    return settled, queued


def save_integration_error(
    db: sqlite3.Connection,
    provider: str,
    *,
    url: str | None,
    body: str | None,
    error: str | None,
    now: int,
) -> None:
    """Keep a fetched integration error log (or why it could not be fetched)."""
    db.execute(
        "INSERT INTO integration_errors (provider, fetched_at, url, body, error) "
        "VALUES (?, ?, ?, ?, ?)",
        (provider, now, url, body, error),
    )


def set_confirm_timeouts(db: sqlite3.Connection, timeouts: dict[str, int | None]) -> None:
    """How long each provider's accepted batches may wait for a confirmation (ms; None: never
    confirmed, so never ``unconfirmed``)."""
    db.executemany(
        "UPDATE providers SET confirm_timeout_ms = ? WHERE name = ?",
        [(ms, name) for name, ms in timeouts.items()],
    )


def set_waiting(db: sqlite3.Connection, provider: str, reason: str | None) -> None:
    """Why some of the provider's entries wait in the outbox (None: none wait)."""
    db.execute("UPDATE providers SET waiting = ? WHERE name = ?", (reason, provider))


def requeue_unconfirmed(db: sqlite3.Connection, provider: str, *, now: int) -> tuple[int, int]:
    """Queue again exactly the records of the provider's ``unconfirmed`` deliveries (accepted
    longer ago than its confirm timeout); those deliveries become ``failed``.

    Returns (deliveries, records queued).
    """
    row = db.execute(
        "SELECT confirm_timeout_ms FROM providers WHERE name = ?", (provider,)
    ).fetchone()
    if row is None or row[0] is None:
        return 0, 0
    ids = _accepted_before(db, provider, now - int(row[0]) - 1)
    queued = sum(requeue_delivered(db, provider, i, now=now, once=False) for i in ids)
    _set_state(db, ids, "failed", "no confirmation within confirm_timeout_s; queued again")
    return len(ids), queued


def delivery_items(db: sqlite3.Connection, ids: Sequence[int]) -> int:
    """The records the deliveries ``ids`` carry (``/metrics`` counts those confirmed)."""
    total = 0
    for start in range(0, len(ids), _IDS_A_STATEMENT):
        chunk = ids[start : start + _IDS_A_STATEMENT]
        marks = ",".join("?" * len(chunk))
        total += db.execute(
            f"SELECT COALESCE(SUM(items), 0) FROM deliveries WHERE id IN ({marks})", chunk
        ).fetchone()[0]
    return total


_IDS_A_STATEMENT = 500


def _paused_users(db: sqlite3.Connection) -> list[tuple[str, int]]:
    """Per provider, its users (lanes) paused as ``status`` lists them: credentials refused,
    or none while entries wait for them (nothing before the store has lanes)."""
    has_lanes = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = 'provider_users'"
    ).fetchone()
    if has_lanes is None:
        return []
    return db.execute(
        "SELECT provider, COUNT(*) FROM provider_users "
        "WHERE state = 'auth-failed' OR (state <> 'active' AND pending > 0) GROUP BY provider"
    ).fetchall()


def metrics_snapshot(db: sqlite3.Connection) -> dict[str, Any]:
    """The figures ``/metrics`` exposes, in one read (``paused_users``: per provider, its
    users paused, from the ``provider_users`` view where the store has it)."""
    return {
        "providers": db.execute(
            "SELECT provider, state, pending, dead_letters, last_ok_at, unconfirmed, "
            "oldest_age_s FROM pending_by_provider"
        ).fetchall(),
        "paused_users": _paused_users(db),
        "deliveries": db.execute(
            "SELECT provider, state, COUNT(*), COALESCE(SUM(items), 0) FROM deliveries "
            "GROUP BY provider, state"
        ).fetchall(),
        "files": db.execute("SELECT status, files FROM files_by_status").fetchall(),
        "inbox_pending": db.execute(
            "SELECT COUNT(*) FROM inbox WHERE status = 'pending'"
        ).fetchone()[0],
    }


def provider_states(db: sqlite3.Connection) -> dict[str, str]:
    """Each provider's state, for ``/healthz``."""
    return dict(db.execute("SELECT name, state FROM providers ORDER BY name").fetchall())
