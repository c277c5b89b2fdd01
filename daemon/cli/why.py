"""``dropsync why COLLECTION KEY``: every version of a key seen, and why the winner won."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_FAILURE, EXIT_OK, dump_json, store_of

HELP = "every version of a key seen, where it came from, and why the winner won"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``COLLECTION KEY``, ``--json``."""
    parser.add_argument("collection", metavar="COLLECTION", help="the collection (drop subfolder)")
    parser.add_argument("key", metavar="KEY", help="the record's key in that collection")
    parser.add_argument("--json", action="store_true", help="print the audit as JSON")


def run(args: argparse.Namespace) -> int:
    """Read the audit from the store (read-only) and print it."""
    from dropsync.store import queries
    from dropsync.store.history import versions_seen

    from ..clock import format_timestamp
    from ..names import printable
    from .audit import source_of, version_json, why_winner
    from .status import open_for_reading

    config = store_of(args)
    db = open_for_reading(config.store_path)
    try:
        versions = versions_seen(db, args.collection, args.key)
        record = queries.current_record(db, args.collection, args.key)
        delivery = queries.outbox_for_key(db, args.collection, args.key)
    finally:
        db.close()
    if not versions and record is None:
        print(
            f"dropsync: no version of {printable(args.collection)}/{printable(args.key)} was ever "
            "seen",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if args.json:
        print(
            dump_json(
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
        return EXIT_OK
    name = f"{printable(args.collection)}/{printable(args.key)}"
    if record is None:
        print(f"{name}: no current version")
    else:
        kind = "delete (tombstone)" if record["deleted"] else "upsert"
        print(
            f"{name}: current version "
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
    return EXIT_OK
