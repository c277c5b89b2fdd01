"""The command table: help text everywhere, ``--version``, bash completion made from it."""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.cli.app import COMMANDS, GLOBAL_OPTIONS, build_parser


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_every_command_and_option_has_help_text() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert list(commands.choices) == list(COMMANDS)
    helped = {action.dest: action.help for action in commands._choices_actions}
    for name, sub in commands.choices.items():
        assert helped[name], f"command {name} has no help"
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
    for action in parser._actions:
        assert action.help, f"dropsync {action.option_strings}: no help text"


def test_global_options_are_offered_by_every_command_once() -> None:
    parser = build_parser()
    flags = [flag for option_flags, _ in GLOBAL_OPTIONS for flag in option_flags]
    for name, sub in _subparsers(parser).choices.items():
        offered = [f for action in sub._actions for f in action.option_strings]
        for flag in flags:
            assert offered.count(flag) == 1, f"{name}: {flag}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"dropsync {importlib.metadata.version('dropsync')}\n"


def test_no_command_is_a_usage_error_listing_the_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def _complete(script: str, words: list[str], cwd: str) -> list[str]:
    """What bash offers after ``words`` (the last one being completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        '_dropsync; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )
    return sorted(line for line in done.stdout.splitlines() if line)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_offers_commands_options_choices_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    (tmp_path / "contacts.json").write_text("[]")
    cwd = str(tmp_path)
    assert _complete(script, ["dropsync", "st"], cwd) == ["status"]
    assert _complete(script, ["dropsync", "--config", "x.toml", "d"], cwd) == [
        "dead-letters",
        "demo",
    ]
    assert _complete(script, ["dropsync", "--config", "cont"], cwd) == ["contacts.json"]
    assert _complete(script, ["dropsync", "status", "--"], cwd) == [
        "--check",
        "--config",
        "--disk-crit",
        "--disk-warn",
        "--help",
        "--json",
        "--log-format",
        "--pending-crit",
        "--pending-warn",
        "--watch",
    ]
    assert _complete(script, ["dropsync", "dead-letters", "r"], cwd) == ["retry"]
    assert _complete(script, ["dropsync", "ingest", "co"], cwd) == ["contacts.json"]
    assert _complete(script, ["dropsync", "resync", "--dry-run", "--con"], cwd) == ["--config"]
    assert _complete(script, ["dropsync", "--v"], cwd) == ["--version"]


def test_the_script_sourced_by_bash_registers_the_completion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", f"{script}\ncomplete -p dropsync"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "complete -F _dropsync dropsync"
