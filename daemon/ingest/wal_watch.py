"""Writes to the store's write-ahead log, seen the moment they happen.

Every commit, by any program, writes its pages to ``<store>-wal``; an inotify watch of the
store's folder (``daemon.ingest.inotify``) reports each write. The log's own files are never
opened here: closing a descriptor of a file SQLite holds POSIX locks on would drop the
locks of every connection of the process.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from .inotify import (
    IN_CREATE,
    IN_MODIFY,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Inotify,
)

# The store's folder: the log written, or made again (or put there by a restore).
EVENTS = IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_ONLYDIR


class LogWatch:
    """Writes to a store's write-ahead log; OSError if the kernel refuses the watch."""

    def __init__(self, store: Path) -> None:
        store = store.resolve()
        self._notify = Inotify()
        try:
            self._notify.add(store.parent, EVENTS)
        except OSError:
            self._notify.close()
            raise
        self._wal = os.fsencode(f"{store.name}-wal")

    async def written(self, seconds: float) -> bool:
        """Wait at most ``seconds`` for a write of the log: True if there was one. Every
        write waiting is read at once: one answer for all of them."""
        with anyio.move_on_after(max(seconds, 0.0)):
            while True:
                await self._notify.wait()
                # Writes to the folder's other files (the runtime file, the store's main file
                # at a checkpoint) are read and passed over.
                if any(e.name == self._wal or e.mask & IN_Q_OVERFLOW for e in self._notify.read()):
                    return True
        return False

    def close(self) -> None:
        """Stop watching."""
        self._notify.close()
