"""The store-reading and maintenance subcommands: ingest, why, resync, dead-letters.

``status`` lives in ``daemon.status``, which imports as little as it can.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from dropsync.daemon.clock import format_timestamp, now_ms
from dropsync.daemon.config import Config, load_config
from dropsync.daemon.errors import UsageError
from dropsync.store import queries
from dropsync.store.readonly import open_readonly

# The read-only commands (status, why, dead-letters list) need no event loop: the
# modules for writing are imported by the commands that write, so `status` starts fast.
if TYPE_CHECKING:
    from dropsync.daemon.ingest import IngestReport
    from dropsync.store.handle import Store


def _dump(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def _kinds(config: Config) -> list[tuple[str, str]]:
    """(name, kind) of every configured provider, for the ``providers`` table."""
    return [(p.name, p.kind) for p in config.providers.values()]


def cmd_ingest(args: argparse.Namespace) -> int:
    """``dropsync ingest FILE...``: the daemon's ingest path, once."""
    import anyio
    from dropsync.daemon.ingest import Ingestor
    from dropsync.daemon.memory import tune_garbage_collector
    from dropsync.store import outbox
    from dropsync.store.handle import Store

    config = load_config(args.config)
    tune_garbage_collector()

    async def ingest() -> list[IngestReport | str]:
        results: list[IngestReport | str] = []
        async with await Store.open(config.store_path) as store:
            async with store.write() as db:
                await outbox.register_providers(db, _kinds(config), now=now_ms())
            ingestor = Ingestor(store, config)
            for name in args.files:
                path = Path(name)
                if not path.is_file():
                    results.append(f"{name}: no such file")
                    continue
                if ingestor.collection_of(path) is not None and not args.collection:
                    report = await ingestor.ingest_dropped(path)
                else:
                    collection = args.collection or path.resolve().parent.name
                    report = await ingestor.ingest_in_place(path, collection)
                results.append(report if report is not None else f"{name}: not ingested")
        return results

    failed = False
    for result in anyio.run(ingest):
        if isinstance(result, str):
            print(f"dropsync: {result}", file=sys.stderr)
            failed = True
        else:
            print(orjson.dumps(result.as_json(), default=str).decode())
            failed |= result.status != "done"
    return 1 if failed else 0


def cmd_why(args: argparse.Namespace) -> int:
    """``dropsync why COLLECTION KEY``: every version seen and why the winner won."""
    from dropsync.daemon.audit import source_of, version_json, why_winner

    config = load_config(args.config)

    db = open_readonly(config.store_path)
    try:
        versions = queries.versions_seen(db, args.collection, args.key)
        record = queries.current_record(db, args.collection, args.key)
        delivery = queries.outbox_for_key(db, args.collection, args.key)
    finally:
        db.close()
    if not versions and record is None:
        print(
            f"dropsync: no version of {args.collection}/{args.key} was ever seen", file=sys.stderr
        )
        return 1
    if args.json:
        print(
            _dump(
                {
                    "collection": args.collection,
                    "key": args.key,
                    "current": record,
                    "why": why_winner(versions, record),
                    "versions": [version_json(v, record) for v in versions],
                    "providers": delivery,
                }
            )
        )
        return 0
    if record is None:
        print(f"{args.collection}/{args.key}: no current version")
    else:
        kind = "delete (tombstone)" if record["deleted"] else "upsert"
        print(
            f"{args.collection}/{args.key}: current version "
            f"{format_timestamp(record['updated_at'])}"
            f" {kind} from {record['origin']}"
        )
        print(f"why: {why_winner(versions, record)}")
    print("versions seen, oldest first:")
    for version in versions:
        entry = version_json(version, record)
        print(
            f"  #{version.inbox_id or '-':<8} {entry['updated_at_iso'] or '?':<25} "
            f"{version.op or '?':<7} {source_of(version):<32} {entry['explanation']}"
        )
    for row in delivery:
        print(
            f"  provider {row['provider']}: {row['state']} (version "
            f"{format_timestamp(row['updated_at'])})"
        )
    return 0


