"""Bench: rows INSERTed into ``inbox`` by another process while the daemon runs.

``python bench/inbox.py --rows 100000`` starts ``dropsync run`` (as a real
subprocess, on a fresh store, collection ``users`` routed to one provider as in
the ingest reference; the provider is marked offline for the next hour, so nothing
is sent and the entries stay queued), then a separate process
inserts the rows (``INSERT INTO inbox (collection, key, op, body, updated_at)``,
churn-envelope JSON bodies of about 310 bytes, 1000 rows per transaction). The
clock runs from the first insert until no row is ``pending`` (polled every 50 ms
with a read-only connection).

The reference is bench/reference.py's docs/s on as many churn-envelope documents
(the same bodies), measured in the same run. Target: ratio >= 0.8. The daemon runs
with its default ``daemon.inbox_poll_s`` unless ``--inbox-poll-s`` is given.
``--quick``: 10k rows. ``--profile OUT``: py-spy (raw) of the daemon while it works.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    emit,
    migrate,
    proc_cpu_seconds,
    run_child,
    run_py_spy,
    start_dropsync,
    stop_process,
    write_envelopes,
)

PER_TRANSACTION = 1000
POLL_S = 0.05
TARGET_RATIO = 0.8

# The inserting program: prints the time of its first insert, then the time it finished.
WRITER = r"""
import sqlite3, sys, time
sys.path.insert(0, sys.argv[4])
from bench.common import BASE_TS, envelope_line
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
rows, per = int(sys.argv[2]), int(sys.argv[3])
batches = [
    [("users", str(i), envelope_line(i).decode(), BASE_TS + i)
     for i in range(start, min(start + per, rows))]
    for start in range(0, rows, per)
]
print(time.time(), flush=True)
for batch in batches:
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES (?, ?, 'upsert', ?, ?)",
        batch,
    )
    db.execute("COMMIT")
print(time.time(), flush=True)
"""


def config_text(work: Path, poll_s: float | None) -> str:
    """One collection routed to one CRM provider (on a closed port, so nothing is sent)."""
    daemon = f"[daemon]\ninbox_poll_s = {poll_s}\n" if poll_s is not None else ""
    return (
        f'[store]\npath = "{work / "store.db"}"\n[drop]\npath = "{work / "drop"}"\n'
        + daemon
        + '[collections.users]\nproviders = ["crm"]\n'
        '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\n'
        'account_id = "a"\nsecret_env = "BENCH_TOKEN"\nbackoff_base_s = 30\n'
    )


def hold_deliveries(path: Path) -> None:
    """Mark the provider offline for an hour, so its flusher stays asleep during the bench.

    Like the reference, the daemon then only queues the winners in the outbox: no
    delivery attempts (and no local pre-send checks) compete with applying the inbox.
    """
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO providers (name, kind, state, next_attempt_at, last_error, updated_at) "
        "VALUES ('crm', 'crm', 'offline', ?, 'bench: held back', ?)",
        (int(time.time() * 1000) + 3_600_000, int(time.time() * 1000)),
    )
    db.commit()
    db.close()


def main() -> None:
    """Reference first, then the daemon with another process inserting; compare."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, help="rows to insert (default 100k)")
    parser.add_argument("--inbox-poll-s", type=float, help="daemon.inbox_poll_s (default: 1.0)")
    parser.add_argument("--quick", action="store_true", help="10k rows")
    parser.add_argument("--workdir", help="make the temp dir here")
    parser.add_argument("--profile", help="write a py-spy raw profile of the daemon here")
    args = parser.parse_args()
    if args.rows is None:
        args.rows = 10_000 if args.quick else 100_000
    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        source = work / "reference.json"
        write_envelopes(source, args.rows)
        reference = run_child("reference", str(source), str(work / "reference.db"))
        db_path = work / "store.db"
        migrate(db_path)
        hold_deliveries(db_path)
        config = work / "dropsync.toml"
        config.write_text(config_text(work, args.inbox_poll_s))
        daemon, ready_s = start_dropsync(config, work / "daemon.log", env={"BENCH_TOKEN": "x"})
        try:
            cpu_before = proc_cpu_seconds(daemon.pid)
            writer = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WRITER,
                    str(db_path),
                    str(args.rows),
                    str(PER_TRANSACTION),
                    root,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert writer.stdout is not None
            first_insert = float(writer.stdout.readline())
            spy = run_py_spy(daemon.pid, Path(args.profile), 60) if args.profile else None
            reader = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            polls = 0
            while True:
                done_writing = writer.poll() is not None
                left = reader.execute(
                    "SELECT COUNT(*) FROM inbox WHERE status = 'pending'"
                ).fetchone()[0]
                polls += 1
                if done_writing and left == 0:
                    finished = time.time()
                    break
                time.sleep(POLL_S)
            cpu_used = proc_cpu_seconds(daemon.pid) - cpu_before
            last_insert = float(writer.stdout.readline() or finished)
            outcomes = dict(
                reader.execute("SELECT status, COUNT(*) FROM inbox GROUP BY status").fetchall()
            )
            first_processed, last_processed = reader.execute(
                "SELECT MIN(processed_at), MAX(processed_at) FROM inbox"
            ).fetchone()
            queued = reader.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            dead = reader.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            attempts = dict(
                reader.execute("SELECT state, SUM(items) FROM deliveries GROUP BY state")
            )
            reader.close()
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
                spy.wait(timeout=30)
        finally:
            exit_code = stop_process(daemon)
    seconds = finished - first_insert
    rate = args.rows / seconds
    reference_rate = reference["docs"] / reference["seconds"]
    ratio = rate / reference_rate
    emit(
        {
            "bench": "inbox",
            "rows": args.rows,
            "rows_per_transaction": PER_TRANSACTION,
            "outcomes": outcomes,
            "outbox_entries": queued,
            "dead_letters": dead,
            "delivery_attempt_items": attempts,
            "inbox_poll_s": args.inbox_poll_s if args.inbox_poll_s is not None else 1.0,
            "poll_interval_s": POLL_S,
            "polls": polls,
            "start_to_ready_s": round(ready_s, 3),
            "seconds": round(seconds, 2),
            "insert_seconds": round(last_insert - first_insert, 2),
            "first_to_last_processed_s": round((last_processed - first_processed) / 1000, 2),
            "first_insert_to_first_processed_s": round(first_processed / 1000 - first_insert, 2),
            "daemon_cpu_s": round(cpu_used, 2),
            "daemon_cpu_us_per_row": round(1e6 * cpu_used / args.rows, 1),
            "rows_per_s": round(rate),
            "reference_docs_per_s": round(reference_rate),
            "reference_seconds": round(reference["seconds"], 2),
            "ratio": round(ratio, 3),
            "daemon_exit_code": exit_code,
            "profile": args.profile,
            "targets": {"ratio": TARGET_RATIO},
            "met": {
                "ratio": ratio >= TARGET_RATIO,
                "all_applied": outcomes == {"applied": args.rows},
            },
        }
    )


if __name__ == "__main__":
    main()
