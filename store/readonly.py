"""A read-only connection for the CLI's questions: no event loop, no writer, fast to open."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from .diagnosis import NOT_A_FILE, explain_open_failure
from .errors import SchemaTooNew, StoreError, StoreUnavailable
from .schema import latest_version


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the store for reading while the daemon may be writing (WAL readers never block)."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        folder = "" if path.parent.is_dir() else f", nor does its folder {path.parent}"
        raise StoreError(f"store {path} does not exist{folder} (has the daemon run yet?)") from None
    except OSError as exc:
        raise explain_open_failure(path, exc, writing=False) from exc
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        raise StoreUnavailable(f"store {path}: {NOT_A_FILE}")  # a FIFO's open would wait
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise explain_open_failure(path, exc, writing=False) from exc
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        db.close()
        raise explain_open_failure(path, exc, writing=False) from exc
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
