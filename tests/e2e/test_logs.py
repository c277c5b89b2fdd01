"""The daemon's log lines end to end: its fatal error's priority under journald, ``--log-format``
in every position (the unit tests: tests/daemon/process/test_logs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.e2e


def test_the_daemon_under_journald_marks_its_fatal_error_as_priority_3(tmp_path: Path) -> None:
    """``journalctl -p err`` shows the error that ended the daemon: a line of its own, ``<3>``."""
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n[daemon]\nlog_level = "loud"\n')
    with (tmp_path / "journal").open("w") as stream:
        info = os.fstat(stream.fileno())
        done = subprocess.run(
            [sys.executable, "-m", "dropsync.daemon.cli", "run", "--config", str(config)],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"},
            check=False,
            timeout=60,
        )
    assert done.returncode == 2
    lines = (tmp_path / "journal").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("<3>{")
    fatal = orjson.loads(lines[0][3:])
    assert fatal["event"] == "fatal_error" and "daemon.log_level" in fatal["error"]


def test_log_format_is_a_global_option_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n[daemon]\nlog_level = "loud"\n')
    for words in (
        ["--log-format", "console", "run", "--config", str(config)],
        ["run", "--config", str(config), "--log-format", "console"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "dropsync.daemon.cli", *words],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 2
        assert "fatal_error" in done.stdout and not done.stdout.startswith("{")
