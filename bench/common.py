"""Shared bench helpers: data generation, child processes, resource figures."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_TS = 1_696_821_819_000


def envelope_line(i: int) -> bytes:
    """One churn-envelope document of about 310 bytes (the seed's example shape)."""
    return (
        b'{"data":{"id":%d,"email":"user%d@example.com","phone":"+381638538392",'
        b'"marketingPreferences":{"email":true,"phone":true},'
        b'"systemPreferences":{"email":false,"phone":true},'
        b'"firstName":"John","lastName":"Doe","city":"Limassol"},'
        b'"createdAt":1696814606000,"updatedAt":%d}' % (i, i, BASE_TS + i)
    )


def write_envelopes(path: Path, count: int) -> int:
    """Write ``count`` envelopes as one JSON array, streaming; returns the size in bytes."""
    with path.open("wb") as out:
        out.write(b"[\n")
        for i in range(count):
            if i:
                out.write(b",\n")
            out.write(envelope_line(i))
        out.write(b"\n]\n")
    return path.stat().st_size


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m bench.<module> args`` and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line a bench reports (with a warning when bytecode was missing or
    the virtualenv lacks a dependency the checkout names)."""
    for key, problem in (
        ("bytecode_warning", bytecode_problem()),
        ("dependency_warning", dependency_problem()),
    ):
        if problem is not None:
            warn_bytecode(problem)
            result = {**result, key: problem}
    print(json.dumps(result), flush=True)


def dependency_problem() -> str | None:
    """Which dependencies of this checkout's pyproject.toml the running interpreter lacks.

    An editable install made before a dependency was added still runs the new code, without
    it: the flush bench ran without sniffio so, and httpcore's failed import of it on every
    request cost 0.4 ms of CPU a request. bench/README.md says how to run.
    """
    import re
    import tomllib
    from importlib import metadata

    with (ROOT / "pyproject.toml").open("rb") as handle:
        wanted = tomllib.load(handle)["project"]["dependencies"]
    missing = []
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name is None:
            continue
        try:
            metadata.version(name.group())
        except metadata.PackageNotFoundError:
            missing.append(name.group())
    if not missing:
        return None
    return (
        f"not installed in this virtualenv: {', '.join(missing)} (the checkout's dependencies "
        "changed since it was set up): run `.venv/bin/pip install -e '.[dev]'` (bench/README.md)"
    )


# The checkout's code folders: an editable install imports them from here.
CODE_FOLDERS = ("adapters", "daemon", "store", "bench")


def _bytecode_is_fresh(source: Path) -> bool:
    """Whether ``source`` has a cached .pyc that Python would use (its header names this
    source's modification time and size, as the default invalidation mode checks)."""
    import importlib.util

    try:
        cached = Path(importlib.util.cache_from_source(str(source)))
        with cached.open("rb") as handle:
            header = handle.read(16)
        stat = source.stat()
    except OSError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") != 0:
        return True  # hash-based (compileall --invalidation-mode): checked by Python itself
    mtime = int.from_bytes(header[8:12], "little")
    size = int.from_bytes(header[12:16], "little")
    return mtime == int(stat.st_mtime) & 0xFFFFFFFF and size == stat.st_size & 0xFFFFFFFF


def bytecode_problem() -> str | None:
    """Why processes of this checkout would compile its modules as they start, or None.

    ``PYTHONDONTWRITEBYTECODE=1`` (set on these machines) keeps Python from writing the
    ``.pyc`` files, so an editable install compiles every module it imports in every
    process: ``dropsync status`` took 344 ms instead of 95. bench/README.md says how to run.
    """
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    sources = [
        path
        for folder in CODE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if path != script  # a script run by its path is compiled each time anyway
    ]
    stale = [path for path in sources if not _bytecode_is_fresh(path)]
    if not stale:
        return None
    flag = " and PYTHONDONTWRITEBYTECODE is set" if sys.flags.dont_write_bytecode else ""
    return (
        f"{len(stale)} of {len(sources)} modules have no up-to-date bytecode{flag} "
        f"(e.g. {stale[0].relative_to(ROOT)}): processes compile them as they start; run "
        "`unset PYTHONDONTWRITEBYTECODE; python -m compileall -q adapters daemon store bench` "
        "first (bench/README.md)"
    )


def warn_bytecode(problem: str) -> None:
    """Say on stderr why the figures may not be this code's own."""
    print(f"bench: warning: {problem}", file=sys.stderr, flush=True)


def start_emulator(*kinds: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``dropsync emulate`` with every emulator on a free port, and the URL of each of
    ``kinds`` as that process printed it (``{"crm": "http://127.0.0.1:PORT"}``).

    The ports are the ones the emulators bound (port 0), read from the process's own
    output, and each answers ``GET /_emulator/state`` before this returns: the servers a
    bench measures are the ones it started, not another program on a well-known port.
    """
    import re
    import threading
    import urllib.request

    from dropsync.adapters.registry import emulated

    process = subprocess.Popen(
        [
            *dropsync_command(),
            "emulate",
            *(arg for kind, _ in emulated() for arg in (f"--{kind}-port", "0")),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    timer = threading.Timer(60, process.kill)  # readline below never waits for ever
    timer.start()
    urls: dict[str, str] = {}
    try:
        for line in process.stdout:
            found = re.match(r"(\w+) emulator:\s+(http://\S+)", line)
            if found:
                urls[found.group(1).lower()] = found.group(2)
            if line.startswith("faults:"):  # printed after every emulator's line
                break
    finally:
        timer.cancel()
    # Whatever it prints later is read and dropped: a full pipe would stop the emulator.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    missing = [kind for kind in kinds if kind not in urls]
    if missing:
        process.kill()
        raise RuntimeError(f"emulators did not start: {missing} not announced")
    for kind in kinds:
        with urllib.request.urlopen(f"{urls[kind]}/_emulator/state", timeout=10):
            pass
    return process, {kind: urls[kind] for kind in kinds}


def build_records(
    path: Path, rows: int, *, pending_for: str | None = None, pending: int = 0
) -> None:
    """Fill a migrated store with ``rows`` churn-envelope records (and a pending backlog)."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) SELECT 'users', CAST(i AS TEXT), "
        'printf(\'{"createdAt":1696814606000,"data":{"city":"Limassol","email":'
        '"user%d@example.com","id":%d},"updatedAt":%d}\', i, i, 1696821819000 + i), '
        "1696821819000 + i, 0, 'drop', printf('%032x', i), 0 FROM n",
        (rows,),
    )
    if pending_for is not None and pending:
        db.execute(
            "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
            "SELECT ?, collection, key, updated_at, 1700000000000 FROM records LIMIT ?",
            (pending_for, pending),
        )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def migrate(path: Path) -> None:
    """Create (or migrate) a store at ``path`` with the daemon's own migrations."""
    import anyio
    from dropsync.store.db import open_store

    async def run() -> None:
        db = await open_store(path)
        await db.close()

    anyio.run(run)


def start_daemon(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    """``dropsync run`` as a subprocess; returns it and the seconds until ``daemon_ready``."""
    import os
    import time

    handle = log.open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "dropsync.daemon.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    handle.close()
    while b'"daemon_ready"' not in log.read_bytes():
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited: {log.read_text()[-2000:]}")
        time.sleep(0.005)
    return process, time.perf_counter() - started


# Helpers for the idle, store and inbox benches: the daemon as a real ``dropsync`` process.


def dropsync_command() -> list[str]:
    """The installed ``dropsync`` console script, else ``python -m dropsync.daemon.cli``."""
    script = Path(sys.executable).parent / "dropsync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dropsync.daemon.cli"]


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_records(log: Path, event: str) -> list[dict[str, Any]]:
    """The lines of ``log`` (the daemon's JSON lines) whose ``event`` is ``event``, in order."""
    data = log.read_bytes()
    needle = event.encode()
    if needle not in data:
        return []
    found = []
    for line in data.splitlines():
        if needle not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def log_has_event(log: Path, event: str) -> bool:
    """True once ``log`` (the daemon's JSON lines) holds a line whose ``event`` is ``event``."""
    return bool(log_records(log, event))


def start_dropsync(
    config: Path, log: Path, env: dict[str, str] | None = None, timeout: float = 120.0
) -> tuple[subprocess.Popen[bytes], float]:
    """``dropsync run --config CONFIG`` as a subprocess, stdout (JSON log lines) to ``log``.

    Returns the process and the seconds from starting it until its
    ``{"event":"daemon_ready",...}`` line appeared.
    """
    import os
    import time

    with log.open("wb") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*dropsync_command(), "run", "--config", str(config)],
            cwd=config.parent,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    while not log_has_event(log, "daemon_ready"):
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited: {log.read_text()[-2000:]}")
        if time.perf_counter() - started > timeout:
            process.kill()
            raise RuntimeError(f"daemon not ready after {timeout} s: {log.read_text()[-2000:]}")
        time.sleep(0.002)
    return process, time.perf_counter() - started


def stop_process(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM, wait (SIGKILL after ``timeout``); returns the exit code."""
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def best_median(values: list[float], digits: int = 1) -> dict[str, float]:
    """``{"best": min, "median": median}`` of ``values``, rounded."""
    import statistics

    return {"best": round(min(values), digits), "median": round(statistics.median(values), digits)}


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, living and exited), in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/PID/status (VmRSS, VmHWM in kB, Threads, ...)."""
    return proc_status_file(Path(f"/proc/{pid}/status"))


def proc_context_switches(pid: int) -> int:
    """Context switches (voluntary and not) summed over a process's living threads."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = proc_status_file(task / "status")
        except OSError:
            continue  # the thread ended meanwhile
        total += status.get("voluntary_ctxt_switches", 0)
        total += status.get("nonvoluntary_ctxt_switches", 0)
    return total


def proc_status_file(path: Path) -> dict[str, int]:
    """The numeric fields of one /proc status file."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0])
    return values


def start_emulators(crm_port: int, favourites_port: int) -> subprocess.Popen[bytes]:
    """``dropsync emulate`` (CRM and favourites) in its own process, once both answer."""
    import time
    import urllib.error
    import urllib.request

    process = subprocess.Popen(
        [
            *dropsync_command(),
            "emulate",
            "--crm-port",
            str(crm_port),
            "--favourites-port",
            str(favourites_port),
            # The others on free ports: their default ports may be taken on a shared machine.
            "--registrations-port",
            "0",
            "--churn-port",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    waiting = {crm_port, favourites_port}
    while waiting and time.monotonic() < deadline:
        for port in sorted(waiting):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/state", timeout=1):
                    waiting.discard(port)
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
    if waiting:
        process.kill()
        raise RuntimeError(f"emulators did not start on {sorted(waiting)}")
    return process


def emulator_requests(port: int) -> list[dict[str, Any]]:
    """Every request an emulator has logged (method, path, wall time, status)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/state", timeout=10) as reply:
        state = json.loads(reply.read())
    return list(state["requests"])


def run_py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` for ``seconds`` (raw flame-graph lines, all threads)."""
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [
            str(spy if spy.exists() else "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--threads",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
