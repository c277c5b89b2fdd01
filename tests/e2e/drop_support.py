"""Shared set-up of the drop-folder tests against the daemon as a subprocess (test_drop_e2e,
test_watcher_e2e, test_pauses_e2e)."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.support import DaemonProcess


def drop_config(tmp_path: Path, *, rescan_s: float, batch: int | None = None) -> str:
    """The config text: the drop folder rescanned every ``rescan_s`` seconds (``batch``
    documents a transaction when given), collection contacts, no provider."""
    batch_line = "" if batch is None else f"batch = {batch}\n"
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
settle_ms = 20
rescan_s = {rescan_s}
{batch_line}[collections.contacts]
key = "email"
timestamp = "updated_at"
"""


def contacts(count: int, start: int = 0) -> bytes:
    """A JSON array of ``count`` contacts, u<start>@example.com onwards."""
    return orjson.dumps(
        [
            {"email": f"u{i}@example.com", "updated_at": 1_700_000_000_000 + i}
            for i in range(start, start + count)
        ]
    )


def errors(daemon: DaemonProcess) -> list[dict[str, object]]:
    """The daemon's error and critical log events (of its current run)."""
    return [e for e in daemon.events() if e.get("level") in ("error", "critical")]
