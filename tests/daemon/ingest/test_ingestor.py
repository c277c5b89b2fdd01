"""Drop-file ingest through the real store and real folders."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.daemon.cli.ingest_named import NotIngested, ingest_named
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.ingest import ingestor as ingest_module
from dropsync.daemon.ingest.dropfiles import lock_dropped
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.daemon.ingest.parse import iter_documents
from dropsync.store.db import BULK_CACHE_KIB, STEADY_CACHE_KIB
from dropsync.store.handle import Store
from structlog.testing import capture_logs

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
            # The tests' small timestamps are milliseconds as they are (not a unit mistake).
            "collections": {"users": {"timestamp_unit": "ms"}, **collections},
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
        assert "the file ends inside this document" in report.failures[0].reason
        assert len(report.failures) == 1
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


# Documents the old parser changed, lost, or choked on (issue 9, items 2, 9, 10): each
# bad document is rejected with its reason; the rest of the file goes on. The JSON and
# NDJSON forms, parsed here and in a parser process, must agree.
BIG = 123456789012345678901234567890
AWKWARD = [
    b'{"data": {"id": 1, "n": 123456789012345678901234567890}, "updatedAt": 1000}',
    b'{"data": {"id": 2, "n": 1e400}, "updatedAt": 1000}',
    b'{"data": {"id": 3, "n": NaN}, "updatedAt": 1000}',
    b'{"data": {"id": 4, "n": -Infinity}, "updatedAt": 1000}',
    b'{"data": {"id": 5, "n": 1e-400}, "updatedAt": 1000}',
    b'{"data": {"id": 6, "n": 0.1, "m": -9223372036854775809}, "updatedAt": 1000}',
    b'{"data": {"id": 7, "s": "\\ud800"}, "updatedAt": 1000}',
    b'{"data": {"id": 8, "s": "caf\xff"}, "updatedAt": 1000}',
    b'{"data": {"id": 9, "s": "\xc0\xaf"}, "updatedAt": 1000}',
    b'{"data": {"id": 10, "s": "\xed\xa0\x80"}, "updatedAt": 1000}',
    b'{"data": {"id": 11, "deep": ' + b"[" * 70 + b"]" * 70 + b"}, " + b'"updatedAt": 1000}',
    b'{"data": {"id": 12, "s": "caf\xc3\xa9 \\ud83d\\ude00"}, "updatedAt": 1000}',
]
AWKWARD_REASONS = {
    1: "too large for a 64-bit float",
    2: "NaN is not a JSON number",
    3: "-Infinity is not a JSON number",
    4: "too small for a 64-bit float",
    6: "lone UTF-16 surrogate",
    7: "byte 0xFF",
    8: "byte 0xC0",
    9: "byte 0xED",
    10: "nested more than 64 levels deep (drop.max_depth)",
}


@BOTH_PARSERS
@pytest.mark.parametrize("form", ["json", "ndjson"])
async def test_numbers_and_text_are_kept_exactly_or_that_document_is_rejected(
    tmp_path: Path, parser_process: bool, form: str
) -> None:
    config = make_config(tmp_path, parser_process)
    if form == "json":
        content = b"[\n" + b",\n".join(AWKWARD) + b"\n]\n"
    else:
        content = b"\n".join(AWKWARD) + b"\n"
    path = drop(config, "users", f"awkward.{form}", content)
    with capture_logs() as logs:
        async with await Store.open(config.store_path) as store:
            report = await Ingestor(store, config).ingest_dropped(path)
    assert report is not None and report.status == "quarantined"
    reasons = {f.index: f.reason for f in report.failures}
    assert set(reasons) == set(AWKWARD_REASONS), reasons
    for index, words in AWKWARD_REASONS.items():
        assert words in reasons[index], (index, reasons[index])
    bodies = dict(bodies_of(config))
    assert set(bodies) == {"1", "6", "12"}
    # Every digit kept, in the store as text and as a number JSON readers see.
    assert f'"n":{BIG}' in bodies["1"]
    assert json.loads(bodies["1"])["data"]["n"] == BIG
    assert json.loads(bodies["6"])["data"] == {"id": 6, "n": 0.1, "m": -9223372036854775809}
    assert json.loads(bodies["12"])["data"]["s"] == "café \U0001f600"
    assert not any(entry["log_level"] in ("error", "critical") for entry in logs)
    assert not list((config.drop_path / "users/.processing").iterdir())
    assert (config.drop_path / f"users/.quarantine/awkward.{form}").exists()


def bodies_of(config: Config) -> list[tuple[str, str]]:
    raw = sqlite3.connect(config.store_path)
    try:
        return raw.execute("SELECT key, body FROM records ORDER BY key").fetchall()
    finally:
        raw.close()


@BOTH_PARSERS
async def test_a_utf8_bom_is_accepted_and_utf16_is_quarantined_with_the_reason(
    tmp_path: Path, parser_process: bool
) -> None:
    config = make_config(tmp_path, parser_process)
    text = orjson.dumps([envelope(1), envelope(2)]).decode()
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        bom = await ingestor.ingest_dropped(
            drop(config, "users", "bom.json", b"\xef\xbb\xbf" + text.encode())
        )
        utf16 = await ingestor.ingest_dropped(
            drop(config, "users", "wide.json", text.encode("utf-16"))
        )
        bare16 = await ingestor.ingest_dropped(
            drop(config, "users", "wide.ndjson", text.encode("utf-16-le"))
        )
    assert bom is not None and bom.status == "done" and bom.applied == 2
    assert utf16 is not None and utf16.status == "quarantined"
    assert "UTF-16" in utf16.failures[0].reason and "save it as UTF-8" in utf16.failures[0].reason
    assert bare16 is not None and bare16.status == "quarantined"
    assert "save it as UTF-8" in bare16.failures[0].reason
    assert not list((config.drop_path / "users/.processing").iterdir())


@BOTH_PARSERS
async def test_deep_nesting_is_refused_in_bounded_time_and_the_next_document_read(
    tmp_path: Path, parser_process: bool
) -> None:
    config = make_config(tmp_path, parser_process)
    nested = b"[" + b"[" * 100_000 + b"]" * 100_000 + b", " + orjson.dumps(envelope(1)) + b"]"
    unclosed = b"[" * 100_000
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        first = await ingestor.ingest_dropped(drop(config, "users", "nested.json", nested))
        second = await ingestor.ingest_dropped(drop(config, "users", "unclosed.json", unclosed))
    assert first is not None and first.status == "quarantined" and first.applied == 1
    assert [f.index for f in first.failures] == [0]
    assert "nested more than 64 levels deep (drop.max_depth)" in first.failures[0].reason
    assert second is not None and second.status == "quarantined"
    assert "nested more than 64 levels deep" in second.failures[0].reason
    assert (config.drop_path / "users/.quarantine/unclosed.json").exists()


@BOTH_PARSERS
@pytest.mark.parametrize("form", ["json", "ndjson"])
async def test_a_document_over_the_size_limit_is_skipped_unread(
    tmp_path: Path, parser_process: bool, form: str
) -> None:
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {
                "path": str(tmp_path / "drop"),
                "parser_process_min_mb": 0 if parser_process else 8,
                "max_document_mb": 0.01,  # 10,485 bytes
            },
            "collections": {"users": {"timestamp_unit": "ms"}},
        },
        "test.toml",
    )
    many_keys = {"data": {"id": 1, **{f"k{i}": i for i in range(5000)}}, "updatedAt": 1}
    long_text = {"data": {"id": 2, "s": "x" * 300_000}, "updatedAt": 1}
    docs = [many_keys, envelope(3), long_text, envelope(4)]
    content = orjson.dumps(docs) if form == "json" else b"\n".join(map(orjson.dumps, docs))
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(
            drop(config, "users", f"big.{form}", content)
        )
    assert report is not None and report.status == "quarantined"
    assert [f.index for f in report.failures] == [0, 2]
    assert all("longer than the limit of 10,485 bytes" in f.reason for f in report.failures)
    assert [r[0] for r in records(config)] == ["3", "4"]


async def test_ingest_of_a_file_another_ingest_has_locked_but_not_recorded_says_who(
    tmp_path: Path,
) -> None:
    """Two ``dropsync ingest`` of one path at once: the second looked between the first's
    lock and its ledger row, and said "no such file" (exit 1) for a file being ingested."""
    config = make_config(tmp_path)
    path = drop(config, "users", "a.json", orjson.dumps([envelope(1)]))
    first = lock_dropped(path, "users")  # the first ingest, before its row is committed
    assert first is not None
    try:
        async with await Store.open(config.store_path) as store:
            answer = await ingest_named(Ingestor(store, config), path, None)
    finally:
        first.close()
    assert isinstance(answer, NotIngested)
    assert (answer.failed, answer.message) == (
        False,
        f"{path}: taken by another ingest: being claimed",
    )


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
async def test_a_big_file_is_ingested_with_the_bulk_cache_and_a_small_one_is_not(
    tmp_path: Path, big: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, parser_process=True)
    path = drop(config, "users", "a.json", orjson.dumps([envelope(i) for i in range(20)]))
    if big:
        monkeypatch.setattr(ingest_module, "BULK_MIN_BYTES", path.stat().st_size)
    seen: list[int] = []
    commit_batch = ingest_module._commit_batch

    def commit_and_look(conn: sqlite3.Connection, *args: Any) -> Any:
        seen.append(-int(conn.execute("PRAGMA cache_size").fetchone()[0]))
        return commit_batch(conn, *args)

    monkeypatch.setattr(ingest_module, "_commit_batch", commit_and_look)
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(path)
        after = await store.call(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0])
    assert report is not None and report.status == "done" and seen
    assert set(seen) == {BULK_CACHE_KIB if big else STEADY_CACHE_KIB}
    assert -after == STEADY_CACHE_KIB


@BOTH_PARSERS
async def test_epoch_seconds_are_refused_unless_the_collection_says_seconds(
    tmp_path: Path, parser_process: bool
) -> None:
    config = make_config(
        tmp_path,
        parser_process,
        contacts={"key": "email", "timestamp": "at"},
        secs={"key": "email", "timestamp": "at", "timestamp_unit": "s"},
    )
    newer = {"email": "a@x", "at": 1_796_648_449, "v": "new"}
    older = {"email": "a@x", "at": 1_796_648_448, "v": "old"}
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        for collection in ("contacts", "secs"):
            for name, doc in (("1.json", newer), ("2.json", older)):
                await ingestor.ingest_dropped(drop(config, collection, name, orjson.dumps(doc)))
    receipt = orjson.loads(
        (config.drop_path / "contacts/.quarantine/1.json.error.json").read_bytes()
    )
    assert receipt["applied"] == 0
    assert (
        "looks like epoch seconds: as milliseconds it is 1970-01-21T19:04:08.449Z"
        in (receipt["errors"][0]["reason"])
    )
    assert (config.drop_path / "contacts/.quarantine/2.json").exists()
    assert (config.drop_path / "secs/.done/2.json").exists()
    raw = sqlite3.connect(config.store_path)
    rows = raw.execute("SELECT collection, updated_at, body FROM records").fetchall()
    raw.close()
    assert rows == [("secs", 1_796_648_449_000, '{"at":1796648449,"email":"a@x","v":"new"}')]


async def test_the_providers_are_told_of_each_batch_before_the_file_is_filed_away(
    tmp_path: Path,
) -> None:
    # Their records go out while the file is still parsed or filed away: the daemon wakes
    # the providers a batch queued for as soon as it is committed, not at the file's end.
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {"path": str(tmp_path / "drop"), "batch": 3},
            "providers": {"crm": {"kind": "crm", "base_url": "http://127.0.0.1:9"}},
            "collections": {"users": {"providers": ["crm"], "timestamp_unit": "ms"}},
        },
        "test.toml",
    )
    path = drop(config, "users", "a.json", orjson.dumps([envelope(i) for i in range(7)]))
    told: list[tuple[set[str], bool]] = []
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        ingestor.on_merge = lambda merged: told.append(
            (set(merged.providers), (path.parent / ".processing/a.json").exists())
        )
        report = await ingestor.ingest_dropped(path)
    assert report is not None and report.status == "done" and report.applied == 7
    assert told == [({"crm"}, True)] * 3  # batches of 3, 3 and 1, each while in .processing/
