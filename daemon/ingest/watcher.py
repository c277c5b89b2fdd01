"""The drop-folder watcher: finds settled files and hands them to the ingestor.

An inotify watch (``daemon.ingest.inotify``) of the drop folder and of each collection folder
reports changes the moment they happen; a periodic rescan catches anything missed (and
the files present at start). A file renamed into a collection folder is taken at once:
write-then-rename is the documented way to drop, so it is whole. Any other file (made
or written in place, or found by a look at the folder) is taken once its size and mtime
have not changed for ``drop.settle_ms``; while it settles, the files behind it are not
held up. Names starting with ``.`` or ending in ``.tmp``/``.part`` are ignored. Entries
that are not regular files are handed on too (the ingestor quarantines them).

Folders come and go under it (``mkdir x; rmdir x`` in a loop): an entry that vanished,
turned into something else or cannot be read between listing and looking is skipped,
never an error; the next look sees what is there then. A watch ends when the drop folder
is removed: it is started again, and the folder looked at again (see
``DropWatcher._watch``).
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from collections.abc import Awaitable, Callable, Container, Iterator
from pathlib import Path

import anyio
import structlog
from dropsync.store.backoff import backoff_s
from dropsync.store.handle import PauseListener

from ..config import Config
from ..names import is_text
from .dropfiles import (
    collection_folders,
    folders_not_utf8,
    is_ignored_name,
    linked_folders,
    rename_to_text,
)
from .ingestor import IngestReport, only_errors_of
from .inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_DONT_FOLLOW,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    Inotify,
)

log = structlog.get_logger(__name__)

DROP_FOLDER_POLL_S = 0.5  # how often a drop folder that is gone is looked for
FALLBACK_RESCAN_S = 1.0  # how often the folder is looked at while the watch is down
RESTART_MIN_S = 0.05  # the least time between two watches (folders that come and go)
DROP_FOLDER_MISSING = "drop folder missing"
# Files waiting for the ingestor. The rest wait in the folder: a look takes the oldest of
# them once the queue is down to half (100,000 files at once would otherwise be 100,000
# paths in memory, and a list of them all at each look).
QUEUE_FILES = 10_000
# What the watch of a collection folder reports: an entry renamed in (whole: taken at once),
# made, written and closed, or changed in its attributes in place (it settles first), and
# the folder itself gone. Not each write: a large file copied in would wake the loop for
# every block, and the settling looks at its size and mtime anyway.
FOLDER_EVENTS = (
    IN_MOVED_TO
    | IN_CREATE
    | IN_CLOSE_WRITE
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
# The drop folder's: collection folders made, renamed or removed, and the folder itself gone.
DROP_EVENTS = (
    IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT
MIN_SETTLE_STEP_S = 0.01  # the least wait before a file that is settling is looked at again


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, None if it is not there (or not a folder)."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def _reason(exc: BaseException) -> str:
    """An exception as one line, the causes inside an exception group included."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_reason(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def candidate_files(
    drop: Path,
    only: str | None = None,
    *,
    limit: int | None = None,
    skip: Container[str] = (),
) -> list[Path]:
    """Entries waiting in ``<drop>/<collection>/`` (or only that collection), oldest first.

    With ``limit``, the oldest ``limit`` of them: the folders are read as a stream and only
    those are kept, so a folder of 100,000 files costs no more than ``limit`` names. Paths
    (as text) in ``skip`` are passed over.
    """
    waiting = _waiting(drop, only, skip)
    found = sorted(waiting) if limit is None else heapq.nsmallest(limit, waiting)
    return [Path(path) for _, path in found]


def _waiting(drop: Path, only: str | None, skip: Container[str]) -> Iterator[tuple[int, str]]:
    """(mtime in ns, path) of each entry waiting, as the folders are read."""
    for folder in collection_folders(drop):
        if only is not None and folder.name != only:
            continue
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                if is_ignored_name(entry.name) or entry.path in skip:
                    continue
                try:
                    yield entry.stat(follow_symlinks=False).st_mtime_ns, entry.path
                except OSError:
                    continue


