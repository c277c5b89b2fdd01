"""Bench: what the command-line library costs ``dropsync status`` (argparse against click).

``python bench/cli_startup.py`` makes a small store and times, alternating over
``--rounds`` rounds (median and best, wall time of a subprocess):

* ``dropsync status --json``: the real command (argparse, one command's parser built);
* the same command in an interpreter that imports click first: the least a click
  command line would add (click's import; building its command objects is not counted);
* ``python -c pass`` and ``python -c "import click"``: bare start-up, and click alone.

Prints one JSON line. The click figure is a lower bound for a click-based ``status``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import best_median, emit, migrate


def _time(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=21, help="runs of each command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        migrate(work / "s.db")
        config = work / "c.toml"
        config.write_text(f'[store]\npath = "{work / "s.db"}"\n')
        status = ["status", "--json", "--config", str(config)]
        commands = {
            "status_argparse_ms": [sys.executable, "-m", "dropsync.daemon.cli", *status],
            "status_with_click_imported_ms": [
                sys.executable,
                "-c",
                "import click, sys; from dropsync.daemon.cli import main; "
                f"sys.exit(main({status!r}))",
            ],
            "python_pass_ms": [sys.executable, "-c", "pass"],
            "python_import_click_ms": [sys.executable, "-c", "import click"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                times[name].append(_time(argv))
    figures: dict[str, object] = {"rounds": args.rounds}
    for name, values in times.items():
        figures[name] = best_median(values)
    emit(figures)


if __name__ == "__main__":
    main()
