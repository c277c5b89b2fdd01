"""Bench: what ``dropsync status`` costs over starting Python (and what click would add).

``python bench/cli_startup.py`` makes a small store whose daemon looks alive (the bench
holds the store's instance lock and keeps its runtime file fresh, as ``dropsync run``
does, so status reads and reports both), and times, alternating over ``--rounds`` rounds
(wall time of a subprocess; median, best and range):

* ``dropsync status --json``, ``dropsync status`` and ``dropsync status --check`` through
  the installed console script (``status_json_ms``, ``status_text_ms``,
  ``status_check_ms``) and ``status --json`` through ``python -m dropsync.daemon.cli``
  (``status_module_ms``): the usual command lines take the short path
  (``daemon/cli/shortcut.py``, no argparse);
* the same command the whole way, through argparse (``app.main``: ``status_argparse_ms``);
* the reference: ``python -c "import sqlite3"`` with the same interpreter (so the same
  site-packages: an editable install's import hook included), and ``python -c pass``;
* a floor: the least a status can do with the standard library alone (read the config
  file, ask the store's ``pending_by_provider`` view read-only, read the runtime file,
  print JSON: ``floor_stdlib_ms``);
* with ``--click``: the command in an interpreter that imports click first, the least a
  click command line would add (a lower bound), and ``python -c "import click"``.

``ratio`` is ``status --json``'s median over the reference's, ``ratio_each`` the same per
round (target 1.3, issue 23); ``ratios`` has each command's (and the floor's). Children
run with bytecode written and read (``PYTHONDONTWRITEBYTECODE`` removed from their
environment: without compiled bytecode every run compiles every module it imports), after
warm-up runs that write it.

Which install: by default this interpreter's (the development set-up's editable install,
whose import hook loads pathlib, re and urllib.parse into every interpreter, the
reference's too). ``--regular`` builds a virtualenv with a regular install of this
checkout first (``pip install --no-deps .``: status imports none of the dependencies; its
bytecode compiled) and measures that, as a user's ``pip install dropsync`` runs it.
``--python`` measures another interpreter. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import best_median, emit, migrate

ROOT = Path(__file__).resolve().parent.parent

FLOOR = """
import json, sqlite3, sys
with open(sys.argv[1], encoding="utf-8") as f:
    f.read()
db = sqlite3.connect("file:" + sys.argv[2] + "?mode=ro", uri=True)
rows = db.execute("SELECT * FROM pending_by_provider").fetchall()
with open(sys.argv[2] + ".runtime.json", "rb") as f:
    runtime = json.loads(f.read().split(b"\\n", 1)[0])
print(json.dumps({"providers": rows, "runtime": runtime}, indent=2))
"""


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - started) * 1000


def _check_answers(name: str, argv: list[str], env: dict[str, str]) -> None:
    """Run ``argv`` once: it must answer (``status --check`` may warn of a full disk)."""
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
    warned = name == "status_check_ms" and done.stdout.startswith("DROPSYNC WARNING")
    if (done.returncode != 0 and not warned) or done.stderr:
        raise SystemExit(f"bench: {name} failed ({done.returncode}): {done.stderr.strip()}")


def regular_install(folder: Path, env: dict[str, str]) -> str:
    """A virtualenv in ``folder`` with this checkout installed the regular way; its python."""
    venv.create(folder, with_pip=True)
    python = str(folder / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", str(ROOT)],
        check=True,
        env=env,
    )
    subprocess.run([python, "-m", "compileall", "-q", str(folder / "lib")], check=True, env=env)
    return python


def look_alive(store: Path) -> None:
    """The runtime file of a running daemon, with a fresh heartbeat (written each round)."""
    from dropsync.daemon.process.runstate import HEARTBEAT_S, RuntimeFile

    now = int(time.time() * 1000)
    state = {"format": 1, "pid": os.getpid(), "state": "running", "started_at": now}
    runtime = RuntimeFile(store)
    runtime.write({**state, "heartbeat_at": now, "heartbeat_s": HEARTBEAT_S, "pauses": []})
    runtime.close()


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=21, help="runs of each command")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    parser.add_argument(
        "--regular", action="store_true", help="measure a regular install (a new virtualenv)"
    )
    parser.add_argument("--click", action="store_true", help="also time click's import")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        python = regular_install(work / "venv", env) if args.regular else args.python
        script = Path(python).parent / "dropsync"
        store = work / "s.db"
        migrate(store)
        from dropsync.daemon.process.instance import InstanceLock

        lock = InstanceLock(store)
        lock.acquire()  # the daemon's lock: status reports it running (this pid)
        look_alive(store)
        config = work / "c.toml"
        config.write_text(f'[store]\npath = "{store}"\n')
        status = ["status", "--json", "--config", str(config)]
        commands = {
            "status_json_ms": [str(script), *status],
            "status_text_ms": [str(script), "status", "--config", str(config)],
            "status_check_ms": [str(script), "status", "--check", "--config", str(config)],
            "status_module_ms": [python, "-m", "dropsync.daemon.cli", *status],
            "status_argparse_ms": [
                python,
                "-c",
                f"import sys; from dropsync.daemon.cli.app import main; sys.exit(main({status!r}))",
            ],
            "floor_stdlib_ms": [python, "-c", FLOOR, str(config), str(store)],
            "reference_import_sqlite3_ms": [python, "-c", "import sqlite3"],
            "python_pass_ms": [python, "-c", "pass"],
        }
        if not script.exists():
            for name in ("status_json_ms", "status_text_ms", "status_check_ms"):
                del commands[name]
        if args.click:
            commands["status_with_click_imported_ms"] = [
                python,
                "-c",
                "import click, sys; from dropsync.daemon.cli import main; "
                f"sys.exit(main({status!r}))",
            ]
            commands["python_import_click_ms"] = [python, "-c", "import click"]
        for name, argv in commands.items():  # bytecode written, caches warm
            _check_answers(name, argv, env)
            _time(argv, env)
        loads = [Path("/proc/loadavg").read_text().split()[0]]
        times: dict[str, list[float]] = {name: [] for name in commands}
        for number in range(args.rounds):
            look_alive(store)
            order = list(commands) if number % 2 == 0 else list(reversed(commands))
            for name in order:
                times[name].append(_time(commands[name], env))
        loads.append(Path("/proc/loadavg").read_text().split()[0])
        lock.release()
        editable = bool(
            subprocess.run(
                [python, "-c", "import sys; print(any('__editable__' in m for m in sys.modules))"],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout.strip()
            == "True"
        )
    figures: dict[str, object] = {
        "bench": "cli_startup",
        "rounds": args.rounds,
        "python": "regular install (a new virtualenv)" if args.regular else python,
        "editable_install": editable,
        "load_average_1min": loads,
    }
    for name, values in times.items():
        figures[name] = {**best_median(values), "max": round(max(values), 1)}
    reference = times["reference_import_sqlite3_ms"]
    measured = times.get("status_json_ms") or times["status_module_ms"]
    each = [s / r for s, r in zip(measured, reference, strict=True)]
    figures["ratio"] = round(statistics.median(measured) / statistics.median(reference), 3)
    figures["ratio_each"] = {
        "median": round(statistics.median(each), 3),
        "min": round(min(each), 3),
        "max": round(max(each), 3),
    }
    figures["ratios"] = {
        name: round(statistics.median(values) / statistics.median(reference), 3)
        for name, values in times.items()
        if name.startswith(("status", "floor"))
    }
    figures["target_ratio"] = 1.3
    emit(figures)


if __name__ == "__main__":
    main()
