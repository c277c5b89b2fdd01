"""What the daemon tells systemd (STATUS=) and ``/readyz``, from its pauses: the pause board's
texts and change notices, and the store's write-lock check against a real lock held by
another program."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.process.health import PauseBoard
from dropsync.daemon.process.runner import summary_line
from dropsync.daemon.process.runstate import RuntimeFile, read_runtime
from dropsync.store.errors import StoreBusy, StoreError
from dropsync.store.handle import Store

from tests.support import StoreLockHolder


def test_the_board_groups_pauses_by_condition_and_tells_each_change_once(tmp_path: Path) -> None:
    board = PauseBoard(RuntimeFile(tmp_path / "s.db"))
    changes: list[str] = []
    board.on_change = lambda: changes.append(board.status_text())
    board.set_state("running")
    assert (board.status_text(), board.not_ready()) == ("", [])
    board.paused("ingest", "store busy", "store /x/s.db is busy", 0.5)
    board.paused("ingest", "store busy", "store /x/s.db is busy", 1.0)  # a retry: no change
    board.paused("inbox", "store busy", "store /x/s.db is busy", 0.5)
    board.paused("watcher", "drop folder missing", "/x/drop is gone", 5)
    assert len(changes) == 4  # running, and three new pauses
    assert re.fullmatch(
        r"store busy: (ingest, inbox|inbox, ingest) paused since \d\d:\d\d:\d\d; "
        r"drop folder missing: watcher paused since \d\d:\d\d:\d\d",
        changes[-1],
    )
    # Readiness: each pause, without its detail (paths stay in the runtime file).
    assert sorted(board.not_ready()) == [
        "drop folder missing: watcher paused",
        "store busy: inbox paused",
        "store busy: ingest paused",
    ]
    board.resumed("ingest", "store busy")
    board.resumed("inbox", "store busy")
    board.resumed("inbox", "store busy")  # not paused: no change
    board.resumed("watcher", "drop folder missing")
    assert len(changes) == 7 and changes[-1] == ""
    board.set_state("stopping")
    assert board.not_ready() == ["stopping"]
    board.close()


def test_a_refused_reload_is_in_the_runtime_file_and_status_until_one_succeeds(
    tmp_path: Path,
) -> None:
    board = PauseBoard(RuntimeFile(tmp_path / "s.db"))
    changes: list[str] = []
    board.on_change = lambda: changes.append(board.status_text())
    board.set_state("running")
    error = "/etc/dropsync/dropsync.toml: drop.settle_ms: expected an integer >= 0 " + "x" * 500
    board.refused_reload(error)
    assert changes[-1] == f"reload refused: {error}"
    assert board.not_ready() == []  # it works on, with its previous config
    state = read_runtime(tmp_path / "s.db")
    assert state is not None
    assert state["reload_refused"]["error"] == error[:300]  # the file has a fixed size
    board.refused_reload(None)
    assert changes[-1] == ""
    state = read_runtime(tmp_path / "s.db")
    assert state is not None and "reload_refused" not in state
    board.close()


def test_summary_line_has_a_place_for_users_a_provider_pauses() -> None:
    row = {"provider": "fav", "pending": 3, "state": "online"}
    assert summary_line({"providers": [row], "inbox_pending": 0}) == "pending fav=3; inbox 0"
    # Favourites pause users one by one; the summary lists them, STATUS= counts them.
    row["paused_users"] = [{"user": "carol"}, {"user": "dave"}]
    assert summary_line({"providers": [row], "inbox_pending": 0}) == (
        "pending fav=3; fav 2 user(s) paused; inbox 0"
    )


@pytest.mark.anyio
async def test_check_writable_finds_another_programs_lock_and_never_waits_for_its_own(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    async with await Store.open(db) as store:
        await store.check_writable(0.2)  # free: nothing raised
        holder = StoreLockHolder(db)
        try:
            with pytest.raises(StoreBusy, match="another program holds its write lock"):
                await store.check_writable(0.2)
        finally:
            holder.release()
        await store.check_writable(0.2)
        # While the daemon's own writer works, the check stands aside (and takes nothing).
        started, finish = threading.Event(), threading.Event()

        def slow(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO cursors VALUES ('p', 'n', 'v', 1)")
            started.set()
            finish.wait(30)

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.transact, slow)
            await anyio.to_thread.run_sync(started.wait, 30)
            with anyio.fail_after(10):
                await store.check_writable(0.2)
            finish.set()
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM cursors").fetchone() == (1,)
        # The store moved away under the daemon: it cannot be written.
        db.rename(tmp_path / "moved.db")
        with pytest.raises(StoreError):
            await store.check_writable(0.2)
        # A FIFO in its place (opening one waits for a writer): said at once, never waited on.
        os.mkfifo(db)
        with anyio.fail_after(10), pytest.raises(StoreError, match="is not a regular file"):
            await store.check_writable(0.2)
        db.unlink()
        (tmp_path / "moved.db").rename(db)
