"""``dropsync dead-letters list|retry|drop``: what providers refused, with their reasons."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK, dump_json, log_to_stderr, store_of

HELP = "list, retry or drop what providers refused, with their reasons"


_MAX_ID = (1 << 63) - 1  # dead_letters.id is an SQLite INTEGER


def _dead_letter_id(text: str) -> int:
    """``--id N``: a whole number a dead letter's id can be (else a usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_ID:
        raise argparse.ArgumentTypeError(
            f"expected a dead letter's id (a whole number from 1 to {_MAX_ID}), got {text!r}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``list|retry|drop``, ``--provider``, ``--id``, ``--all``, ``--json``."""
    parser.add_argument(
        "action",
        choices=["list", "retry", "drop"],
        help="list them, queue them again (retry), or delete them (drop)",
    )
    parser.add_argument("--provider", metavar="NAME", help="only this provider's dead letters")
    parser.add_argument(
        "--id",
        type=_dead_letter_id,
        action="append",
        default=[],
        dest="ids",
        metavar="N",
        help="only dead letter N (repeat for several)",
    )
    parser.add_argument("--all", action="store_true", help="retry or drop every dead letter")
    parser.add_argument("--json", action="store_true", help="list as JSON")


def run(args: argparse.Namespace) -> int:
    """List (read-only), or retry/drop in one transaction."""
    from ..errors import UsageError

    config = store_of(args)
    if args.action != "list" and not (args.ids or args.provider or args.all):
        raise UsageError(f"dead-letters {args.action} needs --id N, --provider NAME or --all")

    if args.action == "list":
        from dropsync.store import queries

        from .status import open_for_reading

        db = open_for_reading(config.store_path)
        try:
            letters = queries.dead_letters(db, args.provider, limit=1000)
        finally:
            db.close()
        return _print_dead_letters(letters, as_json=args.json)

    import sqlite3

    import anyio
    from dropsync.store import outbox
    from dropsync.store.handle import Store

    from ..clock import now_ms

    log_to_stderr()

    configured = sorted(config.providers)
    if args.action == "retry" and args.provider and args.provider not in configured:
        raise UsageError(
            f"provider {args.provider!r} is not in the config, so nothing would send its "
            f"dead letters: drop them (dead-letters drop --provider {args.provider}); "
            f"configured: {', '.join(configured) or 'none'}"
        )
    left: list[tuple[str, int]] = []

    async def act() -> int:
        async with await Store.open(config.store_path) as store:
            if args.action == "retry":

                def retry(db: sqlite3.Connection) -> int:
                    left.extend(
                        outbox.dead_letters_of_others(db, ids=args.ids, providers=configured)
                    )
                    return outbox.retry_dead_letters(
                        db, provider=args.provider, ids=args.ids, now=now_ms(), providers=configured
                    )

                return await store.transact(retry)
            return await store.transact(
                outbox.drop_dead_letters, provider=args.provider, ids=args.ids
            )

    result = anyio.run(act)
    print(f"{'re-queued' if args.action == 'retry' else 'dropped'} {result} dead letter(s)")
    if left:
        kept = ", ".join(f"{count} of {name}" for name, count in left)
        print(
            f"kept {kept}: not in the config, nothing would send them "
            "(dead-letters drop --provider NAME drops them)"
        )
    return EXIT_OK


def _print_dead_letters(letters: list[dict[str, Any]], *, as_json: bool) -> int:
    from ..clock import format_timestamp
    from ..names import printable

    if as_json:
        print(dump_json(letters))
        return EXIT_OK
    if not letters:
        print("no dead letters")
    for row in letters:
        name = f"{printable(row['collection'])}/{printable(row['key'])}"
        print(
            f"#{row['id']} {row['provider']} {name} "
            f"version {format_timestamp(row['updated_at'])}: {row['reason']}"
        )
    return EXIT_OK
