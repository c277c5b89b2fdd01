"""The short path of ``dropsync status`` reads a command line as argparse does, or not at all."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.cli.app import build_parser, command_in
from dropsync.daemon.cli.shortcut import status_args
from dropsync.store.handle import Store
from hypothesis import given, settings
from hypothesis import strategies as st

WORDS = [
    "status",
    "status",
    "--json",
    "--check",
    "--config",
    "--config",
    "--config=a.toml",
    "--config=",
    "--config=-a",
    "--config=a=b",
    "a.toml",
    "b.toml",
    "-",
    "-1",
    "-x",
    "--log-format",
    "--log-format=json",
    "--log-format=xml",
    "json",
    "console",
    "xml",
    "--watch",
    "--js",
    "--conf",
    "--pending-warn",
    "60",
    "--",
    "",
    "-h",
    "--help",
    "--version",
    "ingest",
    "run",
]


def argparse_reads(words: list[str]) -> dict[str, object] | None:
    """The namespace the whole command line's parser makes of ``words``; None: a usage error,
    help or version (it exits)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return vars(build_parser(command_in(words)).parse_args(words))
    except SystemExit:
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=7))
def test_a_line_the_shortcut_reads_is_read_alike_by_argparse(words: list[str]) -> None:
    quick = status_args(words)
    if quick is not None:
        assert argparse_reads(words) == vars(quick)


@pytest.mark.parametrize(
    "words",
    [
        ["status"],
        ["status", "--json"],
        ["status", "--check"],
        ["--config", "a.toml", "status", "--json"],
        ["status", "--config=a.toml", "--log-format", "json", "--check", "--json"],
        ["--config=a.toml", "--log-format=console", "status", "--config", "b.toml"],
    ],
)
def test_the_usual_lines_take_the_shortcut(words: list[str]) -> None:
    quick = status_args(words)
    assert quick is not None
    assert vars(quick) == argparse_reads(words)


@pytest.mark.parametrize(
    "words",
    [
        [],
        ["--json", "status"],  # status's own option before the command: a usage error
        ["status", "--js"],  # an abbreviation: argparse's to accept
        ["status", "--watch"],
        ["status", "--pending-warn", "60", "--check"],
        ["status", "--config"],
        ["status", "--config", "-a"],
        ["status", "--log-format", "xml"],
        ["status", "status"],
        ["status", "-h"],
        ["run"],
    ],
)
def test_any_other_line_goes_the_whole_way(words: list[str]) -> None:
    assert status_args(words) is None


def test_the_shortcut_prints_what_the_whole_way_prints(tmp_path: Path) -> None:
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n')

    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    lines = {
        "shortcut": "from dropsync.daemon.cli import main",
        "argparse": "from dropsync.daemon.cli.app import main",
    }
    printed = {}
    for name, line in lines.items():
        for words in (["status", "--config", str(config)], ["status", "--json"]):
            done = subprocess.run(
                [sys.executable, "-c", f"import sys; {line}; sys.exit(main({words!r}))"],
                capture_output=True,
                text=True,
                check=False,
                cwd=tmp_path,
                env={"DROPSYNC_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
            )
            printed[(name, words[-1])] = (done.returncode, done.stdout, done.stderr)
    for last in (str(config), "--json"):
        assert printed[("shortcut", last)] == printed[("argparse", last)]
        assert printed[("shortcut", last)][0] == 0
