"""The status page's own questions (``store.activity``): deliveries per hour read by a range
of rowids found by halving (ids grow with time, ``attempted_at`` has no index), dead letters'
reasons without their keys, through the provider's index."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from dropsync.store.activity import (
    BY_HOUR_SQL,
    DEAD_LETTERS_SQL,
    HOUR_MS,
    ORDER_SLACK_MS,
    PROBE_SQL,
    deliveries_by_hour,
    first_delivery_from,
    read_snapshot,
    recent_dead_letters,
)
from dropsync.store.handle import Store

T0 = 1_700_000_000_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A migrated store, opened as the page opens it (plain sqlite3)."""

    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    yield conn
    conn.close()


def add(
    db: sqlite3.Connection, provider: str, at: int, state: str = "accepted", items: int = 1
) -> None:
    db.execute(
        "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at) "
        "VALUES (?, 'b', ?, ?, ?)",
        (provider, items, state, at),
    )


def plan(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    return " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_first_delivery_from_halves_the_id_range_and_skips_gaps(db: sqlite3.Connection) -> None:
    assert first_delivery_from(db, T0) is None
    for minute in range(100):
        add(db, "crm", T0 + minute * 60_000)
    db.execute("DELETE FROM deliveries WHERE id BETWEEN 30 AND 60")  # retention leaves gaps
    assert first_delivery_from(db, T0) == 1
    assert first_delivery_from(db, T0 + 40 * 60_000) == 61
    assert first_delivery_from(db, T0 + 70 * 60_000 + 1) == 72
    assert first_delivery_from(db, T0 + 100 * 60_000) is None


def test_deliveries_by_hour_counts_each_provider_hour_and_state(db: sqlite3.Connection) -> None:
    start = T0
    add(db, "crm", start - 1)  # before the window
    add(db, "crm", start, items=10)
    add(db, "crm", start + HOUR_MS - 1, "confirmed", items=5)
    add(db, "crm", start + HOUR_MS, "failed", items=7)
    add(db, "crm", start + 2 * HOUR_MS, "sent", items=3)  # under way: not counted
    add(db, "churn", start + 23 * HOUR_MS, "rejected", items=2)
    add(db, "churn", start + 24 * HOUR_MS, items=9)  # after the window
    rows = sorted(deliveries_by_hour(db, start=start, hours=24))
    assert rows == [
        ("churn", 23, "rejected", 1, 2),
        ("crm", 0, "accepted", 1, 10),
        ("crm", 0, "confirmed", 1, 5),
        ("crm", 1, "failed", 1, 7),
    ]


@pytest.mark.parametrize("case", ["written ahead, dated when answered", "upload"])
def test_a_request_dated_out_of_id_order_is_still_counted(
    db: sqlite3.Connection, case: str
) -> None:
    """Ids grow with time, ``attempted_at`` only nearly: a request written ahead is dated again
    when its answer comes (rows written meanwhile have higher ids and earlier dates); an
    upload's row is written when it ends, dated when it started. Within ORDER_SLACK_MS / 2
    either is counted in its hour."""
    start = T0
    lag = ORDER_SLACK_MS // 2 - 5 * 60_000
    for minute in range(0, 600, 5):  # ten hours of requests before the window
        add(db, "crm", start - 10 * HOUR_MS + minute * 60_000)
        if case.startswith("written") and minute == 600 - lag // 60_000 - 5:
            add(db, "crm", start + 10 * 60_000, "confirmed", items=4)  # answered in the window
    for minute in range(0, 600, 5):  # ten hours in the window
        add(db, "crm", start + minute * 60_000)
        if case == "upload" and minute * 60_000 == lag + 10 * 60_000:
            add(db, "crm", start + 10 * 60_000, "confirmed", items=4)  # started 10 min in
    rows = sorted(deliveries_by_hour(db, start=start, hours=24))
    assert ("crm", 0, "confirmed", 1, 4) in rows
    assert sum(row.requests for row in rows) == 121


def test_the_hourly_count_reads_a_range_of_rowids_and_dead_letters_use_their_index(
    db: sqlite3.Connection,
) -> None:
    """Index-friendly on a big store: no statement scans a whole table."""
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in plan(db, BY_HOUR_SQL, (0, 1, 0, 0, 0))
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in plan(db, PROBE_SQL, (0,))
    letters = plan(db, DEAD_LETTERS_SQL, (1, 1, "crm", 5))
    assert "USING INDEX dead_letters_by_provider (provider=?)" in letters, letters
    assert "TEMP B-TREE" not in letters


def test_recent_dead_letters_give_reasons_cut_and_never_the_key(db: sqlite3.Connection) -> None:
    for i, reason in enumerate(["short", "x" * 500, "<script>alert('k')</script>"]):
        db.execute(
            "INSERT INTO dead_letters (provider, collection, key, updated_at, http_status, "
            "reason, attempts, created_at) VALUES ('crm', 'contacts', ?, 1, 422, ?, 2, ?)",
            (f"ann{i}@example.com", reason, T0 + i),
        )
    db.execute(
        "INSERT INTO dead_letters (provider, collection, key, updated_at, reason, created_at) "
        "VALUES ('churn', 'users', 'u', 1, 'other', 1)"
    )
    rows = recent_dead_letters(db, "crm", limit=2, reason_chars=100)
    assert [row["reason"] for row in rows] == ["<script>alert('k')</script>", "x" * 100]
    assert [row["reason_cut"] for row in rows] == [0, 1]
    assert "@example.com" not in repr(rows) and all("key" not in row for row in rows)
    assert rows[0]["collection"] == "contacts" and rows[0]["http_status"] == 422


def test_a_read_snapshot_sees_one_moment_and_holds_up_no_writer(
    db: sqlite3.Connection, tmp_path: Path
) -> None:
    reader = sqlite3.connect(f"file:{tmp_path / 's.db'}?mode=ro", uri=True)
    count = "SELECT COUNT(*) FROM deliveries"
    try:
        with read_snapshot(reader):
            assert reader.execute(count).fetchone() == (0,)
            add(db, "crm", T0)  # the writer is not held up
            assert reader.execute(count).fetchone() == (0,)
        assert not reader.in_transaction
        assert reader.execute(count).fetchone() == (1,)
    finally:
        reader.close()
