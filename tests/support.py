"""Test support: the daemon as a real subprocess, bounded waits, free ports."""

from __future__ import annotations

import math
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent

# Set by an autouse fixture (tests/conftest.py): whether the running test is marked e2e.
RUNNING_E2E_TEST: bool | None = None


def wait_until(predicate: Callable[[], object], *, timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    The timeout only bounds a hang; no test asserts on how long anything took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or predicate}")
        time.sleep(0.05)


# Below this, the kernel hands no port to bind(0) nor to an outgoing connection.
_LOWEST_PICK = 10_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody holds right now, below the kernel's ephemeral range.

    bind(0) and every outgoing connection (each HTTP client of every test worker) take
    their ports from the ephemeral range, so a port picked there can be taken before the
    server under test binds it: a CI run's listener found its port "in use by another
    program" for 30 s. Picked at random below the range (``secrets``: pytest-randomly seeds
    ``random`` alike in every worker) and checked free by binding it.
    """
    first = _ephemeral_range_start()
    if first > _LOWEST_PICK + 1000:
        for _ in range(200):
            port = _LOWEST_PICK + secrets.randbelow(first - _LOWEST_PICK)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def drop_json(folder: Path, name: str, documents: object) -> None:
    """Drop ``documents`` into ``folder`` (made if need be) as ``name.json``, the documented
    way: written as ``name.tmp``, then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tmp").write_bytes(orjson.dumps(documents))
    (folder / f"{name}.tmp").rename(folder / f"{name}.json")


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the store with a separate sqlite3 connection, as a user would."""
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return raw.execute(sql, params).fetchall()
    finally:
        raw.close()


class DaemonProcess:
    """``dropsync run`` as a subprocess; its JSON log lines go to a file the test reads."""

    def __init__(
        self,
        workdir: Path,
        config: str,
        env: dict[str, str] | None = None,
        *,
        cwd: Path | None = None,
        launcher: list[str] | None = None,
    ) -> None:
        """``launcher``: the command line before the CLI's words (default ``python -m
        dropsync.daemon.cli``), e.g. ``python -c SCRIPT`` that sets a module constant first."""
        self.workdir = workdir
        self.cwd = cwd or workdir
        self.launcher = launcher or [sys.executable, "-m", "dropsync.daemon.cli"]
        self.config_path = workdir / "dropsync.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        if "NOTIFY_SOCKET" not in (env or {}):
            self.env.pop("NOTIFY_SOCKET", None)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, *extra: str, config_first: bool = False) -> DaemonProcess:
        """Start the daemon and wait for its ``daemon_ready`` log line.

        ``config_first``: ``dropsync --config FILE run`` instead of ``run --config FILE``.
        """
        self.spawn(*extra, config_first=config_first)
        self.wait_for("daemon_ready")
        return self

    def spawn(self, *extra: str, config_first: bool = False) -> DaemonProcess:
        """Start the daemon without waiting for it to be ready (to kill it anywhere)."""
        if RUNNING_E2E_TEST is False:
            raise AssertionError("a test that starts the daemon is marked @pytest.mark.e2e")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        option = ["--config", str(self.config_path)]
        words = [*option, "run", *extra] if config_first else ["run", *option, *extra]
        self.process = subprocess.Popen(
            [*self.launcher, *words],
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        return self

    def mark_log(self) -> None:
        """From now on, ``events`` and ``wait_for`` see only lines logged after this moment."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events of the current run."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_bytes()[self._log_offset :].splitlines()
        found = []
        for line in lines:
            try:
                found.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                found.append({"event": "raw", "text": line.decode(errors="replace")})
        return found

    def wait_for(self, event: str, timeout: float = 60.0, **fields: object) -> dict[str, Any]:
        """Wait for a log event with the given fields (fails early if the daemon died)."""

        def seen() -> dict[str, Any] | None:
            for entry in self.events():
                if entry.get("event") == event and all(
                    entry.get(k) == v for k, v in fields.items()
                ):
                    return entry
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.process.returncode}) before "
                    f"{event}: {self.log_path.read_text()[-3000:]}"
                )
            return None

        return wait_until(seen, timeout=timeout, what=f"log event {event} {fields}")  # type: ignore[no-any-return]

    def send_signal(self, signum: int) -> None:
        """Send a signal to the daemon."""
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the daemon and return its exit code."""
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def close(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


_HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute(sys.argv[2] if len(sys.argv) > 2 else "SELECT 1")
db.execute("COMMIT")
"""


class StoreLockHolder:
    """Another program holding the store's write lock (``BEGIN IMMEDIATE``) until released."""

    def __init__(self, db: Path, statement: str | None = None) -> None:
        args = [sys.executable, "-c", _HOLD_LOCK, str(db)] + ([statement] if statement else [])
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        """Run the statement (if any), commit and end."""
        assert self.process.stdin is not None
        if self.process.poll() is None:
            self.process.stdin.write("\n")
            self.process.stdin.flush()
        assert self.process.wait(timeout=30) == 0

    def close(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


class SmallFileSystem:
    """A small tmpfs mounted at ``path`` (root only), to fill up for real."""

    def __init__(self, path: Path, size_kb: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            import pytest

            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte (the file ``filler``)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (1 << 16, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    continue
        finally:
            os.close(fd)

    def free(self) -> None:
        """Give the space back."""
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        """Unmount (lazily: a process may still have a file open there)."""
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def typed(value: object) -> object:
    """``value`` with every scalar's type (1, 1.0 and True are equal in Python, not in a
    config or a JSON text) and a float's sign and NaN told apart."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    if isinstance(value, float):
        return ("float", repr(value), math.copysign(1.0, value))
    return (type(value).__name__, value)
