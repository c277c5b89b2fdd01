"""``dropsync resync PROVIDER``: queue every record for a provider again, clear its pause."""

from __future__ import annotations

import argparse
import sqlite3
from typing import TYPE_CHECKING, Any

from .common import EXIT_OK, log_to_stderr, store_of

if TYPE_CHECKING:
    from dropsync.store.handle import Store

    from ..config import Config

HELP = "queue every record routed to a provider again, and clear its pause and cursors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``PROVIDER``, ``--dry-run``."""
    parser.add_argument("provider", metavar="PROVIDER", help="a provider name from the config")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="show the batches it would send and change nothing",
    )
    parser.add_argument(
        "--unconfirmed",
        action="store_true",
        help="send again only the records of batches accepted but not confirmed within "
        "the provider's confirm_timeout_s",
    )


def run(args: argparse.Namespace) -> int:
    """Queue (or, with ``--dry-run``, show) everything routed to the provider."""
    import anyio
    from dropsync.store.handle import Store

    from ..clock import now_ms
    from ..errors import UsageError

    log_to_stderr()
    config = store_of(args)
    provider = config.providers.get(args.provider)
    if provider is None:
        raise UsageError(
            f"unknown provider {args.provider!r}; configured: "
            f"{', '.join(sorted(config.providers)) or 'none'}"
        )
    collections = [name for name, c in config.collections.items() if args.provider in c.providers]
    kinds = [(p.name, p.kind) for p in config.providers.values()]
    if args.unconfirmed:
        return _resync_unconfirmed(config, args.provider, kinds)

    async def resync() -> int:
        async with await Store.open(config.store_path) as store:
            if args.dry_run:
                return await _dry_run_resync(store, config, args.provider, collections)
            return await store.transact(_resync, kinds, args.provider, collections, now_ms())

    queued = anyio.run(resync)
    verb = "would queue" if args.dry_run else "queued"
    print(
        f"{args.provider}: {verb} {queued} record(s) from "
        f"{', '.join(collections) or 'no collections'}"
    )
    return EXIT_OK


def _resync(
    db: sqlite3.Connection,
    kinds: list[tuple[str, str]],
    name: str,
    collections: list[str],
    now: int,
) -> int:
    """One transaction: queue everything routed to ``name`` again, forget its cursors (the
    next pull reads everything) and end its waits (the running daemon sees the change and
    tries at once, its refused lanes too). Returns the records queued."""
    from dropsync.store import cursors, lanes, outbox

    outbox.register_providers(db, kinds, now=now)
    queued = outbox.requeue_collection(db, name, collections, now=now)
    outbox.clear_auth_failures(db, name)
    lanes.resume_refused_lanes(db, name, now=now)  # its users whose tokens were refused
    cursors.reset_cursors(db, name)
    return queued


def _resync_unconfirmed(config: Config, name: str, kinds: list[tuple[str, str]]) -> int:
    """``resync NAME --unconfirmed``: queue again the records of unconfirmed batches only."""
    import anyio
    from dropsync.store import callbacks, outbox
    from dropsync.store.handle import Store

    from ..clock import now_ms
    from ..delivery.providers import confirm_timeouts

    async def requeue() -> tuple[int, int]:
        async with await Store.open(config.store_path) as store:
            await store.transact(outbox.register_providers, kinds, now=now_ms())
            await store.transact(callbacks.set_confirm_timeouts, confirm_timeouts(config))
            return await store.transact(
                lambda db: callbacks.requeue_unconfirmed(db, name, now=now_ms())
            )

    batches, queued = anyio.run(requeue)
    print(f"{name}: queued {queued} record(s) of {batches} unconfirmed batch(es) again")
    return EXIT_OK


async def _dry_run_resync(store: Store, config: Config, name: str, collections: list[str]) -> int:
    """Queue inside a transaction, show the batches through the real flusher, roll back."""
    from dropsync.store import outbox
    from dropsync.store.handle import Store

    from ..clock import now_ms
    from ..delivery.batches import BatchSender
    from ..delivery.flusher import Flusher
    from ..delivery.providers import open_provider

    class _Unlocked(Store):
        """A store view whose read()/snapshot() join the transaction already open."""

        def __init__(self, store: Store) -> None:
            super().__init__(store.db, store.path)

        def snapshot(self) -> Any:
            return self.read()  # another connection would not see the uncommitted requeue

    provider_config = config.providers[name]
    await store.db.execute("BEGIN IMMEDIATE")
    try:
        queued = await store.call(outbox.requeue_collection, name, collections, now=now_ms())
        async with open_provider(provider_config) as provider:
            # The batch sender for every kind: a file sender would write its spool files.
            flusher = Flusher(
                _Unlocked(store), provider_config, provider, dry_run=True, sender=BatchSender()
            )
            while await flusher.flush_once():
                pass
    finally:
        await store.db.execute("ROLLBACK")
    return queued
