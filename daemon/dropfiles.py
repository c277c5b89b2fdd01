"""The drop folder's file-system side: names, claims, locks and moves.

A drop file is owned by exactly one ingest at a time, in this process or another
(``dropsync ingest`` beside the daemon): the owner holds an exclusive ``flock`` on the
file, taken before the file is moved into ``.processing/`` and kept until it is filed
away, so the lock travels with the file. Whoever finds a file it cannot lock leaves it
alone; a lock dies with its process, so what a killed ingest left behind is free
to be finished.

Nothing here follows a symbolic link or opens anything but a regular file, and no
open blocks (a FIFO is never opened for reading).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dropsync.daemon.names import is_text, shown

IGNORED_SUFFIXES = (".tmp", ".part")
PROCESSING, DONE, QUARANTINE = ".processing", ".done", ".quarantine"
RECEIPT_SUFFIX = ".error.json"
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def is_ignored(path: Path) -> bool:
    """Names starting with ``.`` or ending in ``.tmp``/``.part`` wait until renamed."""
    return is_ignored_name(path.name)


def is_ignored_name(name: str) -> bool:
    """``is_ignored`` of a bare name."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


class Unreadable(Exception):
    """The entry will not be read: not a regular file, or not readable; ``str()`` says why."""


def kind_of(path: Path, mode: int) -> str | None:
    """What a non-regular entry is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a symbolic link (to {target}); links are never followed"
    for test, words in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISCHR, "a character device"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def list_entries(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of ``folder``; none if it vanished, is not a folder or cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def collection_folders(drop: Path) -> list[Path]:
    """``<drop>/<collection>/`` folders: real directories (a link is not followed).

    A folder whose name is not UTF-8 is not one (``rename_folders_not_utf8`` renames
    it): it is never listed, since even listing it makes the file watcher fail.
    """
    folders = []
    for entry in list_entries(drop):
        try:
            if (
                not entry.name.startswith(".")
                and is_text(entry.name)
                and entry.is_dir(follow_symlinks=False)
            ):
                folders.append(Path(entry.path))
        except OSError:
            continue
    return folders


def folders_not_utf8(drop: Path) -> list[Path]:
    """Folders directly in ``drop`` whose name is not UTF-8 (links not followed)."""
    found = []
    for entry in list_entries(drop):
        try:
            if not is_text(entry.name) and entry.is_dir(follow_symlinks=False):
                found.append(Path(entry.path))
        except OSError:
            continue
    return found


def rename_to_text(folder: Path) -> Path:
    """Rename ``folder`` to its escaped name (``caf\\xe9``, or ``caf\\xe9-1``, ...): the new path.

    Raises OSError if it cannot be renamed.
    """
    base = shown(folder.name)
    number = 0
    while True:
        target = folder.with_name(base if number == 0 else f"{base}-{number}")
        try:
            rename_noreplace(folder, target)
            return target
        except FileExistsError:
            number += 1


def lock_file(path: Path) -> int | None:
    """Open ``path`` (a regular file, not followed if a link) and lock it exclusively.

    Returns the descriptor holding the lock, or None if another ingest holds it.
    Raises ``Unreadable`` for anything but a regular file, FileNotFoundError (and
    other OSErrors) if it cannot be opened.
    """
    kind = kind_of(path, os.lstat(path).st_mode)  # a device is not even opened
    if kind is not None:
        raise Unreadable(kind)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError as exc:
        raise Unreadable(f"the daemon may not read it ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # replaced by a link or a socket
            raise Unreadable(kind_of(path, os.lstat(path).st_mode) or "") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Unreadable(kind_of(path, mode) or "")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_locked(path: Path) -> bool:
    """True if a live ingest holds ``path`` (a missing or unreadable file is not held)."""
    try:
        fd = lock_file(path)
    except (OSError, Unreadable):
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


def same_file(fd: int, path: Path) -> bool:
    """True if ``path`` is the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def free_name(collection: Path, name: str) -> str:
    """``name``, or ``stem-N.suffix``, unused in ``.processing/``, ``.done/`` and ``.quarantine/``.

    A file keeps the name it gets here from its claim until it is filed, so it can never
    be moved onto another file's name, and an interrupted move is found by name.
    """
    stem, suffix = os.path.splitext(name)
    number = 0
    while True:
        candidate = name if number == 0 else f"{stem}-{number}{suffix}"
        if not any(
            os.path.lexists(collection / folder / candidate)
            for folder in (PROCESSING, DONE, QUARANTINE)
        ) and not os.path.lexists(collection / QUARANTINE / (candidate + RECEIPT_SUFFIX)):
            return candidate
        number += 1


def _renameat2() -> object | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; FileExistsError if ``target`` exists (never replaced).

    Linux's ``renameat2(RENAME_NOREPLACE)`` makes the test and the rename one step; where
    it is missing (or the file system refuses it) the test comes just before the rename.
    """
    if _RENAMEAT2 is not None:
        result = _RENAMEAT2(  # type: ignore[operator]
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)


@dataclass(slots=True)
class Claim:
    """A drop file owned by this ingest: the descriptor holding its lock, and where it is."""

    fd: int
    path: Path  # where the file is now
    collection: str
    name: str  # the name it was dropped under
    move: bool = True  # False: ingested in place (outside the drop folder), never moved

    @property
    def folder(self) -> Path:
        """The collection folder (``<drop>/<collection>``)."""
        return self.path.parent.parent

    def close(self) -> None:
        """Release the lock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_dropped(path: Path, collection: str) -> Claim | None:
    """Lock ``<drop>/<collection>/<name>`` where it is (``move_to_processing`` moves it).

    None if another ingest owns it or it is gone (claimed or deleted meanwhile).
    Raises ``Unreadable`` for an entry that is not read.
    """
    try:
        fd = lock_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if fd is None:
        return None
    if not same_file(fd, path):
        os.close(fd)
        return None  # replaced between the open and the lock: the next look takes it
    return Claim(fd, path, collection, path.name)


def processing_place(claim: Claim) -> Path:
    """A free place in ``.processing/`` for a locked file still in its collection folder."""
    folder = claim.path.parent
    (folder / PROCESSING).mkdir(exist_ok=True)
    return folder / PROCESSING / free_name(folder, claim.name)


def claim_in_place(path: Path, collection: str) -> Claim | None:
    """Lock a file outside the drop folder for an in-place ingest (None if one runs)."""
    fd = lock_file(path)
    return None if fd is None else Claim(fd, path, collection, path.name, move=False)


def take_over(path: Path, collection: str, name: str) -> Claim | None:
    """Lock a file a previous ingest left in ``.processing/`` (None if an ingest owns it)."""
    try:
        fd = lock_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if fd is None:
        return None
    if not same_file(fd, path):  # filed away by its owner between our open and our lock
        os.close(fd)
        return None
    return Claim(fd, path, collection, name)
