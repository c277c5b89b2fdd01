"""The store's size on disk against the documents loaded into it (bench/store_size.py measures
every size; here the sizes a table layout has gone wrong at)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from dropsync.daemon.config import parse_config
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.store.handle import Store

pytestmark = pytest.mark.anyio
TARGET_RATIO = 1.6


def ndjson(docs: int, size: int) -> bytes:
    """``docs`` canonical documents of exactly ``size`` bytes each, keys in no order."""
    lines = []
    for i in range(docs):
        key = f"u{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}@example.com"
        head, tail = f'{{"email":"{key}","note":"', f'","updated_at":{1_700_000_000_000 + i}}}'
        lines.append(head + "x" * (size - len(head) - len(tail)) + tail)
    return ("\n".join(lines) + "\n").encode()


def file_bytes(path: Path) -> int:
    """The store's main file once the WAL is copied back into it."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return path.stat().st_size


@pytest.mark.parametrize("size", [300, 1024, 1536, 4096])
async def test_a_store_of_documents_takes_less_than_1_6_times_their_size(
    tmp_path: Path, size: int
) -> None:
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {"path": str(tmp_path / "drop")},
            "collections": {"contacts": {"key": "email", "timestamp": "updated_at"}},
        },
        "test.toml",
    )
    content = ndjson(3_000_000 // size, size)
    folder = config.drop_path / "contacts"
    folder.mkdir(parents=True)
    (folder / "a.ndjson").write_bytes(content)
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(folder / "a.ndjson")
    assert report is not None and report.applied == 3_000_000 // size
    ratio = file_bytes(config.store_path) / len(content)
    assert ratio < TARGET_RATIO, f"{size} B documents: the store is {ratio:.2f} times their size"
