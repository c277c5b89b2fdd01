"""An error that ends a command is one line: JSON (``jq 'select(.level=="error")'`` finds
it), never a multi-line traceback, never a secret."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import orjson
import pytest
from dropsync.daemon.cli.outcome import run_reporting_errors
from dropsync.daemon.errors import ConfigError

TOKEN = "tok-9f8e7d6c5b4a-fatal"

# `dropsync run` in which one part of the daemon fails with an error no code expects (a
# defect): the function that writes systemd's STATUS= line raises, inside the daemon's task
# group, with a message of two lines that holds the provider's token, read as the daemon
# reads it. An unexpected exception cannot be had on purpose any other way.
BROKEN_RUN = """
import sys
from dropsync.daemon.process import runner
from dropsync.daemon.config import SecretRef
from dropsync.daemon.process.secrets import read_secret

def broken(summary):
    token = read_secret(SecretRef(env="TEST_FATAL_TOKEN"), "crm")
    raise RuntimeError(f"boom\\nthe token was {token}")

runner.summary_line = broken
from dropsync.daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON (fails on a line that is not)."""
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_a_defect_in_a_one_shot_command_is_one_json_line_on_stderr() -> None:
    # A command whose code fails unexpectedly (here: made to divide by zero). A busy port
    # for `emulate`, the example this test used before, is now a message of its own.
    script = (
        "import sys\n"
        "import dropsync.daemon.cli.why as why\n"
        "why.run = lambda args: 1 // 0\n"
        "from dropsync.daemon.cli import main\n"
        "sys.exit(main(['why', 'contacts', 'a@x']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    [fatal] = json_lines(done.stderr)
    assert fatal["level"] == "error" and fatal["event"] == "fatal_error"
    assert "ZeroDivisionError" in fatal["error"]
    assert all(" in " in frame for frame in fatal["traceback"])


def _raise(exc: BaseException) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise exc

    return run


def test_one_known_error_inside_exception_groups_is_its_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nested = ExceptionGroup("tasks", [ExceptionGroup("inner", [ConfigError("f.toml", "k", "bad")])])
    args = argparse.Namespace(config=None)
    assert run_reporting_errors("check-config", _raise(nested), args) == 2
    assert capsys.readouterr().err == "dropsync: f.toml: k: bad\n"


def test_several_failures_are_described_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    group = ExceptionGroup("tasks", [ValueError("one"), KeyError("two")])
    assert run_reporting_errors("why", _raise(group), argparse.Namespace(config=None)) == 1
    [fatal] = json_lines(capsys.readouterr().err)
    assert fatal["error"] == "ValueError: one; KeyError: 'two'"
    assert fatal["exception"] == "builtins.ExceptionGroup"
