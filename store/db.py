"""Opening the store: connection settings, numbered migrations, transactions.

The schema version is ``PRAGMA user_version`` (the number of the last applied
migration) mirrored in ``schema_migrations`` for humans. Migrations are the
files ``store/migrations/NNNN_name.sql``, applied in order, each in its own
transaction. A file with a higher version than this program knows is refused.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import aiosqlite
import anyio
import structlog

from .diagnosis import NOT_A_FILE, check_openable, explain_open_failure
from .errors import (
    SchemaTooNew,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreRetryable,
    StoreUnavailable,
)
from .maintenance import backup_to, migration_backup_path
from .merge import digest_bytes
from .schema import Migration, migrations, version_in_use

log = structlog.get_logger(__name__)

# Below this much free space, an I/O error writing the store is taken for a full disk.
NEARLY_FULL_BYTES = 1 << 20


def unavailable(exc: sqlite3.Error, path: Path) -> StoreRetryable | None:
    """The retryable condition behind an SQLite error, if it is one (else None).

    ``database is locked`` (SQLITE_BUSY/SQLITE_LOCKED: another program held the write lock
    longer than busy_timeout) is ``StoreBusy``; ``database or disk is full`` (SQLITE_FULL),
    and an I/O error while the store's file system has (almost) no space left, is
    ``StoreFull``. Anything else is not retryable and stays as it is.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    primary = code & 0xFF
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusy(f"store {path} is busy: another program holds its write lock ({exc})")
    if primary == sqlite3.SQLITE_FULL or (
        primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and _nearly_full(path)
    ):
        return StoreFull(f"store {path}: the disk is full ({exc})")
    return None


def _open_error(path: Path, exc: BaseException) -> StoreError:
    """A busy store or a full disk (retryable), else what the file system says is wrong."""
    retryable = unavailable(exc, path) if isinstance(exc, sqlite3.Error) else None
    return retryable or explain_open_failure(path, exc, writing=True)


def _nearly_full(path: Path) -> bool:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES


# The WAL file is cut back to this size each time the writer starts it over after a
# checkpoint. Without it, a WAL that grew while a reader held an old snapshot (nothing can
# be checkpointed past it) keeps its largest size on disk for good. About the size at which
# SQLite checkpoints by itself (1000 pages of 4 KiB), so a store at rest is cut back to it.
WAL_SIZE_LIMIT = 4 << 20


# The writer's page cache, in KiB. SQLite fills a cache up to its size as pages are
# touched and keeps it: at 16 MiB the daemon's RSS rose for 35 minutes of steady traffic
# before it was flat (the soak). A steady 4 MiB holds the hot pages of the small units of
# work; a bulk unit (a file of 64 MiB or more, ``daemon.ingest.ingestor.BULK_MIN_BYTES``) raises it
# while it runs (``Store.bulk``). 8 MiB, not 16: ingesting 1M documents peaked at 92-93 MB of
# RSS (daemon and parser) instead of 100-101, at the same speed within the noise of 3 runs each
# (bench/RESULTS.md, 2026-12-07).
STEADY_CACHE_KIB = 4096
BULK_CACHE_KIB = 8192


def check_writable(path: Path, timeout_s: float) -> None:
    """Take the store's write lock and give it back at once (nothing is written).

    Raises ``StoreBusy`` if another program holds it for longer than ``timeout_s``, and
    ``StoreUnavailable`` if the store cannot be opened for writing. For the running
    daemon: only SQLite opens the files (closing a descriptor of its own would drop the
    daemon's locks on them, see diagnosis), on a connection of its own, never one the
    daemon works with (blocking: call it from a worker thread).
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise StoreUnavailable(f"store {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise StoreUnavailable(f"store {path}: {NOT_A_FILE}")  # a FIFO's open would wait
    db = None
    try:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout_s, isolation_level=None
        )
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise (unavailable(exc, path) or StoreUnavailable(f"store {path}: {exc}")) from exc
    finally:
        if db is not None:
            db.close()


def set_cache_size(conn: sqlite3.Connection, kib: int) -> None:
    """Size the connection's page cache (shrinking it frees the pages beyond the size)."""
    conn.execute(f"PRAGMA cache_size = -{int(kib)}")


async def _configure(db: aiosqlite.Connection) -> None:
    await db.execute("PRAGMA busy_timeout = 5000")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute(f"PRAGMA cache_size = -{STEADY_CACHE_KIB}")
    await db.execute("PRAGMA temp_store = MEMORY")
    await db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")


