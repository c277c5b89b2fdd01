"""Bench: a 10M-row store: ``dropsync status --json``, the pending views, start to READY.

``python bench/store.py --rows 10000000`` creates a store with the daemon's own schema
(migrated by ``store.db.open_store``), fills ``records`` with N rows, ``outbox`` with
a backlog of ``--pending`` entries for one of four providers and the ``files`` ledger
with ``--files`` files (plain sqlite3, large transactions), then measures:

* ``dropsync status --json`` as a subprocess (the installed console script), wall time,
  best and median of 5; beside it, in the same run, a bare interpreter start
  (``python -c pass``), a minimal status script (the stdlib modules a status command
  needs, the config read, the view asked, JSON printed) and the status queries run in
  this process, so the part the store answers and the part that is process start-up
  can be told apart;
* ``SELECT * FROM pending_by_provider`` and the 100 oldest pending entries of the
  provider with the backlog, via sqlite3 (best and median of 5): ``ORDER BY id`` as
  docs/schema.md recommends, and ``ORDER BY enqueued_at`` as a user may write it;
* daemon start to READY: ``dropsync run`` started as a subprocess, until its
  ``{"event":"daemon_ready",...}`` log line appears (best and median of 3).

Targets: each query and the status command < 50 ms; start to READY < 1 s. ``--quick``:
200k rows and a 20k backlog.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dropsync.store.queries import status_summary
from dropsync.store.readonly import open_readonly

from bench.common import (
    best_median,
    build_records,
    dropsync_command,
    emit,
    migrate,
    start_dropsync,
    stop_process,
)

TARGET_MS = 50.0
TARGET_READY_S = 1.0
OLDEST_BY_ID = "SELECT * FROM pending_entries WHERE provider = 'crm0' ORDER BY id LIMIT 100"
OLDEST_BY_TIME = (
    "SELECT * FROM pending_entries WHERE provider = 'crm0' ORDER BY enqueued_at LIMIT 100"
)


# The least a status command can do, as a reference: the stdlib modules it needs (argparse,
# tomllib, sqlite3, json), read the config, open the store read-only, ask the view, print.
MINIMAL_STATUS = """
import argparse, json, sqlite3, sys, tomllib
argparse.ArgumentParser().parse_args([])
with open(sys.argv[1], "rb") as f:
    tomllib.load(f)
db = sqlite3.connect("file:" + sys.argv[2] + "?mode=ro", uri=True)
print(json.dumps(db.execute("SELECT * FROM pending_by_provider").fetchall(), indent=2))
"""


def timed(action: Callable[[], object], repeat: int = 5) -> list[float]:
    """Wall time of each of ``repeat`` runs of ``action``, in ms."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        runs.append((time.perf_counter() - started) * 1000)
    return runs


def config_text(work: Path) -> str:
    """Four CRM providers on a closed loopback port; crm0 has the backlog (it stays offline)."""
    providers = "".join(
        f'[providers.crm{n}]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\n'
        f'account_id = "a"\nsecret_env = "BENCH_TOKEN"\n'
        for n in range(4)
    )
    return (
        f'[store]\npath = "{work / "store.db"}"\n[drop]\npath = "{work / "drop"}"\n'
        '[collections.users]\nproviders = ["crm0"]\n' + providers
    )


def status_in_process(path: Path) -> None:
    """Open the store read-only and run every query ``dropsync status`` runs."""
    db = open_readonly(path)
    try:
        status_summary(db)
    finally:
        db.close()


