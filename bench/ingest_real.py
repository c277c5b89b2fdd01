"""Child process: one drop file through the daemon's real ingest path.

``python -m bench.ingest_real WORKDIR FILE``: builds a config with the file's
collection routed to one provider (so the outbox is filled, as in the
reference), drops the file into ``WORKDIR/drop/users/`` and ingests it with the
same ``Ingestor.ingest_dropped`` the watcher calls.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import anyio
from dropsync.daemon.config import parse_config
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.daemon.process.memory import tune_garbage_collector
from dropsync.store.handle import Store

from bench.common import emit, peak_rss_mb


async def ingest(workdir: Path, source: Path) -> dict[str, float]:
    """Ingest ``source`` as a dropped file; returns figures."""
    config = parse_config(
        {
            "store": {"path": str(workdir / "dropsync.db")},
            "drop": {
                "path": str(workdir / "drop"),
                "batch": int(os.environ.get("BENCH_BATCH", "5000")),
            },
            "providers": {
                "crm": {"kind": "crm", "base_url": "http://127.0.0.1:9", "account_id": "bench"}
            },
            "collections": {"users": {"providers": ["crm"]}},
        },
        "bench",
    )
    folder = config.drop_path / "users"
    folder.mkdir(parents=True, exist_ok=True)
    dropped = folder / source.name
    if not dropped.exists():
        os.link(source, dropped)
    tune_garbage_collector()  # as the daemon does at start
    async with await Store.open(config.store_path) as store:
        started = time.perf_counter()
        report = await Ingestor(store, config).ingest_dropped(dropped)
        elapsed = time.perf_counter() - started
    assert report is not None and report.status == "done", report
    return {
        "docs": report.applied,
        "seconds": elapsed,
        "peak_rss_mb": peak_rss_mb(),
        # The parser process has been joined, so it is among this process's waited-for children.
        "parser_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> None:
    """Child entry point."""
    emit(anyio.run(ingest, Path(sys.argv[1]), Path(sys.argv[2])))


if __name__ == "__main__":
    main()
