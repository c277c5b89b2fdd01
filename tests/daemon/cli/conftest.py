"""The store the status tests read: migrated, with two providers, and a daemon's lock."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.process.instance import InstanceLock
from dropsync.store.handle import Store


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config naming a migrated store with two providers, crm and churn, both fine."""
    path = tmp_path / "dropsync.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n')

    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    sql(tmp_path, "INSERT INTO providers (name, kind, updated_at) VALUES ('crm', 'crm', 0)")
    sql(tmp_path, "INSERT INTO providers (name, kind, updated_at) VALUES ('churn', 'churn', 0)")
    return path


@pytest.fixture
def running(tmp_path: Path) -> Iterator[None]:
    """The daemon's instance lock held, as a running daemon holds it."""
    lock = InstanceLock(tmp_path / "s.db")
    lock.acquire()
    yield
    lock.release()


def sql(tmp_path: Path, statement: str, *params: object) -> None:
    """Run one statement on the fixture's store and commit it."""
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(statement, params)
    db.commit()
    db.close()


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)
