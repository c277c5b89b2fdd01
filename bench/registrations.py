"""Bench: the registrations provider's pulls and 2-way registration round trip.

``python bench/registrations.py --participants 100000 --rounds 3 --requests 200``

1. Pull: the registrations emulator (``dropsync emulate``, its own process) holds N
   participants; a full pull into a fresh store, then 1 % of them changed at the provider,
   then an incremental pull. The daemon's path (``bench.registrations_pull real``: the
   adapter, ``daemon.delivery.pulls.StreamPull``, the LWW merge) beside a bare loop fetching the
   same pages and inserting them with plain sqlite3 (``... bare``), each in a process of its own
   (peak RSS), alternating, ``--rounds`` times. Targets: records/s ratio >= 0.7, peak RSS
   <= 100 MB.
2. Round trip: ``dropsync run`` against the emulator; an app INSERTs a registration request,
   then reads the ``registration_requests`` view until it is decided; one request every
   ``--gap`` seconds. Targets: p50 <= 150 ms, p99 <= 500 ms.
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
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, emit, run_child
from bench.latency import percentile

SEED_AT_MS = 1_767_225_600_000  # 2026-01-01: every round sees the same items


def free_port() -> int:
    """A free loopback port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    """``dropsync emulate`` with the registrations emulator on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "emulate",
            "--crm-port",
            "0",
            "--favourites-port",
            "0",
            "--registrations-port",
            str(port),
            "--churn-port",
            "0",  # a free port: the default may be taken
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/_emulator/state", timeout=1)
            return process, base_url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("emulator did not start")


def reseed(base_url: str, participants: int, sessions: int = 0) -> None:
    """Forget everything and generate the same items again."""
    httpx.post(f"{base_url}/_emulator/reset", timeout=60)
    httpx.post(
        f"{base_url}/_emulator/seed",
        json={"participants": participants, "sessions": sessions, "at_ms": SEED_AT_MS},
        timeout=120,
    )


def pull_rounds(base_url: str, participants: int, rounds: int) -> dict[str, Any]:
    """Alternating rounds of the daemon's pull path and the bare loop."""
    changed = max(1, participants // 100)
    results: dict[str, list[dict[str, Any]]] = {"real": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(rounds):
            order = ("real", "bare") if number % 2 == 0 else ("bare", "real")
            for side in order:
                reseed(base_url, participants)
                store = Path(tmp) / f"{side}{number}.db"
                results[side].append(
                    run_child("registrations_pull", side, base_url, str(store), str(changed))
                )
    summary: dict[str, Any] = {}
    for phase in ("full", "incremental"):
        rates = {
            side: [r[f"{phase}_records"] / r[f"{phase}_s"] for r in rows]
            for side, rows in results.items()
        }
        ratios = [real / bare for real, bare in zip(rates["real"], rates["bare"], strict=True)]
        summary[phase] = {
            "records": results["real"][0][f"{phase}_records"],
            "real_records_per_s": round(statistics.median(rates["real"])),
            "bare_records_per_s": round(statistics.median(rates["bare"])),
            "ratio_median": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }
    summary["peak_rss_mb"] = {
        side: round(max(r["peak_rss_mb"] for r in rows), 1) for side, rows in results.items()
    }
    return summary


def round_trip(base_url: str, requests: int, gap: float) -> dict[str, Any]:
    """``dropsync run`` against the emulator; INSERT to decided outcome in the view."""
    reseed(base_url, participants=requests, sessions=5)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "dropsync.toml"
        config.write_text(f"""
[store]
path = "{work / "dropsync.db"}"
[drop]
path = "{work / "drop"}"
[providers.lenos]
kind = "registrations"
base_url = "{base_url}"
username = "fp-bot"
event_id = "ev-2026"
secret_env = "BENCH_LENOS_PASSWORD"
pull_interval_s = 3600
""")
        log_path = work / "daemon.log"
        log = log_path.open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dropsync.daemon.cli", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BENCH_LENOS_PASSWORD": "demo-lenos-password"},
        )
        latencies: list[float] = []
        try:
            while b'"stream":"participants"' not in log_path.read_bytes():  # first pull under way
                if daemon.poll() is not None:
                    raise RuntimeError("the daemon exited: " + log_path.read_text()[-2000:])
                time.sleep(0.05)
            db = sqlite3.connect(work / "dropsync.db", timeout=10, isolation_level=None)
            for number in range(requests):
                key = f"tap-{number}"
                started = time.perf_counter()
                db.execute(
                    "INSERT INTO inbox (collection, key, op, body) VALUES "
                    "('registration_requests', ?, 'upsert', json_object('participantId', ?, "
                    "'sessionId', ?))",
                    (key, f"p{number + 1}", f"s{number % 5 + 1}"),
                )
                while True:
                    row = db.execute(
                        "SELECT status FROM registration_requests WHERE key = ?", (key,)
                    ).fetchone()
                    if row is not None and row[0] != "pending":
                        break
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"{key} was not decided within 30 s")
                    time.sleep(0.002)
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(gap)
            outcomes = dict(
                db.execute(
                    "SELECT status, COUNT(*) FROM registration_requests GROUP BY status"
                ).fetchall()
            )
            db.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            log.close()
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    return {
        "requests": len(latencies),
        "gap_s": gap,
        "outcomes": outcomes,
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(latencies), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
    }


def main() -> None:
    """Run both parts and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.3)
    args = parser.parse_args()
    emulator, base_url = start_emulator()
    try:
        pulls = pull_rounds(base_url, args.participants, args.rounds)
        trip = round_trip(base_url, args.requests, args.gap)
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=30)
    ratio = min(pulls["full"]["ratio_median"], pulls["incremental"]["ratio_median"])
    emit(
        {
            "bench": "registrations",
            "participants": args.participants,
            "pull": pulls,
            "round_trip": trip,
            "targets": {"ratio": 0.7, "peak_rss_mb": 100, "p50_ms": 150, "p99_ms": 500},
            "met": {
                "ratio": ratio >= 0.7,
                "peak_rss_mb": pulls["peak_rss_mb"]["real"] <= 100,
                "p50_ms": trip["p50_ms"] <= 150,
                "p99_ms": trip["p99_ms"] <= 500,
            },
        }
    )


if __name__ == "__main__":
    main()
