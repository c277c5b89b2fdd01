"""A store that cannot be opened: the message names the path and the real cause.

Only a file SQLite itself reports as damaged suggests ``PRAGMA integrity_check``; a
read-only folder, a folder where the file should be, a missing folder or a permission
refused say so. The command runs as a real subprocess; as root (which ignores file
permissions) it runs without the capabilities that let root ignore them.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

# Root reads and writes whatever the permission bits say; without these two
# capabilities it is refused like anyone else.
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run so that file permissions apply to it."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return [*DROP_DAC, *argv]


def dropsync(*words: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        unprivileged([sys.executable, "-m", "dropsync.daemon.cli", *words]),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def make_store(path: Path) -> None:
    """A real, migrated store (through the CLI's own ingest path would be slower)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import anyio, sys; from pathlib import Path; from dropsync.store.handle import Store\n"
            "async def main():\n    async with await Store.open(Path(sys.argv[1])): pass\n"
            "anyio.run(main)",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    assert done.returncode == 0


@pytest.fixture
def chmods() -> Iterator[Callable[[Path, int], None]]:
    """chmod that is undone after the test (so tmp_path can be removed)."""
    changed: list[tuple[Path, int]] = []

    def chmod(path: Path, mode: int) -> None:
        changed.append((path, path.stat().st_mode & 0o7777))
        path.chmod(mode)

    yield chmod
    for path, mode in reversed(changed):
        path.chmod(mode)


def error_of(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The one error line: ``dropsync: ...`` on stderr, or the daemon's ``fatal_error`` event."""
    assert "Traceback" not in done.stdout + done.stderr
    if command == "run":
        events = [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]
        [fatal] = [e for e in events if e.get("level") == "error"]
        assert fatal["event"] == "fatal_error"
        return str(fatal["error"])
    [line] = done.stderr.splitlines()
    assert line.startswith("dropsync: ")
    return line


def config(tmp_path: Path, store: Path) -> Path:
    path = tmp_path / "dropsync.toml"
    path.write_text(f'[store]\npath = "{store}"\n[drop]\npath = "{tmp_path / "drop"}"\n')
    return path


@pytest.mark.parametrize("command", ["status", "run"])
def test_a_read_only_folder_is_named_with_the_cause(
    tmp_path: Path, command: str, chmods: Callable[[Path, int], None]
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    store = folder / "dropsync.db"
    if command == "status":
        make_store(store)  # it exists: readers need the folder too (for -wal and -shm)
    chmods(folder, 0o555)
    done = dropsync(command, "--config", str(config(tmp_path, store)), cwd=tmp_path)
    assert done.returncode == 1
    message = error_of(done, command)
    assert f"store {store}: cannot create files in its folder {folder}: Permission denied" in (
        message
    )
    assert "integrity_check" not in message


@pytest.mark.parametrize("command", ["status", "run", "why"])
def test_a_store_path_that_is_a_folder_says_so(tmp_path: Path, command: str) -> None:
    store = tmp_path / "store.db"
    store.mkdir()
    words = [command, "contacts", "k"] if command == "why" else [command]
    done = dropsync(*words, "--config", str(config(tmp_path, store)), cwd=tmp_path)
    assert done.returncode == 1
    message = error_of(done, command)
    assert f"store {store}: is a folder, not a file" in message
    assert "integrity_check" not in message


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    store = tmp_path / "no/such/dir/dropsync.db"
    done = dropsync("status", "--config", str(config(tmp_path, store)), cwd=tmp_path)
    assert done.returncode == 1
    message = error_of(done, "status")
    assert message.startswith(
        f"dropsync: store {store} does not exist, nor does its folder {store.parent}; that path "
        f"is [store] path '{store}' in {tmp_path / 'dropsync.toml'} (from --config)."
    )
    assert "Only 'dropsync run' creates a store" in message


def test_run_names_the_folder_it_cannot_create(
    tmp_path: Path, chmods: Callable[[Path, int], None]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    chmods(locked, 0o555)
    store = locked / "state/dropsync.db"
    done = dropsync("run", "--config", str(config(tmp_path, store)), cwd=tmp_path)
    assert done.returncode == 1
    assert error_of(done, "run") == (
        f"store {store}: cannot create its folder {locked / 'state'}: Permission denied"
    )


@pytest.mark.parametrize(("command", "mode"), [("status", 0o000), ("run", 0o444)])
def test_a_file_this_user_may_not_open_is_named(
    tmp_path: Path, command: str, mode: int, chmods: Callable[[Path, int], None]
) -> None:
    store = tmp_path / "dropsync.db"
    make_store(store)
    chmods(store, mode)
    done = dropsync(command, "--config", str(config(tmp_path, store)), cwd=tmp_path)
    assert done.returncode == 1
    action = "read the file" if command == "status" else "open the file for writing"
    assert f"store {store}: cannot {action}: Permission denied" in error_of(done, command)


@pytest.mark.parametrize("command", ["status", "run"])
def test_only_a_damaged_file_suggests_integrity_check(tmp_path: Path, command: str) -> None:
    store = tmp_path / "dropsync.db"
    store.write_bytes(b"this is not a database, it is a text file " * 200)
    done = dropsync(command, "--config", str(config(tmp_path, store)), cwd=tmp_path)
    assert done.returncode == 1
    message = error_of(done, command)
    assert f"store {store} is damaged or is not an SQLite database" in message
    assert f"sqlite3 {store} 'PRAGMA integrity_check'" in message


def test_a_table_dropped_by_hand_is_not_called_damage(tmp_path: Path) -> None:
    store = tmp_path / "dropsync.db"
    make_store(store)
    raw = sqlite3.connect(store)
    raw.execute("DROP TABLE files_by_status")
    raw.commit()
    raw.close()
    done = dropsync("status", "--config", str(config(tmp_path, store)), cwd=tmp_path)
    assert done.returncode == 1
    message = error_of(done, "status")
    assert "no such table: files_by_status" in message and "changed by hand" in message
    assert "integrity_check" not in message


def test_looking_for_the_cause_never_ends_the_locks_this_process_holds(tmp_path: Path) -> None:
    # The daemon asks why a read-only open failed (/healthz, /metrics) while its own writer
    # holds the store: closing any descriptor of the store (or its -wal, -shm) ends every
    # POSIX lock the process has on that file, SQLite's included, and another program could
    # then write beside a transaction that believes it holds the write lock.

    from dropsync.store.diagnosis import filesystem_cause

    db = tmp_path / "s.db"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    other = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
        "try:\n    c.execute('BEGIN IMMEDIATE')\n    print('took the write lock')\n"
        "except sqlite3.OperationalError as e:\n    print(e)\n"
    )

    def another_program() -> str:
        done = subprocess.run(
            [sys.executable, "-c", other, str(db)], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert another_program() == "database is locked"
    for writing in (True, False):
        assert filesystem_cause(db, writing=writing) is None
        assert another_program() == "database is locked"
    writer.execute("ROLLBACK")
    writer.close()
