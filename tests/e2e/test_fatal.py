"""A defect in ``dropsync run`` is one JSON error line without the secret (the other commands:
tests/daemon/cli/test_fatal.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.cli.test_fatal import BROKEN_RUN, TOKEN, json_lines

pytestmark = pytest.mark.e2e


def test_a_defect_in_run_is_one_json_error_line_without_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "dropsync.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\n'
        'account_id = "acc_1"\nsecret_env = "TEST_FATAL_TOKEN"\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", BROKEN_RUN, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TEST_FATAL_TOKEN": TOKEN},
    )
    assert done.returncode == 1
    assert TOKEN not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    events = json_lines(done.stdout)  # every line is JSON
    [fatal] = [e for e in events if e["level"] == "error"]
    assert fatal["event"] == "fatal_error" and fatal["command"] == "run"
    assert fatal["error"] == "RuntimeError: boom\nthe token was [redacted]"
    assert fatal["exception"] == "builtins.RuntimeError"
    assert fatal["traceback"][-1].endswith("in broken")
    assert fatal["exit_code"] == 1
