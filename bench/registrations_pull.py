"""One side of the registrations pull bench, in a process of its own (for its peak RSS).

``python -m bench.registrations_pull real|bare BASE_URL STORE CHANGED``: a full pull of the
emulator's participants into a fresh store, then ``CHANGED`` participants are changed at the
provider (not timed), then an incremental pull. ``real`` is the daemon's path (the adapter,
``daemon.delivery.pulls.StreamPull``, the store's LWW merge); ``bare`` is the reference: the same
pages fetched with httpx and inserted by a plain sqlite3 loop (an upsert per item, a commit
per page). Prints one JSON line.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import emit, peak_rss_mb

USERNAME, PASSWORD, EVENT = "fp-bot", "demo-lenos-password", "ev-2026"
PAGE = 500


def change_some(base_url: str, count: int) -> None:
    """Change ``count`` participants at the provider (spread over the listing)."""
    step = max(1, 100_000 // max(count, 1))
    items = [
        {"id": f"p{n}", "RegistrationStatus": "Cancelled", "firstName": "Changed"}
        for n in range(1, step * count + 1, step)
    ][:count]
    httpx.post(f"{base_url}/_emulator/items/participants", json=items, timeout=60)


# ----- the reference -------------------------------------------------------------------


def bare_pull(client: httpx.Client, db: sqlite3.Connection, since: str | None) -> tuple[int, str]:
    """Fetch every page and upsert its items; returns (items, greatest utcModifiedDate)."""
    token = client.post("/api/v1/login", json={"username": USERNAME, "password": PASSWORD}).json()[
        "token"
    ]
    page, read, greatest = 1, 0, since or ""
    while True:
        params: dict[str, Any] = {"page": page, "pageSize": PAGE}
        if since:
            params["utcModifiedDate"] = since
        answer = orjson.loads(
            client.get(
                f"/api/v1/events/{EVENT}/participants",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            ).content
        )
        rows = []
        for item in answer["items"]:
            item["fp_ext_id"] = item["id"]
            item["fp_status"] = (
                "active" if item.get("RegistrationStatus") == "Registered" else "cancelled"
            )
            greatest = max(greatest, item["utcModifiedDate"])
            rows.append((str(item["id"]), orjson.dumps(item).decode(), item["utcModifiedDate"]))
        with db:
            db.executemany(
                "INSERT INTO records (key, body, modified) VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET body = excluded.body, modified = excluded.modified",
                rows,
            )
        read += len(answer["items"])
        if not answer["items"] or read >= answer["total"]:
            return read, greatest
        page += 1


def bare(base_url: str, store: Path, changed: int) -> dict[str, Any]:
    """The reference, full then incremental."""
    db = sqlite3.connect(store)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE records (key TEXT PRIMARY KEY, body TEXT, modified TEXT)")
    with httpx.Client(base_url=base_url, timeout=60) as client:
        started = time.perf_counter()
        full, cursor = bare_pull(client, db, None)
        full_s = time.perf_counter() - started
        change_some(base_url, changed)
        started = time.perf_counter()
        incremental, _ = bare_pull(client, db, cursor)
        incremental_s = time.perf_counter() - started
    db.close()
    return {
        "full_records": full,
        "full_s": full_s,
        "incremental_records": incremental,
        "incremental_s": incremental_s,
    }


# ----- the daemon's path ---------------------------------------------------------------


async def real_async(base_url: str, store_path: Path, changed: int) -> dict[str, Any]:
    """The daemon's pull path, full then incremental (every stream, as the daemon pulls)."""
    import anyio
    from dropsync.adapters.registrations.adapter import build
    from dropsync.daemon.config import parse_config
    from dropsync.daemon.delivery.pulls import StreamPull
    from dropsync.daemon.process.memory import tune_garbage_collector
    from dropsync.store.handle import Store

    tune_garbage_collector()  # as the daemon does at start
    config = parse_config(
        {
            "store": {"path": str(store_path)},
            "providers": {
                "lenos": {
                    "kind": "registrations",
                    "base_url": base_url,
                    "username": USERNAME,
                    "event_id": EVENT,
                    "secret_env": "UNUSED",
                }
            },
        },
        "<bench>",
    )
    provider_config = config.providers["lenos"]
    provider = build("lenos", base_url, provider_config.options, PASSWORD, 60.0, None)
    counted = {"applied": 0}

    def merged(result: Any) -> None:
        counted["applied"] += result.applied

    store = await Store.open(store_path)
    try:
        async with provider:
            pull = StreamPull(store, config, provider_config, provider, merged)
            started = time.perf_counter()
            await pull.run()
            full_s = time.perf_counter() - started
            full = counted["applied"]
            await anyio.to_thread.run_sync(change_some, base_url, changed)
            started = time.perf_counter()
            await pull.run()
            incremental_s = time.perf_counter() - started
    finally:
        await store.close()
    return {
        "full_records": full,
        "full_s": full_s,
        "incremental_records": counted["applied"] - full,
        "incremental_s": incremental_s,
    }


def main() -> None:
    """Child entry point."""
    side, base_url, store, changed = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    if side == "bare":
        result = bare(base_url, store, changed)
    else:
        import anyio
        from dropsync.daemon.process.logs import configure_logging

        with open(os.devnull, "w") as devnull:
            configure_logging("info", devnull)  # JSON lines, as the daemon writes them
            result = anyio.run(real_async, base_url, store, changed)
    emit({"side": side, **result, "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
