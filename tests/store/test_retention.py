"""Retention keeps what ``why`` and the pulls need, forgets the rest; pulls that bring nothing
new add nothing to the inbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
from dropsync.store import retention
from dropsync.store.handle import Store
from dropsync.store.history import versions_seen
from dropsync.store.merge import apply_changes

from tests.store.test_merge import change

ROUTES = {"contacts": ("crm",)}
DAY = 86_400_000


def store_with(path: Path, batches: list[tuple[int, list[Any]]]) -> None:
    """Merge each batch of changes at its time (``now``)."""

    async def run() -> None:
        async with await Store.open(path) as store:
            for now, batch in batches:
                await store.transact(lambda db, b=batch, n=now: apply_changes(db, b, ROUTES, now=n))

    anyio.run(run)


def prune(path: Path, before: int) -> int:
    db = sqlite3.connect(path, isolation_level=None)
    total, after = 0, 0
    while True:
        deleted, upto = retention.prune_inbox(db, before=before, after_id=after, limit=2)
        total += deleted
        if upto == after:
            break
        after = upto
    db.close()
    return total


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_old_processed_rows_go_and_the_current_versions_rows_stay(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store_with(
        path,
        [
            (1 * DAY, [change("a", 1, origin="sql"), change("b", 1, origin="sql")]),
            (2 * DAY, [change("a", 2, origin="sql")]),  # a@1 superseded now
            (3 * DAY, [change("a", 1, origin="sql", body={"v": 9})]),  # older: superseded
            (40 * DAY, [change("c", 5, origin="sql")]),  # recent: stays whatever it is
        ],
    )
    assert prune(path, before=10 * DAY) == 2  # a@1 twice
    kept = rows(path, "SELECT key, ts, status FROM inbox ORDER BY id")
    assert kept == [("b", 1, "applied"), ("a", 2, "applied"), ("c", 5, "applied")]
    # `why` still explains every current record from what is left.
    db = sqlite3.connect(path)
    for key in ("a", "b", "c"):
        [current] = [v for v in versions_seen(db, "contacts", key) if v.status == "applied"]
        winner = db.execute(
            "SELECT change_id FROM records WHERE collection = 'contacts' AND key = ?", (key,)
        ).fetchone()
        assert current.inbox_id == winner[0]
    db.close()


def test_pending_rows_and_each_providers_newest_row_of_a_key_stay(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store_with(
        path,
        [
            (1 * DAY, [change("a", 1, origin="crm")]),  # supplied by crm
            (2 * DAY, [change("a", 2, origin="sql")]),  # a local edit wins over it
        ],
    )
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO inbox (collection, key, op, body, updated_at, received_at) "
        "VALUES ('contacts', 'p', 'upsert', '{}', 1, 0)"
    )
    db.commit()
    db.close()
    assert prune(path, before=10 * DAY) == 0
    # crm's row stays: remove_outdated must still know crm supplied `a` once. (A key's first
    # version from a provider is in `records` only; it was logged when the local edit won.)
    assert rows(path, "SELECT key, origin, status FROM inbox ORDER BY id") == [
        ("a", "crm", "superseded"),
        ("a", "sql", "applied"),
        ("p", "sql", "pending"),
    ]


def test_finished_deliveries_go_unless_delivered_names_them(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store_with(path, [])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("INSERT INTO providers (name, kind, updated_at) VALUES ('crm', 'crm', 0)")
    db.execute(
        "INSERT INTO providers (name, kind, updated_at, confirm_timeout_ms) "
        "VALUES ('churn', 'churn', 0, 1000)"
    )
    for provider, state, at, entries in [
        ("crm", "confirmed", 1, None),  # 1: goes
        ("crm", "rejected", 1, None),  # 2: goes
        ("churn", "accepted", 1, None),  # 3: awaits its confirmation
        ("crm", "sent", 1, None),  # 4: in flight
        ("crm", "confirmed", 1, None),  # 5: delivered names it
        ("crm", "failed", 50 * DAY, None),  # 6: recent
        ("crm", "accepted", 1, None),  # 7: crm (without a webhook) never confirms: final, goes
        ("crm", "failed", 1, "[]"),  # 8: its request is unfinished: to be sent again
    ]:
        db.execute(
            "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at, entries) "
            "VALUES (?, 'b', 1, ?, ?, ?)",
            (provider, state, at, entries),
        )
    db.execute(
        "INSERT INTO delivered (provider, collection, key, updated_at, state, delivery_id, at) "
        "VALUES ('crm', 'contacts', 'a', 1, 'confirmed', 5, 1)"
    )
    assert retention.prune_deliveries(db, before=10 * DAY, limit=100) == 3
    assert [r[0] for r in db.execute("SELECT id FROM deliveries ORDER BY id")] == [3, 4, 5, 6, 8]
    db.close()


def test_a_pull_that_brings_nothing_new_adds_nothing_to_the_inbox(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    pulled = [change("a", 1, origin="fav"), change("b", 1, origin="fav")]
    store_with(path, [(1, pulled)])
    before = rows(path, "SELECT COUNT(*) FROM inbox")
    store_with(path, [(2, pulled), (3, pulled)])  # the provider answers the same, again
    # First versions from a provider are in `records` only (docs/schema.md).
    assert rows(path, "SELECT COUNT(*) FROM inbox") == before == [(0,)]
    # A version older than the current one is logged once, however often it is pulled.
    store_with(path, [(4, [change("a", 5, origin="sql")])])
    store_with(path, [(5, pulled), (6, pulled)])
    assert rows(path, "SELECT key, origin, status, received_at FROM inbox ORDER BY id") == [
        ("a", "fav", "superseded", 1),  # logged when the local edit displaced it
        ("a", "sql", "applied", 4),
    ]
    # Something new from the provider is logged as ever (with the version it displaces).
    store_with(path, [(7, [change("b", 9, origin="fav")])])
    assert rows(path, "SELECT key, origin, status FROM inbox WHERE key = 'b' ORDER BY id") == [
        ("b", "fav", "superseded"),
        ("b", "fav", "applied"),
    ]
