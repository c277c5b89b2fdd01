"""Lanes of a provider: their states (``provider_lanes``) and the entries set aside for them.

A lane is a part of a provider that fails on its own (a user, with a token of
their own). The daemon keeps the state of each lane it knows here; ``status`` and the
``provider_users`` view read it. An outbox entry whose lane may not send is set aside
(``outbox.held_lane``): the flusher's take (``outbox.take_batch``) leaves it out, so a paused
lane's entries are not taken again and again; the ``outbox_held`` index holds only the
entries set aside (to count and give back a lane's), so queueing costs what it did.

Plain functions over a ``sqlite3.Connection``, run in the store's thread (``Store.transact``
for writes, ``Store.call`` for reads).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from .states import LaneState

ACTIVE, AUTH_FAILED, NO_TOKEN = LaneState.ACTIVE, LaneState.AUTH_FAILED, LaneState.NO_TOKEN
LANE_STATES = tuple(LaneState)


class LaneRow(NamedTuple):
    """A ``provider_lanes`` row."""

    lane: str
    state: str
    since: int
    reason: str | None


def lane_states(db: sqlite3.Connection, provider: str) -> dict[str, LaneRow]:
    """Every lane of ``provider`` that is not ``active``, by name."""
    rows = db.execute(
        "SELECT lane, state, since, reason FROM provider_lanes "
        "WHERE provider = ? AND state <> 'active'",
        (provider,),
    ).fetchall()
    return {
        lane: LaneRow(lane, state, since, reason)
        for lane, state, since, reason in rows
        if isinstance(lane, str) and state in LANE_STATES and isinstance(since, int)
    }


def known_lanes(db: sqlite3.Connection, provider: str) -> dict[str, str]:
    """Every lane of ``provider`` with its state."""
    return dict(
        db.execute("SELECT lane, state FROM provider_lanes WHERE provider = ?", (provider,))
    )


def set_lane(
    db: sqlite3.Connection,
    provider: str,
    lanes: Iterable[str],
    *,
    state: str,
    now: int,
    reason: str | None = None,
) -> None:
    """Put ``lanes`` in ``state`` from ``now`` on (a lane already in that state keeps its
    ``since``; its reason is replaced)."""
    db.executemany(
        "INSERT INTO provider_lanes (provider, lane, state, since, reason, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider, lane) DO UPDATE SET "
        "since = CASE WHEN state = excluded.state THEN since ELSE excluded.since END, "
        "state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at",
        [(provider, lane, state, now, reason, now) for lane in lanes],
    )


def hold(
    db: sqlite3.Connection, provider: str, held: Mapping[str, Sequence[int]], *, now: int
) -> None:
    """Set these outbox entries (lane -> entry ids) aside for their lane.

    A lane the store does not know yet is one without credentials (``no-token``). A lane
    the store shows ``active`` (its credentials arrived meanwhile) keeps its entries.
    """
    db.executemany(
        "INSERT INTO provider_lanes (provider, lane, state, since, reason, updated_at) "
        "VALUES (?, ?, 'no-token', ?, NULL, ?) ON CONFLICT (provider, lane) DO NOTHING",
        [(provider, lane, now, now) for lane in held],
    )
    db.executemany(
        "UPDATE outbox SET held_lane = ? WHERE id = ? AND provider = ? AND EXISTS ("
        "SELECT 1 FROM provider_lanes l WHERE l.provider = ? AND l.lane = ? "
        "AND l.state <> 'active')",
        [
            (lane, entry_id, provider, provider, lane)
            for lane, ids in held.items()
            for entry_id in ids
        ],
    )


def release(db: sqlite3.Connection, provider: str, lanes: Iterable[str] | None = None) -> int:
    """Give back to the flusher the entries set aside for ``lanes`` (None: every lane);
    returns how many."""
    if lanes is None:
        cursor = db.execute(
            "UPDATE outbox SET held_lane = NULL WHERE provider = ? AND held_lane IS NOT NULL",
            (provider,),
        )
        return cursor.rowcount
    total = 0
    for lane in lanes:
        cursor = db.execute(
            "UPDATE outbox SET held_lane = NULL WHERE provider = ? AND held_lane = ?",
            (provider, lane),
        )
        total += cursor.rowcount
    return total


def resume_refused_lanes(db: sqlite3.Connection, provider: str, *, now: int) -> list[str]:
    """``resync NAME``: every ``auth-failed`` lane is tried again (``active``) and its
    entries given back; returns the lanes resumed."""
    lanes = [
        lane
        for (lane,) in db.execute(
            "SELECT lane FROM provider_lanes WHERE provider = ? AND state = 'auth-failed'",
            (provider,),
        )
    ]
    set_lane(db, provider, lanes, state=ACTIVE, now=now)
    release(db, provider, lanes)
    return lanes


def paused_lanes(db: sqlite3.Connection, limit: int = 100) -> list[dict[str, object]]:
    """Lanes that are not ``active`` (of every provider), for ``status``: at most ``limit``,
    auth-failed first, then those with entries waiting."""
    cursor = db.execute(
        "SELECT provider, user, state, since, reason, pending FROM provider_users "
        "WHERE state <> 'active' AND (state = 'auth-failed' OR pending > 0) "
        "ORDER BY provider, state, user LIMIT ?",
        (limit,),
    )
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
