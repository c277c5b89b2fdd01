"""Names that are not UTF-8: shown escaped, never an error in a log line, the ledger or
recovery (a file so named put into ``.processing/`` or ``.quarantine/`` by hand)."""

from __future__ import annotations

import io
import os
import sqlite3
import sys
from pathlib import Path

import orjson
import pytest
import structlog
from dropsync.daemon.cli.ingest_named import ingest_named
from dropsync.daemon.ingest.ingestor import Ingestor, IngestReport
from dropsync.daemon.names import is_text, shown
from dropsync.daemon.process.logs import configure_logging
from dropsync.store.handle import Store

from tests.daemon.ingest.test_ingestor import envelope, make_config

BAD = os.fsdecode(b"bad\xff.json")  # as Python hands the name over: 'bad\udcff.json'


def test_a_name_is_shown_with_its_bytes_escaped() -> None:
    assert not is_text(BAD)
    assert shown(BAD) == "bad\\xff.json"
    assert shown(os.fsdecode(b"caf\xc3\xa9 \xe9")) == "café \\xe9"
    assert shown("lone \ud800") == "lone \\ud800"
    assert shown("plain.json") == "plain.json" and is_text("café")


def test_a_log_line_with_such_a_name_is_written_escaped() -> None:
    out = io.StringIO()
    configure_logging("info", out)
    try:
        log = structlog.get_logger("test")
        log.warning("odd_name", file=BAD, path=Path("/d") / BAD, names=[BAD], deep={"n": BAD})
        try:
            raise FileNotFoundError(2, "No such file", BAD)
        except FileNotFoundError:
            log.exception("failed", file=BAD)
    finally:
        configure_logging("info", sys.stderr)
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["file"] == "bad\\xff.json" and first["path"] == "/d/bad\\xff.json"
    assert first["names"] == ["bad\\xff.json"] and first["deep"] == {"n": "bad\\xff.json"}
    assert "No such file: 'bad\\udcff.json'" in second["exception"]  # repr() in the traceback


def rows(db: Path) -> list[tuple[str, str, str, str]]:
    raw = sqlite3.connect(db)
    try:
        return raw.execute(
            "SELECT collection, name, status, path FROM files ORDER BY id"
        ).fetchall()
    finally:
        raw.close()


@pytest.mark.anyio
async def test_such_names_left_in_processing_or_quarantine_are_quarantined_escaped(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    for place in (".processing", ".quarantine"):
        (folder / place).mkdir(parents=True)
        (folder / place / BAD).write_bytes(orjson.dumps([envelope(1)]))
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        await ingestor.recover()
        await ingestor.recover()  # a second sweep finds nothing more to do
    found = rows(config.store_path)
    assert [(c, n, s) for c, n, s, _ in found] == [
        ("users", "bad\\xff.json", "quarantined"),
        ("users", "bad\\xff.json", "quarantined"),
    ]
    assert {p for *_, p in found} == {
        str(folder / ".quarantine/bad\\xff.json"),
        str(folder / ".quarantine/bad\\xff-1.json"),
    }
    assert not any(
        os.path.lexists(folder / place / BAD) for place in (".processing", ".quarantine")
    )
    receipt = orjson.loads((folder / ".quarantine/bad\\xff.json.error.json").read_bytes())
    assert "not UTF-8" in receipt["error"]


@pytest.mark.anyio
async def test_ingest_of_such_a_file_outside_the_drop_folder_is_recorded_escaped(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    outside = tmp_path / "elsewhere" / BAD
    outside.parent.mkdir()
    outside.write_bytes(orjson.dumps([envelope(1)]))
    async with await Store.open(config.store_path) as store:
        report = await ingest_named(Ingestor(store, config), outside, "users")
    assert isinstance(report, IngestReport) and report.as_json()["name"] == "bad\\xff.json"
    assert rows(config.store_path) == [
        ("users", "bad\\xff.json", "done", str(tmp_path / "elsewhere/bad\\xff.json"))
    ]
