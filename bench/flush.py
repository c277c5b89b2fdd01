"""Bench: 1M pending CRM contacts flushed to a loopback sink, CPU a request against a bare loop.

``python bench/flush.py --records 1000000`` fills a store with N records of collection
``contacts`` (whose timestamp field, ``updated_at``, the CRM adapter leaves out of what it
sends, as in the daemon) and N pending outbox entries, starts the receiving side as its own
process, and measures

* the real path: the daemon's ``Flusher`` (take a batch, decode, local checks, write the
  request ahead, push, record the outcome) until the outbox is empty, 1000 contacts a
  request;
* the reference: the same requests (bodies built beforehand, byte for byte what the real
  path sends) posted by a bare httpx loop that checks each answer's status and job id.

The receiving side is ``bench/sink.py`` (``--sink minimal``, the default): a raw asyncio
server that answers the CRM's success shape far faster than either side sends, so the
figures are the senders' own. ``--sink emulator`` uses the CRM emulator instead (about
19,000 contacts a second here: it bounds both sides). Either listens on a free port it
reports itself; the sink's path holds a random token, and its job ids too, which the bench
checks (the requests and bytes it counted, the job ids stored in ``deliveries``): what is
measured is the server this bench started.

Prints one JSON line: records_per_s, reference_records_per_s, ratio, cpu_ms_per_request,
reference_cpu_ms_per_request, cpu_ratio (medians), each round's figures, the sink's CPU.
The CPU is this process's (every thread: the event loop and the store's), per 1000-record
request. The machine is noisy, so both sides run ``--rounds`` times (default 3, a fresh
store each time), alternating which goes first. bench/README.md says how to run it.
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
import threading
import time
from pathlib import Path
from typing import Any

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

from bench.common import ROOT, emit, proc_cpu_seconds, start_emulator

TOKEN = "demo-crm-token"  # the provider's secret (the emulator's demo token)
EMULATOR_ACCOUNT = "acc_1"
TIMESTAMP = "updated_at"  # the collection's timestamp field: not sent to the CRM
OPTIONS = {
    "email_validation": {
        "validate": False,
        "create_if_invalid": False,
        "create_if_no_credit": False,
    }
}


def contact(i: int) -> dict[str, object]:
    """A contact of about 250 bytes, with the collection's timestamp field."""
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
        TIMESTAMP: 1_700_000_000_000 + i,
    }


def stored_body(i: int) -> str:
    """The body as the store keeps it: canonical JSON (keys sorted, no spaces)."""
    return orjson.dumps(contact(i), option=orjson.OPT_SORT_KEYS).decode()


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
            (f"guest{i}@example.com", stored_body(i), 1_700_000_000_000 + i, f"{i:032x}")
            for i in range(records)
        ),
    )
    db.execute(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "SELECT 'crm', collection, key, updated_at, 1700000000000 FROM records"
    )
    db.execute("INSERT INTO providers (name, kind, updated_at) VALUES ('crm', 'crm', 0)")
    db.execute("COMMIT")
    db.close()


def reference_bodies(path: Path) -> list[bytes]:
    """What the real path sends, built beforehand: the bodies in outbox order, 1000 a
    request, each without the timestamp field (as the adapter sends them)."""
    db = sqlite3.connect(path)
    cursor = db.execute(
        "SELECT r.body FROM outbox o JOIN records r ON r.collection = o.collection "
        "AND r.key = o.key ORDER BY o.id"
    )
    bodies = []
    while rows := cursor.fetchmany(1000):
        contacts = []
        for (body,) in rows:
            value = orjson.loads(body)
            del value[TIMESTAMP]
            contacts.append(value)
        bodies.append(
            orjson.dumps({"origin": "dropsync", "options": OPTIONS, "contacts": contacts})
        )
    db.close()
    return bodies


async def _migrate(path: Path) -> None:
    db = await open_store(path)
    await db.close()


