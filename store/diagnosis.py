"""Why the store cannot be opened or read, in words an operator can act on.

SQLite says "unable to open database file", "attempt to write a readonly
database" or "disk I/O error" for a dozen different causes. When opening fails,
``explain_open_failure`` looks at the file system (the path, its folder, the
permissions the process really has) and names the path and the real cause. Only
a file SQLite itself reports as damaged or not a database suggests
``PRAGMA integrity_check``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from .errors import StoreBusy, StoreDamaged, StoreError, StoreUnavailable

_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _error_name(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def is_damage(exc: BaseException) -> bool:
    """True when SQLite reports the file itself as damaged or not a database."""
    return _error_name(exc).startswith(_DAMAGED)


def damaged_message(path: Path | str, exc: BaseException) -> str:
    """The message for a store SQLite reports as damaged."""
    return (
        f"store {path} is damaged or is not an SQLite database ({exc}): "
        f"check it with: sqlite3 {path} 'PRAGMA integrity_check'"
    )


def describe_database_error(exc: sqlite3.Error) -> str:
    """A message for an SQLite error met after the store was open (the path is not known)."""
    if is_damage(exc):
        return (
            f"the store is damaged or is not an SQLite database ({exc}): check it with "
            "sqlite3 and 'PRAGMA integrity_check' (dropsync status names the store's path)"
        )
    text = str(exc)
    if text.startswith(("no such table", "no such column")):
        return (
            f"the store could not answer: {text} (its tables do not match its schema version: "
            "was it changed by hand?)"
        )
    return f"the store could not answer: {text}"


def _first_missing(folder: Path) -> Path:
    """The outermost folder of ``folder``'s ancestry that does not exist."""
    missing = folder
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    return missing


def _probe_create(folder: Path) -> OSError | None:
    """Create and remove a file in ``folder``: the error, if this process cannot."""
    import tempfile

    try:
        handle, name = tempfile.mkstemp(prefix=".dropsync-probe-", dir=folder)
    except OSError as exc:
        return exc
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


NOT_A_FILE = "is not a regular file (a FIFO, a socket or a device): point [store] path at the store"


def filesystem_cause(path: Path, *, writing: bool, probe: bool = True) -> str | None:
    """What about ``path`` or its folder keeps SQLite from opening it, if anything.

    ``probe``: find out whether files can be created in the folder by creating (and
    removing) one, which also finds a read-only file system or a full disk; else
    ask ``os.access``, which has no side effect.
    """
    try:
        return _filesystem_cause(path, writing=writing, probe=probe)
    except OSError as exc:  # a folder on the way that this process may not look into
        return f"cannot look at {exc.filename or path}: {exc.strerror}"


def check_openable(path: Path, *, writing: bool) -> None:
    """Raise the reason ``path`` cannot be opened, when the file system shows one.

    Called before connecting: a connection that fails to open leaves aiosqlite's
    worker thread to finish after the caller's event loop may be gone.
    """
    cause = filesystem_cause(path, writing=writing, probe=False)
    if cause is not None:
        raise StoreUnavailable(f"store {path}: {cause}")


def _filesystem_cause(path: Path, *, writing: bool, probe: bool) -> str | None:
    folder = path.parent
    if path.is_dir():
        return "is a folder, not a file: point [store] path at a file (e.g. dropsync.db in it)"
    if path.exists() and not path.is_file():
        # Checked before anything opens it: opening a FIFO waits for a writer, for ever.
        return NOT_A_FILE
    if not folder.exists():
        return f"its folder {_first_missing(folder)} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if path.exists() and not _accessible(path, writing=writing):
        action = "open the file for writing" if writing else "read the file"
        return f"cannot {action}: {_denied(path, writing=writing)}"
    sidecars = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    if writing or not all(p.exists() for p in sidecars):
        # SQLite keeps the -wal and -shm files beside the store, even to read it.
        if probe:
            problem = _probe_create(folder)
        elif os.access(folder, os.W_OK | os.X_OK):
            problem = None
        else:
            problem = PermissionError(13, "Permission denied or read-only")
        if problem is not None:
            return (
                f"cannot create files in its folder {folder}: {problem.strerror} (SQLite "
                f"keeps {path.name}-wal and {path.name}-shm there, even to read the store)"
            )
    for sidecar in sidecars:
        if sidecar.exists() and not _accessible(sidecar, writing=writing):
            return f"cannot open {sidecar}: {_denied(sidecar, writing=writing)}"
    return None


# The store and its -wal and -shm are asked about, never opened here: this process may have
# the store open, and closing any descriptor of a file ends every POSIX lock the process
# holds on it (fcntl's rule), SQLite's included: another program could then write the store
# while this one's transaction believes it holds the write lock.


def _accessible(path: Path, *, writing: bool) -> bool:
    return os.access(path, os.R_OK | (os.W_OK if writing else 0))


def _denied(path: Path, *, writing: bool) -> str:
    """Why ``os.access`` said no: a read-only file system, or the permissions."""
    if writing:
        try:
            if os.statvfs(path).f_flag & os.ST_RDONLY:
                return "Read-only file system"
        except OSError as exc:
            return exc.strerror or str(exc)
    return "Permission denied"


def explain_open_failure(path: Path, exc: BaseException, *, writing: bool) -> StoreError:
    """The store error to raise (``from exc``) when opening ``path`` failed with ``exc``."""
    name = _error_name(exc)
    if name.startswith("SQLITE_BUSY"):
        return StoreBusy(f"store {path} is locked by another program ({exc})")
    if is_damage(exc):
        return StoreDamaged(damaged_message(path, exc))
    if name.startswith("SQLITE_FULL") or getattr(exc, "errno", None) == 28:
        return StoreUnavailable(f"store {path}: the disk is full ({exc})")
    cause = filesystem_cause(path, writing=writing)
    if cause is not None:
        return StoreUnavailable(f"store {path}: {cause}")
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        return StoreUnavailable(f"store {path}: {exc.strerror}{where}")
    return StoreUnavailable(f"store {path} cannot be opened: {exc}")
