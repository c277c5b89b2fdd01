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
import stat
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from .diagnosis import explain_open_failure
from .errors import StoreError
from .schema import migrations, version_in_use

PARTIAL_PREFIX = ".dropsync-backup-"  # a copy being written (a killed backup leaves it)


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
    """Copy the store at ``source`` to ``target`` (a new file), verified; raises StoreError.

    The copy is written to a file of its own making beside ``target`` (never one that was
    there), then renamed onto ``target``, which may only be a regular file, if anything.
    """
    try:
        reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise StoreError(f"store {source} cannot be read for a backup: {exc}") from exc
    try:
        handle, name = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=".part", dir=target.parent)
    except OSError as exc:
        reader.close()
        raise StoreError(
            f"backup of {source}: cannot write in {target.parent}: {exc.strerror}"
        ) from exc
    os.close(handle)
    try:
        return _copy_verified(reader, source, Path(name), target)
    finally:
        reader.close()


def keep_copy(db: sqlite3.Connection, source: Path, target: Path) -> Backup:
    """Copy the store open as ``db`` to ``target`` (a new file), verified; raises StoreError.

    Through the daemon's own connection: it still reads the file it opened when ``source``
    names another one, or none (the store removed or replaced while the daemon ran).
    """
    try:
        handle, name = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=".part", dir=target.parent)
    except OSError as exc:
        raise StoreError(
            f"copy of {source}: cannot write in {target.parent}: {exc.strerror}"
        ) from exc
    os.close(handle)
    return _copy_verified(db, source, Path(name), target)


def _copy_verified(reader: sqlite3.Connection, source: Path, partial: Path, target: Path) -> Backup:
    """``reader``'s database written to ``partial``, checked, synced and renamed to ``target``."""
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
    if problems != ["ok"]:
        partial.unlink()
        raise StoreError(
            f"backup of {source} failed its integrity check ({'; '.join(problems[:3])}); "
            f"check the store itself: sqlite3 {source} 'PRAGMA integrity_check'"
        )
    with partial.open("rb+") as copied:
        os.fsync(copied.fileno())
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.lstat(target).st_mode):  # put there since it was checked
            partial.unlink()
            raise StoreError(f"backup of {source}: {target} is not a regular file, not replaced")
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
        return version_of(db)
    except sqlite3.Error as exc:
        raise explain_open_failure(path, exc, writing=False) from exc
    finally:
        db.close()


def listed_migrations(db: sqlite3.Connection) -> list[tuple[int, str]]:
    """(version, name) of each row of ``schema_migrations``; none in a new store."""
    try:
        rows = db.execute("SELECT version, name FROM schema_migrations").fetchall()
    except sqlite3.OperationalError:  # no such table
        return []
    return [(int(version), str(name)) for version, name in rows]


def version_of(db: sqlite3.Connection) -> int:
    """The store's schema version (``schema.version_in_use``), as read on ``db``."""
    user_version = int(db.execute("PRAGMA user_version").fetchone()[0])
    shipped = [(step.version, step.name) for step in migrations()]
    return version_in_use(user_version, listed_migrations(db), shipped)


def migration_backup_path(store: Path, version: int) -> Path:
    """Where the backup taken before migrating ``store`` from ``version`` goes: beside it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return store.with_name(f"{store.name}.before-v{version + 1}-{stamp}.bak")
