"""A churn file skipped for a bad document (206): its documents are uploaded again in halves
until the refused ones are isolated; only those are dead letters, with the tool's message,
and the number of uploads it took is logged (daemon/delivery/narrowing.py). Over loopback
against the churn emulator, whose table definitions refuse a document holding a "bad" value."""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.daemon.delivery import narrowing
from dropsync.store.handle import Store
from dropsync.store.merge import Change
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

FIXED_BRAND = {"brand_id": 15, "brand_field": None}


@pytest.fixture
def churn() -> Iterator[tuple[ChurnEmulator, EmulatorServer]]:
    emulator = ChurnEmulator(TOKEN, CALLBACK_SECRET, callback_base=None)
    with EmulatorServer(emulator) as server:
        yield emulator, server


def poisoned(i: int, bad: set[int]) -> Change:
    """Record ``i``; its data holds the value the tool refuses when ``i`` is in ``bad``."""
    return document("users", i, "POISON" if i in bad else "ok")


async def deliver(
    tmp_path: Path,
    port: int,
    server: EmulatorServer,
    count: int,
    bad: set[int],
    settled: str,
) -> tuple[list[MutableMapping[str, Any]], list[tuple[Any, ...]], int]:
    """Merge ``count`` records (``bad`` ones refused by the tool) and wait until ``settled``
    (SQL answering a row); returns the narrowing log lines, the dead letters, the delivered
    records."""
    config = churn_config(tmp_path, server.base_url, port, provider=FIXED_BRAND)
    async with running(config, port) as daemon:
        with capture_logs() as logs:
            await merge(daemon.store, config, [poisoned(i, bad) for i in range(count)])
            daemon.supervisor.wake(["churn"])
            await eventually(lambda: daemon.rows(settled), "the uploads are settled", 60)
            await eventually(
                lambda: [e for e in logs if e["event"] == "skipped_files_narrowed"], "logged"
            )
        letters = await daemon.rows(
            "SELECT key, http_status, reason FROM dead_letters ORDER BY CAST(key AS INTEGER)"
        )
        delivered = int((await daemon.rows("SELECT COUNT(*) FROM delivered"))[0][0])
        assert await daemon.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
        await assert_spool_empty(daemon.store)
    narrowed = [e for e in logs if e["event"] == "skipped_files_narrowed"]
    return narrowed, letters, delivered


async def assert_spool_empty(store: Store) -> None:
    """The batch's notes are dropped once its outcome is recorded."""

    async def empty() -> bool:
        rows = await store.call(
            lambda db: db.execute("SELECT COUNT(*) FROM spool.entries").fetchone()
        )
        return bool(rows == (0,))

    await eventually(empty, "the scratch notes are dropped")


async def test_one_bad_document_of_100_is_the_only_dead_letter(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    emulator.bad_values.append("POISON")
    narrowed, letters, delivered = await deliver(
        tmp_path, port, server, 100, {37}, "SELECT 1 FROM dead_letters"
    )
    assert [(k, s) for k, s, _ in letters] == [("37", 206)]
    reason = letters[0][2]
    assert reason.startswith("HTTP 206: Files uploaded partially, skipped files: churn-")
    assert delivered == 99
    good = {f"user:15:{i}@1700000000000" for i in range(100) if i != 37}
    assert set(emulator.applied) == good and set(emulator.applied.values()) == {1}
    [line] = narrowed
    # One upload a level, two files each: ceil(log2 100) = 7 at most.
    assert 1 <= line["uploads"] <= math.ceil(math.log2(100))
    assert len(emulator.uploads) == 1 + line["uploads"]
    assert all(len(u["files"]) + len(u["skipped"]) == 2 for u in emulator.uploads[1:])
    assert (line["files"], line["items"], line["delivered"], line["dead_lettered"]) == (
        1,
        100,
        99,
        1,
    )
    # Each good document is taken once, in the half it was in when its half was not skipped.
    taken = sum(f["docs"] for u in emulator.uploads[1:] for f in u["files"])
    assert taken == 99


async def test_several_bad_documents_cost_one_upload_a_level(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    emulator.bad_values.append("POISON")
    bad = {0, 17, 40, 41, 63}
    narrowed, letters, delivered = await deliver(
        tmp_path, port, server, 64, bad, "SELECT COUNT(*) FROM dead_letters HAVING COUNT(*) = 5"
    )
    assert sorted(int(k) for k, _, _ in letters) == sorted(bad)
    assert delivered == 64 - len(bad)
    [line] = narrowed
    assert line["uploads"] == 6  # log2 64 levels, the halves of a level in one upload
    assert max(len(u["files"]) + len(u["skipped"]) for u in emulator.uploads) <= 2 * len(bad)


async def test_a_file_whose_every_document_is_refused_stops_narrowing_in_bulk(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    emulator.bad_values.append("POISON")
    narrowed, letters, delivered = await deliver(
        tmp_path,
        port,
        server,
        300,
        set(range(300)),
        "SELECT COUNT(*) FROM dead_letters HAVING COUNT(*) = 300",
    )
    assert delivered == 0
    [line] = narrowed
    # Levels of 2, 4, ... 64 parts, all skipped: the 64 are one level past the bound.
    assert line["uploads"] == int(math.log2(narrowing.BULK_PIECES))
    assert all("not narrowed further" in reason for _, _, reason in letters)


async def test_a_one_document_file_skipped_twice_is_a_dead_letter(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    emulator.bad_values.append("POISON")
    narrowed, letters, delivered = await deliver(
        tmp_path, port, server, 1, {0}, "SELECT 1 FROM dead_letters"
    )
    assert [(k, s) for k, s, _ in letters] == [("0", 206)] and delivered == 0
    assert narrowed[0]["uploads"] == 1  # sent once more as it was
    assert len(emulator.uploads) == 2


async def test_halves_are_byte_ranges_of_the_file_whatever_the_documents_hold(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    # Separators, brackets, escapes and line breaks inside strings, non-ASCII: each half is
    # the documents' bytes as written, never parsed again.
    emulator, server = churn
    emulator.bad_values.append("POISON")
    tricky = ['",\n', "][", "\\", "\u2028é😀", ",\n]", "[{"]
    config = churn_config(tmp_path, server.base_url, port, provider=FIXED_BRAND)
    changes = []
    for i in range(24):
        data = {"id": i, "text": tricky[i % len(tricky)] * (i + 1), "mark": "ok"}
        if i == 13:
            data["mark"] = "POISON"
        body = orjson.dumps({"createdAt": 1, "data": data, "updatedAt": 2}).decode()
        changes.append(Change("users", str(i), body, 2, False, "drop", f"{i:032d}"))
    async with running(config, port) as daemon:
        await merge(daemon.store, config, changes)
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT COUNT(*) FROM delivered HAVING COUNT(*) = 23"), "23"
        )
        letters = await daemon.rows("SELECT key FROM dead_letters")
    assert letters == [("13",)]
    got = {doc["data"]["id"]: doc["data"]["text"] for _, _, doc in emulator.documents}
    assert got == {i: tricky[i % len(tricky)] * (i + 1) for i in range(24) if i != 13}
