"""Bench: the store's size on disk against the NDJSON it was loaded from, by body size.

``python bench/store_size.py`` writes, for each body size (100 B, 300 B, 1 KB, 4 KB, 16 KB,
64 KB), one NDJSON file of N contacts (``{"email", "note", "updated_at"}``, already in the
canonical form, so each line is exactly the body the store keeps; emails in random order, as
an export sorted by anything else gives them) and loads it with ``dropsync ingest`` (the
daemon's ingest path, a subprocess) into fresh stores:

* ``plain``: the collection routed to no provider (``records`` only);
* ``routed``: routed to a CRM provider, nothing sent yet (``records`` and the ``outbox``);
* ``delivered``: the ``routed`` store after the daemon (``dropsync run``) delivered every
  entry to the CRM emulator (``records``, ``delivered``, ``deliveries``), unless
  ``--no-deliver``.

The store's size is its main file after ``PRAGMA wal_checkpoint(TRUNCATE)``: the WAL is
copied back and emptied, so it is not counted (the WAL found before the checkpoint is listed
as ``wal_before``). Free pages inside the file are counted (they are disk the store takes).
The ratio is store bytes / NDJSON bytes; the target is < 1.6 at every size. ``in use``: the
same without the file's free pages (after a delivery they are the pages the requests written
ahead held: up to a batch of bodies, reused by the next writes). Per table, the bytes of the
pages it and its indexes take (the ``dbstat`` virtual table); ``objects`` in the JSON line
lists each table and index on its own.

The reference, in the same run: the same bodies alone in a one-column rowid table (what
SQLite needs to hold the text, no key, no index): the part of the ratio that is not ours.

N is ``--docs`` (default 20,000), fewer for large bodies so that no file passes ``--max-mb``
(default 64, at least 500 documents). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    dropsync_command,
    emit,
    free_port,
    migrate,
    start_dropsync,
    start_emulators,
    stop_process,
)

SIZES = (100, 300, 1024, 4096, 16384, 65536)
TARGET_RATIO = 1.6
BASE_TS = 1_700_000_000_000
CRM_TOKEN = "demo-crm-token"  # the emulator's account acc_1 (dropsync emulate)
# Where the interesting bytes are; everything else is summed as "other".
SHOWN = (
    "records",
    "record_keys",
    "record_bodies",
    "outbox",
    "inbox",
    "delivered",
    "deliveries",
    "files",
)


def key_of(i: int) -> str:
    """The i-th email: a 64-bit scramble of i, so the keys arrive in no order."""
    return f"u{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}@example.com"


def line_of(i: int, size: int) -> bytes:
    """Document i as a canonical JSON line (keys sorted, no spaces) of exactly ``size`` bytes."""
    head = f'{{"email":"{key_of(i)}","note":"'
    tail = f'","updated_at":{BASE_TS + i}}}'
    pad = size - len(head) - len(tail)
    if pad < 0:
        raise SystemExit(f"a body of {size} bytes is too small for the document's own fields")
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    filler = (letters[i % 36 :] + letters * (pad // 36 + 1))[:pad]
    return (head + filler + tail).encode()


def write_ndjson(path: Path, docs: int, size: int) -> int:
    """Write ``docs`` documents of ``size`` bytes, one a line; returns the file's bytes."""
    with path.open("wb") as out:
        for i in range(docs):
            out.write(line_of(i, size) + b"\n")
    return path.stat().st_size


def config_text(work: Path, routed: bool, crm_url: str) -> str:
    """The contacts collection keyed on email, routed to the CRM or to nothing."""
    return (
        f'[store]\npath = "{work / "dropsync.db"}"\n'
        f'[drop]\npath = "{work / "drop"}"\n'
        "[collections.contacts]\n"
        'key = "email"\ntimestamp = "updated_at"\n'
        f"providers = {['crm'] if routed else []}\n".replace("'", '"')
        + "[providers.crm]\n"
        f'kind = "crm"\nbase_url = "{crm_url}"\naccount_id = "acc_1"\n'
        'secret_env = "BENCH_CRM_TOKEN"\nbatch_max_items = 1000\n'
    )


def ingest(work: Path, source: Path) -> float:
    """``dropsync ingest SOURCE --collection contacts``; returns its wall time."""
    started = time.perf_counter()
    subprocess.run(
        [
            *dropsync_command(),
            "ingest",
            str(source),
            "--collection",
            "contacts",
            "--config",
            str(work / "dropsync.toml"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "BENCH_CRM_TOKEN": CRM_TOKEN},
    )
    return time.perf_counter() - started


def measure(path: Path) -> dict[str, Any]:
    """Checkpoint the WAL away, then the file's size and the bytes of each table and index."""
    wal = path.with_name(path.name + "-wal")
    wal_before = wal.stat().st_size if wal.exists() else 0
    db = sqlite3.connect(path, isolation_level=None)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"{path}: the checkpoint could not finish")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0] * page_size
        objects = {
            str(name): int(size)
            for name, size in db.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            )
        }
        tables = dict(
            db.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')")
        )
    finally:
        db.close()
    by_table: dict[str, int] = {}
    for name, size in objects.items():
        # An index (autoindexes too) counts under its table, also listed on its own.
        table = tables.get(name, name)
        group = table if table in SHOWN else "other"
        by_table[group] = by_table.get(group, 0) + size
    return {
        "bytes": path.stat().st_size,
        "wal_before": wal_before,
        "free": free,
        "tables": by_table,
        "objects": {k: v for k, v in objects.items() if v >= 4 * page_size},
    }


