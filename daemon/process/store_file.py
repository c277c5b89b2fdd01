"""The store file the daemon opened stays the one at its path, or the daemon stops.

Removing or replacing the store while the daemon runs (``rm``, ``mv``, a backup moved over
it) leaves the daemon writing to a file nobody reads again: ``status`` and the users' own
queries read the new file (or none), and every change the daemon accepts from then on is
gone at its next start. So the daemon looks every ``CHECK_S`` seconds whether its store's
path still names the file it opened (device and inode, links followed); when it does not,
it copies what it holds, through its own connection, to ``<store>.kept-<time>.db`` beside
the path (verified, as ``dropsync backup`` does) and stops with exit code 2, which systemd
does not restart (``RestartPreventExitStatus=2``): a person decides which file is the store.
Until that copy can be written (a full disk, the folder removed with the store), the daemon
keeps the file open and works on, trying again every ``CHECK_S`` seconds.
docs/operations.md, "The store file was removed or replaced", says what to do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import structlog
from dropsync.store.errors import StoreError
from dropsync.store.handle import Store
from dropsync.store.maintenance import keep_copy

log = structlog.get_logger(__name__)

CHECK_S = 5.0


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names (links followed); None if there is none.

    A path that cannot be looked at for another reason (a folder made unreadable, say)
    raises that OSError: it does not say the file changed.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (info.st_dev, info.st_ino)


def kept_copy_path(store_path: Path) -> Path:
    """Where the copy of a store removed or replaced under the daemon goes: beside its path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return store_path.with_name(f"{store_path.name}.kept-{stamp}.db")


async def wait_until_replaced(
    store: Store, store_path: Path, opened: tuple[int, int] | None, every_s: float = CHECK_S
) -> None:
    """Return once ``store_path`` no longer names the file opened (``opened``), after logging
    ``store_replaced`` and keeping a copy of what the daemon holds (see the module doc)."""
    while True:
        await anyio.sleep(every_s)
        try:
            now = file_identity(store_path)
        except OSError:
            continue
        if now != opened:
            break
    found = "nothing" if now is None else "another file"
    failed = False
    while True:
        try:
            kept = await store.call(keep_copy, store_path, kept_copy_path(store_path))
            break
        except (StoreError, OSError) as exc:
            # A full disk, or the folder gone with the store: the daemon keeps the file open
            # (all it wrote is there) and tries again, rather than stop and lose it.
            if not failed:
                log.error("store_copy_failed", store=str(store_path), found=found, error=str(exc))
            failed = True
            await anyio.sleep(every_s)
    log.error("store_replaced", store=str(store_path), found=found, kept=str(kept.path))
