"""The store removed or replaced while the daemon runs: it used to go on writing to the file it
had open, which nobody would read again, acknowledging every file dropped meanwhile (moved to
``.done/``); at its next start those changes were gone. It now keeps a copy of what it holds
beside the path and stops with exit code 2 (not restarted by systemd)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from tests.daemon.cli.test_backup import setup
from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e


def drop(folder: Path, name: str, first: int, count: int) -> None:
    documents = [{"email": f"u{i}@x", "at": 1 + i} for i in range(first, first + count)]
    (folder / f".{name}").write_bytes(orjson.dumps(documents))
    os.replace(folder / f".{name}", folder / name)


def done_files(store: Path) -> set[str]:
    return {row[0] for row in query(store, "SELECT name FROM files WHERE status = 'done'")}


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_store_removed_or_replaced_under_the_daemon_is_kept_and_the_daemon_stops(
    tmp_path: Path, how: str
) -> None:
    config = setup(tmp_path)
    store = tmp_path / "s.db"
    daemon = DaemonProcess(tmp_path, config.read_text())
    folder = tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    try:
        daemon.start()
        drop(folder, "a.json", 0, 100)
        wait_until(lambda: done_files(store) == {"a.json"})
        if how == "removed":
            for name in ("s.db", "s.db-wal", "s.db-shm"):
                (tmp_path / name).unlink()
        else:  # a copy of the store moved over it (a backup restored without a stop)
            shutil.copy(store, tmp_path / "other.db")
            with sqlite3.connect(tmp_path / "other.db") as other:
                other.execute("DELETE FROM files")
            os.replace(tmp_path / "other.db", store)
        drop(folder, "b.json", 100, 50)  # accepted by the daemon meanwhile, or left waiting
        event = daemon.wait_for("store_replaced", timeout=60)
        assert daemon.process is not None
        assert daemon.process.wait(timeout=60) == 2
    finally:
        daemon.close()
    assert event["found"] == ("nothing" if how == "removed" else "another file")
    kept = Path(event["kept"])
    assert kept.parent == tmp_path and kept.name.startswith("s.db.kept-")
    # Every file the daemon acknowledged (moved to .done/) is in the copy, with its records.
    acknowledged = {path.name for path in (folder / ".done").iterdir()}
    assert "a.json" in acknowledged and done_files(kept) == acknowledged
    expected = 100 + (50 if "b.json" in acknowledged else 0)
    assert query(kept, "SELECT COUNT(*) FROM records") == [(expected,)]
    assert query(kept, "PRAGMA integrity_check") == [("ok",)]
    # Nothing was made at the path meanwhile; a replacing file is left as it was put there.
    if how == "removed":
        assert not store.exists()
    else:
        assert done_files(store) == set()
