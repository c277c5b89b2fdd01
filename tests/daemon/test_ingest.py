"""Drop-file ingest through the real store and real folders."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.daemon import ingest as ingest_module
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.ingest import Ingestor
from dropsync.daemon.parse import iter_documents
from dropsync.store.handle import Store

pytestmark = pytest.mark.anyio
BOTH_PARSERS = pytest.mark.parametrize(
    "parser_process", [False, True], ids=["parsed-here", "parser-process"]
)


def make_config(
    tmp_path: Path, parser_process: bool = False, **collections: dict[str, object]
) -> Config:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {
                "path": str(tmp_path / "drop"),
                "batch": 3,
                # 0: every file goes through a parser process; the default: tests' files never do
                "parser_process_min_mb": 0 if parser_process else 8,
            },
            "collections": collections,
        },
        "test.toml",
    )


def envelope(i: int, ts: int = 1000) -> dict[str, object]:
    return {"data": {"id": i, "email": f"u{i}@x"}, "createdAt": 1, "updatedAt": ts}


def drop(config: Config, collection: str, name: str, content: bytes) -> Path:
    folder = config.drop_path / collection
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def records(config: Config) -> list[tuple[object, ...]]:
    raw = sqlite3.connect(config.store_path)
    try:
        return raw.execute("SELECT key, updated_at, deleted FROM records ORDER BY key").fetchall()
    finally:
        raw.close()


async def test_array_file_is_ingested_and_filed_in_done(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    path = drop(config, "users", "a.json", orjson.dumps([envelope(i) for i in range(7)]))
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(path)
    assert report is not None and report.status == "done" and report.applied == 7
    assert (config.drop_path / "users/.done/a.json").exists() and not path.exists()
    assert len(records(config)) == 7
    raw = sqlite3.connect(config.store_path)
    ledger = raw.execute("SELECT status, docs_applied, sha256 FROM files").fetchall()
    assert ledger[0][:2] == ("done", 7) and len(ledger[0][2]) == 64


async def test_single_object_and_ndjson_files(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    one = drop(config, "users", "one.json", orjson.dumps(envelope(1)))
    lines = b"\n".join(orjson.dumps(envelope(i)) for i in range(2, 5)) + b"\n\n"
    many = drop(config, "users", "many.ndjson", lines)
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        assert (await ingestor.ingest_dropped(one)).applied == 1  # type: ignore[union-attr]
        assert (await ingestor.ingest_dropped(many)).applied == 3  # type: ignore[union-attr]
    assert [r[0] for r in records(config)] == ["1", "2", "3", "4"]


@BOTH_PARSERS
async def test_bad_document_quarantines_file_with_receipt_and_good_ones_apply(
    tmp_path: Path,
    parser_process: bool,
) -> None:
    config = make_config(tmp_path, parser_process)
    docs = [envelope(1), {"data": {"id": 2}, "updatedAt": "last tuesday"}, envelope(3)]
    bad = drop(config, "users", "mixed.json", orjson.dumps(docs))
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(bad)
    assert report is not None and report.status == "quarantined"
    receipt = orjson.loads(
        (config.drop_path / "users/.quarantine/mixed.json.error.json").read_bytes()
    )
    assert receipt["applied"] == 2 and receipt["rejected"] == 1
    assert receipt["errors"][0]["index"] == 1
    assert "updatedAt" in receipt["errors"][0]["reason"]
    assert [r[0] for r in records(config)] == ["1", "3"]


@BOTH_PARSERS
async def test_syntax_error_names_the_document_and_next_file_still_ingests(
    tmp_path: Path,
    parser_process: bool,
) -> None:
    config = make_config(tmp_path, parser_process)
    broken = drop(
        config,
        "users",
        "broken.json",
        b"[" + orjson.dumps(envelope(1)) + b', {"data": {"id": 2}, "upda',
    )
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        report = await ingestor.ingest_dropped(broken)
        assert report is not None and report.status == "quarantined"
        assert report.failures[0].index == 1
        assert "invalid JSON after 1 document" in report.failures[0].reason
        good = drop(config, "users", "good.json", orjson.dumps([envelope(5)]))
        assert (await ingestor.ingest_dropped(good)).status == "done"  # type: ignore[union-attr]
    assert [r[0] for r in records(config)] == ["1", "5"]


async def test_same_content_twice_changes_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    content = orjson.dumps([envelope(1), envelope(2)])
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        first = await ingestor.ingest_dropped(drop(config, "users", "a.json", content))
        before = sqlite3.connect(config.store_path).execute("SELECT COUNT(*) FROM inbox").fetchone()
        second = await ingestor.ingest_dropped(drop(config, "users", "a.json", content))
    assert first is not None and second is not None
    assert second.duplicate_of == first.file_id and second.applied == 0
    assert (config.drop_path / "users/.done/a-1.json").exists()
    after = sqlite3.connect(config.store_path).execute("SELECT COUNT(*) FROM inbox").fetchone()
    assert before == after


@BOTH_PARSERS
async def test_resume_after_crash_applies_nothing_twice(
    tmp_path: Path, parser_process: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, parser_process)
    content = orjson.dumps([envelope(i) for i in range(10)])
    path = drop(config, "users", "big.json", content)
    original = ingest_module._commit_batch
    calls = 0

    def dying_commit(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed")
        return original(*args)

    monkeypatch.setattr(ingest_module, "_commit_batch", dying_commit)
    async with await Store.open(config.store_path) as store:
        with pytest.raises(ExceptionGroup) as caught:
            await Ingestor(store, config).ingest_dropped(path)
        assert caught.group_contains(RuntimeError, match="killed")
    monkeypatch.undo()
    # The run "died" after committing the first batch: the file sits in .processing.
    assert (config.drop_path / "users/.processing/big.json").exists()
    async with await Store.open(config.store_path) as store:
        reports = await Ingestor(store, config).recover()
    assert [r.status for r in reports] == ["done"]
    assert reports[0].applied == 10 and reports[0].unchanged == 0
    raw = sqlite3.connect(config.store_path)
    # Each document applied exactly once: ten records, each naming its own document.
    assert raw.execute("SELECT COUNT(DISTINCT doc_index) FROM records").fetchone()[0] == 10
    assert raw.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 1
    assert (config.drop_path / "users/.done/big.json").exists()


def test_empty_file_is_a_bad_document(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(b"  \n")
    [(index, failure, _)] = list(iter_documents(path))
    assert index == 0 and "empty" in str(getattr(failure, "reason", ""))


async def test_unsupported_file_type_is_quarantined_with_a_reason(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    path = drop(config, "users", "export.csv", b"id,email\n1,a@x\n")
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(path)
    assert report is not None and report.status == "quarantined"
    receipt = orjson.loads(
        (config.drop_path / "users/.quarantine/export.csv.error.json").read_bytes()
    )
    assert "unsupported file type '.csv'" in receipt["errors"][0]["reason"]