class Sink:
    """The receiving side: ``bench/sink.py`` or the CRM emulator, in a process of its own."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "emulator":
            self.process, urls = start_emulator("crm")
            self.base_url = urls["crm"]
            self.account = EMULATOR_ACCOUNT
            self.token = ""
            return
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sink"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        timer = threading.Timer(30, self.process.kill)
        timer.start()
        try:
            port, self.token = self.process.stdout.readline().split()
        finally:
            timer.cancel()
        self.base_url = f"http://127.0.0.1:{port}"
        self.account = self.token  # the path holds the token: only this sink answers 201 there
        stats = self.stats()
        if stats.get("token") != self.token or stats.get("pid") != self.process.pid:
            raise RuntimeError(f"the server on {self.base_url} is not the sink started: {stats}")

    def stats(self) -> dict[str, Any]:
        """What the sink counted (requests, bytes, contacts) since the last reset."""
        if self.kind == "emulator":
            contacts = httpx.get(f"{self.base_url}/_emulator/contacts", timeout=120).json()
            return {"contacts": contacts["count"]}
        answer = httpx.get(f"{self.base_url}/_sink/{self.token}/stats", timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def reset(self) -> None:
        """Forget what was received (the emulator takes seconds for 1M contacts)."""
        path = "/_emulator/reset" if self.kind == "emulator" else f"/_sink/{self.token}/reset"
        httpx.post(f"{self.base_url}{path}", timeout=120).raise_for_status()

    def cpu_seconds(self) -> float:
        """The sink process's CPU time so far."""
        return proc_cpu_seconds(self.process.pid)

    def job_is_ours(self, job: str) -> bool:
        """Whether a job id came from this sink (the emulator's carry no token)."""
        return job.startswith(f"{self.token}-") if self.token else True

    def stop(self) -> None:
        """SIGTERM, and wait."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def threads_cpu() -> dict[str, float]:
    """CPU seconds of each living thread of this process, by thread name."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[thread.name] = (int(fields[11]) + int(fields[12])) / ticks
    return found


# CPU seconds of each thread during the last real side (the store's threads end with it).
THREADS_CPU: dict[str, float] = {}


async def flush_real(path: Path, sink: Sink) -> tuple[float, float]:
    """Seconds and CPU seconds for the real Flusher to empty the outbox."""
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 -- once, before the clock starts
        configure_logging("info", devnull)  # JSON lines, as the daemon logs under systemd
        store = await Store.open(path)
        config = ProviderConfig(name="crm", kind="crm", base_url=sink.base_url)
        options = crm_options({"account_id": sink.account})
        provider = CrmProvider("crm", sink.base_url, options, TOKEN, 60, None)
        provider.attach_collections({"contacts": TIMESTAMP})  # as the daemon does
        async with provider:
            flusher = Flusher(store, config, provider)
            threads_before = threads_cpu()
            started, cpu_started = time.perf_counter(), time.process_time()
            while await flusher.flush_once():
                pass
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            THREADS_CPU.clear()
            names = {threading.main_thread().name: "event loop"}
            for label, connection in (("store writer", store.db), ("store reader", store._reader)):
                thread = getattr(connection, "_thread", None)  # aiosqlite's worker thread
                if thread is not None:
                    names[thread.name] = label
            for name, seconds in threads_cpu().items():
                label = names.get(name, name)
                THREADS_CPU[label] = seconds - threads_before.get(name, 0.0)
        async with store.read() as db:
            left = await outbox.pending_count(db, "crm")
            jobs = await db.execute_fetchall(
                "SELECT remote_ref FROM deliveries WHERE provider = 'crm' AND state = 'accepted'"
            )
        await store.close()
    assert left == 0, f"{left} entries left"
    foreign = [job for (job,) in jobs if not sink.job_is_ours(str(job))]
    assert not foreign, f"job ids not from the sink started: {foreign[:3]}"
    return elapsed, cpu


