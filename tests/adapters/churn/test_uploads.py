"""The churn provider end to end over loopback: files streamed to the emulator, brands
mapped by its callbacks, partial success, confirmations, failures and their error log."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from dropsync.adapters.churn import tables
from dropsync.adapters.churn.emulator import ERROR_LOG, ChurnEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.daemon.cli.status import format_status
from dropsync.store.queries import status_summary
from dropsync.store.readonly import open_readonly
from structlog.testing import capture_logs

from tests.churn_support import (
    CALLBACK_SECRET,
    TOKEN,
    churn_config,
    document,
    eventually,
    merge,
    running,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]


@pytest.fixture
def emulator(port: int) -> Iterator[EmulatorServer]:
    churn = ChurnEmulator(TOKEN, CALLBACK_SECRET, callback_base=None, callback_delay_s=0.05)
    with EmulatorServer(churn) as server:
        yield server


def churn_of(server: EmulatorServer) -> ChurnEmulator:
    assert isinstance(server.emulator, ChurnEmulator)
    return server.emulator


async def map_brands(store: object, mapping: dict[str, int]) -> None:
    # One transaction: a flush that read the brand map between two of them held one brand's
    # records back, sent them later in a file of their own, and a test that counts on the
    # files' order waited for ever (test_206_..., about one run in ten).
    def save(db: sqlite3.Connection) -> None:
        for client, ours in mapping.items():
            tables.save_brand(db, "churn", client, ours, now=1)

    await store.transact(save)  # type: ignore[attr-defined]


async def test_two_tables_two_brands_arrive_as_wellformed_multipart_once_each(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    # Small files: each (brand, table) group spans several files under the cap.
    config = churn_config(tmp_path, emulator.base_url, port, provider={"max_file_mb": 0.001})
    churn = churn_of(emulator)
    leftover = tmp_path / ".store.db.spool" / "churn" / "7" / "churn-7-0001.json"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("[")  # what a killed run left: removed at start, never sent
    async with running(config, port) as daemon:
        await map_brands(daemon.store, {"acme": 15, "globex": 16})
        changes = [
            document(collection, i, brand)
            for collection in ("users", "orders")
            for i in range(30)
            for brand in (("acme",) if i % 2 else ("globex",))
        ]
        await merge(daemon.store, config, changes)
        daemon.supervisor.wake(["churn"])
        await eventually(lambda: len(churn.documents) == 60, "every document arrives")
        # The emulator has the documents before the daemon records the answer: wait for that.
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM outbox_pending WHERE pending = 0"),
            "the delivery is recorded",
        )
        deliveries = await daemon.rows(
            "SELECT state, items FROM deliveries WHERE provider = 'churn'"
        )
    # Usually one upload of 60; on a loaded machine the batch may be cut in two (its spooling
    # outlasts the batch window). Either way every document goes out once, in files under the cap.
    assert {state for state, _ in deliveries} == {"accepted"}
    assert sum(items for _, items in deliveries) == 60
    assert len(churn.uploads) == len(deliveries)
    assert not any(upload["skipped"] for upload in churn.uploads)
    files = [f for upload in churn.uploads for f in upload["files"]]
    assert len(files) > 4  # several files per group: the cap holds
    assert {tuple(f["meta"].items()) for f in files} == {
        (("brandId", b), ("tableName", t)) for b in (15, 16) for t in ("user", "order")
    }
    brands = {"acme": 15, "globex": 16}
    tables = {"user": "user", "order": "order"}
    for brand_id, table, doc in churn.documents:
        # The data array entry of each file matches that file's documents.
        assert brands[doc["data"]["brand"]] == brand_id
        assert table in tables
    assert sorted(churn.applied.values()) == [1] * 60
    assert not list((tmp_path / ".store.db.spool" / "churn").glob("*/*.json"))
    assert not leftover.exists()


async def test_unmapped_brand_waits_until_the_brand_callback_arrives(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    churn = churn_of(emulator)
    churn.callback_base = f"http://127.0.0.1:{port}/callbacks/churn"
    churn.callback_delay_s = 3600  # no sync-status callback in this test
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "initech") for i in range(5)])
        daemon.supervisor.wake(["churn"])
        waiting = await eventually(
            lambda: daemon.rows("SELECT waiting, pending FROM pending_by_provider"),
            "the provider says why",
        )
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM pending_by_provider WHERE waiting IS NOT NULL"),
            "waiting is shown",
        )
        waiting = await daemon.rows("SELECT waiting, pending FROM pending_by_provider")
        assert "initech" in waiting[0][0] and waiting[0][1] == 5
        assert churn.uploads == []
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{emulator.base_url}/_emulator/brand",
                json={"stopChurnBrandId": 77, "brandIdFromClient": "initech"},
            )
        assert answer.json() == {"status": 200}
        await eventually(lambda: len(churn.documents) == 5, "the waiting records go out")
        assert {brand for brand, _, _ in churn.documents} == {77}
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM pending_by_provider WHERE waiting IS NULL"),
            "nothing waits any more",
        )


async def test_a_file_skipped_for_no_fault_of_its_documents_gets_through_in_halves(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    churn = churn_of(emulator)
    async with running(config, port) as daemon:
        await map_brands(daemon.store, {"acme": 15, "globex": 16})
        # Two files: acme first (file 0001), globex second (file 0002), skipped by its name:
        # its halves (files 0003, 0004) are taken.
        churn.skip_matching.append("-0002.json")
        changes = [document("users", i, "acme") for i in range(3)]
        changes += [document("users", 100 + i, "globex") for i in range(4)]
        with capture_logs() as logs:
            await merge(daemon.store, config, changes)
            daemon.supervisor.wake(["churn"])
            await eventually(
                lambda: daemon.rows("SELECT COUNT(*) FROM delivered HAVING COUNT(*) = 7"),
                "every record is delivered",
            )
        assert await daemon.rows("SELECT COUNT(*) FROM dead_letters") == [(0,)]
        assert await daemon.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
    narrowed = [e for e in logs if e["event"] == "skipped_files_narrowed"]
    assert narrowed == [
        {
            "event": "skipped_files_narrowed",
            "log_level": "info",
            "provider": "churn",
            "files": 1,
            "items": 4,
            "uploads": 1,
            "delivered": 4,
            "dead_lettered": 0,
        }
    ]
    assert len(churn.uploads) == 2
    first, second = churn.uploads
    assert [f["meta"]["brandId"] for f in first["files"]] == [15]
    assert len(first["skipped"]) == 1 and first["skipped"][0].endswith("-0002.json")
    assert [(f["meta"]["brandId"], f["docs"]) for f in second["files"]] == [(16, 2), (16, 2)]
    assert sorted(churn.applied.values()) == [1] * 7


async def test_sync_status_400_fetches_the_error_log_and_status_shows_it(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    churn = churn_of(emulator)
    churn.callback_base = f"http://127.0.0.1:{port}/callbacks/churn"
    churn.sync_status = 400
    churn.errors_get_405 = True  # GET refused: the daemon falls back to POST
    async with running(config, port) as daemon:
        await map_brands(daemon.store, {"acme": 15})
        await merge(daemon.store, config, [document("users", i, "acme") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT body FROM integration_errors WHERE body IS NOT NULL"),
            "the error log is stored",
        )
        # The failed records were queued once more and sent again; their second failure does
        # not queue them again.
        await eventually(lambda: len(churn.uploads) >= 2, "the failed records are sent again")
        await eventually(
            lambda: daemon.rows(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'failed' HAVING COUNT(*) = 2"
            ),
            "both uploads failed",
        )
        rows = await daemon.rows("SELECT provider, url, body, error FROM integration_errors")
    assert rows[0][0] == "churn" and rows[0][2] == ERROR_LOG and rows[0][3] is None
    assert rows[0][1].endswith("/_emulator/error-log")
    assert len(churn.uploads) == 2
    db = open_readonly(config.store_path)
    try:
        report = format_status(config.store_path, status_summary(db))
    finally:
        db.close()
    assert "integration errors (churn" in report and "not a valid address" in report
    assert TOKEN not in report and CALLBACK_SECRET not in report


async def test_unwritable_spool_pauses_with_the_reason_and_resumes(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    spool = tmp_path / ".store.db.spool"
    churn = churn_of(emulator)
    async with running(config, port) as daemon:
        # Once the flusher cleared its folder at start (and attached its scratch database):
        await eventually((spool / ".spool.db").exists, "the spool is ready")
        (spool / "churn").write_text("not a folder")  # the files cannot be written
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        rows = await eventually(
            lambda: daemon.rows(
                "SELECT state, last_error FROM providers WHERE state = 'backing-off'"
            ),
            "the provider says why it waits",
        )
        assert "cannot write the upload files" in rows[0][1]
        assert await daemon.rows("SELECT COUNT(*) FROM outbox") == [(3,)]
        (spool / "churn").unlink()
        await eventually(lambda: len(churn.documents) == 3, "delivered once the disk is back")
        await eventually(
            lambda: daemon.rows(
                "SELECT 1 FROM providers WHERE state = 'online' AND last_error IS NULL"
            ),
            "online again",
        )


async def test_a_link_in_place_of_the_spool_folder_is_removed_never_followed(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    spool, outside = tmp_path / ".store.db.spool", tmp_path / "outside"
    spool.mkdir()
    (outside / "7").mkdir(parents=True)
    (outside / "7/keep.json").write_text("precious")
    (spool / "churn").symlink_to(outside)
    churn = churn_of(emulator)
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        await eventually(lambda: len(churn.documents) == 3, "delivered")
        assert (spool / "churn").is_dir() and not (spool / "churn").is_symlink()
    assert [p.relative_to(outside) for p in outside.rglob("*")] == [Path("7"), Path("7/keep.json")]
    assert (outside / "7/keep.json").read_text() == "precious"


async def test_a_provider_named_like_the_spool_database_delivers(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    # The scratch database lives in the spool folder beside each provider's folder: no
    # provider name may be its name (it is hidden, and a provider name never starts with ".").
    name = "spool.db"
    config = churn_config(
        tmp_path, emulator.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    config = replace(
        config,
        providers={name: replace(config.providers["churn"], name=name)},
        collections={"users": replace(config.collections["users"], providers=(name,))},
    )
    churn = churn_of(emulator)
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake([name])
        await eventually(lambda: len(churn.documents) == 3, "delivered")
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM outbox_pending WHERE pending = 0"), "recorded"
        )
    assert (tmp_path / ".store.db.spool" / name).is_dir()


async def test_a_token_echoed_by_the_tool_never_reaches_the_store_or_logs(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    churn_of(emulator).echo_authorization = True
    with capture_logs() as logs:
        async with running(config, port) as daemon:
            await merge(daemon.store, config, [document("users", i, "x") for i in range(2)])
            daemon.supervisor.wake(["churn"])
            letters = await eventually(
                lambda: daemon.rows("SELECT MIN(reason) FROM dead_letters HAVING COUNT(*) = 2"),
                "the refused upload is dead-lettered",
            )
            texts = await daemon.rows(
                "SELECT COALESCE(error, '') FROM deliveries UNION ALL "
                "SELECT COALESCE(last_error, '') FROM providers UNION ALL "
                "SELECT reason FROM dead_letters"
            )
    assert "[redacted]" in letters[0][0]
    assert all(TOKEN not in text for (text,) in texts)
    assert TOKEN not in repr(logs)


async def test_a_brand_mapped_before_its_records_were_queued_is_seen_by_the_pass_that_takes_them(
    tmp_path: Path, port: int, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A brand callback, then the merge of its records, both landing while a pass is starting:
    # the pass that takes the records must know the mapping (it was read before the take,
    # so the records waited for a brand already mapped, until the next wake).
    from dropsync.daemon.delivery.flusher import Flusher

    config = churn_config(tmp_path, emulator.base_url, port)
    churn = churn_of(emulator)
    real_take = Flusher.take
    landed: list[bool] = []

    async def take_after_both_land(self: Flusher, after_id: int) -> list[object]:
        if not landed:
            landed.append(True)
            await map_brands(self.store, {"acme": 15})
            await merge(self.store, config, [document("users", i, "acme") for i in range(2)])
        return await real_take(self, after_id)  # type: ignore[return-value]

    monkeypatch.setattr(Flusher, "take", take_after_both_land)
    with capture_logs() as logs:
        async with running(config, port) as daemon:
            daemon.supervisor.wake(["churn"])
            await eventually(lambda: churn.uploads, "the records are uploaded")
    assert [f["meta"]["brandId"] for f in churn.uploads[0]["files"]] == [15]
    assert [e for e in logs if e["event"] == "records_waiting"] == []
