"""The drop-folder watcher: finds settled files and hands them to the ingestor.

watchfiles reports changes; a periodic rescan catches anything missed (and the
files present at start). A file is taken once its size and mtime have not
changed for ``drop.settle_ms``; write-then-rename is the documented way to drop,
and names starting with ``.`` or ending in ``.tmp``/``.part`` are ignored. Entries
that are not regular files are handed on too (the ingestor quarantines them).

Folders come and go under it (``mkdir x; rmdir x`` in a loop): an entry that vanished,
turned into something else or cannot be read between listing and looking is skipped,
never an error; the next look sees what is there then.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog
import watchfiles
from dropsync.daemon.config import Config
from dropsync.daemon.dropfiles import collection_folders, is_ignored, list_entries
from dropsync.daemon.ingest import IngestReport

log = structlog.get_logger(__name__)


def candidate_files(drop: Path, only: str | None = None) -> list[Path]:
    """Entries waiting in ``<drop>/<collection>/`` (or only that collection), oldest first."""
    found: list[tuple[float, Path]] = []
    for folder in collection_folders(drop):
        if only is not None and folder.name != only:
            continue
        for entry in list_entries(folder):
            path = Path(entry.path)
            if is_ignored(path):
                continue
            try:
                found.append((entry.stat(follow_symlinks=False).st_mtime, path))
            except OSError:
                continue
    return [path for _, path in sorted(found)]


class DropWatcher:
    """Watches the drop folder and ingests each settled file once."""

    def __init__(
        self, config: Config, ingest: Callable[[Path], Awaitable[IngestReport | None]]
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.ready = anyio.Event()
        self.on_failure: Callable[[], None] | None = None
        self._send, self._receive = anyio.create_memory_object_stream[Path](max_buffer_size=10_000)
        self._queued: set[Path] = set()

    def _enqueue(self, path: Path) -> None:
        if path in self._queued:
            return
        try:
            self._send.send_nowait(path)
        except anyio.WouldBlock:
            return  # the periodic rescan finds it again
        self._queued.add(path)

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
                self._queued.discard(path)

    async def _rescan(self) -> None:
        while True:
            for path in candidate_files(self.config.drop_path):
                self._enqueue(path)
            await anyio.sleep(self.config.rescan_s)

    async def _watch(self) -> None:
        drop = self.config.drop_path
        drop.mkdir(parents=True, exist_ok=True)
        async for changes in watchfiles.awatch(
            drop,
            debounce=50,
            step=100,  # how often the watcher thread looks: each look costs idle CPU
            rust_timeout=1000,  # how soon a stop is noticed by the watcher thread
            recursive=True,
            yield_on_timeout=False,
            watch_filter=lambda change, name: change != watchfiles.Change.deleted,
            ignore_permission_denied=True,
        ):
            for _, name in changes:
                path = Path(name)
                if self._relevant(path):
                    self._enqueue(path)
                elif (
                    path.parent == drop
                    and not path.name.startswith(".")
                    and os.path.isdir(path)
                    and not os.path.islink(path)
                ):
                    # A new collection folder: files written into it before the watch on it
                    # was in place would otherwise wait for the rescan.
                    for entry in candidate_files(drop, only=path.name):
                        self._enqueue(entry)

    async def run(self) -> None:
        """Watch, rescan and ingest until cancelled."""
        self.config.drop_path.mkdir(parents=True, exist_ok=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch)
            tg.start_soon(self._consume)
            tg.start_soon(self._rescan)
            self.ready.set()
