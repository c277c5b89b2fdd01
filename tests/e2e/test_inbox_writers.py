"""The running daemon against the ways real programs write its ``inbox`` (docs/schema.md).

Each program here is the standard ``sqlite3`` module, as a user's would be: explicit ids
(up to the largest SQLite allows), values of every storage class, triggers of its own.
The daemon must apply or reject every row, and never exit.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import DaemonProcess, drop_json, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these
TS = 1_700_000_000_000
LARGEST_ID = 2**63 - 1  # the largest rowid SQLite takes


def config_text(tmp_path: Path) -> str:
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
settle_ms = 10
[daemon]
inbox_poll_s = 0.1
[collections.contacts]
key = "email"
timestamp = "updated_at"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, config_text(tmp_path))
    yield process
    process.close()


def write(db: Path, sql: str, *params: tuple[object, ...]) -> None:
    """A user's program: one transaction of ``sql`` with each of ``params``."""
    raw = sqlite3.connect(db, timeout=30)
    try:
        raw.executemany(sql, params or [()])
        raw.commit()
    finally:
        raw.close()


def settled(db: Path) -> list[tuple[Any, ...]] | None:
    """``(id, key, status, reason)`` of every inbox row, once none is pending."""
    if query(db, "SELECT 1 FROM inbox WHERE status = 'pending'"):
        return None
    return query(db, "SELECT id, key, status, reason FROM inbox ORDER BY id")


def alive(daemon: DaemonProcess) -> None:
    """The daemon still runs and logged no error."""
    assert daemon.process is not None and daemon.process.poll() is None
    errors = [e for e in daemon.events() if e.get("level") in ("error", "critical")]
    assert not errors, errors


