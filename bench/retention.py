"""Bench: a day of steady traffic in fast time; does the store's size stay flat?

``python bench/retention.py`` simulates 24 hours, minute by minute, on the store's own
functions with a simulated clock (``now``): each minute 60 local changes to a pool of
3,000 keys (the SQL door: each is an inbox row), one favourites pull that returns the
same 300 favourites again, and every pending outbox entry delivered (``deliveries``,
``delivered``). Every simulated hour the retention pass runs as the daemon runs it
(``store.retention``), with a retention window of 2 hours (``retain_days`` = 2/24) so
that a day shows many windows.

The reference, in the same run, is the same traffic on a second store with no
retention and the favourites pull logged as before (a ``duplicate`` inbox row per
favourite per pull). Printed per simulated hour for both: the store's size on disk
(after a WAL checkpoint), its inbox and deliveries rows. Target: with retention the size
after hour 4 stays within 10 % of its size at hour 4 (flat), while the reference grows.
``--hours N``: another length; ``--quick``: 6 hours.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dropsync.store import retention
from dropsync.store.merge import Change, apply_changes
from dropsync.store.outbox import OutboxEntry, deliver_batch

from bench.common import emit, migrate

HOUR_MS = 3_600_000
ROUTES = {"contacts": ("crm",), "favourites": ("favourites",)}
KEYS = 3000
PER_MINUTE = 60
FAVOURITES = 300
RETAIN_DAYS = 2 / 24


def change(collection: str, key: str, ts: int, origin: str, n: int) -> Change:
    body = orjson.dumps(
        {"email": key, "name": f"guest {n}", "nights": n % 14, "updated_at": ts},
        option=orjson.OPT_SORT_KEYS,
    ).decode()
    return Change(
        collection, key, body, ts, False, origin, hashlib.sha256(body.encode()).hexdigest()[:32]
    )


def pulled_favourites() -> list[Change]:
    """What the favourites provider answers on every pull: the same 300 items."""
    return [
        change("favourites", f"user{i % 7}:session_{i}", 1_700_000_000_000 + i, "favourites", i)
        for i in range(FAVOURITES)
    ]


def log_every_pull(db: sqlite3.Connection, changes: list[Change], now: int) -> None:
    """The reference: a pull logged as before the fix (a duplicate row per item)."""
    db.executemany(
        "INSERT INTO inbox (collection, key, op, updated_at, origin, received_at, status, digest, "
        "ts, processed_at) VALUES (?, ?, 'upsert', ?, ?, ?, 'duplicate', ?, ?, ?)",
        [(c.collection, c.key, c.ts, c.origin, now, c.digest, c.ts, now) for c in changes],
    )


def deliver_all(db: sqlite3.Connection, now: int, batch: int) -> None:
    rows = db.execute(
        "SELECT o.id, o.collection, o.key, o.updated_at, r.deleted, r.body, o.attempts, o.provider "
        "FROM outbox o JOIN records r ON r.collection = o.collection AND r.key = o.key"
    ).fetchall()
    by_provider: dict[str, list[OutboxEntry]] = {}
    for i, c, k, u, d, b, a, provider in rows:
        by_provider.setdefault(provider, []).append(OutboxEntry(i, c, k, u, bool(d), b, a))
    for provider, entries in by_provider.items():
        for start in range(0, len(entries), 500):
            deliver_batch(
                db,
                provider,
                entries[start : start + 500],
                batch_id=f"b{now}-{batch}-{start}",
                state="accepted",
                http_status=201,
                latency_ms=5.0,
                remote_ref=None,
                now=now,
            )


def prune(db: sqlite3.Connection, now: int) -> tuple[int, int]:
    before = now - int(RETAIN_DAYS * 24 * HOUR_MS)
    inbox = deliveries = 0
    after = 0
    while True:
        db.execute("BEGIN IMMEDIATE")
        deleted, upto = retention.prune_inbox(db, before=before, after_id=after, limit=5000)
        db.execute("COMMIT")
        inbox += deleted
        if upto == after:
            break
        after = upto
    while True:
        db.execute("BEGIN IMMEDIATE")
        deleted = retention.prune_deliveries(db, before=before, limit=5000)
        db.execute("COMMIT")
        deliveries += deleted
        if deleted < 5000:
            break
    return inbox, deliveries


def size_mb(db: sqlite3.Connection, path: Path) -> float:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size / (1 << 20)


def simulate(path: Path, hours: int, *, with_retention: bool) -> list[dict[str, Any]]:
    migrate(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "INSERT INTO providers (name, kind, updated_at) "
        "VALUES ('crm', 'crm', 0), ('favourites', 'favourites', 0)"
    )
    favourites = pulled_favourites()
    now = 1_800_000_000_000
    n = 0
    rows: list[dict[str, Any]] = []
    for hour in range(1, hours + 1):
        for minute in range(60):
            now += 60_000
            local = []
            for _ in range(PER_MINUTE):
                n += 1
                local.append(change("contacts", f"guest{n % KEYS}@example.com", now, "sql", n))
            db.execute("BEGIN IMMEDIATE")
            apply_changes(db, local, ROUTES, now=now)
            apply_changes(db, favourites, ROUTES, now=now)
            if not with_retention:
                log_every_pull(db, favourites, now)
            deliver_all(db, now, minute)
            db.execute("COMMIT")
        pruned = prune(db, now) if with_retention else (0, 0)
        rows.append(
            {
                "hour": hour,
                "size_mb": round(size_mb(db, path), 2),
                "inbox": db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0],
                "deliveries": db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0],
                "pruned_inbox": pruned[0],
                "pruned_deliveries": pruned[1],
            }
        )
    db.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    hours = 6 if args.quick else args.hours
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        kept = simulate(Path(folder) / "retained.db", hours, with_retention=True)
        reference = simulate(Path(folder) / "reference.db", hours, with_retention=False)
        seconds = time.perf_counter() - started
    columns = f"{'size MB':>8} {'inbox':>8} {'deliveries':>10}"
    print(f"{'hour':>4} {columns}   | reference: {columns}")
    for a, b in zip(kept, reference, strict=True):
        left = f"{a['size_mb']:>8} {a['inbox']:>8} {a['deliveries']:>10}"
        right = f"{b['size_mb']:>8} {b['inbox']:>8} {b['deliveries']:>10}"
        print(f"{a['hour']:>4} {left}   |            {right}")
    settle = min(4, hours)
    base = kept[settle - 1]["size_mb"]
    growth = max(r["size_mb"] for r in kept[settle - 1 :]) / base - 1 if base else 0.0
    emit(
        {
            "bench": "retention",
            "simulated_hours": hours,
            "changes_per_minute": PER_MINUTE,
            "favourites_per_pull": FAVOURITES,
            "retain_hours": RETAIN_DAYS * 24,
            "size_mb_at_hour": {r["hour"]: r["size_mb"] for r in kept},
            "reference_size_mb_at_hour": {r["hour"]: r["size_mb"] for r in reference},
            "growth_after_hour_4_pct": round(100 * growth, 1),
            "target_pct": 10,
            "ok": growth <= 0.10,
            "seconds": round(seconds, 1),
        }
    )


if __name__ == "__main__":
    main()
