"""A read-only connection for the CLI's questions: no event loop, no writer, fast to open.

``dropsync status`` opens the store here, so the way to a connection imports nothing heavy
(no pathlib: the path is text; ``diagnosis``, which explains a failure, only on one).
"""

from __future__ import annotations

import os
import sqlite3
import stat

from .schema import latest_version

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from .errors import StoreError

# What a file URI keeps unquoted: RFC 3986's unreserved characters and the separator.
_URI_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/")


def file_uri(path: str) -> str:
    """``pathlib.Path(path).as_uri()`` of an absolute, normal POSIX path (as
    ``os.path.realpath`` gives it), without pathlib (and urllib): every byte of the path
    but the unreserved ones and ``/`` as ``%XX``."""
    quoted = "".join(chr(b) if b in _URI_SAFE else f"%{b:02X}" for b in os.fsencode(path))
    return f"file://{quoted}"


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open the store for reading while the daemon may be writing (WAL readers never block)."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        folder = os.path.dirname(path) or "."
        nor = "" if os.path.isdir(folder) else f", nor does its folder {folder}"
        from .errors import StoreError  # here: the way to a connection imports no error

        raise StoreError(f"store {path} does not exist{nor} (has the daemon run yet?)") from None
    except OSError as exc:
        raise _explained(path, exc) from exc
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        from .diagnosis import NOT_A_FILE
        from .errors import StoreUnavailable

        raise StoreUnavailable(f"store {path}: {NOT_A_FILE}")  # a FIFO's open would wait
    try:
        db = sqlite3.connect(f"{file_uri(os.path.realpath(path))}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise _explained(path, exc) from exc
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        db.close()
        raise _explained(path, exc) from exc
    known = latest_version()
    if version != known:
        from .maintenance import version_of  # a store of another version: rare

        try:
            version = version_of(db)  # another program may have set user_version
        except sqlite3.Error as exc:
            db.close()
            raise _explained(path, exc) from exc
    if version != known:
        db.close()
        raise _unknown_version(path, version, known)
    return db


def _unknown_version(path: str, version: int, known: int) -> StoreError:
    from .errors import SchemaTooNew, SchemaTooOld

    if version > known:
        return SchemaTooNew(
            f"store {path} has schema version {version}, but this dropsync knows versions up "
            f"to {known}: it was written by a newer dropsync. Upgrade dropsync."
        )
    return SchemaTooOld(
        f"store {path} has schema version {version}, older than {known}: start the daemon "
        "once (or run 'dropsync migrate') to migrate it",
        version=version,
        latest=known,
    )


def _explained(path: str, exc: BaseException) -> StoreError:
    from pathlib import Path

    from .diagnosis import explain_open_failure

    return explain_open_failure(Path(path), exc, writing=False)
