"""Numbered migrations: an old file is migrated, a newer one is refused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from dropsync.store import callbacks, outbox
from dropsync.store.db import open_store
from dropsync.store.errors import SchemaTooNew, StoreError
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes
from dropsync.store.readonly import open_readonly
from dropsync.store.schema import latest_version, migrations
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio


async def test_new_store_is_at_latest_version_in_wal_mode(tmp_path: Path) -> None:
    db = await open_store(tmp_path / "s.db")
    await db.close()
    raw = sqlite3.connect(tmp_path / "s.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = [r[0] for r in raw.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert applied == [m.version for m in migrations()]


async def test_store_from_previous_migration_opens_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    previous = latest_version() - 1
    db = await open_store(path, target=previous)
    await db.execute(
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) VALUES ('contacts', 'a@x', '{\"a\":1}', 5, 0, 'drop', 'd', 6)"
    )
    await db.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == previous

    db = await open_store(path)
    rows = await db.execute_fetchall("SELECT collection, key, body FROM records")
    await db.close()
    assert [tuple(r) for r in rows] == [("contacts", "a@x", '{"a":1}')]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Every view of the newest schema answers on the migrated file.
    raw.execute("SELECT * FROM pending_by_provider").fetchall()


async def test_migration_3_counts_the_existing_backlog(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    db = await open_store(path, target=2)
    await db.executemany(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "VALUES (?, 'contacts', ?, 1, 1)",
        [("crm", f"k{n}") for n in range(5)] + [("fav", "k0")],
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    await db.execute("DELETE FROM outbox WHERE provider = 'crm' AND key = 'k0'")
    await db.commit()
    await db.close()
    raw = sqlite3.connect(path)
    rows = raw.execute("SELECT provider, pending FROM pending_by_provider ORDER BY 1").fetchall()
    counts = raw.execute("SELECT provider, pending FROM outbox_pending ORDER BY 1").fetchall()
    assert rows == []  # no provider registered yet: the view lists configured providers
    assert counts == [("crm", 4), ("fav", 1)]


async def test_migration_3_counts_files_by_status_and_keeps_counting(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    db = await open_store(path, target=2)
    await db.executemany(
        "INSERT INTO files (collection, name, path, sha256, size, status, received_at) "
        "VALUES ('users', ?, ?, 'x', 1, ?, 1)",
        [("a", "a", "done"), ("b", "b", "done"), ("c", "c", "processing")],
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    await db.execute("UPDATE files SET status = 'quarantined' WHERE name = 'c'")
    await db.execute(
        "INSERT INTO files (collection, name, path, sha256, size, status, received_at) "
        "VALUES ('users', 'd', 'd', 'y', 1, 'processing', 2)"
    )
    await db.execute("DELETE FROM files WHERE name = 'a'")
    await db.commit()
    await db.close()
    raw = sqlite3.connect(path)
    kept = raw.execute("SELECT status, files FROM files_by_status WHERE files > 0 ORDER BY 1")
    counted = raw.execute("SELECT status, COUNT(*) FROM files GROUP BY status ORDER BY 1")
    assert (
        kept.fetchall()
        == counted.fetchall()
        == [
            ("done", 1),
            ("processing", 1),
            ("quarantined", 1),
        ]
    )


def newer(path: Path, version: int) -> None:
    """Make the store at ``path`` look migrated to ``version`` by a newer dropsync."""
    raw = sqlite3.connect(path)
    for step in range(latest_version() + 1, version + 1):
        raw.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)",
            (step, f"future_{step}"),
        )
    raw.execute(f"PRAGMA user_version = {version}")
    raw.commit()
    raw.close()


async def test_a_user_version_set_by_another_program_is_put_back(tmp_path: Path) -> None:
    """``schema_migrations`` lists what was applied: a ``user_version`` a program set to a
    number of its own is neither migrated from nor refused (docs/schema.md, "Versioning")."""
    path = tmp_path / "s.db"
    db = await open_store(path)
    await db.close()
    for other in (0, 3, latest_version() + 1):
        raw = sqlite3.connect(path)
        raw.execute(f"PRAGMA user_version = {other}")
        raw.close()
        open_readonly(path).close()  # status reads it as it is
        backups: list[Path] = []
        with capture_logs() as logs:
            db = await open_store(path, backups=backups)
        version = await (await db.execute("PRAGMA user_version")).fetchone()
        await db.close()
        assert version is not None and version[0] == latest_version()
        assert backups == []
        assert [(e["event"], e["found"]) for e in logs] == [("store_version_restored", other)]
    # Rows deleted from schema_migrations by hand: user_version is kept, nothing is applied.
    raw = sqlite3.connect(path)
    raw.execute("DELETE FROM schema_migrations WHERE version > 3")
    raw.commit()
    raw.close()
    db = await open_store(path)
    version = await (await db.execute("PRAGMA user_version")).fetchone()
    await db.close()
    assert version is not None and version[0] == latest_version()


async def test_newer_store_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = await open_store(path)
    await db.close()
    newer(path, latest_version() + 3)
    with pytest.raises(SchemaTooNew, match="newer dropsync"):
        await open_store(path)


def test_readonly_open_of_missing_store_explains(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_readonly(tmp_path / "missing.db")


async def test_readonly_open_refuses_newer_and_older_schemas(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    db = await open_store(old, target=latest_version() - 1)
    await db.close()
    with pytest.raises(StoreError, match="start the daemon once"):
        open_readonly(old)
    new = tmp_path / "new.db"
    db = await open_store(new)
    await db.close()
    newer(new, latest_version() + 1)
    with pytest.raises(SchemaTooNew):
        open_readonly(new)


async def test_migration_4_reports_unconfirmed_batches_of_an_old_store(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    db = await open_store(path, target=3)
    await db.execute("INSERT INTO providers (name, kind, updated_at) VALUES ('churn', 'churn', 1)")
    await db.execute(
        "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at) "
        "VALUES ('churn', 'b', 7, 'accepted', 1)"
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    rows = await db.execute_fetchall(
        "SELECT pending, unconfirmed, unconfirmed_items, waiting FROM pending_by_provider"
    )
    assert [tuple(r) for r in rows] == [(0, 0, 0, None)]  # no confirm timeout known yet
    await db.execute("UPDATE providers SET confirm_timeout_ms = 1000")
    rows = await db.execute_fetchall(
        "SELECT unconfirmed, unconfirmed_items FROM pending_by_provider"
    )
    await db.close()
    assert [tuple(r) for r in rows] == [(1, 7)]


async def test_migration_5_shows_existing_requests_as_pending(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    db = await open_store(path, target=4)
    await db.execute(
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) VALUES ('registration_requests', 'q1', "
        '\'{"participantId":"p1","sessionId":"s1"}\', 5, 0, \'sql\', \'d\', 6)'
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    await db.execute(
        "INSERT INTO request_routes (collection, provider, kind) "
        "VALUES ('registration_requests', 'lenos', 'registrations')"
    )
    rows = await db.execute_fetchall(
        "SELECT provider, key, participant_id, session_id, action, status, requested_at "
        "FROM registration_requests"
    )
    await db.close()
    assert [tuple(r) for r in rows] == [("lenos", "q1", "p1", "s1", "register", "pending", 6)]


async def test_migration_6_leaves_old_attempts_finished(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    db = await open_store(path, target=5)
    await db.execute(
        "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at) "
        "VALUES ('crm', 'k1', 3, 'sent', 5)"
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    # An attempt recorded before the migration carries no entries: nothing to send again.
    assert await outbox.unfinished_requests(db, "crm") == []
    await db.close()
    entry = outbox.OutboxEntry(7, "contacts", "a@x", 9, False, '{"a":1}', 0)
    with sqlite3.connect(path) as raw:
        [written] = outbox.open_requests(raw, "crm", [("k2", [entry])], now=10)
    db = await open_store(path)
    [unfinished] = await outbox.unfinished_requests(db, "crm")
    await db.close()
    assert unfinished == outbox.UnfinishedRequest(written, "k2", "sent", [entry])


# Rows of a version-6 store: (collection, key, body, updated_at, deleted, origin, digest,
# change_id, file_id, doc_index, merged_at). Bodies on both sides of the old table's 1 KB
# spill, a bare delete, keys with bytes SQLite and file systems treat specially, digests as
# the daemon writes them and as a program may have written them by hand.
V6_RECORDS = [
    ("contacts", "a@x", '{"a":1}', 5, 0, "drop", "0f" * 16, None, 1, 0, 6),
    ("contacts", "big@x", '{"n":"' + "x" * 70_000 + '"}', 7, 0, "sql", "ab" * 16, 3, None, None, 8),
    (
        "contacts",
        "mid@x",
        '{"n":"' + "y" * 1_200 + '"}',
        7,
        0,
        "crm",
        "cd" * 16,
        None,
        None,
        None,
        8,
    ),
    ("contacts", "gone@x", None, 9, 1, "sql", "00" * 16, 4, None, None, 10),
    ("contacts", "k\x00nul/..\\'\"%_*", '{"b":2}', 11, 0, "drop", "d", None, 2, 5, 12),
    ("contacts", "ключ-\U0001f600", '{"c":3}', 13, 0, "drop", "AB" * 16, None, 2, 6, 14),
    ("favourites", "u:s", '{"d":4}', 15, 0, "favourites", "e" * 31, None, None, None, 16),
]
ALL_RECORDS = "SELECT * FROM records ORDER BY collection, key"


async def test_migration_7_keeps_every_record_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    db = await open_store(path, target=6)
    await db.executemany(
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "change_id, file_id, doc_index, merged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        V6_RECORDS,
    )
    await db.commit()
    before = [tuple(r) for r in await db.execute_fetchall(ALL_RECORDS)]
    columns = [c[1] for c in await db.execute_fetchall("PRAGMA table_info(records)")]
    await db.close()
    assert sorted(before) == sorted(V6_RECORDS)

    db = await open_store(path)
    after = [tuple(r) for r in await db.execute_fetchall(ALL_RECORDS)]
    assert [c[1] for c in await db.execute_fetchall("PRAGMA table_info(records)")] == columns
    one = await db.execute_fetchall(
        "SELECT body FROM records WHERE collection = 'contacts' AND key = 'k' || char(0) || "
        "'nul/..\\''\"%_*'"
    )
    stored = dict(
        tuple(r) for r in await db.execute_fetchall("SELECT key, digest FROM record_keys")
    )
    await db.close()
    assert after == before
    assert [tuple(r) for r in one] == [('{"b":2}',)]
    # The daemon's digests (32 lowercase hex digits) are kept as their 16 bytes; anything
    # else as the text it was (the view shows both as they were).
    assert stored["a@x"] == bytes.fromhex("0f" * 16) and stored["gone@x"] == bytes(16)
    assert (stored["k\x00nul/..\\'\"%_*"], stored["ключ-\U0001f600"]) == ("d", "AB" * 16)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    plan = " ".join(
        str(row[3])
        for row in raw.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM records WHERE collection = ? AND key = ?", ("c", "k")
        )
    )
    raw.close()
    assert "USING PRIMARY KEY (collection=? AND key=?)" in plan


async def test_migration_7_versions_keep_their_place_in_last_write_wins(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    db = await open_store(path, target=6)
    await db.executemany(
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) VALUES ('contacts', ?, ?, 5, 0, 'drop', ?, 6)",
        [("low", '{"v":"old"}', "10" * 16), ("high", '{"v":"old"}', "f0" * 16)],
    )
    await db.commit()
    await db.close()
    # Same timestamp, same operation: the larger digest wins, old version or new.
    tie = [
        Change("contacts", key, '{"v":"new"}', 5, False, "drop", "80" * 16)
        for key in ("low", "high")
    ]
    async with await Store.open(path) as store:
        await store.transact(lambda conn: apply_changes(conn, tie, {}, now=20))
    raw = sqlite3.connect(path)
    rows = raw.execute("SELECT key, body, digest FROM records ORDER BY key").fetchall()
    raw.close()
    assert rows == [("high", '{"v":"old"}', "f0" * 16), ("low", '{"v":"new"}', "80" * 16)]


async def test_a_record_inserted_by_hand_is_read_and_merged_like_any(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = await open_store(path)
    await db.execute(
        "INSERT INTO records (collection, key, body, updated_at, origin, digest, merged_at) "
        "VALUES ('contacts', 'a@x', '{\"a\":1}', 5, 'drop', 'd', 6)"
    )
    await db.commit()
    await db.close()
    newer = Change("contacts", "a@x", '{"a":2}', 7, False, "sql", "0e" * 16)
    async with await Store.open(path) as store:
        await store.transact(lambda conn: apply_changes(conn, [newer], {}, now=20))
    raw = sqlite3.connect(path)
    rows = raw.execute("SELECT key, body, updated_at, deleted, digest FROM records").fetchall()
    bodies = raw.execute("SELECT COUNT(*) FROM record_bodies").fetchone()[0]
    raw.close()
    assert rows == [("a@x", '{"a":2}', 7, 0, "0e" * 16)]
    assert bodies == 1  # the key's body row is updated in place


# Opens (migrates) the store, then prints its peak resident set in kB (VmHWM: this process
# image's own, unlike the rusage of a child forked from a big test process).
MIGRATE_AND_REPORT_PEAK_RSS = """
import sys
from pathlib import Path
import anyio
from dropsync.store.db import open_store
from dropsync.store.schema import latest_version

