"""File batches: the delivery engine's path for providers that take files (``limits.file_batches``).

A batch can be gigabytes, so nothing of it is held in memory: the pending entries
are read a page at a time and streamed into JSON-array files on disk (one group of
files per ``group_of`` value, each at most ``max_file_bytes``), which entry went
into which file is noted in the scratch database (``store.spool``), and the
adapter uploads the files, streaming them from disk. The outcome is decided as for
every other batch (``daemon.delivery``), with one addition: a partial success names
skipped files; each is checked again locally and sent once more on its own, and
its records are dead-lettered with the provider's reason if it is skipped again.

A record the adapter cannot place yet (``Waiting``: a brand no callback has mapped)
stays in the outbox; ``providers.waiting`` says why. Files are removed once their
outcome is recorded; leftovers of a killed run are removed at start.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, cast

import anyio
import structlog
from dropsync.adapters.base import FileBatchProvider, FilePart, Waiting
from dropsync.adapters.errors import PermanentError, ProviderError
from dropsync.daemon.clock import now_ms
from dropsync.daemon.delivery import Flusher, _Paused, to_outgoing
from dropsync.daemon.places import SCRATCH_DATABASE, spool_folder
from dropsync.store import callbacks, outbox, spool
from dropsync.store.errors import OutsideFolder
from dropsync.store.handle import Store
from dropsync.store.removal import remove_inside

log = structlog.get_logger(__name__)

MAX_OPEN_FILES = 64  # groups written at once; past that, the open files are finished
NO_FILE = -1  # the part of tombstones: delivered without being sent (the kinds have no delete)
CHUNKS_A_TRANSACTION = 10  # store.spool.CHUNK entries a statement, ten statements a commit
_batches = itertools.count(1)


@dataclass
class _OpenFile:
    index: int
    group: Hashable
    path: Path
    handle: IO[bytes]
    items: int = 0
    size: int = 1


@dataclass
class SpoolWriter:
    """Writes documents into per-group JSON-array files of at most ``max_file_bytes``."""

    folder: Path
    max_file_bytes: int
    name_of: Any  # (group, index) -> file name
    within: Path  # the spool folder: nothing outside it is ever removed
    files: list[_OpenFile] = field(default_factory=list)
    current: dict[Hashable, _OpenFile] = field(default_factory=dict)
    total: int = 0

    def add(self, group: Hashable, document: bytes) -> int:
        """Append a document to its group's file (a new file when it would pass the cap)."""
        part = self.current.get(group)
        if part is None and len(self.current) >= MAX_OPEN_FILES:
            for open_part in self.current.values():  # a group may span several files
                self._finish(open_part)
            self.current.clear()
        needed = len(document) + 2
        if part is None or (part.items and part.size + needed + 1 > self.max_file_bytes):
            if part is not None:
                self._finish(part)
            self.folder.mkdir(parents=True, exist_ok=True)
            index = len(self.files)
            path = self.folder / self.name_of(group, index)
            part = _OpenFile(index, group, path, path.open("wb", buffering=1 << 20))
            part.handle.write(b"[")
            self.files.append(part)
            self.current[group] = part
            self.total += 1
        if part.items:
            part.handle.write(b",\n")
            part.size += 2
        part.handle.write(document)
        part.size += len(document)
        part.items += 1
        self.total += len(document) + 2
        return part.index

    def _finish(self, part: _OpenFile) -> None:
        if not part.handle.closed:
            part.handle.write(b"]")
            part.size += 1
            part.handle.close()

    def close(self, meta_of: Any) -> list[FilePart]:
        """Finish every file; the parts in order."""
        for part in self.files:
            self._finish(part)
        return [FilePart(p.path, meta_of(p.group), p.items, p.size) for p in self.files]

    def discard(self) -> None:
        """Close and remove every file."""
        for part in self.files:
            part.handle.close()
        clear(self.folder, self.within)


def clear(folder: Path, spool: Path) -> None:
    """Remove ``folder`` and what is in it, if it is inside the spool folder (else say so)."""
    try:
        remove_inside(folder, spool)
    except OutsideFolder as exc:
        log.error("spool_not_removed", folder=str(folder), error=str(exc))
    except OSError as exc:  # removed again at the next start
        log.warning("spool_not_removed", folder=str(folder), error=exc.strerror or str(exc))


@dataclass
class _Page:
    refused: dict[str, list[outbox.OutboxEntry]] = field(default_factory=dict)
    rows: list[tuple[int, int, str, str, int, int]] = field(default_factory=list)
    waiting: Counter[str] = field(default_factory=Counter)


