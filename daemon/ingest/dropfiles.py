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

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import shlex
import stat
import tempfile
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..names import is_text, shown

log = structlog.get_logger(__name__)

IGNORED_SUFFIXES = (".tmp", ".part")
PROCESSING, DONE, QUARANTINE = ".processing", ".done", ".quarantine"
RECEIPT_SUFFIX = ".error.json"
NAME_MAX = 255  # bytes of one name, where the file system does not say (Linux's own limit)
MAX_EXTENSION = 16  # bytes of an extension kept whole when a name is shortened
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


def not_a_file(path: Path) -> str | None:
    """Why ``dropsync ingest PATH`` (outside the drop folder) cannot read ``path``, in words;
    None for a regular file (or a link to one). Nothing is opened (a FIFO would block)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return (
                f"no such file: it is a symbolic link to {shown(os.readlink(path))}, "
                "which does not exist"
            )
        return "no such file"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        folder = shlex.quote(shown(str(path)))
        return f"not ingested: a directory; give the files in it (dropsync ingest {folder}/*.json)"
    return f"not ingested: {kind_of(path, mode)}; give a JSON or NDJSON file"


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


def linked_folders(drop: Path) -> list[Path]:
    """Links directly in ``drop`` (not hidden) that point to a folder: not collections,
    never followed; listed so that whoever made one is told."""
    found = []
    for entry in list_entries(drop):
        try:
            if (
                not entry.name.startswith(".")
                and entry.is_symlink()
                and entry.is_dir(follow_symlinks=True)
            ):
                found.append(Path(entry.path))
        except OSError:
            continue
    return found


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
    limit = name_max(folder.parent)
    number = 0
    while True:
        target = folder.with_name(fitted(base, number, limit))
        try:
            rename_noreplace(folder, target)
            return target
        except FileExistsError:
            number += 1


def own_folder(collection: Path, name: str) -> Path:
    """``<collection>/<name>`` (``.processing``, ``.done``, ``.quarantine``), a real folder.

    Made if missing. A link there (to a folder anywhere) is removed, the link itself,
    never what it points to, and a folder made in its place: files are never moved out
    of the drop folder through it, nor taken from wherever it points. Raises OSError if
    something else is there (a file by that name), or a link comes back at once.
    """
    folder = collection / name
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            log.warning(
                "drop_folder_link_replaced",
                folder=str(folder),
                error=f"it was a link (to {os.readlink(folder)}): removed, and a folder made; "
                "nothing where it pointed was read or moved",
            )
            os.unlink(folder)
    folder.mkdir(exist_ok=True)
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder of its own", str(folder))
    return folder


def is_own_folder(folder: Path) -> bool:
    """True if ``folder`` is a folder and not a link (to look into it: a link is never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(folder).st_mode)
    except OSError:
        return False


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


def free_name(collection: Path, name: str, reserved: Container[str] = ()) -> str:
    """``name``, or ``stem-N.suffix``, unused in ``.processing/``, ``.done/`` and ``.quarantine/``.

    A file keeps the name it gets here from its claim until it is filed, so it can never
    be moved onto another file's name, and an interrupted move is found by name. The name
    leaves room for its receipt (``<name>.error.json``) within the file system's limit for
    one name: a longer one is shortened (``fitted``). ``reserved``: names taken though
    nothing is there (those of live ingests whose files were deleted under them).
    """
    limit = name_max(collection) - len(RECEIPT_SUFFIX)
    number = 0
    while True:
        candidate = fitted(name, number, limit)
        if (
            candidate not in reserved
            and not any(
                os.path.lexists(collection / folder / candidate)
                for folder in (PROCESSING, DONE, QUARANTINE)
            )
            and not os.path.lexists(collection / QUARANTINE / (candidate + RECEIPT_SUFFIX))
        ):
            return candidate
        number += 1


def fits_receipt(collection: Path, name: str) -> bool:
    """True if ``name``'s receipt fits the file system's limit for one name."""
    return len(_bytes(name + RECEIPT_SUFFIX)) <= name_max(collection)


def name_max(folder: Path) -> int:
    """The longest name, in bytes, the file system of ``folder`` takes (255 if it won't say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def fitted(name: str, number: int, limit: int) -> str:
    """``name`` (``stem-N.suffix`` for ``number`` N > 0) in at most ``limit`` bytes of UTF-8.

    A name that fits is kept. A longer one keeps its extension (up to ``MAX_EXTENSION``
    bytes), the ``-N``, and as much of the start of its stem as fits, cut between two
    characters (never inside one), followed by ``~`` and 8 hex digits of a hash (BLAKE2s) of the
    whole name, so that long names alike but for their ends stay apart.
    """
    stem, suffix = os.path.splitext(name)
    if len(_bytes(suffix)) > MAX_EXTENSION:
        stem, suffix = name, ""
    tail = f"-{number}" if number else ""
    candidate = f"{stem}{tail}{suffix}"
    if len(_bytes(candidate)) <= limit:
        return candidate
    mark = "~" + hashlib.blake2s(_bytes(name), digest_size=4).hexdigest()
    room = max(limit - len(_bytes(mark + tail + suffix)), 1)
    return _cut(stem, room) + mark + tail + suffix


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _cut(text: str, size: int) -> str:
    """The longest start of ``text`` of at most ``size`` bytes of UTF-8, whole characters."""
    raw = _bytes(text)
    if len(raw) <= size:
        return text
    end = size
    while end > 0 and raw[end] & 0xC0 == 0x80:  # a continuation byte: inside a character
        end -= 1
    return raw[:end].decode("utf-8", "surrogateescape")


def new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the process's umask.

    Read from ``/proc/self/status``: setting the umask to read it would change it for
    every thread meanwhile.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def write_receipt(path: Path, content: bytes) -> None:
    """Write a receipt: to a new file beside it, renamed onto ``path``.

    Whatever is at ``path`` (a link put there, an older receipt) is replaced, never
    written through, and a receipt is never seen half written.
    """
    handle, temporary = tempfile.mkstemp(prefix=".receipt-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


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


def processing_place(claim: Claim, reserved: Container[str] = ()) -> Path:
    """A free place in ``.processing/`` for a locked file still in its collection folder
    (``reserved``: as for ``free_name``)."""
    folder = claim.path.parent
    return own_folder(folder, PROCESSING) / free_name(folder, claim.name, reserved)


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
