"""Shared bench helpers: data generation, child processes, resource figures."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_TS = 1_696_821_819_000


def envelope_line(i: int) -> bytes:
    """One churn-envelope document of about 310 bytes (the seed's example shape)."""
    return (
        b'{"data":{"id":%d,"email":"user%d@example.com","phone":"+381638538392",'
        b'"marketingPreferences":{"email":true,"phone":true},'
        b'"systemPreferences":{"email":false,"phone":true},'
        b'"firstName":"John","lastName":"Doe","city":"Limassol"},'
        b'"createdAt":1696814606000,"updatedAt":%d}' % (i, i, BASE_TS + i)
    )


def write_envelopes(path: Path, count: int) -> int:
    """Write ``count`` envelopes as one JSON array, streaming; returns the size in bytes."""
    with path.open("wb") as out:
        out.write(b"[\n")
        for i in range(count):
            if i:
                out.write(b",\n")
            out.write(envelope_line(i))
        out.write(b"\n]\n")
    return path.stat().st_size


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m bench.<module> args`` and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line a bench reports."""
    print(json.dumps(result), flush=True)


def build_records(
    path: Path, rows: int, *, pending_for: str | None = None, pending: int = 0
) -> None:
    """Fill a migrated store with ``rows`` churn-envelope records (and a pending backlog)."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) SELECT 'users', CAST(i AS TEXT), "
        'printf(\'{"createdAt":1696814606000,"data":{"city":"Limassol","email":'
        '"user%d@example.com","id":%d},"updatedAt":%d}\', i, i, 1696821819000 + i), '
        "1696821819000 + i, 0, 'drop', printf('%032x', i), 0 FROM n",
        (rows,),
    )
    if pending_for is not None and pending:
        db.execute(
            "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
            "SELECT ?, collection, key, updated_at, 1700000000000 FROM records LIMIT ?",
            (pending_for, pending),
        )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def migrate(path: Path) -> None:
    """Create (or migrate) a store at ``path`` with the daemon's own migrations."""
    import anyio

    from store.db import open_store

    async def run() -> None:
        db = await open_store(path)
        await db.close()

    anyio.run(run)


def start_daemon(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    """``dropsync run`` as a subprocess; returns it and the seconds until ``daemon_ready``."""
    import os
    import time

    handle = log.open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    handle.close()
    while b'"daemon_ready"' not in log.read_bytes():
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited: {log.read_text()[-2000:]}")
        time.sleep(0.005)
    return process, time.perf_counter() - started