def cmd_resync(args: argparse.Namespace) -> int:
    """``dropsync resync PROVIDER``: queue everything again, clear its pause and cursors."""
    import anyio
    from dropsync.store import cursors, outbox
    from dropsync.store.handle import Store

    config = load_config(args.config)
    provider = config.providers.get(args.provider)
    if provider is None:
        raise UsageError(
            f"unknown provider {args.provider!r}; configured: "
            f"{', '.join(sorted(config.providers)) or 'none'}"
        )
    collections = [name for name, c in config.collections.items() if args.provider in c.providers]
    if getattr(args, "unconfirmed", False):
        return _resync_unconfirmed(config, args.provider)

    async def resync() -> int:
        async with await Store.open(config.store_path) as store:
            if args.dry_run:
                return await _dry_run_resync(store, config, args.provider, collections)
            async with store.write() as db:
                await outbox.register_providers(db, _kinds(config), now=now_ms())
                queued = await outbox.requeue_collection(
                    db, args.provider, collections, now=now_ms()
                )
                await outbox.clear_auth_failures(db, args.provider)
            await store.call(cursors.reset_cursors, args.provider)
            return queued

    queued = anyio.run(resync)
    verb = "would queue" if args.dry_run else "queued"
    print(
        f"{args.provider}: {verb} {queued} record(s) from "
        f"{', '.join(collections) or 'no collections'}"
    )
    return 0


def _resync_unconfirmed(config: Config, name: str) -> int:
    """``resync NAME --unconfirmed``: queue again the records of unconfirmed batches only."""
    import anyio
    from dropsync.daemon.providers import confirm_timeouts
    from dropsync.store import callbacks, outbox
    from dropsync.store.handle import Store

    async def requeue() -> tuple[int, int]:
        async with await Store.open(config.store_path) as store:
            async with store.write() as db:
                await outbox.register_providers(db, _kinds(config), now=now_ms())
            await store.transact(callbacks.set_confirm_timeouts, confirm_timeouts(config))
            return await store.transact(
                lambda db: callbacks.requeue_unconfirmed(db, name, now=now_ms())
            )

    batches, queued = anyio.run(requeue)
    print(f"{name}: queued {queued} record(s) of {batches} unconfirmed batch(es) again")
    return 0


async def _dry_run_resync(store: Store, config: Config, name: str, collections: list[str]) -> int:
    """Queue inside a transaction, show the batches through the real flusher, roll back."""
    from dropsync.daemon.delivery import Flusher
    from dropsync.daemon.providers import open_provider
    from dropsync.store import outbox
    from dropsync.store.handle import Store

    class _Unlocked(Store):
        """A store view whose write()/read()/snapshot() join the transaction already open."""

        def __init__(self, store: Store) -> None:
            super().__init__(store.db, store.path)

        def write(self) -> Any:
            return self.read()

        def snapshot(self) -> Any:
            return self.read()  # another connection would not see the uncommitted requeue

    provider_config = config.providers[name]
    await store.db.execute("BEGIN IMMEDIATE")
    try:
        queued = await outbox.requeue_collection(store.db, name, collections, now=now_ms())
        async with open_provider(provider_config) as provider:
            flusher = Flusher(_Unlocked(store), provider_config, provider, dry_run=True)
            while await flusher.flush_once():
                pass
    finally:
        await store.db.execute("ROLLBACK")
    return queued


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """``dropsync dead-letters list|retry|drop``."""
    config = load_config(args.config)
    if args.action != "list" and not (args.ids or args.provider or args.all):
        raise UsageError(f"dead-letters {args.action} needs --id N, --provider NAME or --all")

    if args.action == "list":
        db = open_readonly(config.store_path)
        try:
            letters = queries.dead_letters(db, args.provider, limit=1000)
        finally:
            db.close()
        return _print_dead_letters(letters, as_json=args.json)

    import anyio
    from dropsync.store import outbox
    from dropsync.store.handle import Store

    async def act() -> int:
        async with await Store.open(config.store_path) as store, store.write() as db:
            if args.action == "retry":
                return await outbox.retry_dead_letters(
                    db, provider=args.provider, ids=args.ids, now=now_ms()
                )
            return await outbox.drop_dead_letters(db, provider=args.provider, ids=args.ids)

    result = anyio.run(act)
    print(f"{'re-queued' if args.action == 'retry' else 'dropped'} {result} dead letter(s)")
    return 0


def _print_dead_letters(letters: list[dict[str, Any]], *, as_json: bool) -> int:
    if as_json:
        print(_dump(letters))
        return 0
    if not letters:
        print("no dead letters")
    for row in letters:
        print(
            f"#{row['id']} {row['provider']} {row['collection']}/{row['key']} "
            f"version {format_timestamp(row['updated_at'])}: {row['reason']}"
        )
    return 0
