"""Status you can alert on: is the daemon running, stale state, ``--watch``, ``--check``.

The store is a real, migrated SQLite file; "the daemon runs" is its real instance lock,
held here in-process (the e2e tests below hold it with a real daemon).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from dropsync.daemon.cli import main
from dropsync.store.schema import latest_version

from tests.daemon.cli.conftest import now_ms, sql
from tests.daemon.cli.plugin_output import problem_lines


def check(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    """The exit code and the problem lines: the status line parsed (tests/daemon/
    plugin_output.py) and written as the lines after it are, ``LEVEL: text``."""
    code = main(["status", "--check", "--config", str(config), *extra])
    return code, problem_lines(capsys.readouterr().out)


def test_check_is_ok_with_one_line_when_all_is_well(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = check(config, capsys)
    assert code == 0
    assert len(lines) == 1 and lines[0].startswith("OK: dropsync running (pid ")


def test_daemon_down_is_critical_and_status_marks_the_state_stale(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = check(config, capsys)
    assert code == 2
    assert lines == [
        f"CRITICAL: daemon: not running on {config.parent / 's.db'} "
        f"(no process holds {config.parent / 's.db.lock'})"
    ]
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("daemon: NOT RUNNING") and "may be stale" in out
    assert main(["status", "--json", "--config", str(config)]) == 0
    daemon = orjson.loads(capsys.readouterr().out)["daemon"]
    assert daemon["running"] is False and daemon["stale"] is True


def test_provider_auth_failed_is_critical(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(
        config.parent,
        "UPDATE providers SET state = 'auth-failed', last_error = '401 token expired' "
        "WHERE name = 'crm'",
    )
    code, lines = check(config, capsys)
    assert code == 2
    assert lines == [
        "CRITICAL: provider crm: auth-failed (401 token expired); fix its secret, then "
        "systemctl reload dropsync or dropsync resync crm"
    ]


def test_oldest_pending_over_the_thresholds_is_a_warning_then_critical(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueued = now_ms() - 2 * 3600 * 1000  # two hours ago
    sql(
        config.parent,
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "VALUES ('crm', 'contacts', 'a@x', 1, ?)",
        enqueued,
    )
    code, lines = check(config, capsys, "--pending-warn", "3600", "--pending-crit", "36000")
    assert code == 1
    assert lines == [
        "WARNING: provider crm: oldest pending entry is 2.0 h old (over 3600 s); "
        "1 pending, state online"
    ]
    code, lines = check(config, capsys)  # defaults: 900 s warning, 3600 s critical
    assert code == 2 and lines[0].startswith("CRITICAL: provider crm: oldest pending entry")


def test_dead_letters_are_a_warning(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(
        config.parent,
        "INSERT INTO dead_letters (provider, collection, key, updated_at, reason, created_at) "
        "VALUES ('crm', 'contacts', 'a@x', 1, '422 invalid email', 1)",
    )
    code, lines = check(config, capsys)
    assert code == 1
    assert lines == [
        "WARNING: provider crm: 1 dead letter(s) (dropsync dead-letters list --provider crm)"
    ]


def test_unconfirmed_batches_are_a_warning(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(config.parent, "UPDATE providers SET confirm_timeout_ms = 1000 WHERE name = 'churn'")
    sql(
        config.parent,
        "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at) "
        "VALUES ('churn', 'b1', 7, 'accepted', ?)",
        now_ms() - 60_000,
    )
    code, lines = check(config, capsys)
    assert code == 1
    assert lines == [
        "WARNING: provider churn: 1 batch(es) (7 record(s)) accepted but not confirmed within "
        "its confirm_timeout_s (dropsync resync churn --unconfirmed)"
    ]


def test_disk_nearly_full_is_a_warning_then_critical(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # No test machine has a nearly full disk to spare: the thresholds move instead (every
    # file system has less than 100 % free).
    code, lines = check(config, capsys, "--disk-warn", "100", "--disk-crit", "0")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("WARNING: disk: ")
    assert f"free on the file system of {config.parent / 's.db'}" in lines[0]
    code, lines = check(config, capsys, "--disk-warn", "100", "--disk-crit", "100")
    assert code == 2 and lines[0].startswith("CRITICAL: disk: ")


def test_every_problem_is_one_line_worst_first(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(
        config.parent,
        "INSERT INTO dead_letters (provider, collection, key, updated_at, reason, created_at) "
        "VALUES ('churn', 'users', '1', 1, 'skipped twice', 1)",
    )
    sql(config.parent, "UPDATE providers SET state = 'auth-failed' WHERE name = 'crm'")
    code, lines = check(config, capsys)
    assert code == 2
    assert [line.split(":")[0] for line in lines] == ["CRITICAL", "CRITICAL", "WARNING"]
    assert lines[0].startswith("CRITICAL: daemon: not running")


def test_a_store_that_cannot_be_read_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dropsync.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    code, lines = check(path, capsys)
    assert code == 3  # the check cannot run: UNKNOWN (more cases in test_status_plugin.py)
    assert len(lines) == 1
    assert lines[0].startswith(f"UNKNOWN: store: store {tmp_path / 'none.db'} does not exist")


def test_watch_shows_the_report_again_until_ctrl_c(config: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "status",
            "--config",
            str(config),
            "--watch",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        text=True,
        # Ctrl-C as on a terminal, even when this test runs in the background, whose
        # commands start with SIGINT ignored (and a program started so keeps ignoring it).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert process.stdout is not None
    headers = 0
    try:
        for line in process.stdout:
            headers += line.startswith("dropsync status, every 0.05 s")
            if headers == 2:
                sql(config.parent, "UPDATE providers SET state = 'offline' WHERE name = 'crm'")
            if "crm" in line and "offline" in line:
                break
        process.send_signal(signal.SIGINT)
        # Read what it wrote meanwhile: a full pipe would hold its last write (and its exit).
        process.communicate(timeout=30)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert headers >= 3  # shown again, and the change made meanwhile appeared


def test_watch_goes_on_through_a_migration_and_says_so(config: Path, running: None) -> None:
    """The store's schema older than this dropsync's while its lock is held: a migration
    under way (``dropsync migrate``, a restarted daemon). ``--watch`` used to end there,
    exit 1, advising to start the daemon; it shows who migrates and goes on."""
    command = [sys.executable, "-m", "dropsync.daemon.cli", "status", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--watch", "0.05"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert process.stdout is not None
    headers, migrating, migrated = 0, False, False
    try:
        for line in process.stdout:
            headers += line.startswith("dropsync status, every 0.05 s")
            if headers == 2 and not migrating:
                migrating = True  # as a migration from 6 leaves it until it commits
                sql(config.parent, "DELETE FROM schema_migrations WHERE version > 6")
                sql(config.parent, "PRAGMA user_version = 6")
            if "is being migrated from schema version 6" in line and not migrated:
                assert line.startswith("dropsync: store ") and "start the daemon" not in line
                migrated = True
                sql(config.parent, f"PRAGMA user_version = {latest_version()}")
            if migrated and line.startswith("  crm "):
                break
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        assert migrated, "the watch ended at the migration"
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_running_daemon_that_waits_or_went_quiet_is_a_warning(
    tmp_path: Path, config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from dropsync.daemon.process.runstate import RuntimeFile

    runtime = RuntimeFile(tmp_path / "s.db")
    state = {
        "format": 1,
        "pid": 4242,
        "state": "running",
        "started_at": now_ms(),
        "heartbeat_at": now_ms(),
        "heartbeat_s": 5.0,
        "pauses": [
            {
                "work": "listener",
                "condition": "address in use",
                "since": now_ms(),
                "attempts": 1,
                "detail": "cannot listen on 127.0.0.1:8787: in use by another program",
                "retry_at": now_ms() + 4000,
            }
        ],
    }
    runtime.write(state)
    code, lines = check(config, capsys)
    assert code == 1
    assert lines[0].startswith("WARNING: daemon (pid 4242): address in use: listener paused")
    assert lines[0].endswith("cannot listen on 127.0.0.1:8787: in use by another program")
    runtime.write({**state, "pauses": [], "heartbeat_at": now_ms() - 3_600_000})
    code, lines = check(config, capsys)
    assert code == 1
    assert lines[0].startswith("WARNING: daemon (pid 4242): no heartbeat since ")
    runtime.close()


def test_a_paused_users_items_are_a_warning_naming_them_not_an_old_backlog(
    tmp_path: Path, config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # carol's token was refused two hours ago; her items wait for her, the others are sent.
    two_hours_ago = now_ms() - 2 * 3600 * 1000
    sql(tmp_path, "INSERT INTO providers (name, kind, updated_at) VALUES ('fav', 'favourites', 0)")
    sql(
        tmp_path,
        "INSERT INTO provider_lanes (provider, lane, state, since, reason, updated_at) "
        "VALUES ('fav', 'carol', 'auth-failed', ?, 'credentials refused (HTTP 401)', ?)",
        two_hours_ago,
        two_hours_ago,
    )
    for key in ("carol:s1", "carol:s2"):
        sql(
            tmp_path,
            "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at, held_lane) "
            "VALUES ('fav', 'favourites', ?, 1, ?, 'carol')",
            key,
            two_hours_ago,
        )
    code, lines = check(config, capsys)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(
        "WARNING: provider fav: 1 user(s) paused, the others go on: carol (auth-failed since "
    )
    assert "2 pending): credentials refused (HTTP 401)" in lines[0]
    assert main(["status", "--json", "--config", str(config)]) == 0
    (fav,) = [
        p for p in orjson.loads(capsys.readouterr().out)["providers"] if p["provider"] == "fav"
    ]
    assert (fav["pending"], fav["held"], fav["oldest_age_s"]) == (2, 2, None)
    assert [u["user"] for u in fav["paused_users"]] == ["carol"]
