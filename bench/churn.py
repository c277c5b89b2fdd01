"""Bench: 2.5 GB of pending churn rows go out as files, streamed, under the memory cap.

``python -m bench.churn --gb 2.5`` fills a store with ~1 KB churn envelopes until their
bodies add up to ``--gb`` GB, all pending for a churn provider, starts the churn
emulator (sink mode: files are received and counted, python-multipart parses the
form) as its own process and the daemon (``dropsync run``) as another, and
measures

* the daemon: its peak RSS (``VmHWM``, the kernel's high-water mark, read while it
  still runs), the files it sent (all under ``--file-mb``), the upload's rate;
* the reference: a bare streaming httpx client posting the same bytes (the same
  files, written by the bench beforehand) as one multipart upload to the same
  emulator, in the same run.

Rates are bytes over the time the emulator took to receive and parse each upload
(the same measurement for both), plus each client's own view (request start to
response). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, free_port, migrate, start_dropsync

TOKEN = "bench-churn-token"
CALLBACK_SECRET = "bench-churn-callback"
PAD = 560  # bodies of about 800 bytes: records rows stay clear of overflow pages


def build_store(path: Path, gb: float) -> tuple[int, int]:
    """Records with ~1 KB bodies adding up to ``gb`` GB, all pending for ``churn``."""
    migrate(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA journal_mode = WAL")
    body_sql = (
        'printf(\'{"createdAt":1696814606000,"data":{"city":"Limassol","email":'
        '"user%d@example.com","firstName":"John","id":%d,"lastName":"Doe",'
        f'"notes":"%s","phone":"+381638538392"}},"updatedAt":%d}}\', i, i, '
        f"'{'x' * PAD}', 1696821819000 + i)"
    )
    one = len(db.execute(f"SELECT {body_sql} FROM (SELECT 0 AS i)").fetchone()[0])
    rows = int(gb * 1e9 / one)
    step = 200_000
    for start in range(0, rows, step):
        db.execute("BEGIN")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
            "INSERT INTO records (collection, key, body, updated_at, deleted, origin, digest, "
            f"merged_at) SELECT 'users', CAST(i AS TEXT), {body_sql}, 1696821819000 + i, 0, "
            "'drop', printf('%032x', i), 0 FROM n",
            (start, min(start + step, rows)),
        )
        db.execute("COMMIT")
    db.execute("INSERT INTO providers (name, kind, updated_at) VALUES ('churn', 'churn', 0)")
    db.execute(
        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
        "SELECT 'churn', collection, key, updated_at, 1700000000000 FROM records "
        "ORDER BY updated_at"
    )
    total = db.execute("SELECT SUM(length(body)) FROM records").fetchone()[0]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return rows, int(total)


def write_reference(store: Path, folder: Path, cap: int) -> list[Path]:
    """The files the daemon will write, written by the bench (same order, same cap rule)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    files: list[Path] = []
    out = None
    size = items = 0
    for (body,) in db.execute(
        "SELECT r.body FROM outbox o JOIN records r ON r.collection = o.collection "
        "AND r.key = o.key ORDER BY o.id"
    ):
        document = body.encode()
        if out is None or (items and size + len(document) + 2 + 1 > cap):
            if out is not None:
                out.write(b"]")
                out.close()
            files.append(folder / f"reference-{len(files) + 1:04d}.json")
            out = files[-1].open("wb", buffering=1 << 20)
            out.write(b"[")
            size, items = 1, 0
        if items:
            out.write(b",\n")
            size += 2
        out.write(document)
        size += len(document)
        items += 1
    if out is not None:
        out.write(b"]")
        out.close()
    db.close()
    return files


async def bare_upload(base_url: str, files: list[Path]) -> float:
    """The reference: one streamed multipart POST of ``files``; returns its seconds."""
    boundary = "bench-boundary-7d1f"
    meta = json.dumps([{"brandId": 15, "tableName": "user"}] * len(files)).encode()
    heads = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{path.name}"\r\nContent-Type: application/json\r\n\r\n'
        ).encode()
        for path in files
    ]
    data_head = f'--{boundary}\r\nContent-Disposition: form-data; name="data"\r\n\r\n'.encode()
    tail = f"--{boundary}--\r\n".encode()
    length = len(data_head) + len(meta) + 2 + len(tail)
    length += sum(len(h) + p.stat().st_size + 2 for h, p in zip(heads, files, strict=True))

    async def body() -> AsyncIterator[bytes]:
        yield data_head + meta + b"\r\n"
        for head, path in zip(heads, files, strict=True):
            yield head
            async with await anyio.open_file(path, "rb") as handle:
                while chunk := await handle.read(1 << 20):
                    yield chunk
            yield b"\r\n"
        yield tail

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None, write=None)) as client:
        response = await client.post(
            f"{base_url}/client-files",
            content=body(),
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(length),
            },
        )
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"reference upload: {response.status_code} {response.text[:200]}")
    return seconds


