"""One daemon per store: an exclusive lock on ``<store>.lock``, which holds the daemon's pid.

``dropsync run`` (and ``demo``) takes the lock before it opens the store and keeps it
until the process ends; the kernel releases it however the process ends (SIGKILL
included), so a stale lock file is never a problem. A second daemon on the same store
is refused at once, naming the pid that holds it. ``dropsync status`` asks the same
lock whether a daemon is running (``holder``) without ever blocking the daemon.

Only the standard library's lightest modules here (no pathlib, no typing): ``status``
imports this and must start fast.
"""

from __future__ import annotations

import fcntl
import os
import time

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from pathlib import Path

SUFFIX = ".lock"
# A status probe holds a shared lock for a few microseconds; a daemon starting at that
# very moment tries again for this long before it concludes another daemon runs.
_RETRY_S = 1.0


def lock_path(store_path: str | os.PathLike[str]) -> str:
    """The lock file of the daemon using ``store_path``: ``<store>.lock``, beside it."""
    return os.fspath(store_path) + SUFFIX


def _holder_in(fd: int) -> tuple[int | None, str]:
    """The pid in a lock file, and what it holds the store for: ``run`` (a daemon; a file
    with the pid alone, as older versions wrote it too) or ``migrate``."""
    try:
        words = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    except OSError:
        return None, "run"
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, words[1] if len(words) > 1 else "run"


def _pid_in(fd: int) -> int | None:
    return _holder_in(fd)[0]


class InstanceLock:
    """The running daemon's hold on its store (``acquire``, then ``release`` at exit)."""

    def __init__(self, store_path: Path, purpose: str = "run") -> None:
        """``purpose``: ``run`` (a daemon) or ``migrate``, written after the pid, so that
        whoever finds the lock taken is told which holds it."""
        from pathlib import Path  # here: status imports this module

        self.path = Path(lock_path(store_path))
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid; AlreadyRunning naming the holder's pid if held."""
        store = self.path.with_name(self.path.name.removesuffix(SUFFIX))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from dropsync.store.errors import StoreUnavailable

            raise StoreUnavailable(
                f"store {store}: cannot create its folder {exc.filename or self.path.parent}: "
                f"{exc.strerror}"
            ) from exc
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o660)
        except OSError as exc:
            raise self._cannot_lock(exc) from exc
        deadline = time.monotonic() + _RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid, purpose = _holder_in(fd)
                if pid is not None or time.monotonic() > deadline:
                    os.close(fd)
                    from ..errors import AlreadyRunning

                    if purpose == "migrate":
                        raise AlreadyRunning(
                            f"dropsync migrate (pid {pid}) is migrating this store: it holds "
                            f"{self.path}. Wait for it to finish, then try again"
                        ) from None
                    raise AlreadyRunning(
                        f"another dropsync daemon (pid {pid if pid is not None else 'unknown'}) "
                        f"is running on this store: it holds {self.path}. Stop it first "
                        "(systemctl stop dropsync, or kill that pid); two daemons must never "
                        "write one store"
                    ) from None
                time.sleep(0.02)  # a status probe (shared lock, no pid yet): a moment
        os.ftruncate(fd, 0)
        mark = "" if self.purpose == "run" else f" {self.purpose}"
        os.pwrite(fd, f"{os.getpid()}{mark}\n".encode(), 0)
        self._fd = fd

    def _cannot_lock(self, exc: OSError) -> Exception:
        """The error to report when the lock file cannot be made: the store's folder's cause."""
        from dropsync.store.diagnosis import filesystem_cause
        from dropsync.store.errors import StoreUnavailable

        store = self.path.with_name(self.path.name.removesuffix(SUFFIX))
        cause = filesystem_cause(store, writing=True)
        if cause is not None:
            return StoreUnavailable(f"store {store}: {cause}")
        return StoreUnavailable(f"store {store}: cannot create {self.path}: {exc.strerror}")

    def release(self) -> None:
        """Empty the pid and let go (the file stays: removing it would race a new daemon)."""
        if self._fd is None:
            return
        import contextlib

        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def holder(store_path: str | os.PathLike[str]) -> int | None:
    """The pid of the daemon running on ``store_path`` (0 if it cannot be read), else None.

    Probes with a shared lock that is dropped at once: it never blocks a running daemon,
    and a daemon starting meanwhile waits a moment for it (see ``_RETRY_S``).
    """
    try:
        fd = os.open(lock_path(store_path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None  # no lock file: no daemon has ever run here (or we may not look)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
