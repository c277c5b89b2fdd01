"""Keeping a store safe: consistent backups while the daemon runs, the schema version on disk.

``backup_to`` uses SQLite's online backup API on a read-only connection: the copy is
one consistent snapshot of the last committed state, and the daemon (the writer)
never waits for it (WAL). The copy is checked with ``PRAGMA integrity_check``, made
a single self-contained file (``journal_mode = DELETE``), synced, and only then
renamed into place: a backup that exists is a good one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

from dropsync.store.diagnosis import explain_open_failure
from dropsync.store.errors import StoreError


class Backup(NamedTuple):
    """A backup written: where, its size in bytes, and its schema version."""

    path: Path
    size: int
    schema_version: int


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_to(source: Path, target: Path) -> Backup:
    """Copy the store at ``source`` to ``target`` (a new file), verified; raises StoreError."""
    partial = target.with_name(target.name + ".part")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    try:
        reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise StoreError(f"store {source} cannot be read for a backup: {exc}") from exc
    try:
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            reader.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
            version = int(copy.execute("PRAGMA user_version").fetchone()[0])
        finally:
            copy.close()
    except sqlite3.Error as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise StoreError(f"backup of {source} to {target} failed: {exc}") from exc
    finally:
        reader.close()
    if problems != ["ok"]:
        partial.unlink()
        raise StoreError(
            f"backup of {source} failed its integrity check ({'; '.join(problems[:3])}); "
            f"check the store itself: sqlite3 {source} 'PRAGMA integrity_check'"
        )
    with partial.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    _sync_folder(target.parent)
    return Backup(target, target.stat().st_size, version)


def schema_version_at(path: Path) -> int:
    """``PRAGMA user_version`` of the store at ``path`` (read-only; it is not migrated).

    A file SQLite cannot read is a ``StoreError`` naming it (a damaged store, not a database).
    """
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise explain_open_failure(path, exc, writing=False) from exc
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise explain_open_failure(path, exc, writing=False) from exc
    finally:
        db.close()


def migration_backup_path(store: Path, version: int) -> Path:
    """Where the backup taken before migrating ``store`` from ``version`` goes: beside it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return store.with_name(f"{store.name}.before-v{version + 1}-{stamp}.bak")