def serve_emulator(port: int) -> None:
    """The churn emulator in sink mode, until killed (run as its own process)."""
    from dropsync.adapters.churn.emulator import ChurnEmulator
    from dropsync.adapters.emulators.common import EmulatorServer

    with EmulatorServer(ChurnEmulator(TOKEN, CALLBACK_SECRET, sink=True), port=port):
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def rss_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory figure in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=2.5)
    parser.add_argument("--file-mb", type=float, default=1024)
    parser.add_argument("--batch-items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1, help="daemon uploads (references: +1)")
    parser.add_argument("--serve-emulator", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        serve_emulator(args.serve_emulator)
        return
    work = Path(tempfile.mkdtemp(prefix="dropsync-churn-bench-"))
    emulator = daemon = None
    try:
        store = work / "store.db"
        started = time.perf_counter()
        rows, body_bytes = build_store(store, args.gb)
        build_s = time.perf_counter() - started
        cap = int(args.file_mb * (1 << 20))
        reference = write_reference(store, work / "reference", cap)
        port = free_port()
        emulator = subprocess.Popen(
            [sys.executable, "-m", "bench.churn", "--serve-emulator", str(port)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/_emulator/state", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        references: list[dict[str, float]] = []

        def reference_round() -> None:
            client_s = anyio.run(bare_upload, base_url, reference)
            upload = httpx.get(f"{base_url}/_emulator/uploads", timeout=30).json()[-1]
            references.append(
                {
                    "mb_s": upload["bytes"] / upload["seconds"] / 1e6,
                    "client_mb_s": upload["bytes"] / client_s / 1e6,
                    "file_bytes": sum(f["bytes"] for f in upload["files"]),
                }
            )

        reference_round()
        config = work / "dropsync.toml"
        config.write_text(
            f"""
[store]
path = "{store}"
[drop]
path = "{work / "drop"}"
[collections.users]
key = "data.id"
timestamp = "updatedAt"
providers = ["churn"]
[providers.churn]
kind = "churn"
base_url = "{base_url}"
secret_env = "CHURN_TOKEN"
tables = {{ users = "user" }}
brand_id = 15
max_file_mb = {args.file_mb}
batch_max_items = {args.batch_items}
timeout_s = 120
"""
        )
        env = {"CHURN_TOKEN": TOKEN}
        for item in os.environ.get("BENCH_DAEMON_ENV", "").split():  # e.g. MALLOC_ARENA_MAX=2
            name, _, value = item.partition("=")
            env[name] = value
        daemon, _ = start_dropsync(config, work / "daemon.log", env=env)
        kinds = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        rounds: list[dict[str, Any]] = []
        for number in range(args.rounds):
            started = time.perf_counter()
            if number:  # everything pending again: the bench writes the fixture, as before
                # In short transactions: the daemon's writes wait at most 5 s for the lock.
                db = sqlite3.connect(store, timeout=60, isolation_level=None)
                for low in range(0, rows, 50_000):
                    db.execute(
                        "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
                        "SELECT 'churn', collection, key, updated_at, 1700000000000 "
                        "FROM records WHERE updated_at >= ? AND updated_at < ? "
                        "ORDER BY updated_at",
                        (1696821819000 + low, 1696821819000 + low + 50_000),
                    )
                db.close()
            while True:
                for kind, peak in kinds.items():
                    kinds[kind] = max(peak, rss_kb(daemon.pid, kind))
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30) as db:
                    pending = db.execute(
                        "SELECT pending FROM pending_by_provider WHERE provider = 'churn'"
                    ).fetchone()[0]
                    delivered = db.execute(
                        "SELECT items, latency_ms FROM deliveries WHERE state = 'accepted' "
                        "ORDER BY id"
                    ).fetchall()
                if pending == 0 and len(delivered) > number:
                    break
                if daemon.poll() is not None:
                    raise RuntimeError((work / "daemon.log").read_text()[-3000:])
                time.sleep(0.2)
            upload = httpx.get(f"{base_url}/_emulator/uploads", timeout=30).json()[-1]
            rounds.append(
                {
                    "total_s": time.perf_counter() - started,
                    "mb_s": upload["bytes"] / upload["seconds"] / 1e6,
                    "client_mb_s": upload["bytes"] / (delivered[-1][1] / 1000) / 1e6,
                    "files": [f["bytes"] for f in upload["files"]],
                    "upload_bytes": upload["bytes"],
                }
            )
            reference_round()
        peak_kb = rss_kb(daemon.pid, "VmHWM")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        ours = statistics.median(r["mb_s"] for r in rounds)
        theirs = statistics.median(r["mb_s"] for r in references)
        sent_files = rounds[0]["files"]
        emit(
            {
                "rows": rows,
                "body_gb": round(body_bytes / 1e9, 3),
                "build_store_s": round(build_s, 1),
                "file_cap_mb": args.file_mb,
                "files": len(sent_files),
                "largest_file_mb": round(max(sent_files) / (1 << 20), 1),
                "all_under_cap": all(size <= cap for r in rounds for size in r["files"]),
                "same_file_bytes_as_reference": all(
                    sum(r["files"]) == ref["file_bytes"] for r in rounds for ref in references
                ),
                "upload_gb": round(rounds[0]["upload_bytes"] / 1e9, 3),
                "daemon_round_s": [round(r["total_s"], 1) for r in rounds],
                "daemon_peak_rss_mb": round(peak_kb / 1024, 1),
                "daemon_rss_peaks_by_kind_mb": {k: round(v / 1024, 1) for k, v in kinds.items()},
                "daemon_upload_mb_s": [round(r["mb_s"], 1) for r in rounds],
                "reference_upload_mb_s": [round(r["mb_s"], 1) for r in references],
                "ratio_of_medians": round(ours / theirs, 3),
                "daemon_client_view_mb_s": [round(r["client_mb_s"], 1) for r in rounds],
                "reference_client_view_mb_s": [round(r["client_mb_s"], 1) for r in references],
            }
        )
    finally:
        for process in (daemon, emulator):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if os.environ.get("KEEP_BENCH") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
