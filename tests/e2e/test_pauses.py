"""A busy store and a full disk, met by the daemon as a real subprocess: it pauses, says so
in ``status``, and resumes by itself, with every file ingested once and nothing lost."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.drop_support import errors
from tests.support import (
    DaemonProcess,
    SmallFileSystem,
    StoreLockHolder,
    query,
    wait_until,
)

pytestmark = pytest.mark.e2e


def config_text(store: Path, drop: Path) -> str:
    return f"""
[store]
path = "{store}"
[drop]
path = "{drop}"
settle_ms = 20
[daemon]
inbox_poll_s = 0.1
[collections.contacts]
key = "email"
timestamp = "updated_at"
"""


def contacts(count: int, start: int = 0) -> bytes:
    return orjson.dumps(
        [
            {"email": f"u{i}@example.com", "note": "x" * 80, "updated_at": 1_700_000_000_000 + i}
            for i in range(start, start + count)
        ]
    )


def status(config: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dropsync.daemon.cli", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.fixture
def daemon_paths(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield tmp_path / "store.db", tmp_path / "drop"


def test_a_lock_held_by_another_program_pauses_the_daemon_which_resumes_by_itself(
    tmp_path: Path,
) -> None:
    store, drop = tmp_path / "store.db", tmp_path / "drop"
    daemon = DaemonProcess(tmp_path, config_text(store, drop))
    holder = None
    try:
        daemon.start()
        holder = StoreLockHolder(
            store,
            "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES "
            "('contacts', 'sql@example.com', 'upsert', '{\"email\": \"sql@example.com\"}', "
            "1700000000005)",
        )
        folder = drop / "contacts"
        folder.mkdir(parents=True)
        (folder / "a.json.tmp").write_bytes(contacts(50))
        (folder / "a.json.tmp").rename(folder / "a.json")
        daemon.wait_for("work_paused", condition="store busy")
        shown = status(daemon.config_path)
        assert "store busy" in shown and "paused since" in shown
        # The file waits where it was dropped: nothing in .processing/ without a ledger row.
        assert not any((folder / ".processing").glob("*"))
        holder.release()
        daemon.wait_for("work_resumed", condition="store busy")
        wait_until(lambda: query(store, "SELECT 1 FROM files WHERE status = 'done'"), what="done")
        wait_until(
            lambda: query(store, "SELECT 1 FROM records WHERE key = 'sql@example.com'"),
            what="the inbox row committed with the lock applied",
        )
        assert query(store, "SELECT name, status, duplicate_of FROM files") == [
            ("a.json", "done", None)
        ]
        assert query(store, "SELECT COUNT(*) FROM records") == [(51,)]
        assert "store busy" not in status(daemon.config_path)
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        if holder is not None:
            holder.close()
        daemon.close()


def test_a_full_disk_pauses_ingest_which_resumes_when_space_returns(tmp_path: Path) -> None:
    fs = SmallFileSystem(tmp_path / "fs", size_kb=4096)
    store, drop = fs.path / "store.db", fs.path / "drop"
    daemon = DaemonProcess(tmp_path, config_text(store, drop))
    try:
        daemon.start()
        folder = drop / "contacts"
        folder.mkdir(parents=True)
        (folder / "good.json.tmp").write_bytes(contacts(3000))
        bad = b'[{"email": "bad@example.com", "updated_at": "soon"}, ' + contacts(1, 5000)[1:]
        (folder / "bad.json.tmp").write_bytes(bad)
        fs.fill()
        (folder / "good.json.tmp").rename(folder / "good.json")
        (folder / "bad.json.tmp").rename(folder / "bad.json")
        daemon.wait_for("work_paused", condition="disk full")
        assert "disk full" in status(daemon.config_path)
        fs.free()
        wait_until(
            lambda: (
                query(store, "SELECT COUNT(*) FROM files WHERE status != 'processing'") == [(2,)]
            ),
            what="both files filed",
        )
        assert query(store, "SELECT name, status FROM files ORDER BY name") == [
            ("bad.json", "quarantined"),
            ("good.json", "done"),
        ]
        assert (folder / ".quarantine/bad.json.error.json").exists()
        assert (folder / ".done/good.json").exists()
        assert query(store, "SELECT COUNT(*) FROM records") == [(3001,)]
        assert query(store, "SELECT SUM(docs_applied) FROM files") == [(3001,)]
        assert "disk full" not in status(daemon.config_path)
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()
        fs.close()
