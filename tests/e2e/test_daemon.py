"""The daemon as a real subprocess: drop folder, SQL inbox, signals, crash recovery."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.store.handle import Store

from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these


def config_text(
    tmp_path: Path, batch: int = 5000, inbox_poll_s: float = 0.1, parser_process_min_mb: int = 8
) -> str:
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
batch = {batch}
settle_ms = 20
parser_process_min_mb = {parser_process_min_mb}
[daemon]
inbox_poll_s = {inbox_poll_s}
shutdown_grace_s = 20
[collections.contacts]
key = "email"
timestamp = "updated_at"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, config_text(tmp_path))
    yield process
    process.close()


def drop_file(folder: Path, name: str, content: bytes) -> None:
    """Write-then-rename, the documented way to drop."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f"{name}.tmp"
    temp.write_bytes(content)
    temp.rename(folder / name)


def envelopes(count: int, ts: int = 1_600_000_000_000) -> bytes:
    return orjson.dumps(
        [
            {
                "data": {"id": i, "email": f"u{i}@example.com", "city": "Limassol"},
                "createdAt": ts - 5,
                "updatedAt": ts + i,
            }
            for i in range(count)
        ]
    )


def test_dropped_file_reaches_a_separate_reader_and_sigterm_exits_0(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    drop_file(
        tmp_path / "drop/contacts",
        "c.json",
        orjson.dumps(
            [
                {"email": "ann@example.com", "name": "Ann", "updated_at": "2024-01-01T00:00:00Z"},
                {"email": "bob@example.com", "name": "Bob", "updated_at": 1704067200000},
            ]
        ),
    )
    db = tmp_path / "store.db"
    rows = wait_until(
        lambda: query(db, "SELECT key, updated_at FROM records ORDER BY key"), what="records"
    )
    assert rows == [("ann@example.com", 1704067200000), ("bob@example.com", 1704067200000)]
    # The file is filed away right after its last batch commits (not in the same instant).
    wait_until((tmp_path / "drop/contacts/.done/c.json").exists, what="filed in .done")
    assert not (tmp_path / "drop/contacts/c.json").exists()
    assert daemon.stop(signal.SIGTERM) == 0
    assert any(e["event"] == "daemon_stopped" for e in daemon.events())


def test_malformed_file_is_quarantined_and_the_next_good_file_ingested(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    folder = tmp_path / "drop/contacts"
    drop_file(folder, "bad.json", b'[{"email": "x@example.com", "updated_at": "nope"}]')
    receipt = folder / ".quarantine/bad.json.error.json"
    wait_until(receipt.exists, what="quarantine receipt")
    errors = orjson.loads(receipt.read_bytes())["errors"]
    assert errors[0]["index"] == 0 and "updated_at" in errors[0]["reason"]
    drop_file(folder, "good.json", b'{"email": "g@example.com", "updated_at": 1700000000005}')
    wait_until(lambda: query(tmp_path / "store.db", "SELECT key FROM records"), what="good")
    statuses = wait_until(
        lambda: (
            rows
            if (rows := query(tmp_path / "store.db", "SELECT status FROM files ORDER BY id"))[-1]
            != ("processing",)
            else None
        ),
        what="good file finished",
    )
    assert statuses == [("quarantined",), ("done",)]
    assert daemon.stop() == 0


def test_insert_into_inbox_by_another_process_is_applied(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    db = tmp_path / "store.db"
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=10)\n"
        'c.execute("INSERT INTO inbox (collection, key, op, body, updated_at) VALUES '
        "('contacts', 'ann@example.com', 'upsert', '{\\\"email\\\": \\\"ann@example.com\\\"}', "
        "'2024-05-01T00:00:00Z')\")\n"
        'c.execute("INSERT INTO inbox (collection, key, op, body, updated_at) VALUES '
        "('contacts', 'bad', 'upsert', 'not json', 1700000000005)\")\n"
        "c.commit()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True)
    rows = wait_until(
        lambda: (
            query(db, "SELECT status, reason FROM inbox ORDER BY id")
            if query(db, "SELECT 1 FROM inbox WHERE status = 'pending'") == []
            else None
        ),
        what="inbox processed",
    )
    assert rows[0] == ("applied", None)
    assert rows[1][0] == "rejected" and "not valid JSON" in rows[1][1]
    assert query(db, "SELECT key, origin FROM records") == [("ann@example.com", "sql")]
    assert daemon.stop() == 0


def test_inbox_commits_are_picked_up_without_waiting_for_the_tick(tmp_path: Path) -> None:
    # With an hour between safety ticks, only the write-ahead-log notification can wake
    # the applier within wait_until's deadline.
    daemon = DaemonProcess(tmp_path, config_text(tmp_path, inbox_poll_s=3600))
    try:
        daemon.start()
        db = sqlite3.connect(tmp_path / "store.db", timeout=10)
        for n in range(3):
            db.execute(
                "INSERT INTO inbox (collection, key, op, body, updated_at) "
                "VALUES ('contacts', ?, 'upsert', ?, ?)",
                (f"u{n}@x", orjson.dumps({"email": f"u{n}@x"}).decode(), 1_600_000_000_000 + n),
            )
            db.commit()
            applied = partial(
                query, tmp_path / "store.db", "SELECT 1 FROM records WHERE key = ?", (f"u{n}@x",)
            )
            wait_until(applied, what=f"inbox row {n} applied")
        db.close()
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_sighup_with_a_bad_config_keeps_the_old_one(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.start()
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "\n[collections.broken]\nkey = 5\n")
    daemon.send_signal(signal.SIGHUP)
    failed = daemon.wait_for("config_reload_failed")
    assert "collections.broken.key" in failed["error"]
    drop_file(
        tmp_path / "drop/contacts", "after.json", b'{"email": "a@x", "updated_at": 1700000000009}'
    )
    wait_until(lambda: query(tmp_path / "store.db", "SELECT key FROM records"), what="ingest")
    assert daemon.stop() == 0


@pytest.mark.parametrize("parser_process_min_mb", [0, 1000], ids=["parser-process", "parsed-here"])
def test_sigkill_mid_ingest_then_restart_equals_a_clean_run(
    tmp_path: Path, parser_process_min_mb: int
) -> None:
    content = envelopes(60_000)
    crashed = DaemonProcess(
        tmp_path, config_text(tmp_path, batch=1000, parser_process_min_mb=parser_process_min_mb)
    )
    try:
        crashed.start()
        drop_file(tmp_path / "drop/users", "big.json", content)
        db = tmp_path / "store.db"
        wait_until(
            lambda: query(db, "SELECT 1 FROM files WHERE status = 'processing' AND docs_seen > 0"),
            what="ingest under way",
        )
        crashed.kill()
        assert query(db, "SELECT status FROM files") == [("processing",)]
        crashed.start()
        wait_until(
            lambda: query(db, "SELECT 1 FROM files WHERE status = 'done'"),
            what="ingest finished after restart",
        )
        assert crashed.stop() == 0
    finally:
        crashed.close()

    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    (clean_dir / "big.json").write_bytes(content)
    clean_config = clean_dir / "c.toml"
    clean_config.write_text(
        f'[store]\npath = "{clean_dir / "store.db"}"\n[drop]\npath = "{clean_dir / "drop"}"\n'
    )

    async def create_store() -> None:  # only `run` creates a store; `ingest` needs one
        async with await Store.open(clean_dir / "store.db"):
            pass

    anyio.run(create_store)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "ingest",
            "--config",
            str(clean_config),
            "--collection",
            "users",
            str(clean_dir / "big.json"),
        ],
        check=True,
        capture_output=True,
    )

    select = "SELECT collection, key, body, updated_at, deleted, digest FROM records ORDER BY 1, 2"
    recovered = query(tmp_path / "store.db", select)
    assert len(recovered) == 60_000
    assert recovered == query(clean_dir / "store.db", select)
    # Nothing was applied twice: every document counted once, none as a repeat.
    assert query(tmp_path / "store.db", "SELECT docs_applied, docs_unchanged FROM files") == [
        (60_000, 0)
    ]
    raw = sqlite3.connect(tmp_path / "store.db")
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
