"""What the commands say when given something they cannot use: each message names the thing
and what it is, never a placeholder, a wrong reason or a traceback."""

from __future__ import annotations

import os
import sqlite3
import unicodedata
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.config import parse_config
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.store.diagnosis import describe_database_error
from dropsync.store.handle import Store

from tests.daemon.cli.test_commands import create_store, write_config


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "apply"])
def test_migrate_of_a_file_that_is_not_a_store_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dry_run: bool
) -> None:
    config = write_config(tmp_path)
    store = tmp_path / "s.db"
    store.write_bytes(b"these are notes, not a database " * 100)
    assert main(["migrate", *(["--dry-run"] if dry_run else []), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"store {store} is damaged or is not an SQLite database" in err
    assert f"sqlite3 {store} 'PRAGMA integrity_check'" in err and "STORE" not in err
    assert store.read_bytes() == b"these are notes, not a database " * 100


def test_a_damaged_store_met_after_opening_is_described_without_a_placeholder() -> None:
    error = sqlite3.DatabaseError("file is not a database")
    error.sqlite_errorname = "SQLITE_NOTADB"
    message = describe_database_error(error)
    assert "STORE" not in message and "the store is damaged" in message


@pytest.mark.parametrize(
    "given", ["99999999999999999999999", "0", "-3", "x", "9223372036854775808"]
)
def test_dead_letters_with_an_id_no_dead_letter_can_have_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    config = write_config(tmp_path)
    create_store(config)
    for action in ("retry", "drop"):
        with pytest.raises(SystemExit) as exited:
            main(["dead-letters", action, "--id", given, "--config", str(config)])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "--id: expected a dead letter's id (a whole number from 1 to " in err
        assert "Traceback" not in err and "OverflowError" not in err


def test_dead_letters_with_the_largest_id_finds_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    create_store(config)
    assert main(["dead-letters", "retry", "--id", str((1 << 63) - 1), "--config", str(config)]) == 0
    assert "re-queued 0 dead letter(s)" in capsys.readouterr().out


def test_dead_letters_of_a_provider_not_in_the_config_are_not_retried_into_a_dead_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider removed from the config has no sender: ``retry`` moved its dead letters
    (and their reasons) into outbox entries no daemon would ever send nor dead-letter."""
    config = write_config(tmp_path)
    create_store(config)
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute(
        "INSERT INTO records (collection, key, body, updated_at, origin, digest, merged_at) "
        "VALUES ('contacts', 'a@x.org', '{}', 5, 'drop', 'd', 5)"
    )
    raw.execute(
        "INSERT INTO dead_letters (provider, collection, key, updated_at, reason, attempts, "
        "created_at) VALUES ('gone', 'contacts', 'a@x.org', 5, 'HTTP 422', 1, 1)"
    )
    raw.commit()
    assert main(["dead-letters", "retry", "--all", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("re-queued 0 dead letter(s)") and "gone" in out, out
    assert main(["dead-letters", "retry", "--provider", "gone", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gone" in err and "not in the config" in err, err
    assert raw.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    assert raw.execute("SELECT provider, reason FROM dead_letters").fetchall() == [
        ("gone", "HTTP 422")
    ]
    assert main(["dead-letters", "drop", "--provider", "gone", "--config", str(config)]) == 0
    assert "dropped 1 dead letter(s)" in capsys.readouterr().out
    raw.close()


def test_ingest_of_what_is_not_a_regular_file_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    create_store(config)
    folder = tmp_path / "a folder"
    folder.mkdir()
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # never opened: reading it would wait for a writer forever
    dangling = tmp_path / "link.json"
    dangling.symlink_to(tmp_path / "gone.json")
    expected = {
        "/dev/zero": "/dev/zero: not ingested: a character device; give a JSON or NDJSON file",
        str(folder): f"{folder}: not ingested: a directory; give the files in it "
        f"(dropsync ingest '{folder}'/*.json)",
        str(fifo): f"{fifo}: not ingested: a FIFO (named pipe); give a JSON or NDJSON file",
        str(dangling): f"{dangling}: no such file: it is a symbolic link to "
        f"{tmp_path / 'gone.json'}, which does not exist",
        str(tmp_path / "nope.json"): f"{tmp_path / 'nope.json'}: no such file",
    }
    for given, message in expected.items():
        assert main(["ingest", "--config", str(config), "--collection", "contacts", given]) == 1
        err = capsys.readouterr().err
        assert f"dropsync: {message}\n" in err, err
    assert main(["ingest", "--config", str(config), str(folder)]) == 1
    assert "not ingested: a directory" in capsys.readouterr().err


def test_ingest_of_a_link_to_a_file_outside_the_drop_folder_reads_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link to a regular file is taken like the file, as the docs say; it ended with a
    ``fatal_error`` (``Unreadable: a symbolic link``: the lock was taken without following
    links)."""
    config = write_config(tmp_path)
    create_store(config)
    target = tmp_path / "exports/people.json"
    target.parent.mkdir()
    target.write_bytes(orjson.dumps([{"email": "a@x.org", "at": 1_700_000_000_000}]))
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    assert main(["ingest", "--config", str(config), "--collection", "contacts", str(link)]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert (report["status"], report["applied"], report["path"]) == ("done", 1, str(target))
    assert link.is_symlink() and target.is_file()  # neither moved nor replaced


def test_ingest_of_the_store_or_a_file_beside_it_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store, its ``-wal``, the daemon's instance lock: each was read as a drop file
    (its lock taken meanwhile: a daemon starting then was refused) and recorded quarantined,
    a row in the ledger and one more quarantined file in ``status`` for good."""
    config = write_config(tmp_path)
    create_store(config)
    store = tmp_path / "s.db"
    (tmp_path / "s.db.lock").write_text("")
    reader = sqlite3.connect(store)  # its -wal is there while a connection is open
    reader.execute("SELECT COUNT(*) FROM files").fetchone()
    for path in (store, tmp_path / "s.db-wal", tmp_path / "s.db.lock"):
        assert path.exists()
        assert main(["ingest", "--config", str(config), "--collection", "c", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"dropsync: {path}: not ingested: it is ") and "\n" not in err, err
    assert reader.execute("SELECT COUNT(*) FROM files").fetchone() == (0,)
    reader.close()


def test_ingest_with_collection_of_a_dropped_file_claims_it_as_the_daemon_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--collection`` (the collection of files outside the drop folder) made a file of a
    collection folder be read in place: the daemon then claimed it too, a second row."""
    config = write_config(tmp_path)
    create_store(config)
    folder = tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    dropped = folder / "c.json"
    dropped.write_bytes(orjson.dumps([{"email": "a@x.org", "at": 1_700_000_000_000}]))
    given = ["ingest", "--config", str(config), "--collection"]
    assert main([*given, "other", str(dropped)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dropsync: {dropped}: not ingested: ") and "contacts" in err, err
    assert dropped.is_file()
    assert main([*given, "contacts", str(dropped)]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["path"] == str(folder / ".done/c.json") and report["applied"] == 1, report
    assert not dropped.exists()
    raw = sqlite3.connect(tmp_path / "s.db")
    assert raw.execute("SELECT COUNT(*) FROM files").fetchone() == (1,)
    raw.close()


def test_a_collection_folder_in_another_unicode_form_is_the_configured_collection(
    tmp_path: Path,
) -> None:
    """``café`` written as e + U+0301 (NFD: what macOS file systems hand over) is the
    configured ``café`` (NFC): its documents are read with that collection's key and
    timestamp, merged into it and routed to its providers."""
    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    assert nfc != nfd
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {"path": str(tmp_path / "drop")},
            "collections": {nfc: {"key": "email", "timestamp": "at", "providers": ["crm"]}},
            "providers": {
                "crm": {"kind": "crm", "base_url": "http://127.0.0.1:9", "account_id": "a"}
            },
        },
        "test.toml",
    )
    folder = config.drop_path / nfd
    folder.mkdir(parents=True)
    (folder / "a.json").write_bytes(orjson.dumps([{"email": "a@x", "at": 1_700_000_000_000}]))

    async def run() -> str:
        async with await Store.open(config.store_path) as store:
            report = await Ingestor(store, config).ingest_dropped(folder / "a.json")
            assert report is not None
            return report.status

    assert anyio.run(run) == "done"
    raw = sqlite3.connect(config.store_path)
    records = raw.execute("SELECT collection, key FROM records").fetchall()
    queued = raw.execute("SELECT provider, collection, key FROM outbox").fetchall()
    raw.close()
    assert records == [(nfc, "a@x")]
    assert queued == [("crm", nfc, "a@x")]


def test_two_collections_of_one_name_in_two_unicode_forms_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nfd = unicodedata.normalize("NFD", "caf\u00e9")
    config = write_config(tmp_path, f'[collections."caf\u00e9"]\n[collections."{nfd}"]\n')
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"collections.{nfd}: the same name as 'caf\u00e9' in another Unicode form" in err


def test_an_unconfigured_collection_folder_is_named_in_nfc(tmp_path: Path) -> None:
    config = parse_config(
        {"store": {"path": str(tmp_path / "s.db")}, "drop": {"path": str(tmp_path / "drop")}},
        "test.toml",
    )
    assert config.collection(unicodedata.normalize("NFD", "na\u00efve")).name == "na\u00efve"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[store]\npath = "~nosuchuser-dropsync/s.db"\n', "store.path"),
        ('[drop]\npath = "~nosuchuser-dropsync/drop"\n', "drop.path"),
        (
            '[providers.c]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\n'
            'secret_file = "~nosuchuser-dropsync/token"\n',
            "providers.c.secret_file",
        ),
        (
            '[providers.f]\nkind = "favourites"\nbase_url = "http://127.0.0.1:9"\n'
            'tokens_dir = "~nosuchuser-dropsync/tokens"\n',
            "providers.f.tokens_dir",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "status"])
def test_a_path_in_the_home_of_no_user_is_a_config_error_naming_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, key: str, command: str
) -> None:
    # It was a RuntimeError from pathlib (a traceback, exit 1).
    config = tmp_path / "c.toml"
    config.write_text(toml)
    code = main([command, "--config", str(config)])
    err = capsys.readouterr().err
    if command == "status" and not key.startswith("store."):
        return  # status reads [store] alone
    assert code == 2
    assert key in err and "no such user" in err and "Traceback" not in err


def test_an_integer_too_long_to_convert_is_invalid_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Python's int() refuses more than 4300 digits; tomllib let its ValueError through.
    config = tmp_path / "c.toml"
    config.write_text("[store]\nretain_days = " + "1" * 5000 + "\n")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "invalid TOML" in err and str(config) in err and "Traceback" not in err
