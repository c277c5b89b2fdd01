"""Outbox, delivery attempts, dead letters and provider state: the delivery engine's SQL.

Writes are plain functions over a ``sqlite3.Connection``, run whole in the store's thread
(``Store.transact``); so is ``provider_state``, which a failure's transaction reads. The
flusher's reads between transactions (``take_batch``, ``unfinished_requests``,
``pending_count``) take the aiosqlite connection ``Store.read``/``Store.snapshot`` give.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

import aiosqlite
import orjson

from .merge import cut_at_nul
from .states import ProviderState


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """A ``providers`` row: the provider's state and its wait."""

    name: str
    kind: str
    state: ProviderState
    next_attempt_at: int | None  # no attempt before this moment (ms), unless resync ends it
    failures: int
    last_error: str | None


class OutboxEntry(NamedTuple):
    """An outbox entry joined with the record version it sends."""

    id: int
    collection: str
    key: str
    updated_at: int
    deleted: bool
    body: str | None
    attempts: int
    # When the entry was queued (the version's idempotency key holds it; 0 where unknown:
    # a request written ahead is sent again with the key stored with it).
    enqueued_at: int = 0


def register_providers(
    db: sqlite3.Connection, providers: Iterable[tuple[str, str]], *, now: int
) -> None:
    """Make sure each configured (name, kind) has a state row; existing state is kept."""
    db.executemany(
        "INSERT INTO providers (name, kind, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind",
        [(name, kind, now) for name, kind in providers],
    )


def provider_names(db: sqlite3.Connection) -> list[str]:
    """Every provider that has a state row: configured now or at some time before."""
    return [str(row[0]) for row in db.execute("SELECT name FROM providers ORDER BY name")]


