"""The CLI in-process: why, status, ingest, check-config, exit codes."""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.cli.app import COMMANDS, build_parser, command_in
from dropsync.daemon.config import load_config
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.store.handle import Store


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "dropsync.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        '[collections.contacts]\nkey = "email"\ntimestamp = "at"\ntimestamp_unit = "ms"\n' + extra
    )
    return path


def create_store(config_path: Path) -> None:
    """What the first ``dropsync run`` does to the store (only ``run`` creates one)."""

    async def run() -> None:
        async with await Store.open(load_config(str(config_path)).store_path):
            pass

    anyio.run(run)


def ingest(config_path: Path, name: str, docs: list[dict[str, object]]) -> None:
    config = load_config(str(config_path))
    folder = config.drop_path / "contacts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(orjson.dumps(docs))

    async def run() -> None:
        async with await Store.open(config.store_path) as store:
            await Ingestor(store, config).ingest_dropped(folder / name)

    anyio.run(run)


def test_why_lists_every_version_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    ingest(config, "one.json", [{"email": "a@x", "at": 100, "v": 1}])
    ingest(config, "two.json", [{"email": "a@x", "at": 300, "v": 2}])
    ingest(config, "three.json", [{"email": "a@x", "at": 200, "v": 3}])
    assert main(["why", "contacts", "a@x", "--config", str(config), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["current"]["updated_at"] == 300
    explained = [(v["updated_at"], v["source"], v["explanation"]) for v in report["versions"]]
    assert explained[0][0] == 100 and "older timestamp" in explained[0][2]
    assert explained[0][1] == "file one.json #0"
    assert explained[1][:2] == (300, "file two.json #0")
    assert explained[1][2] == "current version"
    assert explained[2][0] == 200 and "older timestamp" in explained[2][2]
    assert "newest timestamp of 3" in report["why"]
    assert main(["why", "contacts", "a@x", "--config", str(config)]) == 0
    assert "current version" in capsys.readouterr().out


def test_why_of_unknown_key_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    ingest(config, "one.json", [{"email": "a@x", "at": 100}])
    assert main(["why", "contacts", "nobody", "--config", str(config)]) == 1
    assert "no version" in capsys.readouterr().err


def test_status_json_is_read_only_and_reports_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    ingest(config, "one.json", [{"email": "a@x", "at": 100}, {"email": "b@x"}])
    assert main(["status", "--json", "--config", str(config)]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert status["files"]["quarantined"] == 1
    assert main(["status", "--config", str(config)]) == 0
    assert "quarantined" in capsys.readouterr().out


def test_status_without_a_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["status", "--config", str(config)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_status_reads_only_the_store_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    ingest(config, "one.json", [{"email": "a@x", "at": 100}])
    # A provider half-written by an operator: status still answers; check-config does not.
    config.write_text(config.read_text() + "\n[providers.half]\nkind = 'crm'\n")
    assert main(["status", "--json", "--config", str(config)]) == 0
    assert orjson.loads(capsys.readouterr().out)["schema_version"] >= 3
    assert main(["check-config", "--config", str(config)]) == 2
    assert "providers.half.base_url" in capsys.readouterr().err
    # A mistake in [store] itself is reported, with the file and key.
    config.write_text(config.read_text().replace("[store]\n", "[store]\npaht = 'x'\n"))
    assert main(["status", "--config", str(config)]) == 2
    assert "store.paht: unknown key" in capsys.readouterr().err


def test_a_store_missing_a_table_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    ingest(config, "one.json", [{"email": "a@x", "at": 100}])
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute("DROP TABLE files_by_status")
    raw.commit()
    raw.close()
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "no such table: files_by_status" in err and "changed by hand" in err
    assert "integrity_check" not in err  # not damage: SQLite reads the file fine
    assert "Traceback" not in err


def test_config_errors_name_file_and_key_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "[collections.other]\nproviders = ['nope']\n")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "collections.other.providers" in err and "nope" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "invalid TOML" in capsys.readouterr().err
    assert main(["check-config", "--config", str(tmp_path / "missing.toml")]) == 2


def test_secret_in_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path,
        '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:1"\ntoken = "hunter2"\n',
    )
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "providers.crm.token" in err and "hunter2" not in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DROPSYNC_CONFIG", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = load_config(None)
    assert config.store_path == tmp_path / "dropsync.db"
    assert config.drop_path == tmp_path / "drop"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert load_config(None).store_path == tmp_path / "state/dropsync.db"
    assert os.environ["STATE_DIRECTORY"]


def test_ingest_command_outside_drop_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    source = tmp_path / "elsewhere/contacts.json"
    source.parent.mkdir()
    source.write_bytes(orjson.dumps([{"email": "z@x", "at": 5}]))
    create_store(config)
    code = main(["ingest", "--config", str(config), "--collection", "contacts", str(source)])
    assert code == 0
    assert orjson.loads(capsys.readouterr().out)["applied"] == 1
    assert source.exists()
    assert main(["ingest", "--config", str(config), str(tmp_path / "nope.json")]) == 1


def test_resync_dry_run_sends_nothing_and_changes_nothing_then_resync_queues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dropsync.adapters.crm.emulator import CrmEmulator
    from dropsync.adapters.emulators.common import EmulatorServer

    monkeypatch.setenv("TEST_CRM_TOKEN", "tok-crm")
    with EmulatorServer(CrmEmulator({"acc_1": "tok-crm"})) as server:
        config = write_config(
            tmp_path,
            f'[providers.crm]\nkind = "crm"\nbase_url = "{server.base_url}"\n'
            'account_id = "acc_1"\nsecret_env = "TEST_CRM_TOKEN"\n',
        )
        ingest(config, "one.json", [{"email": f"p{i}@x.io", "at": i} for i in range(3)])
        assert main(["resync", "crm", "--dry-run", "--config", str(config)]) == 0
        out = capsys.readouterr()
        assert "crm: would queue 0 record(s)" in out.out  # contacts is not routed to crm yet
        routed = config.read_text().replace(
            'timestamp = "at"\n', 'timestamp = "at"\nproviders = ["crm"]\n', 1
        )
        config.write_text(routed)
        assert main(["resync", "crm", "--dry-run", "--config", str(config)]) == 0
        out = capsys.readouterr()
        assert "would queue 3 record(s)" in out.out and "dry_run_batch" in out.err
        assert server.emulator.requests("/account") == []
        assert main(["status", "--json", "--config", str(config)]) == 0
        assert orjson.loads(capsys.readouterr().out)["providers"] == []
        assert main(["resync", "crm", "--config", str(config)]) == 0
        assert "queued 3 record(s)" in capsys.readouterr().out
        assert main(["status", "--json", "--config", str(config)]) == 0
        [provider] = orjson.loads(capsys.readouterr().out)["providers"]
        assert provider["pending"] == 3 and server.emulator.requests("/account") == []
        assert main(["resync", "nope", "--config", str(config)]) == 2


def test_the_parser_of_one_command_parses_as_the_full_one() -> None:
    subparsers = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert set(subparsers.choices) == set(COMMANDS)
    for words in (
        ["status", "--json"],
        ["--config", "status", "why", "contacts", "a@x"],
        ["dead-letters", "retry", "--id", "3", "--config=c.toml"],
    ):
        command = command_in(words)
        assert command == words[2 if words[0] == "--config" else 0]
        assert build_parser(command).parse_args(words) == build_parser().parse_args(words)
    assert command_in(["--config", "x.toml"]) is None
    assert command_in(["nonsense"]) is None


def test_check_config_reads_the_callback_secret_and_webhook_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_TOKEN", "token-1234")
    monkeypatch.delenv("CHURN_CALLBACK_SECRET", raising=False)
    churn = (
        "[listener]\nport = 8787\n[providers.churn]\nkind = 'churn'\n"
        "base_url = 'http://127.0.0.1:1'\nsecret_env = 'CHURN_TOKEN'\nbrand_id = 15\n"
        "callback_secret_env = 'CHURN_CALLBACK_SECRET'\n"
    )
    config = write_config(tmp_path, churn)
    assert main(["check-config", "--config", str(config)]) == 2
    assert "CHURN_CALLBACK_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("CHURN_CALLBACK_SECRET", "callback-1234")
    assert main(["check-config", "--config", str(config)]) == 0
    no_secret = write_config(tmp_path, churn.replace("callback_secret_env", "# callback"))
    assert main(["check-config", "--config", str(no_secret)]) == 2
    assert "providers.churn.callback_secret_env" in capsys.readouterr().err


def test_why_and_dead_letters_show_control_characters_in_a_key_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key is printed as text a terminal cannot act on (an ESC would clear the screen);
    --json has the key exactly."""
    config = write_config(tmp_path)
    key = "a\x1b[2J\x07\x7f\n\u2028b@x"
    ingest(config, "one.json", [{"email": key, "at": 1_700_000_000_000}])
    assert main(["why", "contacts", key, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "contacts/a\\x1b[2J\\x07\\x7f\\n\\u2028b@x: current version" in out
    assert "\x1b" not in out and "\x07" not in out
    assert main(["why", "contacts", key, "--config", str(config), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["key"] == key
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute(
        "INSERT INTO dead_letters (provider, collection, key, updated_at, reason, attempts, "
        "created_at) VALUES ('crm', 'contacts', ?, 1, 'no', 1, 1)",
        (key,),
    )
    raw.commit()
    raw.close()
    assert main(["dead-letters", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "contacts/a\\x1b[2J\\x07\\x7f\\n\\u2028b@x version" in out and "\x1b" not in out


@pytest.mark.parametrize("table", ["collections", "providers"])
def test_a_collection_or_provider_name_holding_nul_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    body = 'kind = "crm"\nbase_url = "http://x"\naccount_id = "a"\n' if table == "providers" else ""
    config = write_config(tmp_path, f'[{table}."a\\u0000b"]\n{body}')
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f'{table}."a\\u0000b": ' in err and "\x00" not in err
