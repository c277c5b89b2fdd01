"""The daemon's handle on the store: one connection, one writer at a time."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import anyio
from dropsync.store.db import open_reader, open_store, transaction

T = TypeVar("T")


class Store:
    """One aiosqlite connection (one thread owns it) shared by the daemon's tasks.

    ``write()`` serialises write transactions between tasks; ``read()`` gives
    the connection to a task between transactions, so it never sees another
    task's half-done work. ``snapshot()`` is a second, read-only connection for
    reads that need not wait for the writer: it sees the last committed state.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._lock = anyio.Lock()
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = anyio.Lock()

    @classmethod
    async def open(cls, path: Path, *, backups: list[Path] | None = None) -> Store:
        """Open (creating or migrating it) the store at ``path``.

        A backup taken before migrating is appended to ``backups`` (see ``open_store``).
        """
        return cls(await open_store(path, backups=backups), path)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction, committed on success; waits for other tasks' transactions."""
        async with self._lock, transaction(self.db) as db:
            yield db

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the connection's thread, between transactions.

        aiosqlite's worker thread owns the connection; handing it a whole unit of
        work (``Connection._execute``) costs one round trip instead of one per
        statement, and lets the event loop parse the next batch meanwhile.
        """
        async with self._lock:
            with anyio.CancelScope(shield=True):
                result = await self._run(fn, *args)
        return result

    async def transact(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one IMMEDIATE transaction in the connection's thread.

        Committed if ``fn`` returns, rolled back if it raises. Once started it is
        not cancelled: a stop request lets the transaction finish first.
        """
        async with self._lock:
            with anyio.CancelScope(shield=True):
                result: T = await self._run(_in_transaction, fn, *args)
        return result

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # aiosqlite's worker thread owns the connection; _execute runs fn there.
        execute = cast(Callable[..., Awaitable[T]], self.db._execute)
        return await execute(fn, self.db._conn, *args)

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


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
