"""Bench: the bytes three table layouts for ``records`` take, by body size (the choice of
migration 7).

``python bench/store_layouts.py`` writes the same rows as a first load of N documents does
(collection, a 29-character key in random order, the metadata, the body; batches of 5,000
upserts in one transaction each) into a fresh file per layout, with plain sqlite3:

* ``without_rowid``: one WITHOUT ROWID table keyed by (collection, key) (versions 1 to 6);
* ``rowid_index``: a rowid table, body last, with a unique index on (collection, key);
* ``keys_bodies``: ``record_keys`` (WITHOUT ROWID, the metadata and a body id) and
  ``record_bodies`` (a rowid table of the bodies): version 7.

each with the digest as 32 hex characters (``text``) and as 16 bytes (``blob``). Printed per
body size: the file's size (after a checkpoint) / the documents' NDJSON size, and the
reference of the same run, the bodies alone in a one-column rowid table (``floor``: what
SQLite needs for the text itself). ``bench/store_size.py`` measures the daemon's real store.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit
from bench.store_size import key_of, line_of

SIZES = (100, 300, 700, 1024, 1536, 2048, 2600, 4096, 16384)
BATCH = 5000
META = (
    "updated_at INTEGER NOT NULL, deleted INTEGER NOT NULL, origin TEXT NOT NULL, "
    "digest {digest} NOT NULL, change_id INTEGER, file_id INTEGER, doc_index INTEGER, "
    "merged_at INTEGER NOT NULL"
)
COLUMNS = "collection, key, updated_at, deleted, origin, digest, change_id, file_id, doc_index"


def schema(layout: str, digest: str) -> list[str]:
    """The CREATE statements of one layout."""
    meta = META.format(digest=digest)
    if layout == "without_rowid":
        return [
            f"CREATE TABLE records (collection TEXT NOT NULL, key TEXT NOT NULL, body TEXT, "
            f"{meta}, PRIMARY KEY (collection, key)) WITHOUT ROWID"
        ]
    if layout == "rowid_index":
        return [
            f"CREATE TABLE records (collection TEXT NOT NULL, key TEXT NOT NULL, {meta}, "
            "body TEXT)",
            "CREATE UNIQUE INDEX records_by_key ON records (collection, key)",
        ]
    return [
        f"CREATE TABLE record_keys (collection TEXT NOT NULL, key TEXT NOT NULL, {meta}, "
        "body_id INTEGER NOT NULL, PRIMARY KEY (collection, key)) WITHOUT ROWID",
        "CREATE TABLE record_bodies (id INTEGER PRIMARY KEY, body TEXT)",
    ]


def load(path: Path, layout: str, digest: str, docs: int, size: int) -> int:
    """Write ``docs`` first versions in batches; returns the file's size after a checkpoint."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in schema(layout, digest):
        db.execute(statement)
    upsert = (
        f"INSERT INTO records ({COLUMNS}, merged_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "1796654219630, ?) ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body"
    )
    for start in range(0, docs, BATCH):
        rows: list[tuple[object, ...]] = []
        for i in range(start, min(docs, start + BATCH)):
            body = line_of(i, size).decode()
            raw = hashlib.sha256(body.encode()).digest()[:16]
            stored = raw if digest == "BLOB" else raw.hex()
            ts = 1_700_000_000_000 + i
            rows.append(("contacts", key_of(i), ts, 0, "drop", stored, None, 1, i, body))
        db.execute("BEGIN")
        if layout == "keys_bodies":
            db.executemany(
                "INSERT INTO record_bodies (id, body) VALUES (?, ?)",
                [(start + n + 1, row[-1]) for n, row in enumerate(rows)],
            )
            db.executemany(
                f"INSERT INTO record_keys ({COLUMNS}, merged_at, body_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1796654219630, ?)",
                [(*row[:-1], start + n + 1) for n, row in enumerate(rows)],
            )
        else:
            db.executemany(upsert, rows)
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size


def floor(path: Path, docs: int, size: int) -> int:
    """The reference: the bodies alone in a one-column rowid table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE bodies (body TEXT NOT NULL)")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO bodies (body) VALUES (?)", ((line_of(i, size).decode(),) for i in range(docs))
    )
    db.execute("COMMIT")
    db.close()
    return path.stat().st_size


def main() -> None:
    """Each layout at each size; a table, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=20_000, help="documents per body size")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="body sizes in bytes, comma-separated"
    )
    args = parser.parse_args()
    layouts = [
        (layout, digest)
        for layout in ("without_rowid", "rowid_index", "keys_bodies")
        for digest in ("TEXT", "BLOB")
    ]
    names = [f"{layout}/{digest.lower()}" for layout, digest in layouts]
    print(f"{'body':>6} {'floor':>6} " + " ".join(f"{name:>19}" for name in names))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            ndjson = args.docs * (size + 1)
            ratios = {}
            for name, (layout, digest) in zip(names, layouts, strict=True):
                path = Path(tmp) / f"{size}-{layout}-{digest}.db"
                ratios[name] = round(load(path, layout, digest, args.docs, size) / ndjson, 3)
                path.unlink()
            reference = round(floor(Path(tmp) / f"{size}-floor.db", args.docs, size) / ndjson, 3)
            print(
                f"{size:>6} {reference:>6.3f} " + " ".join(f"{r:>19.3f}" for r in ratios.values())
            )
            rows.append({"body_bytes": size, "floor": reference, **ratios})
    emit({"bench": "store_layouts", "docs": args.docs, "rows": rows})


if __name__ == "__main__":
    main()