async def flush_reference(bodies: list[bytes], sink: Sink) -> tuple[float, float]:
    """Seconds and CPU seconds for a bare httpx loop to send the same requests."""
    headers = {
        "Authorization": f"Token token={TOKEN}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    path = f"/account/{sink.account}/sync_data"
    async with httpx.AsyncClient(base_url=sink.base_url, timeout=60) as client:
        started, cpu_started = time.perf_counter(), time.process_time()
        for number, body in enumerate(bodies):
            response = await client.post(
                path, content=body, headers={**headers, "Idempotency-Key": f"r{number}"}
            )
            if response.status_code != 201 or not sink.job_is_ours(response.json()["_id"]):
                raise RuntimeError(f"unexpected answer: {response.status_code} {response.text}")
        cpu = time.process_time() - cpu_started
        return time.perf_counter() - started, cpu


def spread(values: list[float], digits: int) -> dict[str, Any]:
    """Median and range of ``values``, rounded."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def main() -> None:
    """Build, run both sides, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    parser.add_argument("--sink", choices=("minimal", "emulator"), default="minimal")
    parser.add_argument(
        "--sides",
        choices=("both", "real", "reference"),
        default="both",
        help="run one side only (to profile it: py-spy record -- python bench/flush.py ...)",
    )
    args = parser.parse_args()
    tune_garbage_collector()  # as the daemon does at start; the reference runs under it too
    sides = ("reference", "real") if args.sides == "both" else (args.sides,)
    requests = -(-args.records // 1000)
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    sink_cpu: dict[str, list[float]] = {side: [] for side in sides}
    received: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    threads_used: dict[str, list[float]] = {}
    sink = Sink(args.sink)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(args.rounds):
                path = Path(tmp) / f"flush{number}.db"
                build_store(path, args.records)
                bodies = reference_bodies(path) if "reference" in sides else []
                for side in sides if number % 2 == 0 else sides[::-1]:
                    sink.reset()
                    sink_started = sink.cpu_seconds()
                    if side == "reference":
                        elapsed, used = asyncio.run(flush_reference(bodies, sink))
                    else:
                        elapsed, used = anyio.run(flush_real, path, sink)
                        for name, spent in THREADS_CPU.items():
                            threads_used.setdefault(name, []).append(spent)
                    sink_cpu[side].append(sink.cpu_seconds() - sink_started)
                    seconds[side].append(elapsed)
                    cpu[side].append(used)
                    received[side].append(sink.stats())
                del bodies
                for leftover in Path(tmp).glob(f"flush{number}.db*"):
                    leftover.unlink()
    finally:
        sink.stop()
    for side in sides:
        for got in received[side]:
            assert got["contacts"] == args.records, f"{side}: the sink received {got}"
            if args.sink == "minimal":
                assert got["requests"] == requests, f"{side}: the sink received {got}"
    if args.sink == "minimal" and len(sides) == 2:
        sizes = {got["bytes"] for side in sides for got in received[side]}
        assert len(sizes) == 1, f"the two sides sent different bodies: {sizes} bytes"
    result: dict[str, Any] = {
        "bench": "flush",
        "sink": args.sink,
        "records": args.records,
        "requests": requests,
        "rounds": args.rounds,
    }
    figures: dict[str, dict[str, list[float]]] = {}
    for side in sides:
        rates = [args.records / s for s in seconds[side]]
        per_request = [c * 1000 / requests for c in cpu[side]]
        sink_per_request = [c * 1000 / requests for c in sink_cpu[side]]
        figures[side] = {"rate": rates, "cpu": per_request}
        prefix = "" if side == "real" else "reference_"
        result[f"{prefix}records_per_s"] = spread(rates, 0)
        result[f"{prefix}cpu_ms_per_request"] = spread(per_request, 2)
        result[f"{prefix}records_per_s_each"] = [round(r) for r in rates]
        result[f"{prefix}cpu_ms_per_request_each"] = [round(c, 2) for c in per_request]
        result[f"{prefix}sink_cpu_ms_per_request"] = spread(sink_per_request, 3)
    if threads_used:
        result["cpu_ms_per_request_by_thread"] = {
            name: round(statistics.median(spent) * 1000 / requests, 2)
            for name, spent in threads_used.items()
        }
    if len(sides) == 2:
        # Each round's real figure against the same round's reference.
        real, ref = figures["real"], figures["reference"]
        ratios = [r / f for r, f in zip(real["rate"], ref["rate"], strict=True)]
        cpu_ratios = [r / f for r, f in zip(real["cpu"], ref["cpu"], strict=True)]
        result["ratio"] = spread(ratios, 3)
        result["cpu_ratio"] = spread(cpu_ratios, 2)
        result["targets"] = {"cpu_ratio": 2.0, "ratio": 0.8}
        result["met"] = {
            "cpu_ratio": statistics.median(cpu_ratios) <= 2.0,
            "ratio": statistics.median(ratios) >= 0.8,
        }
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    emit(result)


if __name__ == "__main__":
    main()
