"""Backups while the daemon ingests, and the backup before its migration, with the daemon as a
subprocess (the rest: tests/daemon/cli/test_maintenance.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from dropsync.daemon.cli import main
from dropsync.store.schema import latest_version

from tests.daemon.cli.test_maintenance import DROPSYNC, integrity, old_store
from tests.support import DaemonProcess, query

pytestmark = pytest.mark.e2e


def test_backup_while_the_daemon_ingests_is_consistent_and_verified(tmp_path: Path) -> None:
    daemon = DaemonProcess(
        tmp_path,
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        '[collections.users]\nkey = "id"\ntimestamp = "at"\ntimestamp_unit = "ms"\n',
    )
    backups = tmp_path / "backups"
    backups.mkdir()
    try:
        daemon.start()
        folder = tmp_path / "drop/users"
        folder.mkdir(parents=True)
        lines = (orjson.dumps({"id": i, "at": 1 + i}) for i in range(50_000))
        (folder / "big.ndjson.tmp").write_bytes(b"\n".join(lines))
        (folder / "big.ndjson.tmp").rename(folder / "big.ndjson")
        done = subprocess.run(
            [*DROPSYNC, "backup", str(backups), "--config", str(daemon.config_path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        [copy] = list(backups.iterdir())
        assert copy.name.startswith("s-") and copy.suffix == ".db"
        assert done.stdout.startswith(f"backed up {tmp_path / 's.db'} to {copy} (")
        assert "integrity_check ok" in done.stdout
        assert integrity(copy) == "ok"
        assert query(copy, "PRAGMA user_version") == [(latest_version(),)]
        assert query(copy, "PRAGMA journal_mode") == [("delete",)]  # one self-contained file
        daemon.wait_for("file_ingested")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    # A file there already is not replaced without --force.
    config = str(daemon.config_path)
    assert main(["backup", str(copy), "--config", config]) == 2
    assert main(["backup", str(copy), "--config", config, "--force"]) == 0
    assert query(copy, "SELECT COUNT(*) FROM records") == [(50_000,)]


def test_the_daemon_logs_where_the_backup_before_its_migration_went(tmp_path: Path) -> None:
    old_store(tmp_path / "s.db", 2)
    daemon = DaemonProcess(
        tmp_path, f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "d"}"\n'
    )
    try:
        daemon.start()
        event = daemon.wait_for("store_backed_up_before_migration")
        assert Path(event["backup"]).exists() and event["store"] == str(tmp_path / "s.db")
        assert daemon.stop() == 0
    finally:
        daemon.close()
