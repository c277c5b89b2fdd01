"""Recovery after a kill at each step of a drop file's ingest, from the state each step leaves.

claim (row, then move into .processing/) -> hash -> batches -> row names the destination
-> move -> row finished. A kill can land between any two; the next sweep must finish the
file, never move it onto another file's name, and leave exactly one ledger row per file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest
from dropsync.daemon.config import Config
from dropsync.daemon.ingest import dropfiles
from dropsync.daemon.ingest.ingestor import VANISHED, Ingestor, file_digest
from dropsync.daemon.ingest.watcher import candidate_files
from dropsync.store import files
from dropsync.store.handle import Store
from structlog.testing import capture_logs

from tests.daemon.ingest.test_ingestor import drop, envelope, make_config

pytestmark = pytest.mark.anyio


def put(config: Config, relative: str, content: bytes) -> Path:
    path = config.drop_path / "users" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def ledger(config: Config) -> list[tuple[object, ...]]:
    raw = sqlite3.connect(config.store_path)
    try:
        return raw.execute(
            "SELECT id, name, status, path, duplicate_of FROM files ORDER BY id"
        ).fetchall()
    finally:
        raw.close()


def execute(config: Config, sql: str, params: tuple[object, ...] = ()) -> None:
    raw = sqlite3.connect(config.store_path)
    raw.execute(sql, params)
    raw.commit()
    raw.close()


def processing_row(config: Config, name: str, path: Path, sha: str = "", seen: int = 0) -> None:
    execute(
        config,
        "INSERT INTO files (collection, name, path, sha256, size, status, docs_seen, received_at) "
        "VALUES ('users', ?, ?, ?, 1, 'processing', ?, 1)",
        (name, str(path), sha, seen),
    )


async def sweep_and_rescan(store: Store, config: Config) -> None:
    ingestor = Ingestor(store, config)
    await ingestor.recover()
    for path in candidate_files(config.drop_path):
        await ingestor.ingest_dropped(path)
    await ingestor.recover()


CONTENT = orjson.dumps([envelope(i) for i in range(5)])


async def test_killed_between_the_row_and_the_move_the_file_keeps_that_row(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    path = drop(config, "users", "a.json", CONTENT)
    async with await Store.open(config.store_path) as store:
        processing_row(config, "a.json", path.parent / ".processing/a.json")
        await sweep_and_rescan(store, config)
    folder = config.drop_path / "users"
    assert ledger(config) == [(1, "a.json", "done", str(folder / ".done/a.json"), None)]


async def test_killed_after_the_move_before_the_hash_it_is_ingested_once(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    put(config, ".processing/a.json", CONTENT)
    async with await Store.open(config.store_path) as store:
        processing_row(config, "a.json", folder / ".processing/a.json")
        await sweep_and_rescan(store, config)
    assert ledger(config) == [(1, "a.json", "done", str(folder / ".done/a.json"), None)]


async def test_killed_right_after_the_claim_the_file_gets_a_row(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    put(config, ".processing/a.json", CONTENT)
    async with await Store.open(config.store_path) as store:
        await sweep_and_rescan(store, config)
    assert ledger(config) == [(1, "a.json", "done", str(folder / ".done/a.json"), None)]


async def test_killed_while_filing_it_never_takes_an_earlier_files_name(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        first = await ingestor.ingest_dropped(drop(config, "users", "a.json", CONTENT))
        assert first is not None and first.path == folder / ".done/a.json"
        # A second a.json (same content) was claimed as a-1.json, its row named the
        # destination, then the daemon was killed before the move.
        put(config, ".processing/a-1.json", CONTENT)
        processing_row(config, "a.json", folder / ".done/a-1.json", sha="x")
        await sweep_and_rescan(store, config)
    assert (folder / ".done/a.json").read_bytes() == CONTENT
    assert sorted(p.name for p in (folder / ".done").iterdir()) == ["a-1.json", "a.json"]
    rows = ledger(config)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("a.json", "done", str(folder / ".done/a.json")),
        ("a.json", "done", str(folder / ".done/a-1.json")),
    ]


async def test_killed_after_the_move_the_row_is_finished(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    put(config, ".quarantine/b.json", CONTENT)
    async with await Store.open(config.store_path) as store:
        processing_row(config, "b.json", folder / ".quarantine/b.json", sha="x")
        await sweep_and_rescan(store, config)
    rows = ledger(config)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("b.json", "quarantined", str(folder / ".quarantine/b.json"))
    ]


async def test_an_earlier_file_deleted_from_done_is_not_where_a_new_one_goes_unrecorded(
    tmp_path: Path,
) -> None:
    # The defect: an orphan in .processing/ with an earlier file's content, whose .done/
    # copy was cleaned up, was renamed to that file's name with no row of its own.
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    async with await Store.open(config.store_path) as store:
        await Ingestor(store, config).ingest_dropped(drop(config, "users", "a.json", CONTENT))
        (folder / ".done/a.json").unlink()
        put(config, ".processing/b.json", CONTENT)
        await sweep_and_rescan(store, config)
    rows = ledger(config)
    assert [(r[1], r[2], r[4]) for r in rows] == [("a.json", "done", None), ("b.json", "done", 1)]
    assert rows[1][3] == str(folder / ".done/b.json") and (folder / ".done/b.json").exists()


async def test_a_file_deleted_from_processing_finishes_its_row_saying_so(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    async with await Store.open(config.store_path) as store:
        processing_row(config, "gone.json", folder / ".processing/gone.json", sha="x", seen=3)
        await sweep_and_rescan(store, config)
        raw = sqlite3.connect(config.store_path)
        status, error = raw.execute("SELECT status, error FROM files").fetchone()
        raw.close()
    assert status == "quarantined" and "disappeared" in error


async def test_a_file_taken_away_before_it_was_read_leaves_no_row(tmp_path: Path) -> None:
    # Claimed (its row written), then moved back out by its writer before the claim moved it
    # into .processing/: nothing of it was read. It used to end as "quarantined" though it
    # was in no .quarantine/ and none of it had been taken.
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    path = drop(config, "users", "away.json", CONTENT)
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        claim = dropfiles.lock_dropped(path, "users")
        assert claim is not None
        try:
            await ingestor.new_row(claim, folder / ".processing/away.json")
            path.rename(tmp_path / "away.json")  # the writer takes it back
        finally:
            claim.close()
        with capture_logs() as logs:
            await ingestor.recover()
    assert ledger(config) == []
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == ["file_withdrawn"]
    assert not any(folder.rglob("*.json"))


async def claimed_then_deleted(
    ingestor: Ingestor, config: Config, name: str, *, delete: bool = True
) -> tuple[dropfiles.Claim, int]:
    """A file dropped, claimed as the watcher claims it (its row, then moved into
    .processing/), then (``delete``) deleted there by someone else, before its ingest hashed
    it."""
    path = drop(config, "users", name, CONTENT)
    claim = dropfiles.lock_dropped(path, "users")
    assert claim is not None
    place = config.drop_path / "users" / ".processing" / name
    file_id = await ingestor.new_row(claim, place)
    place.parent.mkdir(exist_ok=True)
    path.rename(place)
    claim.path = place
    if delete:
        place.unlink()
    return claim, file_id


async def test_a_sweep_leaves_the_row_of_a_file_deleted_under_a_live_ingest_to_that_ingest(
    tmp_path: Path,
) -> None:
    # Claimed and moved into .processing/, then deleted before it was hashed: its lock can no
    # longer be seen by path, so a sweep running then took the row for a withdrawn file's and
    # deleted it, and the live ingest failed on the missing row (`ingest_failed`, once in a
    # CI run of the hostile-files campaign).
    config = make_config(tmp_path)
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        claim, file_id = await claimed_then_deleted(ingestor, config, "gone.json")
        try:
            with capture_logs() as logs:
                assert await ingestor.recover() == []
                assert [row[0] for row in ledger(config)] == [file_id]
                report = await ingestor.ingest_claimed(claim, file_id)
        finally:
            claim.close()
    assert report.status == "quarantined" and "disappeared" in (report.error or "")
    assert [(name, status) for _, name, status, _, _ in ledger(config)] == [
        ("gone.json", "quarantined")
    ]
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == ["file_vanished"]


async def test_a_file_dropped_again_under_the_name_of_one_deleted_under_its_ingest_is_its_own(
    tmp_path: Path,
) -> None:
    # x.json claimed, moved into .processing/ and deleted there before it was hashed; a new
    # x.json dropped meanwhile took the first one's row (a row of that name with no hash
    # and nothing at its path looked like the same file's) and its place in .processing/,
    # where the first ingest, which goes by path, read it and filed it away as its own.
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        claim_a, id_a = await claimed_then_deleted(ingestor, config, "x.json")
        place = claim_a.path
        claim_b = None
        try:
            second = drop(config, "users", "x.json", orjson.dumps([envelope(i) for i in range(9)]))
            claim_b = dropfiles.lock_dropped(second, "users")
            assert claim_b is not None
            id_b = await ingestor._claim(claim_b)  # the watcher's claim, up to the move
            assert id_b is not None and id_b != id_a
            assert claim_b.path != place
            report_a = await ingestor.ingest_claimed(claim_a, id_a)
            report_b = await ingestor.ingest_claimed(claim_b, id_b)
        finally:
            claim_a.close()
            if claim_b is not None:
                claim_b.close()
    assert report_a.status == "quarantined" and "disappeared" in (report_a.error or "")
    assert (report_b.status, report_b.applied) == ("done", 9)
    assert [(row[0], row[2]) for row in ledger(config)] == [(id_a, "quarantined"), (id_b, "done")]
    assert [p.name for p in (folder / ".done").iterdir()] == [report_b.path.name]


async def test_a_file_with_the_content_of_one_being_ingested_is_applied_itself(
    tmp_path: Path,
) -> None:
    # b.json has the content of a.json, which a live ingest holds: b was recorded as its
    # duplicate and filed with nothing applied ("its documents will be"). a.json was then
    # deleted under its ingest before the end: what it had not applied yet was never applied
    # by either file, though b.json, a good file, was filed in .done/.
    config = make_config(tmp_path)
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        claim_a, id_a = await claimed_then_deleted(ingestor, config, "a.json", delete=False)
        try:
            sha, size = file_digest(claim_a.fd)  # a.json hashed by its ingest, then read...
            await store.transact(files.set_content, id_a, sha, size)
            report_b = await ingestor.ingest_dropped(drop(config, "users", "b.json", CONTENT))
            claim_a.path.unlink()  # ...and deleted before its ingest applied anything
            report_a = await ingestor.ingest_claimed(claim_a, id_a)
        finally:
            claim_a.close()
    assert report_b is not None and report_b.duplicate_of is None
    assert (report_b.status, report_b.applied) == ("done", 5)
    assert report_a.status == "quarantined"
    raw = sqlite3.connect(config.store_path)
    assert raw.execute("SELECT COUNT(*) FROM records").fetchone() == (5,)
    raw.close()


async def test_a_row_whose_file_is_deleted_while_read_is_finished_by_its_ingest_not_a_sweep(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    path = put(config, ".processing/read.json", CONTENT)
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        claim = dropfiles.take_over(path, "users", "read.json")
        assert claim is not None
        try:
            file_id = await ingestor.new_row(claim)
            execute(
                config, "UPDATE files SET sha256 = 'ab', docs_seen = 2 WHERE id = ?", (file_id,)
            )
            path.unlink()
            with capture_logs() as logs:
                assert await ingestor.recover() == []
            assert [row[2] for row in ledger(config)] == ["processing"]
            assert not [e for e in logs if e["event"] == "file_vanished"]
        finally:
            claim.close()
        # Once its ingest is over (here: it let go without finishing), the sweep finishes it.
        assert [r.error for r in await ingestor.recover()] == [VANISHED]
    assert [row[2] for row in ledger(config)] == ["quarantined"]


async def test_a_file_an_ingest_holds_is_left_alone(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    held = put(config, ".processing/held.json", CONTENT)
    fd = dropfiles.lock_file(held)
    assert fd is not None
    try:
        async with await Store.open(config.store_path) as store:
            assert await Ingestor(store, config).recover() == []
        assert held.exists() and ledger(config) == []
    finally:
        os.close(fd)
    assert not (folder / ".done").exists()


async def test_a_file_deleted_or_whose_folder_is_removed_while_ingested_is_finished_saying_so(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    async with await Store.open(config.store_path) as store:
        ingestor = Ingestor(store, config)
        for collection, remove in (
            ("users", lambda path: path.unlink()),
            ("gone", lambda path: shutil.rmtree(path.parent.parent)),
        ):
            path = config.drop_path / collection / ".processing/a.json"
            path.parent.mkdir(parents=True)
            path.write_bytes(CONTENT)
            claim = dropfiles.take_over(path, collection, "a.json")
            assert claim is not None
            try:
                file_id = await ingestor.new_row(claim)
                remove(path)  # under the ingest, which holds the file open
                report = await ingestor.ingest_claimed(claim, file_id)
            finally:
                claim.close()
            assert report.status == "quarantined" and "disappeared" in (report.error or "")
    assert [(name, status) for _, name, status, _, _ in ledger(config)] == [
        ("a.json", "quarantined"),
        ("a.json", "quarantined"),
    ]


async def test_a_long_name_left_in_processing_by_an_older_version_is_filed_with_its_receipt(
    tmp_path: Path,
) -> None:
    # An older version claimed it under its whole name; its receipt would not fit.
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    name = "q" * 245 + ".json"
    put(config, f".processing/{name}", orjson.dumps([envelope(1), {"bad": True}]))
    async with await Store.open(config.store_path) as store:
        processing_row(config, name, folder / ".processing" / name)
        await sweep_and_rescan(store, config)
    [(_, dropped, status, path, _)] = ledger(config)
    assert (dropped, status) == (name, "quarantined")
    filed = Path(str(path))
    assert filed.parent == folder / ".quarantine" and filed.exists()
    receipt = filed.with_name(filed.name + dropfiles.RECEIPT_SUFFIX)
    assert orjson.loads(receipt.read_bytes())["file"] == name
    assert os.listdir(folder / ".processing") == []


async def test_a_long_name_put_in_quarantine_by_hand_gets_its_row_and_a_receipt(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    name = "h" * 250 + ".json"
    put(config, f".quarantine/{name}", CONTENT)
    async with await Store.open(config.store_path) as store:
        await sweep_and_rescan(store, config)
    [(_, dropped, status, path, _)] = ledger(config)
    assert (dropped, status) == (name, "quarantined")
    receipt = Path(f"{path}{dropfiles.RECEIPT_SUFFIX}")
    assert orjson.loads(receipt.read_bytes())["file"] == name
    assert sorted(os.listdir(folder / ".quarantine")) == [Path(str(path)).name, receipt.name]


async def test_a_link_at_the_receipts_name_is_replaced_never_written_through(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    put(config, ".processing/a.json", orjson.dumps([envelope(1), {"bad": True}]))
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (folder / ".quarantine").mkdir()
    (folder / ".quarantine/a.json.error.json").symlink_to(outside)
    async with await Store.open(config.store_path) as store:
        processing_row(config, "a.json", folder / ".processing/a.json")
        await sweep_and_rescan(store, config)
    [(_, _, status, path, _)] = ledger(config)
    assert status == "quarantined" and outside.read_text() == "precious"
    receipt = Path(f"{path}{dropfiles.RECEIPT_SUFFIX}")
    assert not receipt.is_symlink() and orjson.loads(receipt.read_bytes())["file"] == "a.json"


@pytest.mark.parametrize("place", [".processing", ".done", ".quarantine"])
async def test_a_daemon_folder_that_is_a_link_is_replaced_never_followed(
    tmp_path: Path, place: str
) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs.json").write_bytes(CONTENT)  # never read, never moved
    folder.mkdir(parents=True)
    (folder / place).symlink_to(outside)
    put(config, "good.json", CONTENT)
    put(config, "bad.json", orjson.dumps([envelope(1), {"bad": True}]))
    async with await Store.open(config.store_path) as store:
        await sweep_and_rescan(store, config)
    assert sorted(os.listdir(outside)) == ["theirs.json"]
    assert not (folder / place).is_symlink()
    assert sorted((name, status) for _, name, status, _, _ in ledger(config)) == [
        ("bad.json", "quarantined"),
        ("good.json", "done"),
    ]
