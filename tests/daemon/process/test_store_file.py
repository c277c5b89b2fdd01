"""The store's path watched: a store removed or replaced under the daemon is copied beside it,
once the copy can be written (the daemon holds the file open meanwhile)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from dropsync.daemon.process.store_file import file_identity, wait_until_replaced
from dropsync.store.handle import Store
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio


async def test_the_copy_waits_until_it_can_be_written_and_keeps_every_write(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    path = folder / "s.db"
    async with await Store.open(path) as store:
        opened = file_identity(path)
        await store.transact(
            lambda db: db.execute(
                "INSERT INTO cursors (provider, name, value, updated_at) VALUES ('p', 's', 'v', 1)"
            )
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_until_replaced, store, path, opened, 0.01)
                shutil.rmtree(folder)  # the store, its folder and all beside it
                await _wait_for(logs, "store_copy_failed")
                folder.mkdir()  # room again: the next try writes the copy
        events = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in events] == ["store_copy_failed", "store_replaced"]
    assert events[1]["found"] == "nothing"
    kept = Path(events[1]["kept"])
    assert kept.parent == folder and kept.name.startswith("s.db.kept-")
    with sqlite3.connect(kept) as copy:
        assert copy.execute("SELECT provider, name, value FROM cursors").fetchall() == [
            ("p", "s", "v")
        ]
    assert not path.exists()


async def test_an_unchanged_store_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await Store.open(path) as store:
        with capture_logs() as logs, anyio.move_on_after(0.2):
            await wait_until_replaced(store, path, file_identity(path), 0.01)
    assert [e for e in logs if e["log_level"] == "error"] == []
    assert list(tmp_path.glob("*.kept-*")) == []


async def _wait_for(logs: Sequence[Mapping[str, Any]], event: str) -> None:
    with anyio.fail_after(30):
        while not any(e["event"] == event for e in logs):  # noqa: ASYNC110 -- a log list
            await anyio.sleep(0.01)
