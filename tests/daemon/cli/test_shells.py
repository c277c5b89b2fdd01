"""zsh and fish completions and the manual page, each made from the command table and
tried in the real program (zsh on a pseudo-terminal, fish's ``complete -C``, groff)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pexpect
import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.cli.app import COMMANDS, build_parser
from dropsync.daemon.cli.parser_walk import command_specs

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x07\x08\r]")


def _script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def _fish_complete(script: Path, line: str, cwd: Path) -> list[str]:
    done = subprocess.run(
        ["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )
    return sorted(row.split("\t")[0] for row in done.stdout.splitlines() if row)


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish (.ci/run installs it)")
def test_fish_completes_commands_options_choices_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "dropsync.fish"
    script.write_text(_script("fish", capsys))
    (tmp_path / "contacts.json").write_text("[]")
    assert _fish_complete(script, "dropsync st", tmp_path) == ["status"]
    assert _fish_complete(script, "dropsync d", tmp_path) == ["dead-letters", "demo"]
    assert _fish_complete(script, "dropsync dead-letters ", tmp_path) == ["drop", "list", "retry"]
    assert _fish_complete(script, "dropsync ingest co", tmp_path) == ["contacts.json"]
    assert _fish_complete(script, "dropsync --config co", tmp_path) == ["contacts.json"]
    assert _fish_complete(script, "dropsync --v", tmp_path) == ["--version"]
    assert "--version" not in _fish_complete(script, "dropsync status --", tmp_path)
    assert _fish_complete(script, "dropsync status --j", tmp_path) == ["--json"]
    assert _fish_complete(script, "dropsync completion ", tmp_path) == ["bash", "fish", "zsh"]


def _zsh_completes(script: Path, line: str, expected: str, cwd: Path) -> None:
    """Type ``line`` and Tab in an interactive zsh; wait for ``expected`` on the screen."""
    shell = pexpect.spawn(
        "zsh", ["-f", "-i"], cwd=str(cwd), encoding="utf-8", timeout=60, dimensions=(40, 200)
    )
    try:
        shell.sendline(
            f"PS1='> '; autoload -U compinit; compinit -u -d {cwd}/.zcompdump; "
            f"source {script}; echo READY"
        )
        shell.expect("READY\r\n")
        shell.send(line + "\t")
        screen = ""
        while expected not in ANSI.sub("", screen):
            screen += shell.read_nonblocking(4096, timeout=60)
    finally:
        shell.close(force=True)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh (.ci/run installs it)")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("dropsync st", "dropsync status "),
        ("dropsync dead-letters ", "drop   list   retry"),
        ("dropsync ingest co", "dropsync ingest contacts.json "),
        ("dropsync --config co", "dropsync --config contacts.json "),
        ("dropsync status --j", "dropsync status --json "),
        ("dropsync resync --dry-run --con", "--config"),
    ],
)
def test_zsh_completes_commands_options_choices_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    script = tmp_path / "_dropsync"
    script.write_text(_script("zsh", capsys))
    (tmp_path / "contacts.json").write_text("[]")
    _zsh_completes(script, line, expected, tmp_path)


def test_the_manual_page_lists_every_command_and_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["man"]) == 0
    page = capsys.readouterr().out
    assert page.startswith(".TH DROPSYNC 1")
    for spec in command_specs(build_parser()):
        assert f'.SS "dropsync {spec.name.replace("-", chr(92) + "-")}"' in page
        for option in spec.options:
            for flag in option.flags:
                assert f"\\fB{flag.replace('-', chr(92) + '-')}\\fR" in page, flag
    assert set(COMMANDS) == {s.name for s in command_specs(build_parser())}


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")
def test_groff_renders_the_manual_page_without_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["man"]) == 0
    page = tmp_path / "dropsync.1"
    page.write_text(capsys.readouterr().out)
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P", "-cbou", str(page)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr == ""
    text = done.stdout
    assert "dropsync dead-letters" in text
    assert "--pending-warn SECONDS" in text
    assert "DROPSYNC_CONFIG" in text
