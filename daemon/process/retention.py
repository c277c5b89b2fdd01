"""Retention in the running daemon: an hourly pass that keeps the store's size flat.

What goes and what stays is decided in ``store.retention``; this module runs it in
small transactions (the inbox and providers never wait long), and removes drop
files filed in ``.done/`` more than ``drop.keep_done_days`` ago, after copying the
bodies of the versions the inbox still lists into those rows. ``store.retain_days``
and ``drop.keep_done_days`` of 0 keep everything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from dropsync.store import retention
from dropsync.store.errors import OutsideFolder
from dropsync.store.handle import Store
from dropsync.store.removal import remove_inside

from ..clock import now_ms
from ..config import Config
from ..documents import canonical
from ..errors import DocumentError
from ..ingest.dropfiles import DONE
from ..ingest.parse import DocumentFailure, iter_documents

log = structlog.get_logger(__name__)

EVERY_S = 3600.0
DAY_MS = 86_400_000
_ROWS = 5000
_FILES = 200


@dataclass(slots=True)
class Pruned:
    """What one pass removed."""

    inbox: int = 0
    deliveries: int = 0
    done_files: int = 0


def bodies_of(path: Path, config: Config, wanted: dict[int, int]) -> list[tuple[int, str]]:
    """(inbox id, canonical body) of the documents ``wanted`` (doc_index -> inbox id) in a file.

    Each body is the document's canonical text, as when it was merged; the document is not
    read as a change again, so a key path, timestamp unit or rule changed since it was
    taken (``timestamp_unit``, the seconds check of an upgrade) cannot lose its version.
    """
    found = []
    for index, document, _ in iter_documents(path, config.json_limits):
        row_id = wanted.get(index)
        if row_id is None or isinstance(document, DocumentFailure):
            continue
        try:
            body, _digest = canonical(document)
        except DocumentError:
            continue
        found.append((row_id, body))
    return found


class Retention:
    """Prunes the store every ``EVERY_S`` seconds (the first pass right after start)."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._done_after = 0  # ledger ids up to here were looked at already

    async def run(self) -> None:
        """One pass now, then every ``EVERY_S`` seconds, until cancelled."""
        while True:
            pruned = await self.prune_once(now_ms())
            if pruned.inbox or pruned.deliveries or pruned.done_files:
                log.info(
                    "retention_pruned",
                    inbox=pruned.inbox,
                    deliveries=pruned.deliveries,
                    done_files=pruned.done_files,
                )
            await anyio.sleep(EVERY_S)

    async def prune_once(self, now: int) -> Pruned:
        """One pass at time ``now`` (epoch ms)."""
        pruned = Pruned()
        if self.config.retain_days > 0:
            before = now - int(self.config.retain_days * DAY_MS)
            after = retention.BEFORE_FIRST_ID  # programs may give rows any id
            while True:
                deleted, upto = await self.store.transact(
                    lambda db, a=after: retention.prune_inbox(
                        db, before=before, after_id=a, limit=_ROWS
                    )
                )
                pruned.inbox += deleted
                if upto == after:
                    break
                after = upto
            while True:
                deleted = await self.store.transact(
                    lambda db: retention.prune_deliveries(db, before=before, limit=_ROWS)
                )
                pruned.deliveries += deleted
                if deleted < _ROWS:
                    break
        if self.config.keep_done_days > 0:
            pruned.done_files = await self._remove_done_files(
                now - int(self.config.keep_done_days * DAY_MS), now
            )
        return pruned

    async def _remove_done_files(self, before: int, now: int) -> int:
        removed = 0
        while True:
            files = await self.store.call(
                lambda db: retention.done_files_before(
                    db, before=before, after_id=self._done_after, limit=_FILES
                )
            )
            if not files:
                return removed
            for file_id, name in files:
                path = Path(name)
                folder = self._done_folder(path)
                if folder is not None and path.is_file():
                    # Marked first: a version this file holds that an ingest displaces from
                    # now on is logged with its body (store.merge), the others are copied here.
                    await self.store.transact(retention.mark_removed, file_id, now=now)
                    await self._keep_versions(file_id, path)
                    try:
                        if os.path.islink(folder):  # not the folder the daemon made
                            raise OutsideFolder(
                                f"not removing {path}: {folder} is a link "
                                f"(to {os.path.realpath(folder)}), not the folder made for it"
                            )
                        remove_inside(path, folder)
                    except OutsideFolder as exc:
                        await self.store.transact(retention.mark_removed, file_id, now=None)
                        log.warning("done_file_kept", file_id=file_id, path=name, error=str(exc))
                    else:
                        removed += 1
                        log.debug("done_file_removed", file_id=file_id, path=name)
                self._done_after = file_id

    def _done_folder(self, path: Path) -> Path | None:
        """The ``<drop>/<collection>/.done`` folder ``path`` was filed in, else None.

        A file ingested in place (``dropsync ingest FILE`` outside the drop folder) has a
        ``done`` row too: it is the user's, never removed, whatever its folder is called.
        """
        drop = Path(os.path.abspath(self.config.drop_path))
        folder = Path(os.path.abspath(path.parent))
        if folder.name != DONE or folder.parent.parent != drop:
            return None
        return folder

    async def _keep_versions(self, file_id: int, path: Path) -> None:
        """Copy the bodies of the file's versions the inbox lists into their rows."""
        wanted = await self.store.call(retention.versions_without_body, file_id)
        if not wanted:
            return
        bodies = await anyio.to_thread.run_sync(bodies_of, path, self.config, wanted)
        await self.store.transact(retention.keep_bodies, bodies)
