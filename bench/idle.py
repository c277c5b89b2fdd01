"""Bench: the daemon idle with 4 providers configured and a 1M-row store.

``python bench/idle.py --seconds 60`` builds a store with N records (nothing pending),
starts the provider emulators (``dropsync emulate``, CRM and favourites, on free
loopback ports) and ``dropsync run`` as a real subprocess with four providers (CRM x3
and favourites, which is two-way and so pulls every ``pull_interval_s``, 60 s by
default), waits for READY and a settling time, then samples the daemon every
``--interval`` seconds over the window: CPU time (utime+stime from /proc/PID/stat),
memory (VmRSS, VmHWM from /proc/PID/status) and context switches (wake-ups).

It also checks that an empty outbox means no network traffic: every request the
emulators log during the window is counted; only the favourites pull (GET) is
expected. The providers' states are read from the store at the end.

Targets: CPU < 0.5 % of one core, RSS <= 80 MB (the peak, VmHWM). ``--quick``: 10k
rows, a 10 s window (explicit options win). ``--profile OUT``: py-spy (raw) of the
daemon over the window (py-spy's sampling perturbs the CPU figure).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    build_records,
    emit,
    emulator_requests,
    free_port,
    migrate,
    proc_context_switches,
    proc_cpu_seconds,
    proc_status,
    run_py_spy,
    start_dropsync,
    start_emulators,
    stop_process,
)

CRM_TOKEN = "demo-crm-token"  # what ``dropsync emulate`` accepts (adapters/crm/demo.py)
FAVOURITES_TOKENS = '{"alice": "demo-token-alice", "bob": "demo-token-bob"}'


def config_text(work: Path, crm_url: str, favourites_url: str) -> str:
    """Three CRM providers and one favourites provider, all on the emulators."""
    crm = "".join(
        f'[providers.crm{n}]\nkind = "crm"\nbase_url = "{crm_url}"\naccount_id = "acc_1"\n'
        'secret_env = "BENCH_CRM_TOKEN"\n'
        for n in range(3)
    )
    return (
        f'[store]\npath = "{work / "store.db"}"\n[drop]\npath = "{work / "drop"}"\n'
        '[collections.users]\nproviders = ["crm0", "crm1", "crm2"]\n'
        '[collections.favourites]\nproviders = ["favourites"]\n'
        + crm
        + f'[providers.favourites]\nkind = "favourites"\nbase_url = "{favourites_url}"\n'
        'secret_env = "BENCH_FAVOURITES_TOKENS"\n'
    )


def requests_between(port: int, start: float, end: float) -> list[dict[str, Any]]:
    """The requests an emulator logged between two wall-clock times."""
    return [r for r in emulator_requests(port) if start <= float(r["wall"]) <= end]


def store_state(path: Path) -> dict[str, Any]:
    """Per provider (state, pending) and the inbox backlog, read-only."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        providers = {
            name: {"state": state, "pending": pending}
            for name, state, pending in db.execute(
                "SELECT provider, state, pending FROM pending_by_provider ORDER BY provider"
            )
        }
        inbox = db.execute("SELECT COUNT(*) FROM inbox WHERE status = 'pending'").fetchone()[0]
    finally:
        db.close()
    return {"providers": providers, "inbox_pending": inbox}