def main() -> None:
    """Build, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, help="records (default 10M)")
    parser.add_argument("--pending", type=int, help="crm0's backlog (default 1M)")
    parser.add_argument("--files", type=int, default=100_000, help="drop files in the ledger")
    parser.add_argument("--repeat", type=int, default=5, help="runs per query figure")
    parser.add_argument("--starts", type=int, default=3, help="daemon starts to READY")
    parser.add_argument("--quick", action="store_true", help="200k rows, a 20k backlog")
    parser.add_argument("--workdir", help="make the temp dir here")
    args = parser.parse_args()
    quick_or_full = (200_000, 20_000) if args.quick else (10_000_000, 1_000_000)
    args.rows = args.rows if args.rows is not None else quick_or_full[0]
    args.pending = args.pending if args.pending is not None else quick_or_full[1]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        db_path = work / "store.db"
        migrate(db_path)
        started = time.perf_counter()
        build_records(db_path, args.rows, pending_for="crm0", pending=args.pending)
        raw = sqlite3.connect(db_path)
        # The drop-file ledger of a long-running daemon: one file in 50 quarantined.
        raw.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
            "INSERT INTO files (collection, name, path, sha256, size, status, error, "
            "received_at, finished_at) SELECT 'users', 'f' || i || '.json', "
            "'drop/users/.done/f' || i || '.json', printf('%064x', i), 1000, "
            "CASE WHEN i % 50 = 0 THEN 'quarantined' ELSE 'done' END, "
            "CASE WHEN i % 50 = 0 THEN '1 document(s) rejected' END, i, i FROM n",
            (args.files,),
        )
        raw.execute(
            "INSERT INTO providers (name, kind, state, updated_at) VALUES "
            "('crm0', 'crm', 'offline', 0), ('crm1', 'crm', 'online', 0), "
            "('crm2', 'crm', 'online', 0), ('crm3', 'crm', 'online', 0)"
        )
        raw.commit()
        raw.close()
        built = time.perf_counter() - started
        config = work / "dropsync.toml"
        config.write_text(config_text(work))
        status_cmd = [*dropsync_command(), "status", "--json", "--config", str(config)]
        env_cmd = {"BENCH_TOKEN": "x"}
        check = subprocess.run(status_cmd, check=True, capture_output=True, text=True)
        status_ok = '"pending"' in check.stdout
        cli = timed(
            lambda: subprocess.run(status_cmd, check=True, capture_output=True), args.repeat
        )
        interpreter = timed(
            lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeat
        )
        floor_cmd = [sys.executable, "-c", MINIMAL_STATUS, str(config), str(db_path)]
        floor = timed(
            lambda: subprocess.run(floor_cmd, check=True, capture_output=True), args.repeat
        )
        in_process = timed(lambda: status_in_process(db_path), args.repeat)
        reader = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        view = timed(
            lambda: reader.execute("SELECT * FROM pending_by_provider").fetchall(), args.repeat
        )
        oldest = timed(lambda: reader.execute(OLDEST_BY_ID).fetchall(), args.repeat)
        oldest_by_time = timed(lambda: reader.execute(OLDEST_BY_TIME).fetchall(), args.repeat)
        plan = {
            "pending_by_provider": [
                row[3]
                for row in reader.execute("EXPLAIN QUERY PLAN SELECT * FROM pending_by_provider")
            ],
            "oldest_by_enqueued_at": [
                row[3] for row in reader.execute("EXPLAIN QUERY PLAN " + OLDEST_BY_TIME)
            ],
        }
        reader.close()
        ready = []
        for attempt in range(args.starts):
            process, seconds = start_dropsync(config, work / f"daemon{attempt}.log", env=env_cmd)
            ready.append(seconds)
            stop_process(process)
        size_mb = db_path.stat().st_size / 1e6
    medians = {
        "status_cli": statistics.median(cli),
        "pending_by_provider": statistics.median(view),
        "oldest_100_pending_by_id": statistics.median(oldest),
        "oldest_100_pending_by_enqueued_at": statistics.median(oldest_by_time),
    }
    emit(
        {
            "bench": "store",
            "rows": args.rows,
            "pending": args.pending,
            "files": args.files,
            "providers": 4,
            "store_mb": round(size_mb),
            "build_s": round(built, 1),
            "status_cli_ms": best_median(cli),
            "status_cli_output_ok": status_ok,
            "reference_python_start_ms": best_median(interpreter),
            "reference_minimal_status_ms": best_median(floor),
            "status_queries_in_process_ms": best_median(in_process),
            "pending_by_provider_ms": best_median(view),
            "oldest_100_pending_by_id_ms": best_median(oldest),
            "oldest_100_pending_by_enqueued_at_ms": best_median(oldest_by_time),
            "query_plans": plan,
            "start_to_ready_s": best_median(ready, 3),
            "repeat": args.repeat,
            "targets": {
                "status_cli_ms": TARGET_MS,
                "view_query_ms": TARGET_MS,
                "start_to_ready_s": TARGET_READY_S,
            },
            "met": {
                **{name: value < TARGET_MS for name, value in medians.items()},
                "start_to_ready": statistics.median(ready) < TARGET_READY_S,
            },
        }
    )


if __name__ == "__main__":
    main()
