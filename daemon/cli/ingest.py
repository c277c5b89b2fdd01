"""``dropsync ingest FILE...``: the daemon's ingest path, once, for each file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dropsync.daemon.cli.common import EXIT_FAILURE, EXIT_OK, log_to_stderr, store_of

if TYPE_CHECKING:
    from dropsync.daemon.ingest import IngestReport

HELP = "ingest files once through the daemon's ingest path (one JSON report per file)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``FILE...``, ``--collection``."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="the JSON or NDJSON files")
    parser.add_argument(
        "--collection",
        metavar="NAME",
        help="collection of files outside the drop folder (default: the file's folder name)",
    )


def run(args: argparse.Namespace) -> int:
    """Ingest each file; print its report; exit 1 if any was not fully done."""
    import anyio
    import orjson
    from dropsync.daemon.clock import now_ms
    from dropsync.daemon.ingest import Ingestor
    from dropsync.daemon.memory import tune_garbage_collector
    from dropsync.store import outbox
    from dropsync.store.handle import Store

    log_to_stderr()
    config = store_of(args)
    tune_garbage_collector()
    kinds = [(p.name, p.kind) for p in config.providers.values()]

    async def ingest() -> list[IngestReport | str]:
        results: list[IngestReport | str] = []
        async with await Store.open(config.store_path) as store:
            async with store.write() as db:
                await outbox.register_providers(db, kinds, now=now_ms())
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
    return EXIT_FAILURE if failed else EXIT_OK
