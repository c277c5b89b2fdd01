"""Bench: drop-to-provider and INSERT-to-provider latency with a provider online.

``python bench/latency.py`` runs ``dropsync run`` and the CRM emulator (``dropsync
emulate``) as real processes and measures two paths, ``--files`` samples each (600 by
default), one every ``--interval`` (100 ms):

* **drop**: a one-record file written beside the collection folder's files under a dot
  name, then renamed in (the documented write-then-rename);
* **inbox**: one ``INSERT INTO inbox`` committed by another program (this one).

Each latency runs from the moment of the rename (or the commit) to the moment the
emulator first received that contact (its wall clock: one machine). The same-run
reference is a loop that polls every 100 ms (``bench/latency_reference.py``: the folder,
or a table in a SQLite file of its own) and POSTs what it finds to the same emulator.
``--rounds`` (3) rounds, the two sides alternating which goes first; the machine's load
average (``/proc/loadavg``) is printed for every phase: on a shared machine the p99
follows it.

From the daemon's JSON log it also prints where the time went: rename (or commit) to
``file_ingested`` (``inbox_applied``), and from there to the emulator's receipt.

Targets (issue 23): p50 <= 25 ms, p99 <= 100 ms on both paths.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, log_records, start_emulator

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"p50_ms": 25.0, "p99_ms": 100.0}


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def load_average() -> float:
    """The machine's 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def figures(latencies: list[float]) -> dict[str, float]:
    """p50, p99, max and mean of latencies in ms."""
    return {
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
    }


def received(base_url: str, wanted: dict[str, float], timeout: float = 60.0) -> dict[str, float]:
    """When the emulator first saw each contact of ``wanted`` (waits for all, at most
    ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = httpx.get(f"{base_url}/_emulator/contacts", timeout=30).json()["first_seen"]
        if all(key in seen for key in wanted):
            break
        time.sleep(0.2)
    return {key: seen[key] for key in wanted if key in seen}


def paced(count: int, interval: float, act: Any) -> dict[str, float]:
    """Call ``act(number)`` every ``interval`` s; each returns (key, wall time of the act)."""
    done: dict[str, float] = {}
    next_at = time.monotonic()
    for number in range(count):
        key, at = act(number)
        done[key] = at
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    return done


def drop_files(folder: Path, prefix: str, count: int, interval: float) -> dict[str, float]:
    """Write-then-rename one-record files into ``folder``; email -> moment of the rename."""

    def drop(number: int) -> tuple[str, float]:
        email = f"{prefix}{number}@example.com"
        temp = folder / f".{prefix}{number}.json"
        temp.write_bytes(orjson.dumps({"email": email, "updated_at": int(time.time() * 1000)}))
        os.rename(temp, folder / f"{prefix}{number}.json")
        return email, time.time()

    return paced(count, interval, drop)


def insert_rows(
    db: sqlite3.Connection, sql: str, prefix: str, count: int, interval: float
) -> dict[str, float]:
    """One committed INSERT (``sql`` with email, body, time) per step; email -> commit time."""

    def insert(number: int) -> tuple[str, float]:
        email = f"{prefix}{number}@example.com"
        now = int(time.time() * 1000)
        body = orjson.dumps({"email": email, "updated_at": now}).decode()
        db.execute(sql, (email, body, now))  # autocommit: committed when it returns
        return email, time.time()

    return paced(count, interval, insert)


def config_text(work: Path, base_url: str) -> str:
    """One collection, its drop folder and inbox rows routed to the CRM emulator."""
    return f"""
[store]
path = "{work / "dropsync.db"}"
[drop]
path = "{work / "drop"}"
[collections.contacts]
key = "email"
timestamp = "updated_at"
providers = ["crm"]
[providers.crm]
kind = "crm"
base_url = "{base_url}"
account_id = "acc_1"
secret_env = "BENCH_CRM_TOKEN"
"""


def log_times(log: Path, event: str) -> list[tuple[float, dict[str, Any]]]:
    """(wall time, line) of each ``event`` line of the daemon's JSON log."""
    return [
        (datetime.fromisoformat(record["timestamp"]).timestamp(), record)
        for record in log_records(log, event)
    ]


