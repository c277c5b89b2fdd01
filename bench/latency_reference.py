"""The reference the latency bench compares with: a loop that polls every 100 ms.

``python -m bench.latency_reference drop FOLDER URL`` looks at ``FOLDER`` every
``--every`` seconds (100 ms by default) and POSTs each file it finds (one contact, JSON)
to the CRM emulator at ``URL``, then deletes it; ``... inbox DB URL`` does the same with
the rows of table ``queue`` (``id``, ``body``) of the SQLite file ``DB``. It runs until
SIGTERM. The loop sleeps its interval after each look, so its phase drifts against the
bench's own 100 ms steps and every offset between the two is sampled.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson

ACCOUNT = "acc_1"
TOKEN = "demo-crm-token"  # what ``dropsync emulate`` accepts (adapters/crm/demo.py)
STOPPING = threading.Event()


def stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: finish the current look, then exit."""
    STOPPING.set()


def post(client: httpx.Client, contacts: list[Any]) -> None:
    """One ``sync_data`` request, as the CRM adapter sends it."""
    body = orjson.dumps({"origin": "reference", "contacts": contacts})
    client.post(f"/account/{ACCOUNT}/sync_data", content=body).raise_for_status()


def poll_folder(folder: Path, client: httpx.Client, every: float) -> None:
    """Every ``every`` s: each file in ``folder`` (not a dot file) is sent, then deleted."""
    while not STOPPING.is_set():
        found = sorted(e.path for e in os.scandir(folder) if not e.name.startswith("."))
        if found:
            post(client, [orjson.loads(Path(path).read_bytes()) for path in found])
            for path in found:
                os.unlink(path)
        time.sleep(every)


def poll_table(path: Path, client: httpx.Client, every: float) -> None:
    """Every ``every`` s: the rows of ``queue`` after the last one seen are sent."""
    db = sqlite3.connect(path, isolation_level=None)
    last = 0
    while not STOPPING.is_set():
        rows = db.execute("SELECT id, body FROM queue WHERE id > ? ORDER BY id", (last,)).fetchall()
        if rows:
            post(client, [orjson.loads(body) for _, body in rows])
            last = rows[-1][0]
        time.sleep(every)
    db.close()


def main() -> None:
    """Poll until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["drop", "inbox"])
    parser.add_argument("place", type=Path)
    parser.add_argument("url")
    parser.add_argument("--every", type=float, default=0.1)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop)
    headers = {"Authorization": f"Token token={TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        print("ready", flush=True)
        if args.what == "drop":
            poll_folder(args.place, client, args.every)
        else:
            poll_table(args.place, client, args.every)
    sys.exit(0)


if __name__ == "__main__":
    main()
