"""``--config FILE`` works before and after every command, and the file is what is used.

The working directory is an empty folder: had a command fallen back on the built-in
defaults, it would look for (or create) ``./dropsync.db`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.cli.app import COMMANDS
from dropsync.daemon.config import load_config
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.store.handle import Store

from tests.support import query

Check = Callable[[Path, int, str, str], None]  # (work folder, exit code, stdout, stderr)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config naming a store with one ingested record, and an empty working directory."""
    return make_work(tmp_path, monkeypatch)


def make_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What ``work`` gives: the config at ``conf/dropsync.toml``, the working directory
    changed to the empty ``cwd/``."""
    state = tmp_path / "state"
    config = tmp_path / "conf/dropsync.toml"
    config.parent.mkdir()
    config.write_text(
        f'[store]\npath = "{state / "s.db"}"\n[drop]\npath = "{state / "drop"}"\n'
        '[collections.contacts]\nkey = "email"\ntimestamp = "at"\ntimestamp_unit = "ms"\n'
        'providers = ["crm"]\n'
        '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\n'
        'account_id = "acc_1"\nsecret_env = "TEST_CONFIG_OPTION_TOKEN"\n'
    )
    monkeypatch.setenv("TEST_CONFIG_OPTION_TOKEN", "tok-option")
    monkeypatch.delenv("DROPSYNC_CONFIG", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    loaded = load_config(str(config))
    folder = loaded.drop_path / "contacts"
    folder.mkdir(parents=True)
    (folder / "one.json").write_bytes(orjson.dumps([{"email": "a@x", "at": 1}]))

    async def ingest() -> None:
        async with await Store.open(loaded.store_path) as store:
            await Ingestor(store, loaded).ingest_dropped(folder / "one.json")

    anyio.run(ingest)
    (tmp_path / "new.json").write_bytes(orjson.dumps([{"email": "b@x", "at": 2}]))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def _ok(expected: str) -> Check:
    def check(work: Path, code: int, out: str, err: str) -> None:
        assert code == 0, err
        assert expected.format(work=work) in out

    return check


def _refused(work: Path, code: int, out: str, err: str) -> None:
    # Commands that read no config say so (naming the file) instead of ignoring it.
    assert code == 2
    assert f"reads no config file (given --config {work / 'conf/dropsync.toml'})" in err


def _ingested(work: Path, code: int, out: str, err: str) -> None:
    assert code == 0, err
    assert query(work / "state/s.db", "SELECT key FROM records ORDER BY key") == [
        ("a@x",),
        ("b@x",),
    ]


def _probed(work: Path, code: int, out: str, err: str) -> None:
    # The config's crm (nobody listens on port 9) was asked, with the config's secret.
    assert code == 1, err
    assert out.startswith("crm: unreachable (crm): ")


CASES: dict[str, tuple[list[str], Check]] = {
    "status": ([], _ok("store {work}/state/s.db")),
    "ingest": (["--collection", "contacts", "{work}/new.json"], _ingested),
    "check-config": ([], _ok("ok: {work}/conf/dropsync.toml: store {work}/state/s.db")),
    "probe": (["crm"], _probed),
    "why": (["contacts", "a@x"], _ok("contacts/a@x: current version")),
    "resync": (["crm"], _ok("crm: queued 1 record(s) from contacts")),
    "dead-letters": (["list"], _ok("no dead letters")),
    "demo": ([], _refused),
    "emulate": ([], _refused),
    "completion": (["bash"], _refused),
    "man": ([], _refused),
    "backup": (["{work}/copy.db", "--force"], _ok("backed up {work}/state/s.db to {work}/copy.db")),
    "migrate": (["--dry-run"], _ok("nothing to apply")),
    "init": (["{work}/new"], _refused),
    "systemd-unit": ([], _refused),
}


def test_every_command_has_a_case() -> None:
    assert set(CASES) | {"run"} == set(COMMANDS)


@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("command", sorted(CASES))
def test_config_before_or_after_the_command_is_the_file_used(
    work: Path, command: str, position: str, capsys: pytest.CaptureFixture[str]
) -> None:
    words, check = CASES[command]
    words = [w.format(work=work) for w in words]
    option = ["--config", str(work / "conf/dropsync.toml")]
    argv = [*option, command, *words] if position == "before" else [command, *words, *option]
    code = main(argv)
    out, err = capsys.readouterr()
    check(work, code, out, err)
    assert list(Path.cwd().iterdir()) == []  # nothing fell back on ./dropsync.db


def test_config_given_before_and_after_the_command_the_one_after_wins(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such.toml"
    config = work / "conf/dropsync.toml"
    assert main(["--config", str(missing), "check-config", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "check-config", "--config", str(missing)]) != 0
    assert str(missing) in capsys.readouterr().err