def main() -> None:
    """Build, start, sample, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, help="the idle window (default 60)")
    parser.add_argument("--rows", type=int, help="records in the store (default 1M)")
    parser.add_argument("--settle", type=float, help="wait after READY (default 5)")
    parser.add_argument("--interval", type=float, default=1.0, help="sample interval (s)")
    parser.add_argument("--quick", action="store_true", help="10k rows, a 10 s window")
    parser.add_argument("--workdir", help="make the temp dir here")
    parser.add_argument("--profile", help="write a py-spy raw profile of the window here")
    args = parser.parse_args()
    defaults = (10_000, 10.0, 2.0) if args.quick else (1_000_000, 60.0, 5.0)
    for name, value in zip(("rows", "seconds", "settle"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        db_path = work / "store.db"
        migrate(db_path)
        started = time.perf_counter()
        build_records(db_path, args.rows)
        build_s = time.perf_counter() - started
        crm_port, favourites_port = free_port(), free_port()
        emulators = start_emulators(crm_port, favourites_port)
        config = work / "dropsync.toml"
        config.write_text(
            config_text(work, f"http://127.0.0.1:{crm_port}", f"http://127.0.0.1:{favourites_port}")
        )
        env = {"BENCH_CRM_TOKEN": CRM_TOKEN, "BENCH_FAVOURITES_TOKENS": FAVOURITES_TOKENS}
        try:
            daemon, ready_s = start_dropsync(config, work / "daemon.log", env=env)
            try:
                time.sleep(args.settle)
                pid = daemon.pid
                spy = run_py_spy(pid, Path(args.profile), args.seconds) if args.profile else None
                wall_start, mono_start = time.time(), time.monotonic()
                cpu_start, switches_start = proc_cpu_seconds(pid), proc_context_switches(pid)
                rss_samples: list[float] = []
                cpu_per_sample: list[float] = []
                last_cpu = cpu_start
                next_sample = mono_start + args.interval
                while next_sample <= mono_start + args.seconds + 1e-9:
                    time.sleep(max(0.0, next_sample - time.monotonic()))
                    cpu = proc_cpu_seconds(pid)
                    cpu_per_sample.append(cpu - last_cpu)
                    last_cpu = cpu
                    rss_samples.append(proc_status(pid)["VmRSS"] / 1024)
                    next_sample += args.interval
                window = time.monotonic() - mono_start
                wall_end = time.time()
                cpu_used = proc_cpu_seconds(pid) - cpu_start
                switches = proc_context_switches(pid) - switches_start
                status = proc_status(pid)
                crm_requests = requests_between(crm_port, wall_start, wall_end)
                favourites_requests = requests_between(favourites_port, wall_start, wall_end)
                state = store_state(db_path)
                if spy is not None:
                    spy.wait(timeout=60)
            finally:
                exit_code = stop_process(daemon)
        finally:
            stop_process(emulators)
        log_lines = (work / "daemon.log").read_text().splitlines()
    cpu_percent = 100 * cpu_used / window
    peak_rss = status["VmHWM"] / 1024
    favourites_gets = [r for r in favourites_requests if r["method"] == "GET"]
    sends = len(crm_requests) + len(favourites_requests) - len(favourites_gets)
    quiet = sends == 0 and all(p["pending"] == 0 for p in state["providers"].values())
    emit(
        {
            "bench": "idle",
            "rows": args.rows,
            "providers": len(state["providers"]),
            "provider_states": {n: p["state"] for n, p in state["providers"].items()},
            "build_s": round(build_s, 1),
            "start_to_ready_s": round(ready_s, 3),
            "settle_s": args.settle,
            "window_s": round(window, 1),
            "sample_interval_s": args.interval,
            "samples": len(rss_samples),
            "cpu_s": round(cpu_used, 3),
            "cpu_percent_of_one_core": round(cpu_percent, 3),
            "max_cpu_s_in_one_sample": round(max(cpu_per_sample, default=0.0), 3),
            "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
            "context_switches_per_s": round(switches / window, 1),
            "threads": status.get("Threads"),
            "rss_mb": round(status["VmRSS"] / 1024, 1),
            "rss_max_sampled_mb": round(max(rss_samples, default=0.0), 1),
            "peak_rss_mb": round(peak_rss, 1),
            "requests_in_window": {
                "crm": len(crm_requests),
                "favourites_pull_get": len(favourites_gets),  # one per user per pull
                "favourites_other": len(favourites_requests) - len(favourites_gets),
            },
            "outbox_pending": sum(p["pending"] for p in state["providers"].values()),
            "log_lines": len(log_lines),
            "daemon_exit_code": exit_code,
            "profile": args.profile,
            "targets": {"cpu_percent": 0.5, "rss_mb": 80, "sends_with_empty_outbox": 0},
            "met": {
                "cpu": cpu_percent < 0.5,
                "rss": peak_rss <= 80,
                "no_sends_with_empty_outbox": quiet,
            },
        }
    )


if __name__ == "__main__":
    main()
