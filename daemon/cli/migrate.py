"""``dropsync migrate [--dry-run]``: bring the store's schema up to this dropsync's version."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK

HELP = "apply the schema migrations this dropsync has and the store lacks (--dry-run: list them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dry-run``."""
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be applied and change nothing"
    )


def _summary(sql: str) -> str:
    """The first comment line of a migration: what it adds."""
    for line in sql.splitlines():
        text = line.strip()
        if text.startswith("--"):
            return text.lstrip("- ").split(": ", 1)[-1]
    return ""


def run(args: argparse.Namespace) -> int:
    """List, or apply with a backup first (the daemon does the same at start)."""
    from dropsync.store.errors import SchemaTooNew
    from dropsync.store.maintenance import migration_backup_path, schema_version_at
    from dropsync.store.schema import migrations

    from ..config_file import store_path_of
    from .common import existing_store

    store = Path(existing_store(args.config, store_path_of(args.config)))
    current = schema_version_at(store)
    steps = migrations()
    if current > len(steps):
        raise SchemaTooNew(
            f"store {store} has schema version {current}, but this dropsync knows versions up "
            f"to {len(steps)}: it was written by a newer dropsync. Upgrade dropsync."
        )
    pending = steps[current:]
    if not pending:
        print(f"store {store} is at schema version {current}: nothing to apply")
        return EXIT_OK
    if args.dry_run:
        print(f"store {store} is at schema version {current}; would apply:")
        for step in pending:
            print(f"  {step.version:>4} {step.name}: {_summary(step.sql)}")
        print(f"a backup would be written first: {migration_backup_path(store, current)}")
        return EXIT_OK
    return _apply(store, current, [step.version for step in pending])


def _apply(store: Path, current: int, versions: list[int]) -> int:
    import anyio
    from dropsync.store.handle import Store

    from ..process.instance import InstanceLock

    lock = InstanceLock(store, purpose="migrate")
    lock.acquire()  # not while a daemon runs (it migrates at its own start anyway)
    try:
        backups: list[Path] = []

        async def migrate() -> None:
            async with await Store.open(store, backups=backups):
                pass

        anyio.run(migrate)
    finally:
        lock.release()
    print(f"store {store}: migrated from schema version {current} to {versions[-1]}")
    for backup in backups:
        print(f"the store as it was before: {backup}")
    return EXIT_OK
