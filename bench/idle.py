"""Bench: the daemon idle with 4 providers and a 1M-row store.

``python bench/idle.py --seconds 60`` builds a store with N records (nothing pending),
starts the emulators (``dropsync emulate``) and ``dropsync run`` with four providers
(CRM x3, favourites: two-way, so it pulls on its interval), waits for READY and a short
settling time, then samples the daemon's CPU time (utime+stime from /proc/PID/stat)
and memory (VmRSS, VmHWM from /proc/PID/status) over the window.
Targets: CPU < 0.5% of one core, RSS <= 80 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import build_records, emit, migrate, start_daemon
from bench.flush import start_emulator

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def main() -> None:
    """Build, start, sample, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=18083)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db_path = work / "store.db"
        migrate(db_path)
        build_records(db_path, args.rows)
        emulator = start_emulator(args.port, args.port + 1)
        base = f"http://127.0.0.1:{args.port}"
        favourites = f"http://127.0.0.1:{args.port + 1}"
        crm = "".join(
            f'[providers.crm{n}]\nkind = "crm"\nbase_url = "{base}"\naccount_id = "acc_1"\n'
            'secret_env = "BENCH_CRM_TOKEN"\n'
            for n in range(3)
        )
        config = work / "dropsync.toml"
        config.write_text(
            f'[store]\npath = "{db_path}"\n[drop]\npath = "{work / "drop"}"\n'
            '[collections.users]\nproviders = ["crm0", "crm1", "crm2"]\n'
            '[collections.favourites]\nproviders = ["favourites"]\n'
            + crm
            + f'[providers.favourites]\nkind = "favourites"\nbase_url = "{favourites}"\n'
            'secret_env = "BENCH_FAV_TOKENS"\npull_interval_s = 60\n'
        )
        daemon, ready_s = start_daemon(
            config,
            work / "daemon.log",
            env={
                "BENCH_CRM_TOKEN": "demo-crm-token",
                "BENCH_FAV_TOKENS": '{"alice": "demo-token-alice"}',
            },
        )
        try:
            time.sleep(args.settle)
            cpu_before, wall_before = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu_used = cpu_seconds(daemon.pid) - cpu_before
            wall = time.monotonic() - wall_before
            memory = memory_mb(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            emulator.send_signal(signal.SIGTERM)
            emulator.wait(timeout=30)
    cpu_percent = 100 * cpu_used / wall
    emit(
        {
            "bench": "idle",
            "rows": args.rows,
            "providers": 4,
            "window_s": round(wall, 1),
            "cpu_s": round(cpu_used, 3),
            "cpu_percent_of_one_core": round(cpu_percent, 3),
            "rss_mb": round(memory["VmRSS"], 1),
            "peak_rss_mb": round(memory["VmHWM"], 1),
            "start_to_ready_s": round(ready_s, 3),
            "clock_ticks_per_s": TICKS,
            "targets": {"cpu_percent": 0.5, "rss_mb": 80},
            "met": {"cpu": cpu_percent < 0.5, "rss": memory["VmRSS"] <= 80},
        }
    )


if __name__ == "__main__":
    main()