async def migrate() -> None:
    db = await open_store(Path(sys.argv[1]))
    await db.close()

anyio.run(migrate)
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


def test_migration_7_of_a_big_store_stays_within_the_memory_target(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"

    async def old_store() -> None:
        db = await open_store(path, target=6)
        await db.close()

    anyio.run(old_store)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(  # 30,000 documents of 1.2 KB: 140 MB as the version-6 table kept them
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < 30000) "
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) SELECT 'contacts', 'k' || i, printf('{\"n\":\"%.1200c\"}', 'x'), i, 0, "
        "'drop', printf('%032x', i), i FROM n"
    )
    raw.close()
    assert path.stat().st_size > 130e6
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE_AND_REPORT_PEAK_RSS, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    peak_mb = int(done.stdout.split()[-1]) // 1024
    assert peak_mb < 100, f"migrating a 140 MB store took {peak_mb} MB"
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT COUNT(*), SUM(length(body)) FROM records").fetchone() == (
        30000,
        30000 * 1208,
    )
    raw.close()


async def test_migration_8_keeps_every_crm_contact_under_its_identity(tmp_path: Path) -> None:
    """crm_contacts was keyed by (provider, email); now by the contact's identity, its
    user_id when it has one. Two old rows with one user_id: the newer takes the user_id,
    the older stays under its email."""
    path = tmp_path / "v6.db"
    db = await open_store(path, target=6)
    await db.executemany(
        "INSERT INTO crm_contacts (provider, email, user_id, crm_id, job_id, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("crm", "a@x.io", "u1", "c1", "j1", 10),
            ("crm", "b@x.io", None, "c2", "j1", 10),
            ("crm", "c@x.io", "u1", "c3", "j2", 12),
            ("crm2", "a@x.io", "u1", None, "j3", 13),
        ],
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    try:
        rows = await db.execute_fetchall(
            "SELECT provider, identity, contact, email, user_id, crm_id, fields, job_id, "
            "received_at FROM crm_contacts ORDER BY provider, identity, contact"
        )
        purchases = await db.execute_fetchall("SELECT COUNT(*) FROM crm_purchases")
    finally:
        await db.close()
    assert [tuple(r) for r in rows] == [
        ("crm", "email", "a@x.io", "a@x.io", "u1", "c1", None, "j1", 10),
        ("crm", "email", "b@x.io", "b@x.io", None, "c2", None, "j1", 10),
        ("crm", "user_id", "u1", "c@x.io", "u1", "c3", None, "j2", 12),
        ("crm2", "user_id", "u1", "a@x.io", "u1", None, None, "j3", 13),
    ]
    assert [tuple(r) for r in purchases] == [(0,)]