def provider_state(db: sqlite3.Connection, name: str) -> ProviderRow | None:
    """The state row of one provider."""
    row = db.execute(
        "SELECT name, kind, state, next_attempt_at, failures, last_error FROM providers "
        "WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    name, kind, state, next_attempt_at, failures, last_error = row
    return ProviderRow(
        name,
        kind,
        ProviderState(state),
        _integer(next_attempt_at),
        _integer(failures) or 0,
        last_error,
    )


def _integer(value: object) -> int | None:
    """A stored number as an int; None for what is not one (a row edited by hand may hold
    text, a blob or an infinite real there: the daemon does not stop for it)."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def set_provider_state(
    db: sqlite3.Connection,
    name: str,
    *,
    state: str,
    now: int,
    next_attempt_at: int | None = None,
    failures: int = 0,
    last_error: str | None = None,
    ok: bool = False,
) -> None:
    """Record a provider's state after an attempt (``ok``: it just accepted something)."""
    db.execute(
        "UPDATE providers SET state = ?, next_attempt_at = ?, failures = ?, last_error = ?, "
        "last_attempt_at = ?, updated_at = ?, last_ok_at = CASE WHEN ? THEN ? ELSE last_ok_at END "
        "WHERE name = ?",
        (state, next_attempt_at, failures, last_error, now, now, ok, now, name),
    )


def clamp_next_attempts(
    db: sqlite3.Connection, latest: Iterable[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Bring each named provider's ``next_attempt_at`` back to at most its ``latest`` time.

    A value stored by an older version (or another ceiling) may lie years ahead; returns
    the (name, previous value) of each provider changed.
    """
    changed: list[tuple[str, int]] = []
    for name, limit in latest:
        row = db.execute(
            "SELECT next_attempt_at FROM providers WHERE name = ? AND next_attempt_at > ?",
            (name, limit),
        ).fetchone()
        if row is not None:
            db.execute("UPDATE providers SET next_attempt_at = ? WHERE name = ?", (limit, name))
            changed.append((name, row[0]))
    return changed


def record_pull_failure(
    db: sqlite3.Connection,
    name: str,
    *,
    state: str,
    last_error: str,
    now: int,
    held_until: int | None = None,
) -> None:
    """A pull failed: show it (``auth-failed`` stays; the next attempt a push's backoff or
    Retry-After stored is kept, whatever ``state`` becomes, or moved to ``held_until``, the
    pull's own Retry-After, when that is later)."""
    db.execute(
        "UPDATE providers SET state = CASE WHEN state = 'auth-failed' THEN state ELSE ? END, "
        "next_attempt_at = CASE WHEN ? IS NULL THEN next_attempt_at "
        f"ELSE MAX({_STORED_WAIT}, ?) END, "
        "last_error = ?, last_attempt_at = ?, updated_at = ? WHERE name = ?",
        (state, held_until, held_until, last_error, now, now, name),
    )


# The stored next attempt where it is an integer (what the daemon writes), else 0: SQLite
# orders text after every number, and a real may be infinite.
_STORED_WAIT = "CASE WHEN typeof(next_attempt_at) = 'integer' THEN next_attempt_at ELSE 0 END"


def hold_provider(db: sqlite3.Connection, name: str, *, until: int, now: int) -> None:
    """No attempt before ``until`` (a provider's Retry-After whose recording was cut short):
    the stored next attempt moves there unless it is later already."""
    db.execute(
        f"UPDATE providers SET next_attempt_at = MAX({_STORED_WAIT}, ?), "
        "state = CASE WHEN state = 'online' THEN 'backing-off' ELSE state END, updated_at = ? "
        "WHERE name = ?",
        (until, now, name),
    )


def provider_delivered(
    db: sqlite3.Connection, name: str, *, now: int, held_until: int | None = None
) -> None:
    """The provider took a request: it is ``online``, its failures and error cleared, and
    nothing holds it back, unless ``held_until`` is still ahead (a ``Retry-After`` answered
    to another request meanwhile): that wait, its state and its error stay."""
    db.execute(
        "UPDATE providers SET "
        "state = CASE WHEN ? > ? THEN state ELSE 'online' END, "
        "next_attempt_at = CASE WHEN ? > ? THEN ? END, failures = 0, "
        "last_error = CASE WHEN ? > ? THEN last_error END, "
        "last_attempt_at = ?, last_ok_at = ?, updated_at = ? WHERE name = ?",
        (held_until, now, held_until, now, held_until, held_until, now, now, now, now, name),
    )


def record_pull_ok(db: sqlite3.Connection, name: str, *, now: int) -> bool:
    """A pull succeeded: the provider works, so its error is cleared; True if changed.

    A push waiting out its backoff (``next_attempt_at`` ahead) keeps its state and
    error: the push, not the pull, says when that is over. A next attempt that has come
    is cleared.
    """
    cursor = db.execute(
        "UPDATE providers SET state = 'online', failures = 0, last_error = NULL, "
        "next_attempt_at = NULL, last_ok_at = ?, last_attempt_at = ?, updated_at = ? "
        "WHERE name = ? AND (state <> 'online' OR last_error IS NOT NULL OR failures <> 0 "
        "OR next_attempt_at IS NOT NULL) "
        "AND (next_attempt_at IS NULL OR next_attempt_at <= ?)",
        (now, now, now, name, now),
    )
    return cursor.rowcount > 0


async def take_batch(
    db: aiosqlite.Connection, provider: str, limit: int, *, after_id: int = 0
) -> list[OutboxEntry]:
    """The oldest ``limit`` pending entries of a provider (with id > ``after_id``) and bodies,
    those set aside for a paused lane left out."""
    rows = await db.execute_fetchall(
        # The tables under the view ``records``: its body is a correlated subquery, which
        # costs a fifth more a row than the join.
        "SELECT o.id, o.collection, o.key, o.updated_at, k.deleted, b.body, o.attempts, "
        "o.enqueued_at FROM outbox o "
        "JOIN record_keys k ON k.collection = o.collection AND k.key = o.key "
        "LEFT JOIN record_bodies b ON b.id = k.body_id "
        # Entries set aside for a paused lane (``store.lanes``) are left out: a row lookup
        # each, about 0.25 us (24 ms a take behind 100,000 of them).
        "WHERE o.provider = ? AND o.held_lane IS NULL AND o.id > ? ORDER BY o.id LIMIT ?",
        (provider, after_id, limit),
    )
    new = tuple.__new__  # the NamedTuple without the Python frame of its __new__
    return [new(OutboxEntry, (i, c, k, u, bool(d), b, a, q)) for i, c, k, u, d, b, a, q in rows]


class UnfinishedRequest(NamedTuple):
    """A request written ahead whose answer is not final: sent again as it was."""

    delivery_id: int  # its latest attempt
    batch_id: str
    state: str  # 'sent': the daemon stopped during the attempt; 'failed': a retryable answer
    entries: list[OutboxEntry]


INTERRUPTED = "interrupted: the daemon stopped before the answer was recorded"


def _entries_json(entries: Sequence[OutboxEntry]) -> str:
    # (id, collection, key, updated_at, deleted, body): the entry's first six fields
    return orjson.dumps([e[:6] for e in entries]).decode()


def open_requests(
    db: sqlite3.Connection,
    provider: str,
    requests: Sequence[tuple[str, Sequence[OutboxEntry]]],
    *,
    now: int,
) -> list[int]:
    """Write requests ahead of sending them: a ``sent`` deliveries row each, with the
    (batch id, entries) it carries; returns their ids, in order (run in the store's thread)."""
    ids = []
    for batch_id, entries in requests:
        cursor = db.execute(
            "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at, entries) "
            "VALUES (?, ?, ?, 'sent', ?, ?)",
            (provider, batch_id, len(entries), now, _entries_json(entries)),
        )
        assert cursor.lastrowid is not None
        ids.append(cursor.lastrowid)
    return ids


def discard_requests(db: sqlite3.Connection, delivery_ids: Sequence[int]) -> None:
    """Forget requests written ahead that were never sent (their entries stay in the outbox)."""
    db.executemany(
        "DELETE FROM deliveries WHERE id = ? AND state = 'sent'", [(i,) for i in delivery_ids]
    )


async def unfinished_requests(db: aiosqlite.Connection, provider: str) -> list[UnfinishedRequest]:
    """A provider's requests whose answer is not final, oldest first."""
    rows = await db.execute_fetchall(
        "SELECT id, batch_id, state, entries FROM deliveries "
        "WHERE provider = ? AND entries IS NOT NULL ORDER BY id",
        (provider,),
    )
    return [
        UnfinishedRequest(
            delivery_id,
            batch_id,
            state,
            [OutboxEntry(i, c, k, u, bool(d), b, 0) for i, c, k, u, d, b in orjson.loads(entries)],
        )
        for delivery_id, batch_id, state, entries in rows
    ]


def reopen_request(db: sqlite3.Connection, delivery_id: int, *, now: int) -> int:
    """A new attempt of an unfinished request: the entries move to a new ``sent`` row (an
    attempt the daemon did not live to finish is marked ``failed``); returns the new id."""
    cursor = db.execute(
        "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at, entries) "
        "SELECT provider, batch_id, items, 'sent', ?, entries FROM deliveries WHERE id = ?",
        (now, delivery_id),
    )
    db.execute(
        "UPDATE deliveries SET entries = NULL, "
        "error = CASE WHEN state = 'sent' THEN ? ELSE error END, "
        "state = CASE WHEN state = 'sent' THEN 'failed' ELSE state END WHERE id = ?",
        (INTERRUPTED, delivery_id),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def abandon_request(db: sqlite3.Connection, delivery_id: int, *, reason: str) -> None:
    """An unfinished request that will not be sent again: its entries are dropped from
    the row (they are still in the outbox), the reason kept as its error."""
    db.execute(
        "UPDATE deliveries SET entries = NULL, error = ?, "
        "state = CASE WHEN state = 'sent' THEN 'failed' ELSE state END WHERE id = ?",
        (reason, delivery_id),
    )


def finish_attempt(
    db: sqlite3.Connection,
    delivery_id: int,
    *,
    state: str,
    attempted_at: int,
    http_status: int | None,
    latency_ms: float,
    error: str | None,
    final: bool,
) -> None:
    """Record the answer to an attempt written ahead (``final``: the request is finished)."""
    db.execute(
        "UPDATE deliveries SET state = ?, attempted_at = ?, http_status = ?, latency_ms = ?, "
        "error = ?, entries = CASE WHEN ? THEN NULL ELSE entries END WHERE id = ?",
        (state, attempted_at, http_status, latency_ms, error, final, delivery_id),
    )


_VERSION = itemgetter(1, 2, 3)  # an OutboxEntry's (collection, key, updated_at)

_DELIVERED_CONFLICT = (
    "ON CONFLICT (provider, collection, key) DO UPDATE SET updated_at = excluded.updated_at, "
    "state = excluded.state, delivery_id = excluded.delivery_id, at = excluded.at"
)


def deliver_batch(
    db: sqlite3.Connection,
    provider: str,
    entries: Sequence[OutboxEntry],
    *,
    batch_id: str,
    state: str,
    http_status: int,
    latency_ms: float,
    remote_ref: str | None,
    now: int,
    delivery_id: int | None = None,
    attempted_at: int | None = None,
    held_until: int | None = None,
) -> None:
    """One transaction's work after a provider took a batch (run in the store's thread).

    ``delivery_id``: the request's row written ahead, which becomes the delivery (else a
    row is added); ``attempted_at`` when it was sent (default ``now``); ``held_until``: see
    ``provider_delivered``.
    """
    if delivery_id is None:
        cursor = db.execute(
            "INSERT INTO deliveries (provider, batch_id, items, state, http_status, latency_ms, "
            "remote_ref, attempted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (provider, batch_id, len(entries), state, http_status, latency_ms, remote_ref, now),
        )
        delivery_id = cursor.lastrowid
    else:
        db.execute(
            "UPDATE deliveries SET state = ?, http_status = ?, latency_ms = ?, remote_ref = ?, "
            "error = NULL, attempted_at = ?, entries = NULL WHERE id = ?",
            (state, http_status, latency_ms, remote_ref, attempted_at or now, delivery_id),
        )
    # The batch as JSON: one statement each for the outbox and the delivery state, instead
    # of a bound row each. The outbox's is {"id": updated_at, ...}: json_each gives each
    # member's name and number as they are (an array's element would be parsed again by
    # ->>, a fifth of the DELETE's time).
    sent = orjson.dumps(
        {e.id: e.updated_at for e in entries}, option=orjson.OPT_NON_STR_KEYS
    ).decode()
    db.execute(
        # An entry whose version changed while in flight stays: the newer one is still to send.
        "DELETE FROM outbox WHERE id IN (SELECT o.id FROM json_each(?) AS v "
        "JOIN outbox o ON o.id = CAST(v.key AS INTEGER) AND o.updated_at = v.value)",
        (sent,),
    )
    versions = orjson.dumps(list(map(_VERSION, entries))).decode()
    if cut_at_nul(versions):
        db.executemany(
            "INSERT INTO delivered (provider, collection, key, updated_at, state, delivery_id, "
            "at) VALUES (?, ?, ?, ?, ?, ?, ?) " + _DELIVERED_CONFLICT,
            [
                (provider, e.collection, e.key, e.updated_at, state, delivery_id, now)
                for e in entries
            ],
        )
    else:
        db.execute(
            "INSERT INTO delivered (provider, collection, key, updated_at, state, delivery_id, "
            "at) SELECT ?, v.value ->> 0, v.value ->> 1, v.value ->> 2, ?, ?, ? "
            "FROM json_each(?) AS v WHERE 1 " + _DELIVERED_CONFLICT,
            (provider, state, delivery_id, now, versions),
        )
    provider_delivered(db, provider, now=now, held_until=held_until)


async def pending_count(db: aiosqlite.Connection, provider: str | None = None) -> int:
    """Pending outbox entries, for one provider or all (from the running count, not a scan)."""
    if provider is None:
        row = await (await db.execute("SELECT TOTAL(pending) FROM outbox_pending")).fetchone()
    else:
        row = await (
            await db.execute("SELECT pending FROM outbox_pending WHERE provider = ?", (provider,))
        ).fetchone()
    return int(row[0]) if row else 0


def record_attempt(
    db: sqlite3.Connection,
    *,
    provider: str,
    batch_id: str,
    items: int,
    state: str,
    now: int,
    http_status: int | None = None,
    latency_ms: float | None = None,
    remote_ref: str | None = None,
    error: str | None = None,
) -> int:
    """Log one request attempt in ``deliveries``; returns its id."""
    cursor = db.execute(
        "INSERT INTO deliveries (provider, batch_id, items, state, http_status, latency_ms, "
        "remote_ref, error, attempted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (provider, batch_id, items, state, http_status, latency_ms, remote_ref, error, now),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def count_attempt(db: sqlite3.Connection, entry_ids: Sequence[int]) -> None:
    """Add one to the attempt counter of these entries."""
    db.executemany(
        "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in entry_ids]
    )


def dead_letter(
    db: sqlite3.Connection,
    provider: str,
    entries: Sequence[OutboxEntry],
    *,
    reason: str,
    http_status: int | None,
    now: int,
) -> None:
    """Move entries from the outbox to ``dead_letters`` with the reason."""
    db.executemany(
        "INSERT INTO dead_letters (provider, collection, key, updated_at, http_status, reason, "
        "attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (provider, e.collection, e.key, e.updated_at, http_status, reason, e.attempts + 1, now)
            for e in entries
        ],
    )
    db.executemany(
        "DELETE FROM outbox WHERE id = ? AND updated_at = ?",
        [(e.id, e.updated_at) for e in entries],
    )


def _selection(
    provider: str | None,
    ids: Sequence[int],
    providers: Sequence[str] | None = None,
    *,
    among: bool = True,
) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if provider:
        clauses.append("provider = ?")
        params.append(provider)
    if ids:
        clauses.append(f"id IN ({', '.join('?' * len(ids))})")
        params.extend(ids)
    if providers is not None:
        clauses.append(f"provider {'' if among else 'NOT '}IN ({', '.join('?' * len(providers))})")
        params.extend(providers)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def retry_dead_letters(
    db: sqlite3.Connection,
    *,
    provider: str | None,
    ids: Sequence[int],
    now: int,
    providers: Sequence[str] | None = None,
) -> int:
    """Put dead letters back in the outbox (at their record's current version); returns count.

    ``providers``: only the dead letters of these (the configured ones: a provider without
    a sender would keep the entries pending for ever, their reasons gone).
    """
    where, params = _selection(provider, ids, providers)
    cursor = db.execute(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "SELECT d.provider, d.collection, d.key, r.updated_at, ? FROM dead_letters d "
        f"JOIN records r ON r.collection = d.collection AND r.key = d.key {where or ' WHERE 1'} "
        "ON CONFLICT (provider, collection, key) DO UPDATE SET updated_at = excluded.updated_at",
        [now, *params],
    )
    moved = cursor.rowcount
    db.execute(f"DELETE FROM dead_letters{where}", params)
    return moved


def dead_letters_of_others(
    db: sqlite3.Connection, *, ids: Sequence[int], providers: Sequence[str]
) -> list[tuple[str, int]]:
    """(provider, dead letters) of the providers not in ``providers`` (among ``ids``)."""
    where, params = _selection(None, ids, providers, among=False)
    rows = db.execute(
        f"SELECT provider, COUNT(*) FROM dead_letters{where} GROUP BY provider ORDER BY provider",
        params,
    ).fetchall()
    return [(str(name), int(count)) for name, count in rows]


def drop_dead_letters(db: sqlite3.Connection, *, provider: str | None, ids: Sequence[int]) -> int:
    """Delete dead letters for good; returns how many."""
    where, params = _selection(provider, ids)
    cursor = db.execute(f"DELETE FROM dead_letters{where}", params)
    return cursor.rowcount


def requeue_collection(
    db: sqlite3.Connection, provider: str, collections: Sequence[str], *, now: int
) -> int:
    """Queue every current record of ``collections`` for ``provider`` (a full resync)."""
    total = 0
    for collection in collections:
        cursor = db.execute(
            "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
            "SELECT ?, collection, key, updated_at, ? FROM records WHERE collection = ? "
            "AND origin <> ? ON CONFLICT (provider, collection, key) "
            "DO UPDATE SET updated_at = excluded.updated_at",
            (provider, now, collection, provider),
        )
        total += cursor.rowcount
    return total


def resume_refused_providers(db: sqlite3.Connection, *, now: int) -> None:
    """A reload: let auth-failed providers try again, and resume nothing else.

    An auth-failed state a pull set leaves the push's stored next attempt (its backoff, or
    a provider's ``Retry-After``) in place, so that provider stays ``backing-off`` until
    ``now`` passes it.
    """
    db.execute(
        "UPDATE providers SET "
        "state = CASE WHEN next_attempt_at > ? THEN 'backing-off' ELSE 'online' END, "
        "failures = CASE WHEN next_attempt_at > ? THEN failures ELSE 0 END, "
        "next_attempt_at = CASE WHEN next_attempt_at > ? THEN next_attempt_at END "
        "WHERE state = 'auth-failed'",
        (now, now, now),
    )


def refuse_provider(db: sqlite3.Connection, name: str, *, last_error: str, now: int) -> None:
    """The provider is ``auth-failed`` (every lane of it is refused); a stored wait stays."""
    db.execute(
        "UPDATE providers SET state = 'auth-failed', last_error = ?, last_attempt_at = ?, "
        "updated_at = ? WHERE name = ?",
        (last_error, now, now, name),
    )


def resume_refused_provider(db: sqlite3.Connection, name: str, *, now: int) -> bool:
    """The provider is ``auth-failed`` no more (one of its lanes has new credentials), as a
    reload resumes it (see ``resume_refused_providers``); True if it was."""
    cursor = db.execute(
        "UPDATE providers SET "
        "state = CASE WHEN next_attempt_at > ? THEN 'backing-off' ELSE 'online' END, "
        "failures = CASE WHEN next_attempt_at > ? THEN failures ELSE 0 END, "
        "next_attempt_at = CASE WHEN next_attempt_at > ? THEN next_attempt_at END, "
        "updated_at = ? WHERE name = ? AND state = 'auth-failed'",
        (now, now, now, now, name),
    )
    return cursor.rowcount > 0


def clear_auth_failures(db: sqlite3.Connection, provider: str) -> None:
    """``resync NAME``: the operator asks for an attempt now, whatever the provider's state."""
    db.execute(
        "UPDATE providers SET state = 'online', next_attempt_at = NULL, failures = 0 "
        "WHERE name = ?",
        (provider,),
    )
