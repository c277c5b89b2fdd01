"""A read-only connection for the CLI's questions: no event loop, no writer, fast to open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dropsync.store.errors import SchemaTooNew, StoreError
from dropsync.store.schema import latest_version


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the store for reading while the daemon may be writing (WAL readers never block)."""
    if not path.exists():
        raise StoreError(f"store {path} does not exist (has the daemon run yet?)")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    known = latest_version()
    if version > known:
        db.close()
        raise SchemaTooNew(
            f"store {path} has schema version {version}, but this dropsync knows versions up "
            f"to {known}: it was written by a newer dropsync. Upgrade dropsync."
        )
    if version < known:
        db.close()
        raise StoreError(
            f"store {path} has schema version {version}, older than {known}: start the daemon "
            "once to migrate it"
        )
    return db