def stages(
    sent: dict[str, float], seen: dict[str, float], merged: dict[str, float]
) -> dict[str, dict[str, float]]:
    """p50/p99 of act -> merged (the daemon's log line) and merged -> received."""
    keys = [key for key in sent if key in seen and key in merged]
    if not keys:
        return {}
    return {
        "to_merged": figures([(merged[k] - sent[k]) * 1000 for k in keys]),
        "merged_to_received": figures([(seen[k] - merged[k]) * 1000 for k in keys]),
    }


def run_dropsync(
    work: Path, base_url: str, count: int, interval: float, tag: str
) -> dict[str, dict[str, Any]]:
    """Both paths through one daemon; per path its latencies and where they went."""
    (work / "dropsync.toml").write_text(config_text(work, base_url))
    folder = work / "drop/contacts"
    folder.mkdir(parents=True)
    log_path = work / "daemon.log"
    log = log_path.open("wb")
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "run",
            "--config",
            str(work / "dropsync.toml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "BENCH_CRM_TOKEN": "demo-crm-token"},
    )
    out: dict[str, dict[str, Any]] = {}
    try:
        while b'"daemon_ready"' not in log_path.read_bytes():
            if daemon.poll() is not None:
                raise RuntimeError("the daemon exited before it was ready")
            time.sleep(0.02)
        time.sleep(1.0)  # past start-up's own work

        load = load_average()
        dropped = drop_files(folder, f"d{tag}x", count, interval)
        seen = received(base_url, dropped)
        ingested = {
            f"{line['file'].removesuffix('.json')}@example.com": at
            for at, line in log_times(log_path, "file_ingested")
        }
        out["drop"] = {
            "sent": dropped,
            "seen": seen,
            "load": [load, load_average()],
            "stages": stages(dropped, seen, ingested),
        }

        db = sqlite3.connect(work / "dropsync.db", isolation_level=None, timeout=30)
        load = load_average()
        sql = (
            "INSERT INTO inbox (collection, key, op, body, updated_at) "
            "VALUES ('contacts', ?, 'upsert', ?, ?)"
        )
        inserted = insert_rows(db, sql, f"i{tag}x", count, interval)
        db.close()
        seen = received(base_url, inserted)
        # One row a commit, a commit every interval: each row's inbox_applied is the first
        # after its commit.
        applied_at = sorted(at for at, _ in log_times(log_path, "inbox_applied"))
        applied: dict[str, float] = {}
        for key, at in inserted.items():
            later = [a for a in applied_at if a >= at - 0.001]
            if later:
                applied[key] = later[0]
        out["inbox"] = {
            "sent": inserted,
            "seen": seen,
            "load": [load, load_average()],
            "stages": stages(inserted, seen, applied),
        }
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        log.close()
    return out