def status(daemon: DaemonProcess) -> str:
    """``dropsync status``'s output; it must succeed."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "status",
            "--config",
            str(daemon.config_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: needs attention
    assert "dropsync: " not in done.stderr, done.stderr
    return done.stdout


INSERT = "INSERT INTO inbox (id, collection, key, op, body, updated_at) VALUES (?, ?, ?, ?, ?, ?)"


def test_an_inbox_row_with_the_largest_id_is_applied_and_the_daemon_logs_after_it(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """The daemon numbers the versions it logs after the largest id; a user's row may hold
    the largest SQLite allows (2^63 - 1), and the next number does not exist."""
    daemon.start()
    db = tmp_path / "store.db"
    drop_json(tmp_path / "drop/contacts", "first", [{"email": "a@x", "updated_at": TS, "v": 1}])
    wait_until(lambda: query(db, "SELECT 1 FROM records WHERE key = 'a@x'"), what="drop file")
    # Displaces the drop file's version, which is logged then: it needs an id of its own.
    write(db, INSERT, (LARGEST_ID, "contacts", "a@x", "upsert", '{"v": 2}', TS + 1))
    rows = wait_until(lambda: settled(db), what="the row applied")
    assert (LARGEST_ID, "a@x", "applied", None) in rows
    assert [status for _, _, status, _ in rows] == ["superseded", "applied"]
    # More of both doors after it: a later drop file and rows without an id.
    drop_json(tmp_path / "drop/contacts", "second", [{"email": "a@x", "updated_at": TS + 2}])
    write(db, INSERT.replace("id, ", "").replace("?, ", "", 1),
          ("contacts", "a@x", "upsert", '{"v": 4}', TS + 3),
          ("contacts", "b@x", "upsert", '{"v": 5}', TS))  # fmt: skip
    wait_until(
        lambda: (
            query(db, "SELECT updated_at FROM records WHERE key = 'a@x'") == [(TS + 3,)]
            and settled(db)
        ),
        what="the later versions merged",
    )
    assert query(db, "SELECT key, body FROM records ORDER BY key") == [
        ("a@x", '{"v":4}'),
        ("b@x", '{"v":5}'),
    ]
    assert len(settled(db) or []) == 5  # the drop files' two versions, the three rows
    alive(daemon)
    assert daemon.stop() == 0


@pytest.mark.parametrize("version", [0, 5, 99])
def test_a_user_version_another_program_set_is_put_back_at_the_next_start(
    daemon: DaemonProcess, tmp_path: Path, version: int
) -> None:
    """``PRAGMA user_version`` is the schema's version; a user's program may use it for its
    own. ``schema_migrations`` still lists what was applied: the daemon starts on that."""
    daemon.start()
    db = tmp_path / "store.db"
    latest = query(db, "PRAGMA user_version")[0][0]
    write(db, f"PRAGMA user_version = {version}")
    write(db, INSERT, (None, "contacts", "a@x", "upsert", '{"v": 1}', TS))
    wait_until(lambda: settled(db), what="the row applied while the version is changed")
    status(daemon)  # reads the store as the version schema_migrations lists (exit 0)
    assert daemon.stop() == 0
    daemon.start()
    warning = daemon.wait_for("store_version_restored")
    assert (warning["found"], warning["version"]) == (version, latest)
    assert query(db, "PRAGMA user_version") == [(latest,)]
    write(db, INSERT, (None, "contacts", "b@x", "upsert", '{"v": 2}', TS))
    rows = wait_until(lambda: settled(db), what="a row applied after the restart")
    assert [status for _, _, status, _ in rows] == ["applied", "applied"]
    assert not list(tmp_path.glob("store.db.before-*"))  # nothing to migrate, no backup
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    "trigger",
    [
        # A program's own function, which only its connection knows.
        "CREATE TRIGGER inbox_notify AFTER UPDATE OF status ON inbox "
        "BEGIN SELECT notify(NEW.id); END",
        # An append-only log, as an auditor would want it.
        "CREATE TRIGGER inbox_append_only BEFORE UPDATE ON inbox "
        "BEGIN SELECT RAISE(ABORT, 'the inbox is append-only'); END",
    ],
)
def test_an_inbox_trigger_the_daemon_cannot_run_pauses_the_inbox_until_it_is_dropped(
    daemon: DaemonProcess, tmp_path: Path, trigger: str
) -> None:
    daemon.start()
    db = tmp_path / "store.db"
    name = trigger.split()[2]
    write(db, INSERT, (None, "contacts", "before@x", "upsert", '{"v": 0}', TS))
    wait_until(lambda: settled(db), what="a row applied before the trigger")
    write(db, trigger)
    write(db, INSERT, (None, "contacts", "a@x", "upsert", '{"v": 1}', TS))
    paused = daemon.wait_for("work_paused", work="inbox")
    assert paused["condition"] == "inbox trigger failed"
    assert name in paused["error"] and "DROP TRIGGER" in paused["error"], paused["error"]
    assert query(db, "SELECT status FROM inbox WHERE key = 'a@x'") == [("pending",)]
    shown = wait_until(
        lambda: "inbox trigger failed" in (out := status(daemon)) and out, what="in status"
    )
    assert name in shown
    assert daemon.process is not None and daemon.process.poll() is None
    write(db, f"DROP TRIGGER {name}")
    rows = wait_until(lambda: settled(db), what="the row applied once the trigger is dropped")
    assert [status for _, _, status, _ in rows] == ["applied", "applied"]
    daemon.wait_for("work_resumed", work="inbox")
    assert daemon.process.poll() is None
    assert not [e for e in daemon.events() if e.get("event") == "fatal_error"]
    assert daemon.stop() == 0


@pytest.mark.parametrize("door", ["inbox", "drop"])
def test_a_body_row_written_by_hand_with_the_largest_id_stops_no_merge(
    daemon: DaemonProcess, tmp_path: Path, door: str
) -> None:
    """``record_bodies`` is the daemon's, but a program may write it all the same; a new
    key's body is numbered after the largest id, which may be SQLite's largest."""
    daemon.start()
    db = tmp_path / "store.db"
    write(db, "INSERT INTO record_bodies (id, body) VALUES (?, '{}')", (LARGEST_ID,))
    if door == "inbox":
        write(db, INSERT, (None, "contacts", "new@x", "upsert", '{"email": "new@x"}', TS))
    else:
        drop_json(tmp_path / "drop/contacts", "new", [{"email": "new@x", "updated_at": TS}])
    wait_until(
        lambda: query(db, "SELECT json_extract(body, '$.email') FROM records") == [("new@x",)],
        what="the new key merged",
    )
    alive(daemon)
    assert daemon.stop() == 0


def test_bodies_with_a_byte_order_mark_and_numbers_bound_as_bytes_are_taken(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """What programs bind: text read from a file saved with a BOM, a number as bytes; and a
    NULL op, which is refused in words that say so (the column's default is for a row that
    leaves it out)."""
    daemon.start()
    db = tmp_path / "store.db"
    write(
        db,
        INSERT,
        (None, "contacts", "bom@x", "upsert", '\ufeff{"v": 1}', TS),
        (None, "contacts", "bom-bytes@x", "upsert", b'\xef\xbb\xbf{"v": 2}', TS),
        (None, "contacts", "ts-bytes@x", "upsert", '{"v": 3}', b"1700000000001"),
        (None, "contacts", "ts-real-bytes@x", "upsert", '{"v": 4}', b"1.700000000002e12"),
        (None, "contacts", "op-null@x", None, '{"v": 5}', TS),
        (None, "contacts", "ts-word@x", "upsert", '{"v": 6}', b"nan"),
    )
    rows = wait_until(lambda: settled(db), what="the rows processed")
    assert [(key, status) for _, key, status, _ in rows] == [
        ("bom@x", "applied"),
        ("bom-bytes@x", "applied"),
        ("ts-bytes@x", "applied"),
        ("ts-real-bytes@x", "applied"),
        ("op-null@x", "rejected"),
        ("ts-word@x", "rejected"),
    ]
    reasons = [reason for _, _, _, reason in rows]
    assert (
        reasons[4] == "op is NULL; expected 'upsert' or 'delete' (leave the column out: 'upsert')"
    )
    assert "not ISO-8601" in reasons[5]
    assert query(db, "SELECT key, body, updated_at FROM records ORDER BY body") == [
        ("bom@x", '{"v":1}', TS),
        ("bom-bytes@x", '{"v":2}', TS),
        ("ts-bytes@x", '{"v":3}', TS + 1),
        ("ts-real-bytes@x", '{"v":4}', TS + 2),
    ]
    alive(daemon)
    assert daemon.stop() == 0


def test_a_collection_named_in_another_unicode_form_is_the_configured_one(
    tmp_path: Path,
) -> None:
    """Collection names are compared in NFC (docs/config.md, "Names and places"): a folder
    ``café`` in NFD is the configured ``café``, and so is an inbox row's collection; the
    name of a collection the config does not name is kept as it is (docs/drop-folder.md)."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    config = f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