class FileBatchFlusher(Flusher):
    """Delivers one file-taking provider's outbox, a file batch at a time."""

    def __init__(self, store: Store, *args: Any, **kwargs: Any) -> None:
        super().__init__(store, *args, **kwargs)
        self.files_provider = cast(FileBatchProvider, self.provider)
        self.folder = spool_folder(store.path) / self.name
        self._sent_at: int | None = None  # when the upload being recorded started

    async def run(self) -> None:
        """Remove what a killed run left, then flush until cancelled."""
        await anyio.to_thread.run_sync(clear, self.folder, spool_folder(self.store.path))
        await self.store.call(spool.attach, spool_folder(self.store.path) / SCRATCH_DATABASE)
        await super().run()

    def _spool_page(
        self,
        entries: list[outbox.OutboxEntry],
        mapped: dict[str, int],
        writer: SpoolWriter,
        digest: Any,
    ) -> _Page:
        """Decode, check, place and write one page (in a worker thread)."""
        page = _Page()
        provider = self.files_provider
        for entry in entries:
            change = to_outgoing(self.name, entry)
            reason = provider.check(change)
            if reason is not None:
                page.refused.setdefault(reason, []).append(entry)
                continue
            part = NO_FILE
            if not change.deleted:
                group = provider.group_of(change, mapped)
                if isinstance(group, Waiting):
                    page.waiting[group.reason] += 1
                    continue
                part = writer.add(group, provider.document(change))
            digest.update(change.idempotency_key.encode() + b"\n")
            page.rows.append(
                (part, entry.id, entry.collection, entry.key, entry.updated_at, entry.attempts)
            )
        return page

    async def flush_once(self) -> bool:
        """Spool what is pending into files and upload them; False if nothing was sent."""
        self.paused = False
        mapped = await self.store.call(callbacks.brand_map, self.name)
        batch = next(_batches)
        writer = SpoolWriter(
            self.folder / str(batch),
            self.files_provider.max_file_bytes,
            lambda group, index: f"{self.name}-{batch}-{index + 1:04d}.json",
            spool_folder(self.store.path),
        )
        digest = hashlib.sha256()
        waiting: Counter[str] = Counter()
        rows = 0
        after = self._dry_run_after
        try:
            while writer.total < self.provider.limits.max_bytes:
                entries = await self._take(after)
                if not entries:
                    break
                after = entries[-1].id
                page = await anyio.to_thread.run_sync(
                    self._spool_page, entries, mapped, writer, digest
                )
                await self._dead_letter_refused(page.refused)
                await self.store.call(spool.add_rows, batch, page.rows)
                waiting.update(page.waiting)
                rows += len(page.rows)
            parts = writer.close(self.files_provider.file_meta)
            await self._note_waiting(waiting)
            if self.dry_run:
                self._dry_run_after = after
                for part in parts:
                    log.info(
                        "dry_run_file",
                        provider=self.name,
                        items=part.items,
                        bytes=part.size,
                        **dict(part.meta),
                    )
                return False
            if rows == 0:
                return False
            log.info(
                "files_written",
                provider=self.name,
                items=rows,
                files=len(parts),
                bytes=sum(part.size for part in parts),
            )
            await self._upload(batch, parts, digest.hexdigest())
        except OSError as exc:  # the spool folder: disk full, permissions
            await self._spool_failed(exc)
            self.paused = True
        except _Paused:
            self.paused = True
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(writer.discard)
                await self.store.call(spool.forget, batch)
        return not self.paused

    async def _spool_failed(self, exc: OSError) -> None:
        """The files could not be written: pause with backoff, say why; nothing is lost."""
        async with self.store.read() as db:
            current = await outbox.provider_state(db, self.name)
        failures = (current.failures if current else 0) + 1
        delay = self.backoff.delay(failures, self.rng)
        now = now_ms()
        reason = f"cannot write the upload files in {self.folder}: {exc.strerror or exc}"
        async with self.store.write() as db:
            await outbox.set_provider_state(
                db,
                self.name,
                state="backing-off",
                now=now,
                next_attempt_at=now + int(delay * 1000) + 1,
                failures=failures,
                last_error=reason,
            )
        self._backing_off(now + int(delay * 1000) + 1, delay)
        log.warning("spool_failed", provider=self.name, error=reason, retry_in_s=delay)

    async def _note_waiting(self, waiting: Counter[str]) -> None:
        reason = None
        if waiting:
            total = sum(waiting.values())
            reason = f"{total} record(s) wait: " + "; ".join(
                f"{count} as {why}" for why, count in waiting.most_common(5)
            )
            log.info("records_waiting", provider=self.name, items=total, reason=reason)
        await self.store.transact(callbacks.set_waiting, self.name, reason)

    async def _upload(self, batch: int, parts: list[FilePart], key: str) -> None:
        everything = [*range(len(parts)), NO_FILE]
        if not parts:  # only tombstones: nothing to send
            await self._record(batch, everything, key, 0.0, "confirmed", None)
            return
        started = time.perf_counter()
        self._sent_at = now_ms()
        try:
            result = await self.files_provider.push_files(parts, idempotency_key=key)
        except PermanentError as exc:
            await self._record(batch, [NO_FILE], key, 0.0, "confirmed", None)
            if len(parts) == 1:
                await self._dead_letter(batch, 0, exc.reason, exc.status, key, started)
                return
            for index, part in enumerate(parts):  # find the refused file(s): each alone
                await self._send_alone(batch, index, part, f"{key}:{index}", skipped_before=False)
            return
        except ProviderError as exc:
            await self._failed_files(batch, everything, key, started, exc)
            raise _Paused from exc
        skipped = dict(result.skipped)
        latency = (time.perf_counter() - started) * 1000
        taken = [i for i in everything if i not in skipped]
        await self._record(
            batch, taken, key, latency, result.state, result.status, result.remote_ref
        )
        for index, reason in skipped.items():
            log.warning(
                "file_skipped",
                provider=self.name,
                file=parts[index].path.name,
                items=parts[index].items,
                reason=reason,
            )
            await self._send_alone(
                batch,
                index,
                parts[index],
                f"{key}:{index}",
                skipped_before=True,
                first_reason=reason,
            )

    async def _send_alone(
        self,
        batch: int,
        index: int,
        part: FilePart,
        key: str,
        *,
        skipped_before: bool,
        first_reason: str = "",
    ) -> None:
        """Send one part on its own: after a skip (checked again locally first), or to find
        which part of a refused upload is the bad one."""
        started = time.perf_counter()
        self._sent_at = now_ms()
        if skipped_before:
            problem = await anyio.to_thread.run_sync(self.files_provider.verify_file, part)
            if problem is not None:
                await self._dead_letter(batch, index, problem, None, key, started)
                return
        try:
            result = await self.files_provider.push_files([part], idempotency_key=key)
        except PermanentError as exc:
            await self._dead_letter(batch, index, exc.reason, exc.status, key, started)
            return
        except ProviderError as exc:
            await self._failed_files(batch, [index], key, started, exc)
            raise _Paused from exc
        if result.skipped:
            reason = result.skipped[0][1]
            if skipped_before:
                reason = f"skipped twice; {reason}"
            await self._dead_letter(batch, index, reason, result.status, key, started)
            return
        latency = (time.perf_counter() - started) * 1000
        await self._record(
            batch, [index], key, latency, result.state, result.status, result.remote_ref
        )

    async def _record(
        self,
        batch: int,
        parts: Sequence[int],
        key: str,
        latency: float,
        state: str,
        status: int | None,
        remote_ref: str | None = None,
    ) -> None:
        now = now_ms()
        delivery_id, items = await self.store.transact(
            partial(
                spool.record_delivery,
                provider=self.name,
                batch=batch,
                parts=parts,
                batch_id=key,
                state=state,
                http_status=status,
                latency_ms=latency,
                remote_ref=remote_ref,
                now=now,
                sent_at=self._sent_at,
            )
        )
        # A transaction per chunk (callbacks and the inbox get the store in between), all of
        # them shielded: a stop waits for the recording, as it waits for any transaction.
        with anyio.CancelScope(shield=True):
            pieces = await self.store.call(spool.chunks, batch, parts)
            for start in range(0, len(pieces), CHUNKS_A_TRANSACTION):
                await self.store.transact(
                    partial(
                        spool.deliver_chunks,
                        provider=self.name,
                        batch=batch,
                        chunks=pieces[start : start + CHUNKS_A_TRANSACTION],
                        state=state,
                        delivery_id=delivery_id,
                        now=now,
                    )
                )
        if items:
            log.info(
                "batch_delivered",
                provider=self.name,
                items=items,
                state=state,
                status=status,
                latency_ms=round(latency, 1),
                files=len([p for p in parts if p != NO_FILE]),
            )

    async def _dead_letter(
        self, batch: int, index: int, reason: str, status: int | None, key: str, started: float
    ) -> None:
        now = now_ms()
        moved = await self.store.transact(
            partial(
                spool.dead_letter_parts,
                provider=self.name,
                batch=batch,
                parts=[index],
                reason=reason,
                http_status=status,
                now=now,
            )
        )
        async with self.store.write() as db:
            await self._log_attempt_files(db, moved, key, started, "rejected", status, reason, now)
        log.warning("dead_lettered", provider=self.name, items=moved, status=status, reason=reason)

    async def _log_attempt_files(
        self,
        db: Any,
        items: int,
        key: str,
        started: float,
        state: str,
        status: int | None,
        error: str,
        now: int,
    ) -> None:
        await outbox.record_attempt(
            db,
            provider=self.name,
            batch_id=key,
            items=items,
            state=state,
            now=now,
            http_status=status,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=error,
        )

    async def _failed_files(
        self, batch: int, parts: Iterable[int], key: str, started: float, exc: ProviderError
    ) -> None:
        failure = self._new_failure(exc)
        parts = list(parts)
        if failure.state != "auth-failed":  # auth-failed waits for a reload, not for a time
            async with self.store.read() as db:
                failure = await self._count_failure(db, failure)
        now = now_ms()
        await self.store.transact(spool.count_attempt, batch, parts)
        sizes = await self.store.call(spool.part_sizes, batch)
        items = sum(sizes.get(p, 0) for p in parts)
        async with self.store.write() as db:
            await self._log_attempt_files(
                db, items, key, started, "failed", exc.status, str(exc), now
            )
            next_attempt = await self._store_failure(db, failure, now)
        self._failure_stored(failure, next_attempt, items=items)
