"""``dropsync backup PATH [--force]``: what it may write, and what ``--force`` may replace."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.config import load_config
from dropsync.store.handle import Store
from dropsync.store.maintenance import PARTIAL_PREFIX

from tests.support import query

DROPSYNC = [sys.executable, "-m", "dropsync.daemon.cli"]


def setup(tmp_path: Path) -> Path:
    """A config (store s.db, drop folder drop/) and its store, made as ``run`` makes it."""
    config = tmp_path / "dropsync.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        "settle_ms = 20\n"
        '[collections.contacts]\nkey = "email"\ntimestamp = "at"\ntimestamp_unit = "ms"\n'
    )

    async def create() -> None:
        async with await Store.open(load_config(str(config)).store_path):
            pass

    anyio.run(create)
    return config


def backup(
    config: Path, target: Path | str, capsys: pytest.CaptureFixture[str], *force: str
) -> tuple[int, str]:
    code = main(["backup", str(target), "--config", str(config), *force])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("s.db", "the store"),
        ("s.db-wal", "write-ahead log"),
        ("s.db-shm", "shared-memory index"),
        ("s.db-journal", "rollback journal"),
        ("s.db.lock", "instance lock"),
        ("s.db.runtime.json", "runtime file"),
        (".s.db.spool", "spool folder"),
        (".s.db.spool/churn/x.db", "spool folder"),
    ],
)
@pytest.mark.parametrize("force", [(), ("--force",)])
def test_the_store_and_what_is_kept_beside_it_are_never_a_backup_target(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    what: str,
    force: tuple[str, ...],
) -> None:
    config = setup(tmp_path)
    target = tmp_path / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"keep")
    before = target.read_bytes() if target.is_file() else None
    code, err = backup(config, target, capsys, *force)
    assert code == 2 and what in err and "never" in err, err
    assert (target.read_bytes() if target.is_file() else None) == before
    # Nor when it does not exist yet (a new -wal beside a stopped store is taken for its log).
    if name not in ("s.db", ".s.db.spool"):
        target.unlink()
        code, err = backup(config, target, capsys, *force)
        assert code == 2 and what in err, err
        assert not target.exists()


def test_a_link_to_a_companion_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup(tmp_path)
    (tmp_path / "s.db-wal").write_bytes(b"keep")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/wal").symlink_to(tmp_path / "s.db-wal")
    code, err = backup(config, tmp_path / "other/wal", capsys, "--force")
    assert code == 2 and "write-ahead log" in err
    assert (tmp_path / "s.db-wal").read_bytes() == b"keep"


@pytest.mark.parametrize("name", ["contacts/b.db", "b.db", "contacts/.done/b.db"])
@pytest.mark.parametrize("force", [(), ("--force",)])
def test_a_backup_is_never_written_into_the_drop_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, force: tuple[str, ...]
) -> None:
    config = setup(tmp_path)
    target = tmp_path / "drop" / name
    target.parent.mkdir(parents=True)
    code, err = backup(config, target, capsys, *force)
    assert code == 2 and "inside the drop folder" in err, err
    assert not target.exists()
    target.write_bytes(b"[]")
    code, err = backup(config, target, capsys, *force)
    assert code == 2 and "inside the drop folder" in err, err
    assert target.read_bytes() == b"[]"


def special(kind: str, path: Path, elsewhere: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of its own
    elif kind == "link":
        elsewhere.write_bytes(b"keep")
        path.symlink_to(elsewhere)
    elif kind == "dangling link":
        path.symlink_to(elsewhere)
    elif kind == "socket":
        import socket

        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("fifo", "a FIFO"),
        ("device", "a character device"),
        ("link", "a symbolic link"),
        ("dangling link", "a symbolic link"),
        ("socket", "a socket"),
    ],
)
def test_force_replaces_only_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, words: str
) -> None:
    if kind == "device" and os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    config = setup(tmp_path)
    target, elsewhere = tmp_path / "target.db", tmp_path / "elsewhere"
    special(kind, target, elsewhere)
    before = os.lstat(target)
    code, err = backup(config, target, capsys, "--force")
    assert code == 2, err
    assert words in err and "--force replaces only a regular file" in err
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if kind == "link":
        assert elsewhere.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_force_replaces_a_regular_file_and_leaves_no_partial_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup(tmp_path)
    target = tmp_path / "old.db"
    target.write_bytes(b"an old backup")
    mine = tmp_path / "old.db.part"  # a file of the user's that happens to have this name
    mine.write_bytes(b"mine")
    code, err = backup(config, target, capsys, "--force")
    assert (code, err) == (0, "")
    assert query(target, "PRAGMA user_version")[0][0] > 0
    assert mine.read_bytes() == b"mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(PARTIAL_PREFIX)] == []


def test_the_files_sqlite_keeps_beside_a_linked_store_are_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite keeps -wal and -shm beside the file a link names, not beside the link.
    (tmp_path / "real").mkdir()
    (tmp_path / "s.db").symlink_to(tmp_path / "real/x.db")
    config = setup(tmp_path)
    assert (tmp_path / "real/x.db-wal").exists() or (tmp_path / "real/x.db").exists()
    (tmp_path / "real/x.db-wal").write_bytes(b"keep")
    code, err = backup(config, tmp_path / "real/x.db-wal", capsys, "--force")
    assert code == 2 and "write-ahead log" in err, err
    assert (tmp_path / "real/x.db-wal").read_bytes() == b"keep"
