"""Campaign 6: the store and the disk under pressure; the drop folder pulled away.

Each test runs the daemon as a subprocess against the real emulators and a real store; the
disk-full test mounts a small tmpfs (the machine allows it when run as root; else it is skipped
with the reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.store.db import WAL_SIZE_LIMIT

from tests.harness import oracle
from tests.harness.world import World, make_world
from tests.support import query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(300)]

WAL_LIMIT = WAL_SIZE_LIMIT  # docs/schema.md, "A reader holding a snapshot"


@pytest.fixture
def world(tmp_path: Path, seed: int) -> Iterator[World]:
    made = make_world(tmp_path / "world", seed)
    yield made
    made.close()


def _ingested(world: World, count: int) -> bool:
    world.check_alive()
    assert not world.exits, world.exits
    return (
        oracle.is_settled(world.store, world.drop) is None
        and len(oracle.StoreView(world.store).files) >= count
    )


def _checkpointed_records(world: World) -> int | None:
    """How many records the store's main file holds by itself (its WAL left out): what the
    checkpoints copied back. None if the copy was taken mid-checkpoint."""
    copy = world.root / "main-file-only.db"
    try:
        shutil.copyfile(world.store, copy)
        db = sqlite3.connect(f"file:{copy}?immutable=1", uri=True)  # the WAL is not read
        try:
            return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None


def test_a_reader_holding_a_transaction_does_not_stop_ingest_and_the_wal_is_checkpointed_after(
    world: World,
) -> None:
    world.daemon.start()
    world.load.drop_file("contacts", count=10, bad=False)
    wait_until(lambda: _ingested(world, 1), what="first file")
    reader = sqlite3.connect(world.store, timeout=30, isolation_level=None)
    reader.execute("BEGIN")
    held = reader.execute("SELECT COUNT(*) FROM records").fetchone()[0]  # a snapshot held open
    try:
        for _ in range(8):
            world.load.drop_file("contacts", count=300, bad=False)
        wait_until(lambda: _ingested(world, 9), what="ingest while a reader holds a snapshot")
        # No checkpoint can pass the reader's snapshot: the WAL holds all that came after it.
        assert (_checkpointed_records(world) or 0) <= held
        assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == held
        wal_while_held = os.path.getsize(f"{world.store}-wal")
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert wal_while_held > WAL_LIMIT  # it grew past what it is cut back to once checkpointed
    for _ in range(2):
        world.load.drop_file("contacts", count=10, bad=False)
    wait_until(lambda: _ingested(world, 11), what="ingest after the reader let go")
    # Once the reader let go, the WAL is checkpointed (the main file holds every record),
    # and the file is cut back when the daemon starts it over.
    total = query(world.store, "SELECT COUNT(*) FROM records")[0][0]
    wait_until(lambda: _checkpointed_records(world) == total, what="the WAL checkpointed")
    wait_until(lambda: os.path.getsize(f"{world.store}-wal") <= WAL_LIMIT, what="the WAL cut back")
    print(f"WAL while the reader held: {wal_while_held} bytes, after: <= {WAL_LIMIT}")
    assert world.stop() == 0
    assert world.final_violations() == [] or all(
        v.invariant == "delivered" for v in world.final_violations()
    )


def test_a_write_lock_held_by_another_program_pauses_and_loses_nothing(world: World) -> None:
    world.daemon.start()
    world.load.drop_file("contacts", count=20, bad=False)
    wait_until(lambda: _ingested(world, 1), what="first file")
    locker = sqlite3.connect(world.store, timeout=30, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        world.load.drop_file("contacts", count=20, bad=False)
        time.sleep(6)  # longer than the daemon's 5 s busy timeout: the lock is the point
        world.check_alive()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    world.load.insert_rows(5)
    world.load.drop_file("contacts", count=20, bad=False)
    assert world.settle(60) is None
    assert not world.exits, world.exits
    assert world.stop() == 0


def test_a_second_run_on_the_same_store_is_refused_at_once(world: World) -> None:
    world.daemon.start()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "run",
            "--config",
            str(world.daemon.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env=world.daemon.env,  # its secrets too: refused for the store, not for a missing token
    )
    assert second.returncode != 0
    assert "another dropsync daemon" in second.stdout + second.stderr
    assert str(world.store) in second.stdout + second.stderr
    assert world.stop() == 0


def test_the_drop_folder_deleted_and_recreated_while_it_runs(world: World) -> None:
    world.daemon.start()
    world.load.drop_file("contacts", count=3, bad=False)
    wait_until(lambda: _ingested(world, 1), what="first file")
    for round_ in range(2):  # and again: the folder made again is watched again
        shutil.rmtree(world.drop)
        world.daemon.wait_for("work_paused", condition="drop folder missing")
        config = str(world.daemon.config_path)
        status = subprocess.run(
            [sys.executable, "-m", "dropsync.daemon.cli", "status", "--config", config],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "drop folder missing" in status.stdout, status.stdout + status.stderr
        world.daemon.mark_log()
        world.load.drop_file("contacts", count=3, bad=False)  # recreates drop/contacts
        world.daemon.wait_for("work_resumed", condition="drop folder missing")
        files = 2 + round_
        wait_until(lambda: _ingested(world, files), what="a file in the recreated folder")  # noqa: B023
        world.daemon.mark_log()
    world.check_alive()
    assert not world.exits, world.exits
    assert world.stop() == 0


@contextlib.contextmanager
def small_disk(path: Path, size: str = "24m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size}",
            f"campaign-{uuid.uuid4().hex[:6]}",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 20))
            out.flush()
    return filler


def test_a_full_disk_pauses_ingest_and_delivery_and_they_resume(tmp_path: Path, seed: int) -> None:
    with small_disk(tmp_path / "disk") as disk:
        world = make_world(disk / "world", seed)
        try:
            world.daemon.start()
            world.load.drop_file("contacts", count=50, bad=False)
            wait_until(lambda: _ingested(world, 1), what="first file")
            staged = []
            for _ in range(3):  # written now, renamed in once the disk is full
                # (not renamed in: the daemon takes a file renamed in at once)
                dropped = world.load.drop_file("contacts", count=400, bad=False, staged=True)
                staged.append(world.drop / dropped.collection / dropped.name)
            world.load.insert_rows(10)  # before: with the disk full no program can insert
            filler = _fill(disk)
            for path in staged:
                os.rename(f"{path}.part", path)
            # The daemon pauses and says so (and stays up) ...
            world.daemon.wait_for("work_paused", condition="disk full")
            world.check_alive()
            assert not world.exits, world.exits
            filler.unlink()  # space returns: the daemon resumes by itself
            assert world.settle(90) is None
            assert not world.exits, world.exits
            assert world.stop() == 0
            assert query(world.store, "PRAGMA integrity_check") == [("ok",)]
        finally:
            world.close()
