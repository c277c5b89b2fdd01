"""Bench: a 10M-row store: ``status --json``, the pending views, daemon start to READY.

``python bench/store.py --rows 10000000`` builds a store with N records and a 1M-entry
backlog for one provider (4 providers configured), then measures (best and median of
5): the status query in process, ``dropsync status --json`` as a command (and, as the
reference, a bare ``python -c 'import sys'`` start in the same run), the two pending
views; and (best of 3) the time from starting ``dropsync run`` to its READY log line.
Targets: status and views < 50 ms each; start to READY < 1 s.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, build_records, emit, migrate, start_daemon
from store.queries import status_summary
from store.readonly import open_readonly


def timed(action: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """Best and median wall time of ``action`` in ms."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        runs.append((time.perf_counter() - started) * 1000)
    return min(runs), statistics.median(runs)


def config_text(work: Path) -> str:
    """Four providers (closed ports: nothing is pending for three, the fourth is offline)."""
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
    """The status query as the CLI runs it."""
    db = open_readonly(path)
    try:
        status_summary(db)
    finally:
        db.close()


def main() -> None:
    """Build, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        db_path = work / "store.db"
        migrate(db_path)
        started = time.perf_counter()
        build_records(db_path, args.rows, pending_for="crm0", pending=args.pending)
        built = time.perf_counter() - started
        config = work / "dropsync.toml"
        config.write_text(config_text(work))
        raw = sqlite3.connect(db_path)
        raw.execute(
            "INSERT INTO providers (name, kind, updated_at) VALUES "
            "('crm0','crm',0),('crm1','crm',0),('crm2','crm',0),('crm3','crm',0)"
        )
        raw.commit()
        status_query = timed(lambda: status_in_process(db_path))
        view = timed(lambda: raw.execute("SELECT * FROM pending_by_provider").fetchall())
        oldest = timed(
            lambda: raw.execute(
                "SELECT * FROM pending_entries WHERE provider = 'crm0' ORDER BY id LIMIT 100"
            ).fetchall()
        )
        oldest_by_time = timed(
            lambda: raw.execute(
                "SELECT * FROM pending_entries WHERE provider = 'crm0' ORDER BY enqueued_at "
                "LIMIT 100"
            ).fetchall()
        )
        cli = timed(
            lambda: subprocess.run(
                [sys.executable, "-m", "daemon.cli", "status", "--json", "--config", str(config)],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        )
        interpreter = timed(
            lambda: subprocess.run([sys.executable, "-c", "import sys"], check=True)
        )
        raw.close()
        ready = []
        for attempt in range(3):
            process, seconds = start_daemon(
                config, work / f"daemon{attempt}.log", env={"BENCH_TOKEN": "x"}
            )
            ready.append(seconds)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        size_mb = db_path.stat().st_size / 1e6
    emit(
        {
            "bench": "store",
            "rows": args.rows,
            "pending": args.pending,
            "store_mb": round(size_mb),
            "build_s": round(built, 1),
            "status_query_ms": {
                "best": round(status_query[0], 1),
                "median": round(status_query[1], 1),
            },
            "pending_by_provider_ms": {"best": round(view[0], 1), "median": round(view[1], 1)},
            "oldest_100_pending_ms": {"best": round(oldest[0], 1), "median": round(oldest[1], 1)},
            "oldest_100_by_enqueued_at_ms": {
                "best": round(oldest_by_time[0], 1),
                "median": round(oldest_by_time[1], 1),
            },
            "status_cli_ms": {"best": round(cli[0], 1), "median": round(cli[1], 1)},
            "reference_python_start_ms": {
                "best": round(interpreter[0], 1),
                "median": round(interpreter[1], 1),
            },
            "start_to_ready_s": {
                "best": round(min(ready), 3),
                "median": round(statistics.median(ready), 3),
            },
            "targets": {"query_ms": 50, "start_to_ready_s": 1.0},
            "met": {
                "status_query": status_query[1] < 50,
                "pending_by_provider": view[1] < 50,
                "oldest_100_pending": oldest[1] < 50,
                "status_cli_minus_python_start": cli[1] - interpreter[1] < 50,
                "start_to_ready": statistics.median(ready) < 1.0,
            },
        }
    )


if __name__ == "__main__":
    main()
