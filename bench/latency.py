"""Bench: drop-to-provider latency with a provider online.

``python bench/latency.py --seconds 60`` runs ``dropsync run`` and the CRM emulator
(``dropsync emulate``) as real processes, drops a one-record file every 100 ms
(write-then-rename) for the given time, and reports, from the moment of each
rename to the moment the emulator first received that contact, p50/p99/max.
Targets: p50 <= 200 ms, p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, start_emulator


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> None:
    """Run the daemon and emulator, drop files, measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    # A free port, read from the emulator's own output: not another program's server.
    emulator, urls = start_emulator("crm")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_url = urls["crm"]
        (work / "dropsync.toml").write_text(f"""
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
""")
        folder = work / "drop/contacts"
        folder.mkdir(parents=True)
        log = (work / "daemon.log").open("wb")
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
        try:
            while b'"daemon_ready"' not in (work / "daemon.log").read_bytes():
                if daemon.poll() is not None:
                    raise RuntimeError("the daemon exited before it was ready")
                time.sleep(0.02)
            dropped: dict[str, float] = {}
            count = int(args.seconds / args.interval)
            next_at = time.monotonic()
            for number in range(count):
                email = f"lat{number}@example.com"
                temp = folder / f".c{number}.json"
                temp.write_bytes(
                    orjson.dumps({"email": email, "updated_at": int(time.time() * 1000)})
                )
                os.rename(temp, folder / f"c{number}.json")
                dropped[email] = time.time()
                next_at += args.interval
                time.sleep(max(0.0, next_at - time.monotonic()))
            deadline = time.monotonic() + 60
            seen: dict[str, float] = {}
            while time.monotonic() < deadline:
                seen = httpx.get(f"{base_url}/_emulator/contacts").json()["first_seen"]
                if all(email in seen for email in dropped):
                    break
                time.sleep(0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            emulator.send_signal(signal.SIGTERM)
            emulator.wait(timeout=30)
            log.close()
    latencies = [(seen[e] - t) * 1000 for e, t in dropped.items() if e in seen]
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    emit(
        {
            "bench": "latency",
            "files": len(dropped),
            "received": len(latencies),
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(max(latencies), 1),
            "mean_ms": round(statistics.fmean(latencies), 1),
            "targets": {"p50_ms": 200, "p99_ms": 1000},
            "met": {
                "p50_ms": p50 <= 200,
                "p99_ms": p99 <= 1000,
                "all_received": len(latencies) == len(dropped),
            },
        }
    )


if __name__ == "__main__":
    main()
