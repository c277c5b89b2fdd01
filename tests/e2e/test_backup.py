"""``dropsync backup --force`` beside the running daemon: its store's companions are never
replaced (the other cases: tests/daemon/cli/test_backup.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from tests.daemon.cli.test_backup import DROPSYNC, setup
from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e


def test_force_onto_the_running_stores_wal_or_lock_is_refused_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    config = setup(tmp_path)
    daemon = DaemonProcess(tmp_path, config.read_text())
    folder = tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    try:
        daemon.start()
        (folder / "a.json").write_bytes(
            orjson.dumps([{"email": f"u{i}@x", "at": 1 + i} for i in range(100)])
        )
        wait_until(lambda: query(tmp_path / "s.db", "SELECT 1 FROM files WHERE status = 'done'"))
        for name in ("s.db-wal", "s.db.lock", "s.db-shm", "s.db.runtime.json"):
            before = (tmp_path / name).read_bytes()
            done = subprocess.run(
                [*DROPSYNC, "backup", str(tmp_path / name), "--force", "--config", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 2 and "never" in done.stderr, done.stderr
            if name != "s.db-shm":  # the daemon's own writes change these two
                assert name == "s.db-wal" or (tmp_path / name).read_bytes() == before
        # A second daemon on the same store is still refused: the lock file is the same.
        second = subprocess.run(
            [*DROPSYNC, "run", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert second.returncode == 1 and "is running on this store" in second.stdout
        assert daemon.stop() == 0
        daemon.start()
        assert query(tmp_path / "s.db", "SELECT COUNT(*) FROM records") == [(100,)]
        assert daemon.stop() == 0
    finally:
        daemon.close()
