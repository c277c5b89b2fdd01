"""``dropsync ingest FILE...``: the daemon's ingest path, once, for each file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .common import EXIT_FAILURE, EXIT_OK, log_to_stderr, store_of

if TYPE_CHECKING:
    from dropsync.store.handle import Store

    from ..ingest.ingestor import IngestReport
    from .ingest_named import NotIngested

HELP = (
    "ingest files once through the daemon's ingest path (one JSON report per file; "
    "a progress bar on a terminal)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``FILE...``, ``--collection``."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="the JSON or NDJSON files")
    parser.add_argument(
        "--collection",
        metavar="NAME",
        help="collection of files outside the drop folder (default: the file's folder name)",
    )


@asynccontextmanager
async def _progress(store: Store, path: Path) -> AsyncIterator[None]:
    """A progress bar on stderr while ``path`` is ingested, when stderr is a terminal."""
    if not sys.stderr.isatty() or not path.is_file():
        yield  # plain log lines only
        return
    import anyio
    from dropsync.store.files import documents_in_progress

    from .progress import ProgressBar, show_progress

    async def documents() -> int | None:
        async with store.snapshot() as db:
            return await documents_in_progress(db)

    async with anyio.create_task_group() as tg:
        tg.start_soon(show_progress, ProgressBar(path, sys.stderr), documents)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


def run(args: argparse.Namespace) -> int:
    """Ingest each file; print its report; exit 1 if any was not fully done."""
    import anyio
    import orjson
    from dropsync.store import outbox
    from dropsync.store.handle import Store

    from ..clock import now_ms
    from ..ingest.ingestor import Ingestor
    from ..process.memory import tune_garbage_collector
    from .ingest_named import NotIngested, ingest_named

    log_to_stderr()
    config = store_of(args)
    tune_garbage_collector()
    kinds = [(p.name, p.kind) for p in config.providers.values()]

    async def ingest() -> list[IngestReport | NotIngested]:
        results: list[IngestReport | NotIngested] = []
        async with await Store.open(config.store_path) as store:
            await store.transact(outbox.register_providers, kinds, now=now_ms())
            ingestor = Ingestor(store, config)
            for name in args.files:
                path = Path(name)
                async with _progress(store, path):
                    results.append(await ingest_named(ingestor, path, args.collection))
        return results

    failed = False
    for result in anyio.run(ingest):
        if isinstance(result, NotIngested):
            print(f"dropsync: {result.message}", file=sys.stderr)
            failed |= result.failed
        else:
            print(orjson.dumps(result.as_json(), default=str).decode())
            failed |= result.status != "done"
    return EXIT_FAILURE if failed else EXIT_OK