async def test_migration_10_keeps_sync_statuses_held_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "v9.db"
    db = await open_store(path, target=9)
    await db.close()
    db = await open_store(path)
    await db.close()
    raw = sqlite3.connect(path, isolation_level=None)
    row = callbacks.hold(
        raw, "churn", sent_before=5, failed=True, error="failed", now=6, held_until=7
    )
    callbacks.count_settled(raw, row, 2)
    assert callbacks.held(raw) == [(row, "churn", 5, True, "failed", 7, 2)]
    callbacks.unhold(raw, [row])
    assert callbacks.held(raw) == []
    assert raw.execute("PRAGMA user_version").fetchone()[0] == latest_version()


async def test_a_store_locked_by_another_program_is_not_copied_before_each_try(
    tmp_path: Path,
) -> None:
    """The backup before a migration was written before the write lock was asked: while
    another program held it, each try (the daemon tries again every few seconds) left one
    more full copy of the store beside it, until the disk was full."""
    from dropsync.store.errors import StoreBusy

    from tests.support import StoreLockHolder

    path = tmp_path / "old.db"
    db = await open_store(path, target=6)
    await db.close()
    holder = StoreLockHolder(path)
    try:
        for _ in range(2):
            with pytest.raises(StoreBusy):
                await open_store(path)
        assert list(tmp_path.glob("*.bak")) == []
    finally:
        holder.release()
    backups: list[Path] = []
    db = await open_store(path, backups=backups)
    await db.close()
    assert len(backups) == 1 and list(tmp_path.glob("*.bak")) == backups
    raw = sqlite3.connect(backups[0])
    assert raw.execute("PRAGMA user_version").fetchone() == (6,)
    raw.close()


async def test_migration_12_marks_no_file_removed(tmp_path: Path) -> None:
    path = tmp_path / "v11.db"
    db = await open_store(path, target=11)
    await db.execute(
        "INSERT INTO files (collection, name, path, sha256, size, status, received_at, "
        "finished_at) VALUES ('contacts', 'a.json', 'drop/contacts/.done/a.json', 'x', 1, "
        "'done', 1, 2)"
    )
    await db.commit()
    await db.close()
    db = await open_store(path)
    await db.close()
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT name, status, removed_at FROM files").fetchall() == [
        ("a.json", "done", None)
    ]
    assert raw.execute("PRAGMA user_version").fetchone()[0] == latest_version()
