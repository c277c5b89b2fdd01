"""Bench: ``dropsync ingest`` against ``sqlite-utils upsert --nl --pk``, whole processes.

``python bench/ingest_peer.py`` writes NDJSON files of two shapes, at each ``--docs``
count (default 500,000 and 1,000,000):

* **flat**: 76-byte objects ``{"id","email","updated_at"}``;
* **nested**: 200-byte objects ``{"id","updatedAt","profile":{...},"preferences":{...},
  "tags":[...]}``;

and times, alternating their order over ``--rounds`` rounds (default 3), each as a fresh
process into a fresh store:

* ``dropsync ingest FILE --collection users`` (the daemon's ingest path, the installed
  console script) into an empty store (made before the clock starts, as ``dropsync run``
  leaves it: ``dropsync ingest`` creates none), the collection keyed on ``id`` and routed
  to one CRM provider, so the outbox is filled as the daemon would fill it (``--plain``:
  routed nowhere);
* the peer, ``sqlite-utils upsert DB users FILE --nl --pk id``, and the same with
  ``--batch-size 5000`` (dropsync's batch).

Wall time, CPU time (the process and the children it waited for) and peak RSS (VmHWM
polled every 20 ms, the process plus its children: dropsync's parser process) of each run.
The ratio is the peer's median time over dropsync's: above 1, dropsync is that many times
faster. Prints one JSON line per shape and count, then a summary line.

The peer is not a dependency of dropsync: it lives in a virtualenv of its own. The bench
looks for it at ``--peer``, then ``$SQLITE_UTILS``, then ``.venv-peer/bin/sqlite-utils`` in
the repository, then ``sqlite-utils`` on the PATH; to install it::

    python3 -m venv .venv-peer && .venv-peer/bin/pip install sqlite-utils
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BASE_TS, ROOT, dropsync_command, emit, migrate, proc_status

SHAPES = ("flat", "nested")
FIRST_ID = 1_000_000  # ids of seven digits: every flat line is 76 bytes, every nested one 200


def flat_line(i: int) -> bytes:
    """A 76-byte flat document."""
    n = FIRST_ID + i
    return b'{"id":%d,"email":"user.%d@example.com","updated_at":%d}\n' % (n, n, BASE_TS + i)


def nested_line(i: int) -> bytes:
    """A 200-byte document with nested objects and an array."""
    n = FIRST_ID + i
    return (
        b'{"id":%d,"updatedAt":%d,"profile":{"email":"user.%d@example.com","firstName":"John",'
        b'"lastName":"Do","city":"Paphos"},"preferences":{"email":true,"phone":false},'
        b'"tags":["vip","x"]}\n' % (n, BASE_TS + i, n)
    )


def write_ndjson(path: Path, shape: str, count: int) -> int:
    """Write ``count`` documents of ``shape``, one a line; returns the file's size."""
    line = flat_line if shape == "flat" else nested_line
    with path.open("wb") as out:
        for start in range(0, count, 10_000):
            out.write(b"".join(line(i) for i in range(start, min(count, start + 10_000))))
    return path.stat().st_size


