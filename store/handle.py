"""The daemon's handle on the store: one connection, one writer at a time.

When the store cannot be written now (another program holds its write lock longer
than busy_timeout, or the disk is full: ``StoreRetryable``), a ``Store`` opened with
a ``PauseListener`` waits and tries the unit of work again, with backoff, for as long as
it takes, and tells the listener when it pauses and resumes; a ``Store`` without one
(the one-shot commands) raises the error. A unit of work is tried again whole: it
was rolled back, so nothing of it was committed, and nothing is done twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import aiosqlite
import anyio

from .backoff import backoff_s
from .db import (
    BULK_CACHE_KIB,
    STEADY_CACHE_KIB,
    check_writable,
    open_reader,
    open_store,
    set_cache_size,
    unavailable,
)
from .errors import StoreRetryable

T = TypeVar("T")


class PauseListener(Protocol):
    """Told when work pauses because of a condition outside the daemon, and resumes."""

    def paused(self, work: str, condition: str, detail: str, retry_in_s: float) -> None:
        """``work`` waits: ``condition`` (``store busy``, ``disk full``) because of ``detail``."""

    def resumed(self, work: str, condition: str) -> None:
        """``work`` got through again."""


def store_condition(exc: BaseException) -> str | None:
    """The condition of a ``StoreRetryable``, None for any other error."""
    return exc.condition if isinstance(exc, StoreRetryable) else None


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    listener: PauseListener,
    work: str,
    condition_of: Callable[[BaseException], str | None] = store_condition,
) -> T:
    """``attempt()`` until it does not fail with a retryable condition, with backoff.

    ``condition_of`` names the condition of a retryable error (None: not retryable,
    raised at once). The waits between attempts can be cancelled (a stop request).
    """
    failures = 0
    paused: str | None = None
    while True:
        try:
            result = await attempt()
        except Exception as exc:
            condition = condition_of(exc)
            if condition is None:
                raise
            failures += 1
            delay = backoff_s(failures)
            if paused is not None and paused != condition:
                listener.resumed(work, paused)
            paused = condition
            listener.paused(work, condition, str(exc), delay)
            await anyio.sleep(delay)
            continue
        if paused is not None:
            listener.resumed(work, paused)
        return result


async def run_in_connection_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(conn, *args)`` in the thread that owns ``db``'s sqlite3 connection.

    aiosqlite (up to 0.22 at least) has no public way to hand its thread a whole unit
    of work; this is the one place that uses its private ``Connection._execute`` (and
    ``_conn``). ``tests/store/test_handle.py`` fails loudly if an aiosqlite release
    changes them; the ``<0.23`` pin in pyproject.toml stays until that test passes on
    the next release (see docs/schema.md, "How the daemon writes").
    """
    execute = cast(Callable[..., Awaitable[T]], db._execute)
    return await execute(fn, db._conn, *args)


