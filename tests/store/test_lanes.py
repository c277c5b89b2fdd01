"""Lanes in the store: entries set aside for a paused lane are skipped by the take (not taken
again and again), counted and given back by lane through an index of them alone, and never
set aside for a lane the store shows active; the migration on a store of the previous
version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from dropsync.store import lanes, outbox
from dropsync.store.db import open_store
from dropsync.store.handle import Store
from dropsync.store.schema import latest_version

pytestmark = pytest.mark.anyio


def fill(db: sqlite3.Connection, held: int, ready: int) -> None:
    """``held`` entries of carol first, then ``ready`` of alice."""
    users = ["carol"] * held + ["alice"] * ready
    db.executemany(
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) VALUES ('favourites', ?, '{}', 1, 0, 'drop', 'd', 1)",
        [(f"{u}:{n}",) for n, u in enumerate(users)],
    )
    db.executemany(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "VALUES ('fav', 'favourites', ?, 1, 1)",
        [(f"{u}:{n}",) for n, u in enumerate(users)],
    )


async def test_the_take_skips_entries_set_aside_and_they_are_counted_by_lane(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(outbox.register_providers, [("fav", "favourites")], now=1)
        await store.transact(fill, 3000, 5)
        carol = [i for (i,) in await store.call(_ids, "carol:%")]
        await store.transact(lanes.set_lane, "fav", ["carol"], state=lanes.AUTH_FAILED, now=2)
        await store.transact(lanes.hold, "fav", {"carol": carol}, now=2)
        async with store.snapshot() as db:
            taken = await outbox.take_batch(db, "fav", 10)
            plans = [
                str(list(await db.execute_fetchall(f"EXPLAIN QUERY PLAN {query}")))
                for query in (
                    "SELECT * FROM provider_users",
                    "UPDATE outbox SET held_lane = NULL WHERE provider = 'fav' AND held_lane = 'c'",
                )
            ]
        assert [e.key.split(":", 1)[0] for e in taken] == ["alice"] * 5
        # Counting and giving back a lane's entries read only those set aside.
        assert all("outbox_held (provider=? AND held_lane=?)" in plan for plan in plans)
        view = await store.call(
            lambda db: db.execute("SELECT user, state, pending FROM provider_users").fetchall()
        )
        assert [tuple(r) for r in view] == [("carol", "auth-failed", 3000)]
        assert await store.transact(lanes.release, "fav", ["carol"]) == 3000
        async with store.snapshot() as db:
            assert len(await outbox.take_batch(db, "fav", 5000)) == 3005


def _ids(db: sqlite3.Connection, pattern: str) -> list[tuple[int]]:
    return db.execute("SELECT id FROM outbox WHERE key LIKE ? ORDER BY id", (pattern,)).fetchall()


async def test_an_entry_is_not_set_aside_for_a_lane_the_store_shows_active(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(outbox.register_providers, [("fav", "favourites")], now=1)
        await store.transact(fill, 1, 1)
        ids = [i for (i,) in await store.call(_ids, "%")]
        # carol's token arrived meanwhile (active); dave was never seen (no token).
        await store.transact(lanes.set_lane, "fav", ["carol"], state=lanes.ACTIVE, now=2)
        await store.transact(lanes.hold, "fav", {"carol": [ids[0]], "dave": [ids[1]]}, now=3)
        held = await store.call(
            lambda db: db.execute("SELECT id, held_lane FROM outbox ORDER BY id").fetchall()
        )
        assert [tuple(r) for r in held] == [(ids[0], None), (ids[1], "dave")]
        states = await store.call(lanes.known_lanes, "fav")
        assert states == {"carol": "active", "dave": "no-token"}


async def test_a_store_of_the_previous_version_gets_lanes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = await open_store(path, target=latest_version() - 1)
    await db.execute(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "VALUES ('fav', 'favourites', 'alice:s1', 1, 1)"
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    await db.close()
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT key, held_lane FROM outbox").fetchall() == [("alice:s1", None)]
    assert raw.execute("SELECT * FROM provider_users").fetchall() == []
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
