"""The store handle: the one private aiosqlite call, and waiting out a busy store or a full disk."""

from __future__ import annotations

import inspect
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import anyio
import pytest
from dropsync.store.db import BULK_CACHE_KIB, STEADY_CACHE_KIB
from dropsync.store.errors import StoreBusy, StoreFull
from dropsync.store.handle import Store, run_in_connection_thread

from tests.support import SmallFileSystem, StoreLockHolder

pytestmark = pytest.mark.anyio

UPGRADE_NOTE = (
    "aiosqlite {version} changed Connection._execute/_conn, which store.handle."
    "run_in_connection_thread relies on (aiosqlite has no public way to run a unit of work in "
    "its thread). Adapt that one function, then widen the pin in pyproject.toml."
)


class Recorder:
    """A PauseListener that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.paused_once = anyio.Event()

    def paused(self, work: str, condition: str, detail: str, retry_in_s: float) -> None:
        self.events.append(("paused", work, condition))
        self.paused_once.set()

    def resumed(self, work: str, condition: str) -> None:
        self.events.append(("resumed", work, condition))


def _set_cursor(conn: sqlite3.Connection, *, value: str) -> None:
    conn.execute("INSERT INTO cursors VALUES ('p', 'n', ?, 1)", (value,))


def _insert(conn: sqlite3.Connection, key: str, body: str = "{}") -> int:
    conn.execute(
        "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES ('c', ?, 'upsert', ?, 1)",
        (key, body),
    )
    return int(conn.execute("SELECT COUNT(*) FROM inbox WHERE key = ?", (key,)).fetchone()[0])


async def test_aiosqlite_runs_a_unit_of_work_in_its_own_thread(tmp_path: Path) -> None:
    # Holds the one private call: fails loudly (with what to do) if an upgrade changes it.
    note = UPGRADE_NOTE.format(version=aiosqlite.__version__)
    execute = getattr(aiosqlite.Connection, "_execute", None)
    assert execute is not None and inspect.iscoroutinefunction(execute), note
    assert isinstance(getattr(aiosqlite.Connection, "_conn", None), property), note
    async with aiosqlite.connect(tmp_path / "x.db") as db:
        caller = threading.get_ident()

        def work(conn: sqlite3.Connection, value: int) -> tuple[int, int]:
            # sqlite3 refuses a connection used outside its own thread: this proves the thread.
            return conn.execute("SELECT ?", (value,)).fetchone()[0], threading.get_ident()

        value, thread = await run_in_connection_thread(db, work, 7)
        assert value == 7 and thread != caller, note

        def fails(conn: sqlite3.Connection) -> None:
            raise LookupError("raised in the thread")

        with pytest.raises(LookupError, match="raised in the thread"):
            await run_in_connection_thread(db, fails)


async def test_a_lock_held_by_another_program_pauses_writes_until_released(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    recorder = Recorder()
    async with await Store.open(db, pauses=recorder) as store:
        await store.db.execute("PRAGMA busy_timeout = 50")  # the wait inside SQLite, made short
        holder = StoreLockHolder(db)
        try:
            results: list[int] = []
            async with anyio.create_task_group() as tg:

                async def write() -> None:
                    results.append(await store.transact(_insert, "k"))

                tg.start_soon(write)
                await recorder.paused_once.wait()
                assert results == []  # nothing got through while the lock was held
                holder.release()
            assert results == [1]  # committed once, not twice
            # keyword arguments reach the unit of work
            holder = StoreLockHolder(db)
            recorder.paused_once = anyio.Event()
            async with anyio.create_task_group() as tg:

                async def write_cursor() -> None:
                    await store.transact(_set_cursor, value="v")

                tg.start_soon(write_cursor)
                await recorder.paused_once.wait()
                holder.release()
        finally:
            holder.close()
    assert ("paused", "store", "store busy") in recorder.events
    assert recorder.events[-1] == ("resumed", "store", "store busy")
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 1
    assert raw.execute("SELECT COUNT(*) FROM cursors").fetchone()[0] == 1
    raw.close()


async def test_without_a_listener_a_busy_store_is_an_error_that_says_so(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with await Store.open(db) as store:
        await store.db.execute("PRAGMA busy_timeout = 50")
        holder = StoreLockHolder(db)
        try:
            with pytest.raises(StoreBusy, match="another program holds its write lock"):
                await store.transact(_insert, "k")
        finally:
            holder.release()
        assert await store.transact(_insert, "k") == 1  # usable again


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFileSystem]:
    fs = SmallFileSystem(tmp_path / "fs", size_kb=1024)
    yield fs
    fs.close()


async def test_a_full_disk_pauses_writes_and_they_resume_when_space_returns(
    small_fs: SmallFileSystem,
) -> None:
    db = small_fs.path / "s.db"
    recorder = Recorder()
    async with await Store.open(db, pauses=recorder) as store:
        small_fs.fill()
        big = '{"x": "' + "y" * 200_000 + '"}'
        results: list[int] = []
        async with anyio.create_task_group() as tg:

            async def write() -> None:
                results.append(await store.transact(_insert, "k", big))

            tg.start_soon(write)
            await recorder.paused_once.wait()
            assert results == []
            small_fs.free()
        assert results == [1]
    assert ("paused", "store", "disk full") in recorder.events
    assert recorder.events[-1] == ("resumed", "store", "disk full")


async def test_without_a_listener_a_full_disk_is_an_error_that_says_so(
    small_fs: SmallFileSystem,
) -> None:
    db = small_fs.path / "s.db"
    async with await Store.open(db) as store:
        small_fs.fill()
        with pytest.raises(StoreFull, match="disk is full"):
            await store.transact(_insert, "k", '{"x": "' + "y" * 200_000 + '"}')
        small_fs.free()
        assert await store.transact(_insert, "k") == 1


def _leave_a_transaction_open(conn: sqlite3.Connection) -> None:
    # A unit of work that failed between its BEGIN and its COMMIT (what a COMMIT that never
    # returned leaves behind).
    conn.execute("BEGIN")
    _insert(conn, "abandoned")


async def test_a_transaction_left_open_by_a_failed_unit_does_not_stop_every_later_write(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await store.call(_leave_a_transaction_open)
        await store.transact(_insert, "after")  # was: cannot start a transaction within ...
        await store.call(_leave_a_transaction_open)
        await store.transact(_insert, "written")
    conn = sqlite3.connect(tmp_path / "s.db")
    keys = [row[0] for row in conn.execute("SELECT key FROM inbox ORDER BY id")]
    conn.close()
    assert keys == ["after", "written"]  # the abandoned units' rows were never committed


async def test_a_write_cancelled_while_it_waits_for_the_thread_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    """Campaign finding (provider faults, full size): a reload cancelled a pull's write while
    its BEGIN waited for the connection's thread; the BEGIN ran all the same and nobody ended
    it, so the next transaction failed ("cannot start a transaction within a transaction") and
    the daemon exited. A unit of work handed to the thread runs whole (it is shielded)."""
    async with await Store.open(tmp_path / "s.db") as store:
        busy, release = threading.Event(), threading.Event()

        def occupy(conn: sqlite3.Connection) -> None:
            busy.set()
            release.wait(30)

        async def writer() -> None:
            await store.transact(_insert, "cancelled")

        async with anyio.create_task_group() as outer:
            outer.start_soon(run_in_connection_thread, store.db, occupy)
            await anyio.to_thread.run_sync(busy.wait)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(writer)
                    # The writer's BEGIN is queued behind the work occupying the thread.
                    while store.db._tx.empty():  # noqa: ASYNC110 -- aiosqlite's queue
                        await anyio.sleep(0.01)
                    scope.cancel()
                    # The cancelled writer waits (shielded) for its BEGIN to end it.
                    release.set()
        assert not await run_in_connection_thread(store.db, lambda conn: conn.in_transaction)
        assert await store.transact(_insert, "k") == 1


async def _cache_kib(store: Store) -> int:
    return -int(await store.call(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0]))


async def test_the_writer_cache_is_small_at_rest_and_large_while_a_bulk_unit_runs(
    tmp_path: Path,
) -> None:
    """At 16 MiB always, the daemon's RSS grew for 35 minutes of the soak as the cache
    filled; at rest it is 4 MiB, and only bulk units (big files) get the large one."""
    async with await Store.open(tmp_path / "s.db") as store:
        assert await _cache_kib(store) == STEADY_CACHE_KIB < BULK_CACHE_KIB
        async with store.bulk():
            assert await _cache_kib(store) == BULK_CACHE_KIB
            async with store.bulk():  # a second big file at once
                pass
            assert await _cache_kib(store) == BULK_CACHE_KIB
        assert await _cache_kib(store) == STEADY_CACHE_KIB
        with pytest.raises(RuntimeError):
            async with store.bulk():
                raise RuntimeError("the big file failed")
        assert await _cache_kib(store) == STEADY_CACHE_KIB
