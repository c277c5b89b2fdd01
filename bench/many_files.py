"""Bench: N one-document files dropped at once, and the daemon's memory while it takes them.

``python bench/many_files.py --files 100000`` starts ``dropsync run`` as a real subprocess
(one collection, no provider: the drop folder, the watcher, the ingest queue and the
ledger alone), writes N small files (one churn envelope each, about 90 bytes) into a staging
folder beside the drop folder, renames them all into the collection folder as fast as it
can, and samples the daemon every ``--interval`` seconds until every file is in the ledger
as done: VmRSS, and at the end VmHWM (the peak resident set, the figure the target is on:
100 MB flat, as for large files).

``--dump FILE``: a ``py-spy dump --locals`` of the daemon each time its RSS reaches a new
high (needs the bench extra), to see what it is doing then.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, proc_status, start_dropsync, stop_process

TS = 1_696_821_819_000


def config_text(work: Path) -> str:
    """One collection (the churn envelope), no provider."""
    return (
        f'[store]\npath = "{work / "store.db"}"\n'
        f'[drop]\npath = "{work / "drop"}"\n'
        '[collections.users]\nkey = "data.id"\ntimestamp = "updatedAt"\n'
    )


def done_files(store: Path) -> int:
    """Files the ledger holds as done (a read-only look, as ``status`` takes)."""
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        row = db.execute("SELECT files FROM files_by_status WHERE status = 'done'").fetchone()
    except sqlite3.Error:
        return 0
    finally:
        db.close()
    return int(row[0]) if row else 0


def main() -> None:
    """Drop the files, sample the daemon, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--workdir", help="keep files here instead of a temp dir")
    parser.add_argument("--dump", help="py-spy dump of the daemon at its highest RSS, to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        (work / "drop/users").mkdir(parents=True)
        config = work / "dropsync.toml"
        config.write_text(config_text(work), encoding="utf-8")
        staging = work / "staging"
        staging.mkdir()
        for i in range(args.files):
            (staging / f"u{i:06d}.json").write_bytes(
                b'{"data":{"id":%d,"email":"user%d@example.com"},"createdAt":%d,"updatedAt":%d}'
                % (i, i, TS, TS + i)
            )
        process, ready_s = start_dropsync(config, work / "daemon.log")
        try:
            time.sleep(1.0)
            idle_kb = proc_status(process.pid)["VmRSS"]
            started = time.monotonic()
            for i in range(args.files):
                name = f"u{i:06d}.json"
                os.rename(staging / name, work / "drop/users" / name)
            dropped_s = time.monotonic() - started
            samples: list[tuple[float, int]] = []
            highest = 0
            done = 0
            while time.monotonic() - started < args.timeout:
                rss = proc_status(process.pid)["VmRSS"]
                samples.append((round(time.monotonic() - started, 1), rss))
                if rss > highest:
                    highest = rss
                    if args.dump:
                        _dump(process.pid, Path(args.dump))
                done = done_files(work / "store.db")
                if done >= args.files:
                    break
                time.sleep(args.interval)
            seconds = time.monotonic() - started
            status = proc_status(process.pid)
        finally:
            code = stop_process(process)
        errors = [
            line
            for line in (work / "daemon.log").read_text(errors="replace").splitlines()
            if '"level":"error"' in line
        ]
    result: dict[str, Any] = {
        "bench": "many_files",
        "files": args.files,
        "done": done,
        "seconds": round(seconds, 1),
        "files_per_s": round(done / seconds),
        "drop_s": round(dropped_s, 1),
        "ready_s": round(ready_s, 2),
        "idle_rss_mb": round(idle_kb / 1024, 1),
        "peak_rss_mb": round(status["VmHWM"] / 1024, 1),
        "end_rss_mb": round(status["VmRSS"] / 1024, 1),
        "curve_mb": [(t, round(kb / 1024, 1)) for t, kb in samples[:: max(len(samples) // 20, 1)]],
        "exit": code,
        "error_lines": len(errors),
    }
    emit(result)


def _dump(pid: int, out: Path) -> None:
    py_spy = Path(sys.executable).parent / "py-spy"
    done = subprocess.run(
        [str(py_spy), "dump", "--pid", str(pid), "--locals"],
        capture_output=True,
        text=True,
        check=False,
    )
    out.write_text(done.stdout + done.stderr, encoding="utf-8")


if __name__ == "__main__":
    main()
