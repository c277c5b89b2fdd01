"""Pulling a provider per stream, page by page: cursors, remove-outdated, derived records.

Written once for every kind that implements ``adapters.base.StreamPuller``:

* Each page is merged and committed on its own; the next page is fetched meanwhile
  (memory stays a few pages deep).
* The stream's cursor (``cursors`` row named after the stream) moves only in the
  transaction of the last page, and only when the adapter says the pull *settled*
  (every page read, the listing held still). An interrupted or unsettled pull leaves
  the cursor where it was, so the next pull reads the same range again.
* Remove outdated: only for a stream that asks for it, only after a settled *full*
  pull (no cursor sent), in the last page's transaction: the records of the stream's
  collection that this provider supplied and did not return now become tombstones,
  dated 1 ms after the version they replace. An incremental, interrupted or unsettled
  pull never deletes; a full pull that returned nothing at all deletes nothing either.
  So that an item deleted at the provider goes at the next sync, such a stream is pulled
  in full whenever a removal is due (``PullStream.full_pull_interval_s`` after its last
  settled full pull, the ``<stream>:full`` cursor row; 0: every pull), even when the
  stream has a cursor; an unsettled full pull leaves the removal due.
* Derived records (``PullStream.derived``): after the stream's pull, the adapter gets
  the collection's records and returns the changes that keep its derived records right.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import anyio
import structlog
from dropsync.adapters.base import IncomingChange, PullStream, StreamPage, StreamPuller
from dropsync.store import cursors, pulled
from dropsync.store.handle import Store
from dropsync.store.merge import Change, MergeResult, apply_changes

from .. import metrics
from ..clock import now_ms
from ..config import Config, ProviderConfig
from ..documents import FutureLimit, canonical, check_name
from ..errors import DocumentError

log = structlog.get_logger(__name__)

DERIVED = ":derived"  # origin suffix of records a provider's adapter computed


def incoming_to_change(
    provider: str,
    incoming: IncomingChange,
    *,
    max_skew_ms: int,
    now: int,
    origin: str | None = None,
) -> Change | None:
    """A pulled change as a merge change; None (logged) if it cannot be taken as it is."""
    return _change(provider, incoming, FutureLimit.at(now, max_skew_ms), origin or provider)


def _change(
    provider: str, incoming: IncomingChange, limit: FutureLimit, origin: str
) -> Change | None:
    try:
        check_name(incoming.key, "key")
        limit.check(incoming.updated_at, "updated_at")
        body, digest = canonical(incoming.body)
    except DocumentError as exc:
        log.warning("pull_change_rejected", provider=provider, key=incoming.key, reason=str(exc))
        return None
    return Change(
        incoming.collection,
        incoming.key,
        None if incoming.body is None else body,
        incoming.updated_at,
        incoming.deleted,
        origin,
        digest,
    )


def to_changes(
    provider: str, incoming: Sequence[IncomingChange], config: Config, *, origin: str | None = None
) -> list[Change]:
    """Every change that can be taken (the others are logged and left out)."""
    limit = FutureLimit.at(now_ms(), config.max_clock_skew_ms)  # one clock reading a page
    source = origin or provider
    changes = []
    for item in incoming:
        change = _change(provider, item, limit, source)
        if change is not None:
            changes.append(change)
    return changes


class StreamPull:
    """Pulls every stream of one ``StreamPuller`` provider once (``run``)."""

    def __init__(
        self,
        store: Store,
        config: Config,
        provider_config: ProviderConfig,
        provider: StreamPuller,
        on_merge: Callable[[MergeResult], None],
    ) -> None:
        self.store = store
        self.config = config
        self.name = provider_config.name
        self.provider = provider
        self.on_merge = on_merge

    async def run(self) -> int:
        """Pull each stream; returns how many changes became current. Errors propagate."""
        applied = 0
        for stream in self.provider.pull_streams():
            applied += await self.pull_stream(stream)
        return applied

    async def pull_stream(self, stream: PullStream) -> int:
        """One pull of one stream, page by page: the next page is fetched while one commits."""
        since = await self.store.call(cursors.get_cursor, self.name, stream.name)
        if since is not None and stream.remove_outdated and await self._removal_due(stream):
            since = None  # only a full listing shows what the provider deleted
        returned: set[str] | None = set() if stream.remove_outdated else None
        applied = pages = items = 0
        # One page waits in the channel while one commits and the next is fetched.
        send, receive = anyio.create_memory_object_stream[StreamPage](1)
        failures: list[Exception] = []  # raised as themselves, not in an ExceptionGroup

        async def fetch() -> None:
            async with send:
                try:
                    async for page in self.provider.stream_pages(stream, since):
                        await send.send(page)
                        if page.last:
                            break
                except Exception as exc:
                    failures.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            async with receive:
                async for page in receive:
                    pages += 1
                    items += len(page.changes)
                    metrics.pulled(self.name, len(page.changes))
                    if returned is not None:
                        # Every key the provider returned, taken or not: it is not outdated.
                        returned.update(change.key for change in page.changes)
                    try:
                        merged = await self.store.transact(
                            self._commit_page, stream, page, returned if page.last else None
                        )
                    except Exception as exc:
                        failures.insert(0, exc)
                        tg.cancel_scope.cancel()
                        break
                    applied += merged.applied
                    self.on_merge(merged)
                    if page.last and not page.settled:
                        log.warning(
                            "pull_unsettled",
                            provider=self.name,
                            stream=stream.name,
                            reason="the listing changed while it was paged, or items were "
                            "skipped: the cursor stays and nothing is removed; the next pull "
                            "reads the same range again",
                        )
        if failures:
            raise failures[0]
        if applied or pages > 1:
            log.info(
                "pulled",
                provider=self.name,
                stream=stream.name,
                full=since is None,
                pages=pages,
                changes=items,
                applied=applied,
            )
        if stream.derived:
            applied += await self._derive(stream)
        return applied

    async def _removal_due(self, stream: PullStream) -> bool:
        """Whether this pull of a remove-outdated stream must read the full listing."""
        interval_ms = stream.full_pull_interval_s * 1000
        if interval_ms <= 0:
            return True
        last = await self.store.call(cursors.last_full_pull, self.name, stream.name)
        # A mark ahead of the clock (the clock was set back) does not put the removal off.
        return last is None or not 0 <= now_ms() - last < interval_ms

    def _commit_page(
        self,
        conn: sqlite3.Connection,
        stream: PullStream,
        page: StreamPage,
        returned: set[str] | None,
    ) -> MergeResult:
        """One transaction: merge the page; on a settled last page, the cursor and removals."""
        now = now_ms()
        routes = self.config.routes()
        changes = to_changes(self.name, page.changes, self.config)
        merged = apply_changes(conn, changes, routes, now=now)
        if not (page.last and page.settled):
            return merged
        if page.cursor is not None:
            cursors.set_cursor(conn, self.name, page.cursor, now=now, name=stream.name)
        if returned is not None and page.full:
            removed = self._remove_outdated(conn, stream, returned, routes, now)
            merged.applied += removed.applied
            merged.providers |= removed.providers
            cursors.full_pull_done(conn, self.name, stream.name, now=now)
        return merged

    def _remove_outdated(
        self,
        conn: sqlite3.Connection,
        stream: PullStream,
        returned: set[str],
        routes: dict[str, tuple[str, ...]],
        now: int,
    ) -> MergeResult:
        gone = pulled.outdated_records(conn, stream.collection, self.name, returned)
        if not gone:
            return MergeResult()
        if not returned:
            log.warning(
                "outdated_removal_skipped",
                provider=self.name,
                stream=stream.name,
                records=len(gone),
                reason="the provider returned no items at all; an empty answer never removes "
                "every record (run `dropsync resync` once the provider lists them again)",
            )
            return MergeResult()
        tombstones = [
            IncomingChange(stream.collection, key, updated_at + 1, True, None)
            for key, updated_at in gone
        ]
        merged = apply_changes(
            conn, to_changes(self.name, tombstones, self.config), routes, now=now
        )
        log.info(
            "outdated_removed",
            provider=self.name,
            stream=stream.name,
            collection=stream.collection,
            removed=merged.applied,
        )
        return merged

    async def _derive(self, stream: PullStream) -> int:
        records = await self.store.call(pulled.collection_records, stream.collection)
        derived = self.provider.derive(stream, records)
        if not derived:
            return 0
        changes = to_changes(self.name, derived, self.config, origin=self.name + DERIVED)
        merged = await self.store.transact(_merge, changes, self.config.routes())
        log.info("derived", provider=self.name, stream=stream.name, applied=merged.applied)
        self.on_merge(merged)
        return merged.applied


def _merge(
    conn: sqlite3.Connection, changes: list[Change], routes: dict[str, tuple[str, ...]]
) -> MergeResult:
    return apply_changes(conn, changes, routes, now=now_ms())
