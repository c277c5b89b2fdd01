"""Campaign 9, the soak: the daemon under a steady mixed load for an hour.

    python bench/soak.py --seconds 3600 --png bench/soak.png

The campaigns' load generator (drop files, inbox rows, deliveries to the CRM and favourites
emulators, pulls, changes made at the provider) runs at a steady rate; every ``--every``
seconds the daemon's RSS, open file descriptors and threads are read from ``/proc`` and
``dropsync status --json`` is timed. Growth is the median of the last tenth of the run against
the median of the samples just after the warm-up (the first ten minutes, or the first third of
a shorter run): the target is under 5 % for each. Then the load stops and the conservation
oracle checks that nothing was lost. The curves go to a PNG (``pip install -e '.[bench]'``
for matplotlib) and the samples to a CSV beside it.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit
from tests.harness import oracle
from tests.harness.world import World, campaign_seed, make_world

GROWTH_TARGET = 0.05
STATUS_TARGET_MS = 50.0


def sample(world: World, started: float) -> dict[str, float]:
    """One sample of the running daemon."""
    process = world.daemon.process
    assert process is not None
    status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status if ":" in line}
    fds = len(list(Path(f"/proc/{process.pid}/fd").iterdir()))
    begun = time.perf_counter()
    command = [sys.executable, "-m", "dropsync.daemon.cli", "status", "--json", "--config"]
    subprocess.run(
        [*command, str(world.daemon.config_path)], capture_output=True, check=True, timeout=60
    )
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mb": int(fields["VmRSS"][0]) / 1024,
        "fds": fds,
        "threads": int(fields["Threads"][0]),
        "status_ms": (time.perf_counter() - begun) * 1000,
    }


def growth(samples: list[dict[str, float]], name: str, warm_up_s: float) -> float:
    """Relative growth of ``name``: last tenth of the run against just after the warm-up."""
    after = [s[name] for s in samples if s["t_s"] >= warm_up_s]
    if len(after) < 4:
        return 0.0
    tenth = max(2, len(after) // 10)
    base = statistics.median(after[:tenth])
    end = statistics.median(after[-tenth:])
    return (end - base) / base if base else 0.0


def plot(samples: list[dict[str, float]], png: Path, warm_up_s: float) -> str:
    """The four curves in one PNG; returns what was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no PNG: matplotlib is not installed (pip install -e '.[bench]')"
    minutes = [s["t_s"] / 60 for s in samples]
    figure, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for axis, (name, label) in zip(
        axes,
        (
            ("rss_mb", "daemon RSS (MB)"),
            ("fds", "open file descriptors"),
            ("threads", "threads"),
            ("status_ms", "dropsync status --json (ms)"),
        ),
        strict=True,
    ):
        axis.plot(minutes, [s[name] for s in samples], linewidth=1)
        axis.axvline(warm_up_s / 60, color="grey", linestyle=":", linewidth=1)
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes[-1].axhline(STATUS_TARGET_MS, color="red", linestyle="--", linewidth=1)
    axes[-1].set_xlabel("minutes (dotted: end of the warm-up)")
    figure.suptitle("dropsync soak: steady mixed load")
    figure.tight_layout()
    figure.savefig(png, dpi=90)
    return str(png)


def soak(root: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak in ``root``; returns the figures."""
    world = make_world(root, seed)
    samples: list[dict[str, float]] = []
    warm_up_s = min(600.0, args.seconds / 3)
    try:
        world.daemon.start()
        world.load.start(args.rate)
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            world.run_for(args.every)
            samples.append(sample(world, started))
        world.load.stop()
        waiting = world.settle(600)
        code = world.stop()
        violations = world.final_violations()
        if waiting is not None:
            violations.append(oracle.Violation("liveness", waiting))
        if code != 0:
            violations.append(oracle.Violation("daemon_survives", f"SIGTERM: exit {code}"))
    finally:
        world.close()
    with args.png.with_suffix(".csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    statuses = sorted(s["status_ms"] for s in samples)
    files, rows, remote = world.load.ledger.snapshot()
    return {
        "seed": seed,
        "seconds": args.seconds,
        "samples": len(samples),
        "warm_up_s": warm_up_s,
        "growth": {
            n: round(growth(samples, n, warm_up_s), 4) for n in ("rss_mb", "fds", "threads")
        },
        "rss_mb": [round(samples[0]["rss_mb"], 1), round(samples[-1]["rss_mb"], 1)],
        "fds": [samples[0]["fds"], samples[-1]["fds"]],
        "threads": [samples[0]["threads"], samples[-1]["threads"]],
        "status_ms_p50": round(statuses[len(statuses) // 2], 1),
        "status_ms_max": round(statuses[-1], 1),
        "files": len(files),
        "inbox_rows": len(rows),
        "remote_changes": len(remote),
        "violations": len(violations),
        "by_invariant": oracle.summarise(violations),
        "report": oracle.report(violations, seed),
        "plot": plot(samples, args.png, warm_up_s),
    }


def main() -> None:
    """Parse the command line, soak, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=6.0, help="load actions a second")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--png", type=Path, default=Path("bench/soak.png"))
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else campaign_seed()
    print(f"soak: seed {seed}, {args.seconds:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        figures = soak(Path(folder), seed, args)
    print(figures.pop("report"), flush=True)
    emit({"bench": "soak", **figures})


if __name__ == "__main__":
    main()
