"""Backups while the daemon runs, the backup before a migration, ``migrate --dry-run``,
``init`` and ``systemd-unit``."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.cli.init import example_config
from dropsync.daemon.config import load_config
from dropsync.daemon.process.instance import InstanceLock, holder
from dropsync.store.db import open_store
from dropsync.store.handle import Store
from dropsync.store.schema import latest_version

from tests.support import ROOT, query

DROPSYNC = [sys.executable, "-m", "dropsync.daemon.cli"]


def old_store(path: Path, version: int) -> None:
    """A store at schema ``version`` holding one record."""

    async def build() -> None:
        db = await open_store(path, target=version)
        await db.execute(
            "INSERT INTO records (collection, key, body, updated_at, origin, digest, merged_at) "
            "VALUES ('contacts', 'a@x', '{}', 1, 'sql', 'd', 1)"
        )
        await db.close()

    anyio.run(build)


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def test_the_store_is_backed_up_beside_itself_before_a_migration(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    old_store(path, 3)
    backups: list[Path] = []

    async def reopen() -> None:
        async with await Store.open(path, backups=backups):
            pass

    anyio.run(reopen)
    [backup] = backups
    assert backup.parent == tmp_path and backup.name.startswith("s.db.before-v4-")
    assert query(backup, "PRAGMA user_version") == [(3,)]
    assert query(backup, "SELECT key FROM records") == [("a@x",)]
    assert integrity(backup) == "ok"
    assert query(path, "PRAGMA user_version") == [(latest_version(),)]
    # Opening a store that needs no migration takes no backup.
    anyio.run(reopen)
    assert len(backups) == 1


def test_migrate_dry_run_lists_what_would_be_applied_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.db"
    old_store(path, 3)
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{path}"\n')
    assert main(["migrate", "--dry-run", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"store {path} is at schema version 3; would apply:"
    assert out[1].split()[:2] == ["4", "callbacks:"]
    assert out[-1].startswith(f"a backup would be written first: {path}.before-v4-")
    assert query(path, "PRAGMA user_version") == [(3,)]
    assert not list(tmp_path.glob("*.bak"))
    # While a daemon runs, migrate itself is refused; after, it applies (backup first).
    lock = InstanceLock(path)
    lock.acquire()
    assert main(["migrate", "--config", str(config)]) == 1
    assert "another dropsync daemon" in capsys.readouterr().err
    lock.release()
    assert main(["migrate", "--config", str(config)]) == 0
    assert f"migrated from schema version 3 to {latest_version()}" in capsys.readouterr().out
    assert query(path, "PRAGMA user_version") == [(latest_version(),)]
    assert main(["migrate", "--dry-run", "--config", str(config)]) == 0
    assert "nothing to apply" in capsys.readouterr().out


def test_a_second_migrate_or_a_daemon_beside_a_migrate_is_told_a_migration_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lock a ``dropsync migrate`` holds was reported as "another dropsync daemon", with
    the advice to kill that pid (a migration under way)."""
    path = tmp_path / "s.db"
    old_store(path, 6)
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{path}"\n')
    lock = InstanceLock(path, purpose="migrate")
    lock.acquire()
    try:
        assert holder(path) == os.getpid()
        assert main(["migrate", "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert f"dropsync migrate (pid {os.getpid()}) is migrating this store" in err, err
        assert "another dropsync daemon" not in err and "kill" not in err, err
    finally:
        lock.release()


def test_status_during_a_migration_says_who_migrates_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store at an older schema whose lock a process holds is being migrated (by
    ``dropsync migrate`` or the daemon at its start): status used to advise starting the
    daemon to migrate it, which that lock refuses."""
    path = tmp_path / "s.db"
    old_store(path, 6)
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{path}"\n')
    lock = InstanceLock(path)
    lock.acquire()
    try:
        assert main(["status", "--config", str(config)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"being migrated from schema version 6 to {latest_version()}" in err, err
        assert f"pid {os.getpid()}" in err and "start the daemon" not in err, err
        assert main(["status", "--check", "--config", str(config)]) == 3
        out = capsys.readouterr().out.strip()
        assert out.startswith("DROPSYNC UNKNOWN: ") and "being migrated" in out, out
        for command in (["why", "contacts", "a@x"], ["dead-letters", "list"]):
            assert main([*command, "--config", str(config)]) == 1
            assert "being migrated from schema version 6" in capsys.readouterr().err
    finally:
        lock.release()
    # Nobody migrates it: run the migration.
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "older than" in err and "dropsync migrate" in err, err


def test_init_writes_the_example_config_and_the_drop_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "site"]) == 0
    assert (tmp_path / "site/drop").is_dir()
    written = (tmp_path / "site/dropsync.toml").read_text()
    assert written == example_config()
    # As written, it is the built-in defaults.
    loaded = load_config(str(tmp_path / "site/dropsync.toml"))
    defaults = load_config(None)
    for name in defaults.__slots__:
        if name != "source":
            assert getattr(loaded, name) == getattr(defaults, name), name
    assert main(["init", "site"]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["link", "dangling link", "fifo", "folder"])
def test_init_force_replaces_only_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    config, elsewhere = tmp_path / "dropsync.toml", tmp_path / "elsewhere"
    if kind == "link":
        elsewhere.write_text("mine")
        config.symlink_to(elsewhere)
    elif kind == "dangling link":
        config.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(config)  # writing into it would wait for a reader forever
    else:
        config.mkdir()
    assert main(["init", str(tmp_path), "--force"]) == 2
    assert "--force replaces only a regular file" in capsys.readouterr().err
    if kind == "link":
        assert elsewhere.read_text() == "mine"
    if kind == "dangling link":
        assert not elsewhere.exists()
    if kind == "folder":
        config.rmdir()
    else:
        config.unlink()
    config.write_text("old")
    assert main(["init", str(tmp_path), "--force"]) == 0
    assert config.read_text() == example_config()


def test_systemd_unit_names_the_running_executable(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = ROOT / "systemd"
    executable = str(Path(sys.executable).parent / "dropsync")
    assert main(["systemd-unit", "--only", "service"]) == 0
    unit = capsys.readouterr().out
    original = (shipped / "dropsync.service").read_text()
    assert f"ExecStart={executable} run --config /etc/dropsync/dropsync.toml\n" in unit
    assert [a for a, b in zip(unit.splitlines(), original.splitlines(), strict=True) if a != b] == [
        f"ExecStart={executable} run --config /etc/dropsync/dropsync.toml"
    ]
    for kind, name in (("sysusers", "dropsync.sysusers"), ("tmpfiles", "dropsync.tmpfiles")):
        assert main(["systemd-unit", "--only", kind]) == 0
        assert capsys.readouterr().out == (shipped / name).read_text()
    assert main(["systemd-unit"]) == 0
    everything = capsys.readouterr().out
    assert "# ===== /etc/sysusers.d/dropsync.conf" in everything
    assert f"ExecStart={executable} " in everything
