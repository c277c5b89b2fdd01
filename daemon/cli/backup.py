"""``dropsync backup PATH``: a consistent, verified copy of the store, while the daemon runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK

HELP = "write a consistent copy of the store to PATH (safe while the daemon runs), verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``PATH``, ``--force``."""
    parser.add_argument(
        "path",
        metavar="PATH",
        help="the backup file to write, or a folder to write <store>-<UTC time>.db into",
    )
    parser.add_argument("--force", action="store_true", help="replace PATH if it is a regular file")


def run(args: argparse.Namespace) -> int:
    """Copy with SQLite's online backup API, check it, then move it into place."""
    import time

    from dropsync.store.maintenance import backup_to

    from ..config_file import drop_path_of, store_path_of
    from .common import existing_store

    store = Path(existing_store(args.config, store_path_of(args.config)))
    target = Path(args.path)
    if target.is_dir():  # a folder, or a link to one: a new file in it
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = target / f"{store.stem}-{stamp}.db"
    check_target(target, store, drop_path_of(args.config), force=args.force)
    taken = backup_to(store, target)
    print(
        f"backed up {store} to {taken.path} ({taken.size / (1 << 20):.1f} MiB, schema "
        f"{taken.schema_version}, integrity_check ok)"
    )
    return EXIT_OK


def check_target(target: Path, store: Path, drop: Path, *, force: bool) -> None:
    """UsageError unless a backup may be written at ``target``.

    Never the store nor a file or folder beside it (``places.companions``: a backup
    written as ``-wal`` destroys the records of the last transactions, one written as
    ``.lock`` lets a second daemon run), never inside the drop folder (the daemon would
    take it for a dropped file), links resolved; ``--force`` replaces a regular file
    only (never a link, a device, a FIFO, a socket, a folder).
    """
    import os

    from ..errors import UsageError
    from ..ingest.dropfiles import kind_of
    from ..places import companions, is_within, real

    place = real(target)
    for what, path in companions(store):
        if is_within(place, real(path)):
            raise UsageError(
                f"{target} is {what} ({path}) or in it: a backup never replaces or writes "
                "into the store nor a file or folder kept beside it; give another PATH"
            )
    if is_within(place, real(drop)):
        raise UsageError(
            f"{target} is inside the drop folder {drop}, where the daemon would take the "
            "backup for a dropped file: give a PATH outside it"
        )
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not force:
            raise UsageError(f"{target} exists: give another PATH, or --force to replace it")
        kind = kind_of(target, mode)
        if kind is not None:
            raise UsageError(f"{target} is {kind}: --force replaces only a regular file")
    if not target.parent.is_dir():
        raise UsageError(f"folder {target.parent} does not exist")