[daemon]
inbox_poll_s = 0.1
[collections."{nfc}"]
key = "id"
timestamp = "at"
timestamp_unit = "s"
providers = ["crm"]
[providers.crm]
kind = "crm"
base_url = "http://127.0.0.1:9"
account_id = "acc_1"
secret_env = "CRM_TOKEN"
"""
    daemon = DaemonProcess(tmp_path, config, env={"CRM_TOKEN": "crm-token"})
    try:
        daemon.start()
        db = tmp_path / "store.db"
        write(
            db,
            INSERT,
            (None, nfd, "a", "upsert", '{"id": "a"}', 1_700_000_000),  # seconds: its unit
            (None, nfc, "b", "upsert", '{"id": "b"}', 1_700_000_001),
            (None, "th\u00e9", "c", "upsert", "{}", TS),  # not configured, in NFC
            (None, "the\u0301", "c", "upsert", "{}", TS),  # another collection: NFD
        )
        rows = wait_until(lambda: settled(db), what="the rows processed")
        assert [status for _, _, status, _ in rows] == ["applied"] * 4, rows
        records = "SELECT collection, key, updated_at FROM records ORDER BY key, collection"
        assert query(db, records) == [
            (nfc, "a", TS),
            (nfc, "b", TS + 1000),
            ("the\u0301", "c", TS),
            ("th\u00e9", "c", TS),
        ]
        # Routed to the provider: queued, or refused by its check before sending (no email).
        routed = "SELECT collection, key FROM outbox UNION SELECT collection, key FROM dead_letters"
        assert query(db, routed + " ORDER BY key") == [(nfc, "a"), (nfc, "b")]
        alive(daemon)
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_a_record_written_by_hand_with_values_of_other_types_is_displaced(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """``INSERT INTO records`` is a door for programs that build a store by hand
    (docs/schema.md, "records"); SQLite keeps what it is given. A version whose time or
    delete flag is not a number is older than any change; a digest of another type is
    compared as its text."""
    daemon.start()
    db = tmp_path / "store.db"
    hand = (
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) VALUES ('contacts', ?, '{}', ?, ?, 'sql', ?, 0)"
    )
    write(
        db,
        hand,
        ("iso@x", "2024-01-01T00:00:00Z", 0, "abc"),
        ("flag@x", TS, "no", "abc"),
        ("digest@x", TS, 0, 0),  # "0": below any digest of 32 hex digits, the change wins
        ("kept@x", TS + 1, 0, 7),  # newer: stays
    )
    write(
        db,
        INSERT,
        *[(None, "contacts", key, "upsert", '{"v": 1}', TS) for key in
          ("iso@x", "flag@x", "digest@x", "kept@x")],
    )  # fmt: skip
    rows = wait_until(lambda: settled(db), what="the rows processed")
    assert [(key, status) for _, key, status, _ in rows] == [
        ("iso@x", "applied"),
        ("flag@x", "applied"),
        ("digest@x", "applied"),
        ("kept@x", "superseded"),
        # The displaced versions, logged as every displaced version is.
        ("iso@x", "superseded"),
        ("flag@x", "superseded"),
        ("digest@x", "superseded"),
    ]
    assert query(db, "SELECT key, body, updated_at FROM records ORDER BY key") == [
        ("digest@x", '{"v":1}', TS),
        ("flag@x", '{"v":1}', TS),
        ("iso@x", '{"v":1}', TS),
        ("kept@x", "{}", TS + 1),
    ]
    alive(daemon)
    assert daemon.stop() == 0


def test_columns_longer_than_a_document_are_rejected_unread(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """A program's bug may put a whole file in ``key`` (a body is capped at
    ``drop.max_document_mb``, 1 MB); a batch of such rows would be read whole (a thousand
    rows of 5 MB keys: 5 GB). Every column is capped, and counts toward a batch's bytes."""
    daemon.start()
    db = tmp_path / "store.db"
    long = "x" * (3 << 19)  # 1.5 MB
    write(
        db,
        INSERT,
        (None, "contacts", long, "upsert", "{}", TS),
        (None, long, "k@x", "upsert", "{}", TS),
        (None, "contacts", "op@x", long, "{}", TS),
        (None, "contacts", "ts@x", "upsert", "{}", "2024-01-01T00:00:00." + "0" * 5000 + "Z"),
        (None, "contacts", "after@x", "upsert", "{}", TS),
    )
    rows = wait_until(lambda: settled(db), what="the rows processed")
    assert [status for _, _, status, _ in rows] == ["rejected"] * 4 + ["applied"]
    reasons = [reason for _, _, _, reason in rows]
    for column, reason in zip(["key", "collection", "op"], reasons, strict=False):
        assert reason == (
            f"{column} is 1,572,864 bytes, longer than the limit of 1,048,576 "
            "(drop.max_document_mb)"
        )
    assert reasons[3] == (
        "updated_at is longer than 4,096 bytes; expected an epoch number or ISO-8601 text"
    )
    alive(daemon)
    assert daemon.stop() == 0
