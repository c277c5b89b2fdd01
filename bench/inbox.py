"""Bench: rows INSERTed into ``inbox`` by another process while the daemon runs.

``python bench/inbox.py --rows 100000`` starts ``dropsync run`` (collection routed
to one provider, as in the ingest reference), then a separate process inserts the
rows in 1000-row transactions; the clock runs from the first insert until no row is
``pending``. The reference is bench/reference.py's rate on as many churn-envelope
documents, measured in the same run. Target: ratio >= 0.8.
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

from bench.common import emit, migrate, run_child, start_daemon, write_envelopes

WRITER = r"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
rows, per = int(sys.argv[2]), 1000
print(time.time(), flush=True)
for start in range(0, rows, per):
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES (?, ?, 'upsert', ?, ?)",
        [("users", str(i), '{"data":{"id":%d,"email":"user%d@example.com","city":"Limassol"},'
          '"createdAt":1696814606000,"updatedAt":%d}' % (i, i, 1696821819000 + i),
          1696821819000 + i) for i in range(start, min(start + per, rows))])
    db.execute("COMMIT")
print(time.time(), flush=True)
"""


def main() -> None:
    """Start the daemon, insert, wait, compare with the reference."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "ref.json"
        write_envelopes(source, args.rows)
        reference = run_child("reference", str(source), str(work / "reference.db"))
        db_path = work / "store.db"
        migrate(db_path)
        config = work / "dropsync.toml"
        config.write_text(
            f'[store]\npath = "{db_path}"\n[drop]\npath = "{work / "drop"}"\n'
            "[daemon]\ninbox_poll_s = 0.1\n"
            '[collections.users]\nproviders = ["crm"]\n'
            '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\n'
            'account_id = "a"\nsecret_env = "BENCH_TOKEN"\nbackoff_base_s = 30\n'
        )
        daemon, _ = start_daemon(config, work / "daemon.log", env={"BENCH_TOKEN": "x"})
        try:
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(db_path), str(args.rows)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert writer.stdout is not None
            first_insert = float(writer.stdout.readline())
            reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
            while True:
                done_writing = writer.poll() is not None
                left = reader.execute(
                    "SELECT COUNT(*) FROM inbox WHERE status = 'pending'"
                ).fetchone()[0]
                total = reader.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
                if done_writing and left == 0 and total >= args.rows:
                    finished = time.time()
                    break
                time.sleep(0.05)
            last_insert = float(writer.stdout.readline() or finished)
            applied = reader.execute(
                "SELECT COUNT(*) FROM inbox WHERE status = 'applied'"
            ).fetchone()[0]
            reader.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    seconds = finished - first_insert
    rate = args.rows / seconds
    reference_rate = reference["docs"] / reference["seconds"]
    emit(
        {
            "bench": "inbox",
            "rows": args.rows,
            "applied": applied,
            "seconds": round(seconds, 2),
            "insert_seconds": round(last_insert - first_insert, 2),
            "rows_per_s": round(rate),
            "reference_docs_per_s": round(reference_rate),
            "ratio": round(rate / reference_rate, 3),
            "target_ratio": 0.8,
            "met": rate / reference_rate >= 0.8,
        }
    )


if __name__ == "__main__":
    main()
