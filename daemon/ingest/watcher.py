"""The drop-folder watcher: finds settled files and hands them to the ingestor.

watchfiles reports changes; a periodic rescan catches anything missed (and the
files present at start). A file is taken once its size and mtime have not
changed for ``drop.settle_ms``; write-then-rename is the documented way to drop,
and names starting with ``.`` or ending in ``.tmp``/``.part`` are ignored. Entries
that are not regular files are handed on too (the ingestor quarantines them).

Folders come and go under it (``mkdir x; rmdir x`` in a loop): an entry that vanished,
turned into something else or cannot be read between listing and looking is skipped,
never an error; the next look sees what is there then. The watch itself fails on a name
that is not UTF-8 and goes blind when the drop folder is removed: it is started again,
and the folder looked at again (see ``DropWatcher._watch``).
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
import watchfiles
from dropsync.store.backoff import backoff_s
from dropsync.store.handle import PauseListener

from ..config import Config
from .dropfiles import (
    collection_folders,
    folders_not_utf8,
    is_ignored,
    is_ignored_name,
    rename_to_text,
)
from .ingestor import IngestReport, only_errors_of

log = structlog.get_logger(__name__)

DROP_FOLDER_POLL_S = 0.5  # how often a drop folder that is gone is looked for
WATCH_START_S = 0.5  # a look at the whole folder this long after a watch (re)starts
FALLBACK_RESCAN_S = 1.0  # how often the folder is looked at while the watch is down
RESTART_MIN_S = 0.05  # the least time between two watches (folders that come and go)
DROP_FOLDER_MISSING = "drop folder missing"
# Files waiting for the ingestor. The rest wait in the folder: a look takes the oldest of
# them once the queue is down to half (100,000 files at once would otherwise be 100,000
# paths in memory, and a list of them all at each look).
QUEUE_FILES = 10_000


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
        self._queued: set[str] = set()  # the paths in the queue or being ingested
        self._left_out = False  # a file was left in the folder for want of room
        self._rescan_soon = anyio.Event()
        self._restart = anyio.Event()
        self._watching: tuple[int, int] | None = None  # the drop folder being watched
        self._not_renamed: set[Path] = set()

    def _enqueue(self, path: Path) -> None:
        name = str(path)
        if name in self._queued:
            return
        try:
            self._send.send_nowait(path)
        except anyio.WouldBlock:
            self._left_out = True  # a look finds it again once the queue has room
            return
        self._queued.add(name)

    def _relevant(self, path: Path) -> bool:
        drop = self.config.drop_path
        try:
            parts = path.relative_to(drop).parts
        except ValueError:
            return False
        return len(parts) == 2 and not parts[0].startswith(".") and not is_ignored(path)

    async def _settle(self, path: Path) -> bool:
        """Wait until ``path`` stopped changing; False if it disappeared."""
        settle = self.config.settle_ms / 1000
        previous = None
        while True:
            try:
                stat = os.lstat(path)
            except OSError:  # gone, or its folder is (or is no longer a folder)
                return False
            current = (stat.st_size, stat.st_mtime_ns)
            age = time.time() - stat.st_mtime
            if current == previous or (previous is None and age >= settle):
                return True
            previous = current
            await anyio.sleep(max(settle - max(age, 0.0), 0.01))

    async def _consume(self) -> None:
        async for path in self._receive:
            try:
                if await self._settle(path):
                    await self.ingest(path)
            except Exception:
                # Never let one file stop the daemon; it stays in .processing/ with its
                # ledger row, and the recovery sweep takes it up again.
                log.exception("ingest_failed", file=str(path))
                if self.on_failure is not None:
                    self.on_failure()
            finally:
                self._queued.discard(str(path))
                if self._left_out and len(self._queued) <= self._room // 2:
                    self._left_out = False
                    self._rescan_soon.set()

    async def _rescan(self) -> None:
        while True:
            self._rename_folders_not_utf8()
            self._look_everywhere()
            if self._watching is not None and self._watching != _identity(self.config.drop_path):
                self._restart.set()  # the drop folder was removed (and perhaps made again)
            # While the watch is down, look more often: the rescan is all there is then.
            wait = self.config.rescan_s if self._watching else FALLBACK_RESCAN_S
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

    def _rename_folders_not_utf8(self) -> None:
        """A collection folder whose name is not UTF-8 gets its escaped name (said once)."""
        for folder in folders_not_utf8(self.config.drop_path):
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

    async def _watch(self) -> None:
        """Watch the drop folder; start the watch again whenever it ends or fails.

        The watch covers the drop folder and each collection folder, not deeper (not
        ``.done/`` and the like): a new collection folder starts the watch again with it
        included. watchfiles' watcher fails as a whole on a name that is not UTF-8 (its
        Rust side raises ``WatchfilesRustInternalError``, "Unable to decode path", and
        the other changes of that moment are lost with it) and on an inotify error; it
        goes blind when the drop folder is removed. Each time, the watch starts again
        (at once the first time, then waiting 1 s, 2 s, ... at most ``rescan_s`` while
        it keeps failing; meanwhile the folder is rescanned every second) and the whole
        folder is looked at again. A drop folder that is gone is waited for.
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
            self._restart = anyio.Event()
            self._watching = identity
            folders = [drop, *collection_folders(drop)]
            started = time.monotonic()
            try:
                async with anyio.create_task_group() as tg:
                    # What was dropped before the new watch was in place is not missed.
                    tg.start_soon(self._rescan_after, WATCH_START_S)
                    await self._watch_events(drop, folders, self._restart)
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

    async def _rescan_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        self._rescan_soon.set()

    async def _watch_events(self, drop: Path, folders: list[Path], stop: anyio.Event) -> None:
        """Pass on the changes in ``folders``; return when the set of folders to watch changed."""
        watched = {folder: _identity(folder) for folder in folders}
        async for changes in watchfiles.awatch(
            *folders,
            debounce=50,
            step=100,  # how often the watcher thread looks: each look costs idle CPU
            rust_timeout=1000,  # how soon a stop is noticed by the watcher thread
            recursive=False,
            yield_on_timeout=False,
            watch_filter=lambda change, name: (
                change != watchfiles.Change.deleted or Path(name) == drop
            ),
            ignore_permission_denied=True,
            stop_event=stop,
        ):
            changed = False
            for change, name in changes:
                path = Path(name)
                if path == drop:
                    if change == watchfiles.Change.deleted:
                        return  # removed: watch again once it is back
                    continue
                if self._relevant(path):
                    self._enqueue(path)
                elif (
                    path.parent == drop
                    and not path.name.startswith(".")
                    and os.path.isdir(path)
                    and not os.path.islink(path)
                    and watched.get(path) != _identity(path)  # new, or made again
                ):
                    # A new collection folder: files written into it before the watch on it
                    # is in place would otherwise wait for the rescan.
                    self._look_everywhere(only=path.name)
                    changed = True
            if changed:
                return  # watch again, the new collection folders included

    async def run(self) -> None:
        """Watch, rescan and ingest until cancelled."""
        self.config.drop_path.mkdir(parents=True, exist_ok=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch)
            tg.start_soon(self._consume)
            tg.start_soon(self._rescan)
            self.ready.set()