class Store:
    """One aiosqlite connection (one thread owns it) shared by the daemon's tasks.

    ``transact`` runs a unit of work (a plain function over the ``sqlite3.Connection``)
    whole in one transaction: every write goes through it, so every write survives a
    busy store and a full disk the same way. ``call`` runs one between transactions
    (a read that must see the writer's own state). ``read()`` gives the aiosqlite
    connection to a task between transactions, for reads only, so it never sees
    another task's half-done work. ``snapshot()`` is a second, read-only connection
    for reads that need not wait for the writer: it sees the last committed state.
    With ``pauses``, ``call`` and ``transact`` wait out a busy store or a full disk
    (see the module docstring).
    """

    def __init__(
        self, db: aiosqlite.Connection, path: Path, *, pauses: PauseListener | None = None
    ) -> None:
        self.db = db
        self.path = path
        self.pauses = pauses
        self._lock = anyio.Lock()
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = anyio.Lock()
        self._bulk_users = 0

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        pauses: PauseListener | None = None,
        backups: list[Path] | None = None,
    ) -> Store:
        """Open (creating or migrating it) the store at ``path``.

        With ``pauses``, a busy store or a full disk at opening is waited out too. A backup
        taken before migrating is appended to ``backups`` (see ``open_store``).
        """
        if pauses is None:
            return cls(await open_store(path, backups=backups), path)
        return cls(
            await retrying(lambda: open_store(path, backups=backups), pauses, "store"),
            path,
            pauses=pauses,
        )

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        if self.pauses is None:
            return await attempt()
        return await retrying(attempt, self.pauses, "store")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in the connection's thread, between transactions.

        aiosqlite's worker thread owns the connection; handing it a whole unit of
        work costs one round trip instead of one per statement, and lets the event
        loop parse the next batch meanwhile.
        """
        if kwargs:
            fn = partial(fn, **kwargs)
        async with self._lock:
            return await self._retrying(lambda: self._shielded(fn, *args))

    async def transact(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in one IMMEDIATE transaction in the connection's
        thread: the daemon's one way to write.

        Committed if ``fn`` returns, rolled back if it raises. Once started it is
        not cancelled: a stop request lets the transaction finish first. With
        ``pauses`` it is run again after a busy store or a full disk, so ``fn`` must
        change nothing but the store (or only what it can change again).
        """
        if kwargs:
            fn = partial(fn, **kwargs)
        async with self._lock:
            return await self._retrying(lambda: self._shielded(_in_transaction, fn, *args))

    async def _shielded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with anyio.CancelScope(shield=True):
                result = await run_in_connection_thread(self.db, fn, *args)
        except sqlite3.Error as exc:
            raise (unavailable(exc, self.path) or exc) from exc
        return result

    @asynccontextmanager
    async def bulk(self) -> AsyncIterator[None]:
        """While a bulk unit of work runs, the writer's page cache is the larger one.

        Nested or concurrent bulk units share it; when the last ends, the cache is cut
        back to its steady size, so the daemon's memory at rest does not keep what a
        big file needed.
        """
        self._bulk_users += 1
        try:
            if self._bulk_users == 1:
                await self.call(set_cache_size, BULK_CACHE_KIB)
            yield
        finally:
            self._bulk_users -= 1
            if self._bulk_users == 0:
                # Closed or unusable meanwhile: the next open sizes it again.
                with (
                    anyio.CancelScope(shield=True),
                    suppress(sqlite3.Error, ValueError, StoreRetryable),
                ):
                    await self.call(set_cache_size, STEADY_CACHE_KIB)

    async def check_writable(self, timeout_s: float) -> None:
        """Raise ``StoreBusy`` if another program holds the store's write lock (for longer
        than ``timeout_s``), another ``StoreError`` if the store cannot be written at all.

        The lock is taken and given back on a connection of its own (``db.check_writable``).
        Skipped while this store's own writer is at work: that is the daemon working (a
        writer held up by another program pauses, and says so, by itself). Meanwhile this
        store's writer waits for the check, so a lock found busy is another program's.
        """
        try:
            self._lock.acquire_nowait()
        except anyio.WouldBlock:
            return
        try:
            await anyio.to_thread.run_sync(check_writable, self.path, timeout_s)
        finally:
            self._lock.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, outside any other task's transaction."""
        async with self._lock:
            yield self.db

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read-only connection that does not wait for the writer (opened on first use).

        What it reads is the last committed state: a transaction under way in the
        writer's connection is not seen until it commits.
        """
        async with self._reader_lock:
            if self._reader is None:
                self._reader = await open_reader(self.path)
            yield self._reader

    async def close(self) -> None:
        """Close the connections (waits for a running transaction to finish)."""
        async with self._reader_lock:
            if self._reader is not None:
                await self._reader.close()
                self._reader = None
        async with self._lock:
            await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _begin_immediate(conn: sqlite3.Connection) -> None:
    end_abandoned_transaction(conn)
    conn.execute("BEGIN IMMEDIATE")


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    _begin_immediate(conn)
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise
    return result


def end_abandoned_transaction(conn: sqlite3.Connection) -> None:
    """Roll back a transaction a failed unit of work left open on the writer's connection.

    Every unit of work runs under the store's lock and ends its transaction; one that is
    still open when the next unit starts belongs to a unit that failed half way (its COMMIT
    never returned, so nothing it wrote was acknowledged). Rolling it back is that unit's
    failure finished; starting on top of it would fail every write from then on ("cannot
    start a transaction within a transaction").
    """
    if conn.in_transaction:
        conn.execute("ROLLBACK")
