"""Bench: 1M pending CRM contacts flushed to the loopback CRM emulator.

``python bench/flush.py --records 1000000`` fills a store with N records and N
pending outbox entries, starts the CRM emulator as its own process
(``dropsync emulate``), and measures

* the real path: the daemon's ``Flusher`` (take batch, local checks, push, record
  the outcome) until the outbox is empty, 1000 contacts a request;
* the reference: the same requests (bodies built beforehand) sent by a bare
  httpx loop.

Prints one JSON line: records_per_s, reference_records_per_s, ratio, requests.
These machines are noisy, so both sides run ``--rounds`` times (default 3, a fresh
store each time), alternating which goes first; rates are medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dropsync.adapters.crm.adapter import CrmProvider
from dropsync.adapters.crm.adapter import parse_options as crm_options
from dropsync.daemon.config import ProviderConfig
from dropsync.daemon.delivery.flusher import Flusher
from dropsync.daemon.process.logs import configure_logging
from dropsync.daemon.process.memory import tune_garbage_collector
from dropsync.store import outbox
from dropsync.store.db import open_store
from dropsync.store.handle import Store

from bench.common import emit

TOKEN = "demo-crm-token"
CPU_SECONDS: dict[str, float] = {}  # this process's CPU time during each side
ACCOUNT = "acc_1"


def contact(i: int) -> dict[str, object]:
    """A contact of about 250 bytes."""
    return {
        "email": f"guest{i}@example.com",
        "name_first": "Jhon",
        "name_last": "Doe",
        "user_id": f"u{i}",
        "born_date": "1990-01-01T00:00:00Z",
        "language": "EN",
        "country": "Germany",
        "city": "Berlin",
        "gender": "male",
    }


def build_store(path: Path, records: int) -> None:
    """N records of collection contacts, each pending for provider crm."""
    anyio.run(_migrate, path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
        "merged_at) VALUES ('contacts', ?, ?, ?, 0, 'drop', ?, 0)",
        (
            (
                f"guest{i}@example.com",
                orjson.dumps(contact(i)).decode(),
                1_700_000_000_000 + i,
                f"{i:032x}",
            )
            for i in range(records)
        ),
    )
    db.execute(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "SELECT 'crm', collection, key, updated_at, 0 FROM records"
    )
    db.execute("INSERT INTO providers (name, kind, updated_at) VALUES ('crm', 'crm', 0)")
    db.execute("COMMIT")
    db.close()


async def _migrate(path: Path) -> None:
    db = await open_store(path)
    await db.close()


def start_emulator(port: int, favourites_port: int = 0) -> subprocess.Popen[bytes]:
    """``dropsync emulate`` in its own process, so it does not share our GIL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "emulate",
            "--crm-port",
            str(port),
            "--favourites-port",
            "0",
            "--registrations-port",
            "0",
            "--churn-port",
            "0",  # a free port: the default may be taken
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_emulator/state", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("emulator did not start")


async def flush_real(path: Path, base_url: str) -> float:
    """Seconds for the real Flusher to empty the outbox."""
    tune_garbage_collector()  # as the daemon does at start
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 -- once, before the clock starts
        configure_logging("info", devnull)  # JSON lines, as the daemon logs under systemd
        return await _flush_real(path, base_url)


async def _flush_real(path: Path, base_url: str) -> float:
    store = await Store.open(path)
    config = ProviderConfig(name="crm", kind="crm", base_url=base_url)
    provider = CrmProvider("crm", base_url, crm_options({"account_id": ACCOUNT}), TOKEN, 60, None)
    async with provider:
        flusher = Flusher(store, config, provider)
        started, cpu_started = time.perf_counter(), time.process_time()
        while await flusher.flush_once():
            pass
        elapsed = time.perf_counter() - started
        CPU_SECONDS["real"] = time.process_time() - cpu_started
    async with store.read() as db:
        left = await outbox.pending_count(db, "crm")
    await store.close()
    assert left == 0, f"{left} entries left"
    return elapsed


async def flush_reference(bodies: list[bytes], base_url: str) -> float:
    """Seconds for a bare httpx loop to send the same requests."""
    headers = {
        "Authorization": f"Token token={TOKEN}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        started, cpu_started = time.perf_counter(), time.process_time()
        for number, body in enumerate(bodies):
            response = await client.post(
                f"/account/{ACCOUNT}/sync_data",
                content=body,
                headers={**headers, "Idempotency-Key": f"r{number}"},
            )
            response.raise_for_status()
        CPU_SECONDS["reference"] = time.process_time() - cpu_started
        return time.perf_counter() - started


def main() -> None:
    """Build, run both sides, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    args = parser.parse_args()
    options = {
        "email_validation": {
            "validate": False,
            "create_if_invalid": False,
            "create_if_no_credit": False,
        }
    }
    bodies = [
        orjson.dumps(
            {
                "origin": "dropsync",
                "options": options,
                "contacts": [contact(i) for i in range(start, min(start + 1000, args.records))],
            }
        )
        for start in range(0, args.records, 1000)
    ]
    base_url = f"http://127.0.0.1:{args.port}"
    reals: list[float] = []
    references: list[float] = []
    cpu: dict[str, list[float]] = {"real": [], "reference": []}
    seen: list[int] = []
    emulator = start_emulator(args.port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(args.rounds):
                path = Path(tmp) / f"flush{number}.db"
                build_store(path, args.records)
                for side in ("reference", "real") if number % 2 == 0 else ("real", "reference"):
                    # Forgetting 1M contacts takes the emulator seconds on a busy machine.
                    httpx.post(f"{base_url}/_emulator/reset", timeout=120)
                    if side == "reference":
                        references.append(asyncio.run(flush_reference(bodies, base_url)))
                    else:
                        reals.append(anyio.run(flush_real, path, base_url))
                        contacts = httpx.get(f"{base_url}/_emulator/contacts", timeout=120)
                        seen.append(contacts.json()["count"])
                    cpu[side].append(CPU_SECONDS[side])
                for leftover in Path(tmp).glob(f"flush{number}.db*"):
                    leftover.unlink()
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=30)
    rates = [args.records / seconds for seconds in reals]
    reference_rates = [args.records / seconds for seconds in references]
    rate, reference_rate = statistics.median(rates), statistics.median(reference_rates)
    emit(
        {
            "bench": "flush",
            "records": args.records,
            "requests": len(bodies),
            "rounds": args.rounds,
            "records_at_emulator": seen,
            "records_per_s": round(rate),
            "reference_records_per_s": round(reference_rate),
            "ratio": round(rate / reference_rate, 3),
            "records_per_s_each": [round(r) for r in rates],
            "reference_records_per_s_each": [round(r) for r in reference_rates],
            # CPU of this process per 1000-record request (the emulator runs in another).
            "cpu_ms_per_request": round(statistics.median(cpu["real"]) * 1000 / len(bodies), 2),
            "reference_cpu_ms_per_request": round(
                statistics.median(cpu["reference"]) * 1000 / len(bodies), 2
            ),
            "targets": {"records_per_s": 50_000, "ratio": 0.8},
            "met": {"records_per_s": rate >= 50_000, "ratio": rate / reference_rate >= 0.8},
        }
    )


if __name__ == "__main__":
    main()
