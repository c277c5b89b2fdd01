"""``dropsync backup PATH``: a consistent, verified copy of the store, while the daemon runs."""

from __future__ import annotations

import argparse

from dropsync.daemon.cli.common import EXIT_OK

HELP = "write a consistent copy of the store to PATH (safe while the daemon runs), verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``PATH``, ``--force``."""
    parser.add_argument(
        "path",
        metavar="PATH",
        help="the backup file to write, or a folder to write <store>-<UTC time>.db into",
    )
    parser.add_argument("--force", action="store_true", help="replace PATH if it is a file")


def run(args: argparse.Namespace) -> int:
    """Copy with SQLite's online backup API, check it, then move it into place."""
    import time
    from pathlib import Path

    from dropsync.daemon.cli.common import existing_store
    from dropsync.daemon.config_file import store_path_of
    from dropsync.daemon.errors import UsageError
    from dropsync.store.maintenance import backup_to

    store = existing_store(args.config, store_path_of(args.config))
    target = Path(args.path)
    if target.is_dir():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = target / f"{store.stem}-{stamp}.db"
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists: give another PATH, or --force to replace it")
    if target.resolve() == store.resolve():
        raise UsageError(f"{target} is the store itself")
    if not target.parent.is_dir():
        raise UsageError(f"folder {target.parent} does not exist")
    taken = backup_to(store, target)
    print(
        f"backed up {store} to {taken.path} ({taken.size / (1 << 20):.1f} MiB, schema "
        f"{taken.schema_version}, integrity_check ok)"
    )
    return EXIT_OK