async def open_store(
    path: Path, *, target: int | None = None, backups: list[Path] | None = None
) -> aiosqlite.Connection:
    """Open, creating or migrating it, the store at ``path`` for writing.

    ``target`` stops migrating at that version (tests build old files with it).
    Before a store that has data is migrated, a verified backup is written beside it
    (``store.maintenance.migration_backup_path``); its path is appended to ``backups``.
    The connection is in autocommit mode: writes go through ``Store.transact``.
    Readers use ``store.readonly.open_readonly`` instead.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(
            f"store {path}: cannot create its folder {exc.filename or path.parent}: {exc.strerror}"
        ) from exc
    check_openable(path, writing=True)
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise _open_error(path, exc) from exc
    try:
        await _configure(db)
        mode = await (await db.execute("PRAGMA journal_mode = WAL")).fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"store {path}: cannot switch to WAL mode")
        await _check_and_migrate(db, path, target=target, backups=backups)
    except (OSError, sqlite3.Error) as exc:
        with anyio.CancelScope(shield=True):
            await db.close()
        raise _open_error(path, exc) from exc
    except BaseException:
        with anyio.CancelScope(shield=True):
            await db.close()
        raise
    return db


async def open_reader(path: Path) -> aiosqlite.Connection:
    """A read-only connection to a store the writer has opened (WAL: it never blocks it)."""
    db = await aiosqlite.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        await db.execute("PRAGMA busy_timeout = 5000")
        await db.execute("PRAGMA cache_size = -4096")  # the writer's cache is the big one
    except BaseException:
        await db.close()
        raise
    return db


async def schema_version(db: aiosqlite.Connection) -> int:
    """The store's ``PRAGMA user_version``."""
    row = await (await db.execute("PRAGMA user_version")).fetchone()
    return int(row[0]) if row else 0


async def _check_and_migrate(
    db: aiosqlite.Connection, path: Path, *, target: int | None, backups: list[Path] | None
) -> None:
    steps = migrations()
    current = await _restore_version(db, path, steps, await schema_version(db))
    if current > len(steps):
        raise SchemaTooNew(
            f"store {path} has schema version {current}, but this dropsync knows versions up to "
            f"{len(steps)}: it was written by a newer dropsync. Upgrade dropsync, or point "
            "[store] path at another file."
        )
    goal = len(steps) if target is None else target
    if current >= goal:
        return
    begun = False
    if current > 0:
        # A migration rewrites tables in place: keep the file as it was, checked, first.
        # The write lock is taken before the copy and kept for the first step: a store
        # another program holds is not copied again at each try (the daemon tries every
        # few seconds), and nothing is written between the copy and the migration.
        await _begin(db, path)
        begun = True
        try:
            current = await schema_version(db)  # another dropsync may have migrated it
            if current >= goal:
                await db.execute("ROLLBACK")
                return
            taken = await anyio.to_thread.run_sync(
                backup_to, path, migration_backup_path(path, current)
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await rollback_if_open(db)
            raise
        if backups is not None:
            backups.append(taken.path)
    # Migration 7 stores digests as bytes; SQLite before 3.41 has no unhex() of its own.
    await db.create_function("dropsync_unhex", 1, digest_bytes, deterministic=True)
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    for step in steps[current:goal]:
        if not begun:
            await _begin(db, path)
        begun = False
        try:
            if await schema_version(db) >= step.version:
                # Another program (a second dropsync) migrated it while this one waited.
                await db.execute("ROLLBACK")
                continue
            # executescript would COMMIT first; run statement by statement instead.
            for statement in _statements(step.sql):
                await db.execute(statement)
            # The store's functions take the time from their caller (``now=``); a
            # migration is stamped with SQLite's own clock, in epoch ms like every column.
            await db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES "
                "(?, ?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
                (step.version, step.name),
            )
            await db.execute(f"PRAGMA user_version = {step.version}")
            await db.execute("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await rollback_if_open(db)
            raise


async def _restore_version(
    db: aiosqlite.Connection, path: Path, steps: list[Migration], current: int
) -> int:
    """The store's schema version (``schema.version_in_use``); when another program set
    ``PRAGMA user_version`` to a value of its own, it is set back first, with a warning."""
    try:
        rows = await db.execute_fetchall("SELECT version, name FROM schema_migrations")
    except sqlite3.OperationalError:  # no such table: a new store
        return current
    shipped = [(step.version, step.name) for step in steps]
    version = version_in_use(current, [(row[0], row[1]) for row in rows], shipped)
    if version == current:
        return current
    await _begin(db, path)
    try:
        if await schema_version(db) == current:  # not another dropsync migrating meanwhile
            await db.execute(f"PRAGMA user_version = {version}")
        await db.execute("COMMIT")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await rollback_if_open(db)
        raise
    log.warning("store_version_restored", store=str(path), found=current, version=version)
    return await schema_version(db)


async def _begin(db: aiosqlite.Connection, path: Path) -> None:
    """``BEGIN IMMEDIATE``: the write lock, or ``StoreBusy`` (retryable) after busy_timeout."""
    try:
        await db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise (unavailable(exc, path) or exc) from exc


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if not buffer and line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise StoreError(f"incomplete statement in migration: {buffer.strip()[:80]}")
    return statements


async def rollback_if_open(db: aiosqlite.Connection) -> None:
    """ROLLBACK, unless SQLite already rolled back (it does on SQLITE_FULL, for one)."""
    if db.in_transaction:
        await db.execute("ROLLBACK")