class DropWatcher:
    """Watches the drop folder and ingests each settled file once."""

    def __init__(
        self,
        config: Config,
        ingest: Callable[[Path], Awaitable[IngestReport | None]],
        pauses: PauseListener | None = None,
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.pauses = pauses
        self.ready = anyio.Event()
        self.on_failure: Callable[[], None] | None = None
        self._room = QUEUE_FILES
        self._send, self._receive = anyio.create_memory_object_stream[Path](
            max_buffer_size=self._room
        )
        # The paths queued, settling or being ingested.
        self._queued: set[str] = set()
        # Queued paths that go without settling: renamed in (whole), or settled already.
        self._ready: set[str] = set()
        # Paths settling: (path, its (size, mtime) at the last look, when to look again), the
        # next due first (each is put at the end when its look is set).
        self._settling: dict[str, tuple[Path, tuple[int, int], float]] = {}
        self._settling_added = anyio.Event()
        self._left_out = False  # a file was left in the folder for want of room
        self._rescan_soon = anyio.Event()
        self._restart = anyio.Event()
        self._watching: tuple[int, int] | None = None  # the drop folder being watched
        self._not_renamed: set[Path] = set()
        self._linked: set[Path] = set()  # links to folders in the drop folder, told once

    def _enqueue(self, path: Path, *, ready: bool = False) -> None:
        """Queue ``path`` for the ingestor; ``ready``: it was renamed in, so it goes without
        settling. Anything else said of a queued path (written, made again) makes it settle."""
        name = str(path)
        if ready:
            self._ready.add(name)
        else:
            self._ready.discard(name)
        if name in self._queued:
            return
        try:
            self._send.send_nowait(path)
        except anyio.WouldBlock:
            self._ready.discard(name)
            self._left_out = True  # a look finds it again once the queue has room
            return
        self._queued.add(name)

    def _first_look(self, path: Path) -> tuple[int, int] | bool:
        """True if ``path`` has settled already (unchanged for ``settle_ms``), False if it
        is gone; else its (size, mtime), and it waits in ``_settling``."""
        try:
            info = os.lstat(path)
        except OSError:  # gone, or its folder is (or is no longer a folder)
            return False
        age = time.time() - info.st_mtime
        settle = self.config.settle_ms / 1000
        if age >= settle:
            return True
        current = (info.st_size, info.st_mtime_ns)
        self._wait_to_settle(path, current, settle - max(age, 0.0))
        return current

    def _wait_to_settle(self, path: Path, current: tuple[int, int], wait: float) -> None:
        name = str(path)
        self._settling.pop(name, None)  # to the end: the order is the order of looks due
        due = anyio.current_time() + max(wait, MIN_SETTLE_STEP_S)
        self._settling[name] = (path, current, due)
        self._settling_added.set()

    async def _settle(self) -> None:
        """Look again at each settling file when it is due: unchanged since the last look,
        it goes to the ingestor; changed, it waits again; gone, it is forgotten."""
        while True:
            if not self._settling:
                await self._settling_added.wait()
                self._settling_added = anyio.Event()
                continue
            name, (path, previous, due) = next(iter(self._settling.items()))
            wait = due - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
                continue  # what is first may have changed meanwhile
            del self._settling[name]
            try:
                info = os.lstat(path)
            except OSError:
                self._done(name)
                continue
            current = (info.st_size, info.st_mtime_ns)
            if current != previous:
                age = time.time() - info.st_mtime
                self._wait_to_settle(path, current, self.config.settle_ms / 1000 - max(age, 0.0))
                continue
            self._ready.add(name)
            await self._send.send(path)  # still counted in _queued: there is room for it

    def _done(self, name: str) -> None:
        """``name`` left the queue (ingested, or gone while it settled)."""
        self._queued.discard(name)
        self._ready.discard(name)
        if self._left_out and len(self._queued) <= self._room // 2:
            self._left_out = False
            self._rescan_soon.set()

    async def _consume(self) -> None:
        async for path in self._receive:
            name = str(path)
            if name not in self._ready:
                settled = self._first_look(path)
                if settled is False:
                    self._done(name)
                if settled is not True:
                    continue  # gone, or settling (``_settle`` queues it again)
            try:
                await self.ingest(path)
            except Exception:
                # Never let one file stop the daemon; it stays in .processing/ with its
                # ledger row, and the recovery sweep takes it up again.
                log.exception("ingest_failed", file=str(path))
                if self.on_failure is not None:
                    self.on_failure()
            finally:
                self._done(name)

    async def _rescan(self) -> None:
        while True:
            unsettled = self._rename_folders_not_utf8()
            self._tell_linked_folders()
            self._look_everywhere()
            if self._watching is not None and self._watching != _identity(self.config.drop_path):
                self._restart.set()  # the drop folder was removed (and perhaps made again)
            # While the watch is down, look more often: the rescan is all there is then.
            wait = self.config.rescan_s if self._watching else FALLBACK_RESCAN_S
            if unsettled is not None:
                wait = min(wait, unsettled)
            with anyio.move_on_after(min(wait, self.config.rescan_s)):
                await self._rescan_soon.wait()
            self._rescan_soon = anyio.Event()

    def _look_everywhere(self, only: str | None = None) -> None:
        """Queue the oldest files waiting (in ``only`` that collection), as many as fit."""
        room = max(self._room - len(self._queued), 0)
        # One more than there is room for: whether any is left out.
        found = candidate_files(self.config.drop_path, only, limit=room + 1, skip=self._queued)
        for path in found[:room]:
            self._enqueue(path)
        if len(found) > room:
            self._left_out = True

    def _tell_linked_folders(self) -> None:
        """Say once of each link in the drop folder to a folder that it is not a collection
        (its files are never read: the link is not followed)."""
        linked = set(linked_folders(self.config.drop_path))
        for link in linked - self._linked:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            log.warning(
                "collection_folder_is_link",
                folder=str(link),
                target=target,
                error="a link to a folder is not a collection folder: its files are not "
                "ingested; move or copy them into a real folder of the drop folder",
            )
        self._linked = linked  # a link removed and made again is told again

    def _rename_folders_not_utf8(self) -> float | None:
        """A collection folder whose name is not UTF-8 gets its escaped name (said once),
        once it has settled as a file does (unchanged for ``settle_ms``: whoever made it may
        be putting files in). Returns the seconds until the next one settles, if any."""
        settle = self.config.settle_ms / 1000
        unsettled: float | None = None
        for folder in folders_not_utf8(self.config.drop_path):
            try:
                age = time.time() - os.lstat(folder).st_mtime
            except OSError:
                continue
            if age < settle:
                left = max(settle - age, MIN_SETTLE_STEP_S)
                unsettled = left if unsettled is None else min(unsettled, left)
                continue
            try:
                renamed = rename_to_text(folder)
            except OSError as exc:
                if folder not in self._not_renamed:
                    self._not_renamed.add(folder)
                    log.warning(
                        "collection_folder_not_utf8",
                        folder=str(folder),
                        error=f"its name is not UTF-8 and it cannot be renamed "
                        f"({exc.strerror or exc}): its files are not ingested; rename it",
                    )
                continue
            log.warning(
                "collection_folder_renamed",
                folder=str(folder),
                renamed=str(renamed),
                error="its name is not UTF-8: renamed to the name shown (each byte that is "
                "not UTF-8 as \\xNN), its files are ingested as that collection's; "
                "rename it to the collection meant",
            )
        return unsettled

    async def _watch(self) -> None:
        """Watch the drop folder; start the watch again whenever it ends or fails.

        The watch ends when the drop folder is removed; it fails when the kernel refuses it
        (the inotify limits: ``fs.inotify.max_user_watches``, ``max_user_instances``). Each
        time, the watch starts again (at once the first time, then waiting 1 s, 2 s, ... at
        most ``rescan_s`` while it keeps failing; meanwhile the folder is rescanned every
        second) and the whole folder is looked at again. A drop folder that is gone is
        waited for.
        """
        failures = 0
        missing = False
        while True:
            drop = self.config.drop_path
            identity = _identity(drop)
            if identity is None:
                if not missing:
                    self._missing(drop)
                missing = True
                await anyio.sleep(min(self.config.rescan_s, DROP_FOLDER_POLL_S))
                continue
            if missing:
                self._back(drop)
                missing = False
            self._restart = restart = anyio.Event()
            self._watching = identity
            started = time.monotonic()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_when, restart, tg.cancel_scope)
                    await self._watch_events(drop)
                    tg.cancel_scope.cancel()
            except Exception as exc:  # the watcher's own failures: it is started again
                self._watching = None
                if only_errors_of(exc, (FileNotFoundError,)):
                    # A folder went away before its watch was in place: watch what is there.
                    await anyio.sleep(RESTART_MIN_S)
                    continue
                if time.monotonic() - started > max(self.config.rescan_s, 1.0):
                    failures = 0
                failures += 1
                delay = (
                    0.0
                    if failures == 1
                    else backoff_s(failures - 1, first_s=1.0, cap_s=self.config.rescan_s)
                )
                log.warning("watcher_restarted", error=_reason(exc), retry_in_s=delay)
                self._rescan_soon.set()  # what changed while it was blind
                await anyio.sleep(delay)
                continue
            self._watching = None
            await anyio.sleep(RESTART_MIN_S)

    def _missing(self, drop: Path) -> None:
        detail = f"{drop} is gone: create it again, ingest resumes then"
        if self.pauses is None:
            log.warning("drop_folder_missing", drop=str(drop), error=detail)
        else:  # logged (work_paused) and shown by `dropsync status`
            self.pauses.paused("watcher", DROP_FOLDER_MISSING, detail, DROP_FOLDER_POLL_S)

    def _back(self, drop: Path) -> None:
        self._rescan_soon.set()
        if self.pauses is None:
            log.info("drop_folder_back", drop=str(drop))
        else:
            self.pauses.resumed("watcher", DROP_FOLDER_MISSING)

    async def _watch_events(self, drop: Path) -> None:
        """Pass on the changes in the drop folder and its collection folders; return when
        the drop folder is gone (removed, moved, unmounted).

        One inotify watch for the drop folder (collection folders made, renamed, removed)
        and one for each collection folder (not deeper: not ``.done/`` and the like). The
        watches are in place before the folders are looked at, so nothing dropped meanwhile
        is missed; a new collection folder is watched, then looked at.
        """
        with Inotify() as notify:
            drop_wd = notify.add(drop, DROP_EVENTS)
            folders: dict[int, Path] = {}
            self._watch_folders(notify, drop, folders)
            self._rescan_soon.set()  # what was there before the watches
            while True:
                await notify.wait()
                changed_folders = False
                for event in notify.read():
                    if event.mask & IN_Q_OVERFLOW:
                        self._rescan_soon.set()  # the kernel's queue overflowed: look
                    elif event.wd == drop_wd:
                        if event.mask & GONE:
                            return  # watch again once it is back
                        if event.mask & IN_ISDIR and not event.name.startswith(b"."):
                            changed_folders = True
                            if not is_text(os.fsdecode(event.name)):
                                self._rescan_soon.set()  # renamed there (not UTF-8)
                    elif (folder := folders.get(event.wd)) is not None:
                        if event.mask & GONE:
                            changed_folders = True
                        elif event.name and not is_ignored_name(name := os.fsdecode(event.name)):
                            self._enqueue(folder / name, ready=bool(event.mask & IN_MOVED_TO))
                if changed_folders:
                    for folder in self._watch_folders(notify, drop, folders):
                        # Files written into it before its watch was in place.
                        self._look_everywhere(only=folder.name)

    def _watch_folders(self, notify: Inotify, drop: Path, folders: dict[int, Path]) -> list[Path]:
        """Watch each collection folder now in ``drop`` (``folders``: watch -> folder, kept
        up to date); returns the folders newly watched, or watched under a new name."""
        present: dict[int, Path] = {}
        new = []
        for folder in collection_folders(drop):
            try:
                wd = notify.add(folder, FOLDER_EVENTS)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue  # gone or replaced meanwhile, or not ours to read: looked at later
            if folders.get(wd) != folder:
                new.append(folder)
            present[wd] = folder
        for wd in folders.keys() - present.keys():
            notify.remove(wd)  # removed, or moved out of the drop folder
        folders.clear()
        folders.update(present)
        return new

    async def run(self) -> None:
        """Watch, rescan and ingest until cancelled."""
        self.config.drop_path.mkdir(parents=True, exist_ok=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch)
            tg.start_soon(self._consume)
            tg.start_soon(self._settle)
            tg.start_soon(self._rescan)
            self.ready.set()


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