def floor_bytes(work: Path, source: Path) -> int:
    """The reference: the bodies alone in a one-column rowid table, size after a checkpoint."""
    path = work / "floor.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE bodies (body TEXT NOT NULL)")
    db.execute("BEGIN")
    with source.open("rb") as lines:
        rows = ((line.rstrip(b"\n").decode(),) for line in lines)
        db.executemany("INSERT INTO bodies (body) VALUES (?)", rows)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size


def outbox_left(path: Path) -> int:
    """Entries still pending (read-only: the daemon is writing)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def deliver(work: Path, timeout: float = 600.0) -> float:
    """Run the daemon on ``work``'s store until its outbox is empty; returns the seconds."""
    store = work / "dropsync.db"
    process, _ = start_dropsync(
        work / "dropsync.toml", work / "daemon.log", env={"BENCH_CRM_TOKEN": CRM_TOKEN}
    )
    started = time.perf_counter()
    try:
        while outbox_left(store):
            if process.poll() is not None:
                raise RuntimeError(f"daemon exited: {(work / 'daemon.log').read_text()[-2000:]}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"outbox not empty after {timeout} s")
            time.sleep(0.2)
    finally:
        stop_process(process)
    return time.perf_counter() - started


def docs_for(size: int, docs: int, max_mb: float) -> int:
    """``docs``, or fewer so that the file stays within ``max_mb`` (at least 500)."""
    return max(500, min(docs, int(max_mb * 1e6 // (size + 1))))


def human(n: float) -> str:
    """Bytes as kB/MB for the table."""
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def print_table(rows: list[dict[str, Any]]) -> None:
    """The figures as a table (the JSON line follows)."""
    print(
        f"{'body':>6} {'docs':>6} {'store':>9} {'NDJSON':>9} {'file':>9} {'ratio':>6} "
        f"{'in use':>6} {'floor':>6}  kB per table (free: pages of the file not in use)"
    )
    for row in rows:
        parts = ", ".join(
            f"{name} {size / 1e3:.0f}" for name, size in row["tables"].items() if size
        )
        print(
            f"{row['body_bytes']:>6} {row['docs']:>6} {row['store']:>9} "
            f"{human(row['ndjson_bytes']):>9} {human(row['store_bytes']):>9} "
            f"{row['ratio']:>6.3f} {row['ratio_in_use']:>6.3f} {row['floor_ratio']:>6.3f}  "
            f"{parts}; free {row['free'] / 1e3:.0f}"
        )


def main() -> None:
    """Load each size into fresh stores; print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=20_000, help="documents per body size")
    parser.add_argument("--max-mb", type=float, default=64.0, help="largest NDJSON file")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="body sizes in bytes, comma-separated"
    )
    parser.add_argument("--no-deliver", action="store_true", help="skip the delivered stores")
    parser.add_argument("--workdir", help="make the temp dir here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    emulator = None
    crm_url = "http://127.0.0.1:9"
    if not args.no_deliver:
        crm_port = free_port()
        emulator = start_emulators(crm_port, free_port())
        crm_url = f"http://127.0.0.1:{crm_port}"
    try:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            base = Path(tmp)
            for size in sizes:
                docs = docs_for(size, args.docs, args.max_mb)
                source = base / f"contacts-{size}.ndjson"
                ndjson = write_ndjson(source, docs, size)
                (base / "floor").mkdir()
                floor = floor_bytes(base / "floor", source)
                stores = ["plain", "routed"] + ([] if args.no_deliver else ["delivered"])
                for store in stores:
                    work = base / f"{size}-{'plain' if store == 'plain' else 'routed'}"
                    seconds = 0.0
                    if store != "delivered":
                        work.mkdir()
                        (work / "dropsync.toml").write_text(
                            config_text(work, store == "routed", crm_url)
                        )
                        migrate(work / "dropsync.db")  # as the daemon's first start does
                        seconds = ingest(work, source)
                    else:
                        seconds = deliver(work)
                    figures = measure(work / "dropsync.db")
                    rows.append(
                        {
                            "body_bytes": size,
                            "docs": docs,
                            "store": store,
                            "ndjson_bytes": ndjson,
                            "store_bytes": figures["bytes"],
                            "ratio": round(figures["bytes"] / ndjson, 3),
                            "ratio_in_use": round((figures["bytes"] - figures["free"]) / ndjson, 3),
                            "floor_bytes": floor,
                            "floor_ratio": round(floor / ndjson, 3),
                            "wal_before": figures["wal_before"],
                            "free": figures["free"],
                            "tables": figures["tables"],
                            "objects": figures["objects"],
                            "seconds": round(seconds, 2),
                        }
                    )
                for leftover in [*base.glob("*-plain"), *base.glob("*-routed"), base / "floor"]:
                    shutil.rmtree(leftover)
                source.unlink()
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait()
    print_table(rows)
    worst = max(row["ratio"] for row in rows)
    emit(
        {
            "bench": "store_size",
            "rows": rows,
            "worst_ratio": worst,
            "target": {"ratio": TARGET_RATIO},
            "met": {
                store: all(r["ratio"] < TARGET_RATIO for r in rows if r["store"] == store)
                for store in dict.fromkeys(row["store"] for row in rows)
            },
        }
    )


if __name__ == "__main__":
    main()
