"""``status --check`` as the Monitoring Plugins guidelines want it: the status line and its
perfdata parsed with the guidelines' grammar (``tests/daemon/cli/plugin_output.py``), exit 3
UNKNOWN whenever the check itself cannot run, and a reload the daemon refused as a warning.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.process.runstate import RuntimeFile

from tests.daemon.cli.conftest import now_ms, sql
from tests.daemon.cli.plugin_output import parse

STATUS = [sys.executable, "-m", "dropsync.daemon.cli", "status"]


def run_check(
    config: Path | str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    code = main(["status", "--check", "--config", str(config), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_perfdata_follows_the_guidelines_grammar(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    two_hours_ago = now_ms() - 2 * 3600 * 1000
    for key in ("a@x", "b@x"):
        sql(
            config.parent,
            "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
            "VALUES ('crm', 'contacts', ?, 1, ?)",
            key,
            two_hours_ago,
        )
    sql(
        config.parent,
        "INSERT INTO dead_letters (provider, collection, key, updated_at, reason, created_at) "
        "VALUES ('churn', 'users', '1', 1, 'skipped twice', 1)",
    )
    sql(
        config.parent,
        "INSERT INTO inbox (collection, key, body, updated_at) VALUES ('c', 'k', '{}', 1)",
    )
    sql(
        config.parent,
        "INSERT INTO files (collection, name, path, sha256, size, status, error, received_at) "
        "VALUES ('c', 'bad.json', 'c/.quarantine/bad.json', 'x', 1, 'quarantined', 'no', 1)",
    )
    code, out, _ = run_check(config, capsys, "--pending-crit", "36000")
    output = parse(out)
    assert (code, output.status) == (1, "WARNING")
    assert output.text == (
        "provider churn: 1 dead letter(s) (dropsync dead-letters list --provider churn) "
        "(and 1 more)"
    )
    [more] = output.more
    assert more.startswith("WARNING: provider crm: oldest pending entry is 2.0 h old (over 900 s)")
    perf = output.perfdata
    assert list(perf) == [
        "pending_churn",
        "oldest_churn",
        "dead_letters_churn",
        "pending_crm",
        "oldest_crm",
        "dead_letters_crm",
        "inbox_pending",
        "quarantined_files",
        "disk_free",
    ]
    assert perf["pending_crm"][1:] == ("2", "", "", "", "0", "")
    assert perf["pending_churn"].value == "0"
    assert perf["dead_letters_churn"][1:] == ("1", "", "", "", "0", "")
    assert perf["dead_letters_crm"].value == "0"
    oldest = perf["oldest_crm"]
    assert (oldest.uom, oldest.warn, oldest.crit, oldest.min, oldest.max) == (
        "s",
        "900",
        "36000",
        "0",
        "",
    )
    assert 7200 <= int(oldest.value) < 7300
    assert perf["oldest_churn"][1:3] == ("0", "s")  # nothing pending: no age
    assert perf["inbox_pending"][1:] == ("1", "", "", "", "0", "")
    assert perf["quarantined_files"][1:] == ("1", "", "", "", "0", "")
    disk = perf["disk_free"]
    assert (disk.uom, disk.warn, disk.crit, disk.min, disk.max) == ("%", "10:", "5:", "0", "100")
    assert 0 <= float(disk.value) <= 100


def test_thresholds_are_plain_decimals_in_the_perfdata_and_ok_has_it_too(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_check(
        config,
        capsys,
        "--pending-warn",
        "1e-3",
        "--pending-crit",
        "2.5e3",
        "--disk-warn",
        "0.5",
        "--disk-crit",
        "0",
    )
    output = parse(out)
    assert (code, output.status, output.more) == (0, "OK", [])
    assert output.text.startswith("dropsync running (pid ")
    assert output.perfdata["oldest_crm"][3:5] == ("0.001", "2500")
    assert output.perfdata["disk_free"][3:5] == ("0.5:", "0:")


def test_a_name_or_an_error_with_quotes_bars_and_line_breaks_keeps_the_grammar(
    config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # A providers row edited by hand, and an error a provider sent back: neither is trusted.
    sql(
        config.parent,
        "INSERT INTO providers (name, kind, updated_at, state, last_error) "
        "VALUES (?, 'crm', 0, 'auth-failed', ?)",
        "we'ird=name|x y",
        "401 <html>\n<b>denied</b> | try later</html>",
    )
    code, out, _ = run_check(config, capsys)
    output = parse(out)
    assert (code, output.status) == (2, "CRITICAL")
    assert output.text.startswith(
        "provider we'ird=name/x y: auth-failed (401 <html> <b>denied</b> / try"
    )
    assert "pending_we'ird_name_x y" in output.perfdata
    assert "oldest_we'ird_name_x y" in output.perfdata


BAD_OPTIONS = [
    (
        ["--pending-warn", "abc"],
        "argument --pending-warn: expected a number of seconds > 0, got 'abc'",
    ),
    (["--pending-warn", "0"], "argument --pending-warn: expected a number of seconds > 0, got '0'"),
    (["--pending-crit", "nan"], "argument --pending-crit: expected a number of seconds > 0"),
    (["--pending-crit", "inf"], "argument --pending-crit: expected a number of seconds > 0"),
    (
        ["--disk-warn", "101"],
        "argument --disk-warn: expected a percentage from 0 to 100, got '101'",
    ),
    (["--disk-crit", "-1"], "argument --disk-crit: expected a percentage from 0 to 100"),
    (["--disk-crit", "ten"], "argument --disk-crit: expected a percentage from 0 to 100"),
    (["--pending-warn"], "argument --pending-warn: expected one argument"),
    (["--watch", "soon"], "argument --watch: expected a number of seconds > 0, got 'soon'"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
    (
        ["--pending-warn", "3600", "--pending-crit", "60"],
        "--pending-crit (60) is below --pending-warn (3600)",
    ),
    (["--disk-warn", "5", "--disk-crit", "10"], "--disk-crit (10) is above --disk-warn (5)"),
]


@pytest.mark.parametrize(
    ("extra", "reason"), BAD_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_a_bad_option_value_is_unknown_exit_3(
    config: Path, running: None, capsys: pytest.CaptureFixture[str], extra: list[str], reason: str
) -> None:
    code, out, err = run_check(config, capsys, *extra)
    output = parse(out)
    assert (code, output.status, output.perfdata, output.more) == (3, "UNKNOWN", {}, [])
    assert reason in output.text
    assert "_seconds" not in out + err and "_percent" not in out + err


def test_a_bad_option_value_is_unknown_exit_3_for_the_process_too(config: Path) -> None:
    done = subprocess.run(
        [*STATUS, "--check", "--config", str(config), "--pending-warn", "abc"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == (
        "DROPSYNC UNKNOWN: usage: argument --pending-warn: expected a number of seconds > 0, "
        "got 'abc'\n"
    )
    assert "invalid _seconds value" not in done.stderr
    # Without --check the same mistake is the usual usage error, exit 2.
    done = subprocess.run(
        [*STATUS, "--config", str(config), "--pending-warn", "abc"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert "argument --pending-warn: expected a number of seconds > 0, got 'abc'" in done.stderr


def _config_missing(tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / "nowhere.toml"), f"config: {tmp_path / 'nowhere.toml'}: file not found"


def _config_not_toml(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "bad.toml").write_text("[store\npath = 1\n")
    return str(tmp_path / "bad.toml"), f"config: {tmp_path / 'bad.toml'}: invalid TOML"


def _config_bad_store_path(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "bad.toml").write_text("[store]\npath = 5\n")
    return str(tmp_path / "bad.toml"), f"config: {tmp_path / 'bad.toml'}: store.path: "


def _store_missing(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "c.toml").write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    return str(tmp_path / "c.toml"), f"store: store {tmp_path / 'none.db'} does not exist"


def _store_a_folder(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "folder.db").mkdir()
    (tmp_path / "c.toml").write_text(f'[store]\npath = "{tmp_path / "folder.db"}"\n')
    return str(tmp_path / "c.toml"), f"store {tmp_path / 'folder.db'}: is a folder, not a file"


def _store_not_a_database(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "junk.db").write_bytes(b"this is not a database, just text " * 200)
    (tmp_path / "c.toml").write_text(f'[store]\npath = "{tmp_path / "junk.db"}"\n')
    return str(tmp_path / "c.toml"), "junk.db"


def _store_a_fifo(tmp_path: Path) -> tuple[str, str]:
    # Opening a FIFO waits for a writer: the check must say so, not wait for ever.
    os.mkfifo(tmp_path / "fifo.db")
    (tmp_path / "c.toml").write_text(f'[store]\npath = "{tmp_path / "fifo.db"}"\n')
    return str(tmp_path / "c.toml"), f"store {tmp_path / 'fifo.db'}: is not a regular file"


def _store_too_new(tmp_path: Path) -> tuple[str, str]:
    db = sqlite3.connect(tmp_path / "new.db")
    db.execute("PRAGMA user_version = 999")
    db.close()
    (tmp_path / "c.toml").write_text(f'[store]\npath = "{tmp_path / "new.db"}"\n')
    return str(tmp_path / "c.toml"), "has schema version 999"


def _store_unreadable(tmp_path: Path) -> tuple[str, str]:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    (tmp_path / "s.db").write_bytes(b"")
    (tmp_path / "s.db").chmod(0)
    (tmp_path / "c.toml").write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n')
    return str(tmp_path / "c.toml"), "s.db"


CANNOT_RUN = [
    _config_missing,
    _config_not_toml,
    _config_bad_store_path,
    _store_missing,
    _store_a_folder,
    _store_not_a_database,
    _store_a_fifo,
    _store_too_new,
    _store_unreadable,
]


@pytest.mark.parametrize("case", CANNOT_RUN, ids=lambda f: f.__name__.strip("_"))
def test_a_config_or_store_the_check_cannot_read_is_unknown_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: object
) -> None:
    config, reason = case(tmp_path)  # type: ignore[operator]
    code, out, _ = run_check(config, capsys)
    output = parse(out)
    assert (code, output.status, output.perfdata, output.more) == (3, "UNKNOWN", {}, [])
    assert reason in output.text, output.text


def test_a_refused_reload_is_a_warning_naming_the_error(
    tmp_path: Path, config: Path, running: None, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = RuntimeFile(tmp_path / "s.db")
    error = f"{config}: drop.settle_ms: expected an integer, got 'soon'"
    state = {
        "format": 1,
        "pid": 4242,
        "state": "running",
        "started_at": now_ms(),
        "heartbeat_at": now_ms(),
        "heartbeat_s": 5.0,
        "pauses": [],
        "reload_refused": {"at": now_ms(), "error": error},
    }
    runtime.write(state)
    try:
        code, out, _ = run_check(config, capsys)
        output = parse(out)
        assert (code, output.status) == (1, "WARNING")
        assert output.text.startswith("daemon (pid 4242): reload refused at ")
        assert output.text.endswith(f", running on its previous config: {error}")
        assert main(["status", "--config", str(config)]) == 0
        assert f"running on its previous config: {error}" in capsys.readouterr().out
    finally:
        runtime.close()
