"""Only ``run`` creates a store: every other command refuses a missing one, naming the path
it looked at and where that path came from (``--config``, ``$STATE_DIRECTORY``, the
working directory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dropsync.daemon.cli import main

# Every command that reads or writes the store, with arguments it accepts.
COMMANDS = {
    "status": ["status"],
    "status --json": ["status", "--json"],
    "why": ["why", "contacts", "a@x"],
    "resync": ["resync", "crm"],
    "dead-letters list": ["dead-letters", "list"],
    "dead-letters retry": ["dead-letters", "retry", "--all"],
    "ingest": ["ingest", "--collection", "contacts", "FILE"],
    "dead-letters drop": ["dead-letters", "drop", "--all"],
    "backup": ["backup", "COPY"],
    "migrate": ["migrate"],
    "migrate --dry-run": ["migrate", "--dry-run"],
}

CONFIG = (
    '[collections.contacts]\nkey = "email"\nproviders = ["crm"]\n'
    '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\naccount_id = "a"\n'
)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("DROPSYNC_CONFIG", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    (tmp_path / "doc.json").write_text('[{"email": "a@x"}]')
    return work


def refused(words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    given = {"FILE": str(tmp_path / "doc.json"), "COPY": str(tmp_path / "copy.db")}
    words = [given.get(w, w) for w in words]
    assert main(words) == 1
    err = capsys.readouterr().err
    assert "Only 'dropsync run' creates a store" in err
    return err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_with_config_the_message_names_the_file_and_the_working_directory(
    command: str, cwd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dropsync.toml"
    config.write_text('[store]\npath = "state/x.db"\n' + CONFIG)
    err = refused([*COMMANDS[command], "--config", str(config)], tmp_path, capsys)
    assert (
        f"store {cwd / 'state/x.db'} does not exist, nor does its folder {cwd / 'state'}; "
        "that path is [store] path 'state/x.db' "
        f"in {config} (from --config), relative to the working directory ({cwd})"
    ) in err
    assert list(cwd.iterdir()) == []  # nothing was created


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_under_systemd_the_message_names_state_directory(
    command: str,
    cwd: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tmp_path / "var-lib-dropsync"
    state.mkdir()
    config = tmp_path / "etc.toml"
    config.write_text(CONFIG)
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    monkeypatch.setenv("DROPSYNC_CONFIG", str(config))
    err = refused(COMMANDS[command], tmp_path, capsys)
    assert (
        f"store {state / 'dropsync.db'} does not exist; that path is the default [store] path "
        f"'dropsync.db' in {config} (from $DROPSYNC_CONFIG), relative to $STATE_DIRECTORY "
        f"({state})"
    ) in err
    assert list(state.iterdir()) == []


@pytest.mark.parametrize("command", ["status", "why", "dead-letters list"])
def test_without_config_the_message_names_the_built_in_default(
    command: str, cwd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(COMMANDS[command], tmp_path, capsys)
    assert (
        f"store {cwd / 'dropsync.db'} does not exist; that path is the built-in default "
        f"dropsync.db (no --config, $DROPSYNC_CONFIG not set), relative to the working "
        f"directory ({cwd})"
    ) in err
    assert list(cwd.iterdir()) == []


def test_status_check_on_a_missing_store_is_unknown_naming_it(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--check"]) == 3  # the check cannot run
    out = capsys.readouterr().out
    assert out.startswith(f"DROPSYNC UNKNOWN: store: store {cwd / 'dropsync.db'} does not exist; ")
    assert "Only 'dropsync run' creates a store" in out
    assert list(cwd.iterdir()) == []