def run_reference(
    work: Path, base_url: str, count: int, interval: float, tag: str
) -> dict[str, dict[str, Any]]:
    """Both paths through the polling loop."""
    out: dict[str, dict[str, Any]] = {}
    folder = work / "reference_drop"
    folder.mkdir()
    table = work / "reference.db"
    db = sqlite3.connect(table, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE queue (id INTEGER PRIMARY KEY, key TEXT, body TEXT, updated_at INT)")
    for what, place in (("drop", folder), ("inbox", table)):
        poller = subprocess.Popen(
            [sys.executable, "-m", "bench.latency_reference", what, str(place), base_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            assert poller.stdout is not None
            poller.stdout.readline()  # "ready"
            load = load_average()
            if what == "drop":
                sent = drop_files(folder, f"rd{tag}x", count, interval)
            else:
                sql = "INSERT INTO queue (key, body, updated_at) VALUES (?, ?, ?)"
                sent = insert_rows(db, sql, f"ri{tag}x", count, interval)
            seen = received(base_url, sent)
            out[what] = {"sent": sent, "seen": seen, "load": [load, load_average()]}
        finally:
            poller.send_signal(signal.SIGTERM)
            poller.wait(timeout=30)
    db.close()
    return out


def summary(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per round: p50/p99/max (and stages); over the rounds: the median and range."""
    each = []
    for result in rounds:
        latencies = [
            (result["seen"][k] - t) * 1000 for k, t in result["sent"].items() if k in result["seen"]
        ]
        row: dict[str, Any] = {
            **figures(latencies),
            "samples": len(result["sent"]),
            "received": len(latencies),
            "load": result["load"],
        }
        if result.get("stages"):
            row["stages"] = result["stages"]
        each.append(row)
    return {
        "p50_ms": {
            "median": statistics.median(r["p50_ms"] for r in each),
            "range": [min(r["p50_ms"] for r in each), max(r["p50_ms"] for r in each)],
        },
        "p99_ms": {
            "median": statistics.median(r["p99_ms"] for r in each),
            "range": [min(r["p99_ms"] for r in each), max(r["p99_ms"] for r in each)],
        },
        "rounds": each,
    }


def ratios(ours: dict[str, Any], theirs: dict[str, Any], field: str) -> dict[str, Any]:
    """dropsync / reference of ``field``, round by round: the median and range."""
    values = [
        a[field] / b[field]
        for a, b in zip(ours["rounds"], theirs["rounds"], strict=True)
        if b[field]
    ]
    return {
        "median": round(statistics.median(values), 3),
        "range": [round(min(values), 3), round(max(values), 3)],
    }


def main() -> None:
    """Run both sides, ``--rounds`` times each, alternating; print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=600, help="samples per path and round")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="the daemon alone")
    args = parser.parse_args()
    sides = ["dropsync"] if args.no_reference else ["dropsync", "reference"]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        side: {"drop": [], "inbox": []} for side in sides
    }
    load_start = Path("/proc/loadavg").read_text().strip()
    # A free port, read from the emulator's own output: not another program's server.
    emulator, urls = start_emulator("crm")
    base_url = urls["crm"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(args.rounds):
                order = sides if number % 2 == 0 else sides[::-1]
                for side in order:
                    work = Path(tmp) / f"{side}{number}"
                    work.mkdir()
                    run = run_dropsync if side == "dropsync" else run_reference
                    for path, result in run(
                        work, base_url, args.files, args.interval, str(number)
                    ).items():
                        results[side][path].append(result)
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=30)
    report: dict[str, Any] = {
        "bench": "latency",
        "files": args.files,
        "interval_s": args.interval,
        "rounds": args.rounds,
        "loadavg_start": load_start,
        "loadavg_end": Path("/proc/loadavg").read_text().strip(),
        "targets": TARGETS,
    }
    met: dict[str, bool] = {}
    for path in ("drop", "inbox"):
        ours = summary(results["dropsync"][path])
        report[path] = {"dropsync": ours}
        if not args.no_reference:
            theirs = summary(results["reference"][path])
            report[path]["reference"] = theirs
            report[path]["ratio_p50"] = ratios(ours, theirs, "p50_ms")
            report[path]["ratio_p99"] = ratios(ours, theirs, "p99_ms")
        met[f"{path}_p50"] = ours["p50_ms"]["median"] <= TARGETS["p50_ms"]
        met[f"{path}_p99"] = ours["p99_ms"]["median"] <= TARGETS["p99_ms"]
        met[f"{path}_all_received"] = all(r["received"] == r["samples"] for r in ours["rounds"])
    report["met"] = met
    emit(report)


if __name__ == "__main__":
    main()