def find_peer(explicit: str | None) -> str:
    """The ``sqlite-utils`` executable (see the module's docstring), or exit saying how."""
    candidates = [
        explicit,
        os.environ.get("SQLITE_UTILS"),
        str(ROOT / ".venv-peer" / "bin" / "sqlite-utils"),
        shutil.which("sqlite-utils"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    sys.exit(
        "sqlite-utils not found: python3 -m venv .venv-peer && "
        ".venv-peer/bin/pip install sqlite-utils (or give --peer PATH)"
    )


def config_text(work: Path, shape: str, routed: bool) -> str:
    """The config ``dropsync ingest`` reads: the collection keyed on ``id``."""
    timestamp = "updated_at" if shape == "flat" else "updatedAt"
    text = (
        f'[store]\npath = "{work / "dropsync.db"}"\n[drop]\npath = "{work / "drop"}"\n'
        f'[collections.users]\nkey = "id"\ntimestamp = "{timestamp}"\n'
    )
    if routed:
        text += (
            'providers = ["crm"]\n[providers.crm]\nkind = "crm"\n'
            'base_url = "http://127.0.0.1:9"\naccount_id = "bench"\n'
        )
    return text


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_hwm_kb(pid: int, seen: dict[int, int]) -> None:
    """Record the VmHWM of ``pid`` and of its children (kB) in ``seen``, the highest each."""
    for each in [pid, *children_of(pid)]:
        try:
            hwm = proc_status(each).get("VmHWM", 0)
        except OSError:
            continue
        seen[each] = max(seen.get(each, 0), hwm)


def timed_run(argv: list[str], cwd: Path) -> dict[str, float]:
    """Run ``argv``; its wall seconds, CPU seconds (with waited-for children), peak RSS MB."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy()
    )
    seen: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.02):
            tree_hwm_kb(process.pid, seen)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    poller.join()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {process.returncode}: {errors.decode()[-2000:]}")
    return {
        "seconds": elapsed,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": max(sum(seen.values()), usage.ru_maxrss) / 1024,
    }


def measure(
    shape: str, docs: int, rounds: int, peer: str, routed: bool, tmp: Path
) -> dict[str, Any]:
    """Every side of one shape and count, ``rounds`` times, alternating the order."""
    source = tmp / f"{shape}-{docs}.ndjson"
    size = write_ndjson(source, shape, docs)
    work = tmp / "work"
    peer_db = work / "peer.db"

    def dropsync() -> dict[str, float]:
        config = work / "dropsync.toml"
        config.write_text(config_text(work, shape, routed))
        migrate(work / "dropsync.db")  # the empty store `dropsync run` leaves: not timed
        return timed_run(
            [
                *dropsync_command(),
                "ingest",
                str(source),
                "--collection",
                "users",
                "--config",
                str(config),
            ],
            work,
        )

    def peer_run(*extra: str) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            argv = [peer, "upsert", str(peer_db), "users", str(source), "--nl", "--pk", "id"]
            return timed_run([*argv, *extra], work)

        return run

    sides: dict[str, Callable[[], dict[str, float]]] = {
        "dropsync": dropsync,
        "sqlite_utils": peer_run(),
        "sqlite_utils_batch_5000": peer_run("--batch-size", "5000"),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    for number in range(rounds):
        order = list(sides) if number % 2 == 0 else list(reversed(sides))
        for name in order:
            work.mkdir()
            try:
                results[name].append(sides[name]())
            finally:
                shutil.rmtree(work)
        loads.append(Path("/proc/loadavg").read_text().split()[0])
    source.unlink()
    own = [r["seconds"] for r in results["dropsync"]]
    figures: dict[str, Any] = {
        "bench": "ingest_peer",
        "shape": shape,
        "docs": docs,
        "file_mb": round(size / 1e6, 1),
        "bytes_per_doc": round(size / docs, 1),
        "routed": routed,
        "rounds": rounds,
        "load_average_1min": loads,
    }
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        figures[name] = {
            "seconds_median": round(statistics.median(seconds), 2),
            "seconds_each": [round(s, 2) for s in seconds],
            "cpu_seconds_median": round(statistics.median(r["cpu_seconds"] for r in runs), 2),
            "peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in runs), 1),
            "docs_per_s_median": round(docs / statistics.median(seconds)),
        }
        if name != "dropsync":
            # Same round, same order: the peer's time over dropsync's.
            each = [p / d for p, d in zip(seconds, own, strict=True)]
            figures[name]["times_faster_median"] = round(
                statistics.median(seconds) / statistics.median(own), 2
            )
            figures[name]["times_faster_each"] = [round(r, 2) for r in each]
    return figures


def main() -> None:
    """Generate, run, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, nargs="+", default=[500_000, 1_000_000])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer", help="the sqlite-utils executable")
    parser.add_argument("--plain", action="store_true", help="route the collection nowhere")
    parser.add_argument("--workdir", help="make the temp dir here")
    args = parser.parse_args()
    peer = find_peer(args.peer)
    summary: dict[str, Any] = {"bench": "ingest_peer_summary", "target_times_faster": 2.5}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for shape in args.shapes:
            for docs in args.docs:
                figures = measure(shape, docs, args.rounds, peer, not args.plain, Path(tmp))
                emit(figures)
                summary[f"{shape}_{docs}"] = {
                    "plain": figures["sqlite_utils"]["times_faster_median"],
                    "batch_5000": figures["sqlite_utils_batch_5000"]["times_faster_median"],
                    "dropsync_peak_rss_mb": figures["dropsync"]["peak_rss_mb_max"],
                }
    emit(summary)


if __name__ == "__main__":
    main()
