"""The minimal reference ingest pipeline the real path is compared with.

Stream-parse (ijson), LWW upsert into a records table, outbox append: plain
Python and sqlite3, no ledger, no audit log, no async. Run as a child process:
``python -m bench.reference FILE STORE``.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import ijson
import orjson

from bench.common import emit, peak_rss_mb

BATCH = 5000


def ingest(path: Path, store: Path) -> int:
    """Ingest ``path`` into a fresh ``store``; returns the document count."""
    db = sqlite3.connect(store, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "CREATE TABLE records (collection TEXT, key TEXT, body TEXT, updated_at INTEGER, "
        "PRIMARY KEY (collection, key)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, provider TEXT, collection TEXT, "
        "key TEXT, updated_at INTEGER)"
    )
    count = 0
    batch: list[tuple[str, str, str, int]] = []

    def flush() -> None:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO records VALUES (?, ?, ?, ?) ON CONFLICT (collection, key) DO UPDATE "
            "SET body = excluded.body, updated_at = excluded.updated_at "
            "WHERE excluded.updated_at > records.updated_at",
            batch,
        )
        db.executemany(
            "INSERT INTO outbox (provider, collection, key, updated_at) VALUES ('crm', ?, ?, ?)",
            [(c, k, t) for c, k, _, t in batch],
        )
        db.execute("COMMIT")
        batch.clear()

    with path.open("rb") as handle:
        for document in ijson.items(handle, "item", use_float=True, buf_size=1 << 18):
            key = str(document["data"]["id"])
            batch.append(("users", key, orjson.dumps(document).decode(), document["updatedAt"]))
            count += 1
            if len(batch) >= BATCH:
                flush()
    if batch:
        flush()
    db.close()
    return count


def main() -> None:
    """Child entry point: prints docs, seconds and peak RSS."""
    path, store = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.perf_counter()
    docs = ingest(path, store)
    elapsed = time.perf_counter() - started
    emit({"docs": docs, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
