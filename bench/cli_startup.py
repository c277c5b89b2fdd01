"""Bench: what ``dropsync status`` costs over starting Python (and what click would add).

``python bench/cli_startup.py`` makes a small store and times, alternating over
``--rounds`` rounds (wall time of a subprocess; median, best and range):

* ``dropsync status --json`` through the installed console script (``status_script_ms``)
  and through ``python -m dropsync.daemon.cli`` (``status_module_ms``): the usual command
  lines take the short path (``daemon/cli/shortcut.py``, no argparse);
* the same command the whole way, through argparse (``app.main``: ``status_argparse_ms``);
* the reference: ``python -c "import sqlite3"`` with the same interpreter (so the same
  site-packages: an editable install's import hook included), and ``python -c pass``;
* with ``--click``: the command in an interpreter that imports click first, the least a
  click command line would add (a lower bound), and ``python -c "import click"``.

``ratio`` is the status command's median over the reference's, ``ratio_each`` the same
per round (target 1.3, issue 23). Children run with bytecode written and read
(``PYTHONDONTWRITEBYTECODE`` removed from their environment: without compiled bytecode
every run compiles every module it imports), after warm-up runs that write it.
``--python`` measures another interpreter (say a virtualenv with a regular, not editable,
install of dropsync: ``pip install .``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import best_median, emit, migrate


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=21, help="runs of each command")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    parser.add_argument("--click", action="store_true", help="also time click's import")
    args = parser.parse_args()
    python = args.python
    script = Path(python).parent / "dropsync"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        migrate(work / "s.db")
        config = work / "c.toml"
        config.write_text(f'[store]\npath = "{work / "s.db"}"\n')
        status = ["status", "--json", "--config", str(config)]
        commands = {
            "status_script_ms": [str(script), *status],
            "status_module_ms": [python, "-m", "dropsync.daemon.cli", *status],
            "status_argparse_ms": [
                python,
                "-c",
                f"import sys; from dropsync.daemon.cli.app import main; sys.exit(main({status!r}))",
            ],
            "reference_import_sqlite3_ms": [python, "-c", "import sqlite3"],
            "python_pass_ms": [python, "-c", "pass"],
        }
        if not script.exists():
            del commands["status_script_ms"]
        if args.click:
            commands["status_with_click_imported_ms"] = [
                python,
                "-c",
                "import click, sys; from dropsync.daemon.cli import main; "
                f"sys.exit(main({status!r}))",
            ]
            commands["python_import_click_ms"] = [python, "-c", "import click"]
        for argv in commands.values():  # bytecode written, caches warm
            for _ in range(2):
                _time(argv, env)
        loads = [Path("/proc/loadavg").read_text().split()[0]]
        times: dict[str, list[float]] = {name: [] for name in commands}
        for number in range(args.rounds):
            order = list(commands) if number % 2 == 0 else list(reversed(commands))
            for name in order:
                times[name].append(_time(commands[name], env))
        loads.append(Path("/proc/loadavg").read_text().split()[0])
    editable = any(
        entry.name.startswith("__editable__")
        for folder in (Path(p) for p in sys.path if p.endswith("site-packages"))
        if folder.is_dir()
        for entry in folder.iterdir()
    )
    figures: dict[str, object] = {
        "bench": "cli_startup",
        "rounds": args.rounds,
        "python": python,
        "editable_install": editable if python == sys.executable else None,
        "load_average_1min": loads,
    }
    for name, values in times.items():
        figures[name] = {**best_median(values), "max": round(max(values), 1)}
    reference = times["reference_import_sqlite3_ms"]
    measured = times.get("status_script_ms") or times["status_module_ms"]
    each = [s / r for s, r in zip(measured, reference, strict=True)]
    figures["ratio"] = round(statistics.median(measured) / statistics.median(reference), 3)
    figures["ratio_each"] = {
        "median": round(statistics.median(each), 3),
        "min": round(min(each), 3),
        "max": round(max(each), 3),
    }
    figures["target_ratio"] = 1.3
    emit(figures)


if __name__ == "__main__":
    main()
