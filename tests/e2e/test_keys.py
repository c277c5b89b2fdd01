"""Keys as bytes the user chose, through the running daemon (docs/schema.md, "Keys").

A key holding U+0000 is refused with the reason (a drop document in its receipt, an inbox
row ``rejected``); every other key (control characters, DEL, a line break, 4-byte UTF-8)
goes byte for byte through the drop folder and the inbox, last-write-wins, the outbox, the
delivery to a provider, ``delivered`` and ``dropsync why``. A lone surrogate is not text and
is refused.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer

from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these
TS = 1_700_000_000_000
# Every one must arrive at the CRM as it was given (the emulator wants an "@").
KEYS = [
    "ctl\x01@x.com",
    "us\x1f@x.com",
    "del\x7f@x.com",
    "line\nbreak@x.com",
    "tab\t@x.com",
    'quote"back\\slash@x.com',
    "emoji\U0001f600@x.com",
    "sep\u2028@x.com",
    "bom\ufeff@x.com",
]
NUL = "d\x00rop@x.com"


def config_text(tmp_path: Path, base_url: str) -> str:
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
settle_ms = 10
[daemon]
inbox_poll_s = 0.1
[collections.contacts]
key = "email"
timestamp = "updated_at"
providers = ["crm"]
[providers.crm]
kind = "crm"
base_url = "{base_url}"
account_id = "acc_1"
secret_env = "CRM_TOKEN"
backoff_base_s = 0.05
backoff_cap_s = 0.5
"""


def drop_ndjson(folder: Path, name: str, documents: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = b"".join(orjson.dumps(d) + b"\n" for d in documents)
    (folder / f".{name}").write_bytes(text)
    (folder / f".{name}").rename(folder / name)


def filed(db: Path, name: str) -> str | None:
    rows = query(db, "SELECT status FROM files WHERE name = ?", (name,))
    return rows[0][0] if rows and rows[0][0] != "processing" else None


def insert(db: Path, rows: list[tuple[object, ...]]) -> None:
    raw = sqlite3.connect(db, timeout=10)
    try:
        raw.executemany(
            "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        raw.commit()
    finally:
        raw.close()


def inbox_done(db: Path) -> bool:
    return not query(db, "SELECT 1 FROM inbox WHERE status = 'pending'")


def why(tmp_path: Path, key: str) -> dict[str, Any]:
    config = str(tmp_path / "dropsync.toml")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "why",
            "contacts",
            key,
            "--json",
            "--config",
            config,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_keys_round_trip_byte_for_byte_and_a_nul_is_refused(tmp_path: Path) -> None:
    emulator = CrmEmulator({"acc_1": "crm-token"})
    db = tmp_path / "store.db"
    folder = tmp_path / "drop/contacts"
    files = [f"file-{k}" for k in KEYS]
    sqls = [f"sql-{k}" for k in KEYS]
    with EmulatorServer(emulator) as server:
        daemon = DaemonProcess(
            tmp_path, config_text(tmp_path, server.base_url), env={"CRM_TOKEN": "crm-token"}
        )
        try:
            daemon.start()
            # The newer version of each key first, the older one second: the older must lose.
            drop_ndjson(
                folder,
                "new.ndjson",
                [{"email": k, "updated_at": TS + 2000, "v": "NEW"} for k in [*files, NUL]],
            )
            wait_until(lambda: filed(db, "new.ndjson"), what="new.ndjson filed")
            insert(
                db,
                [
                    ("contacts", k, "upsert", orjson.dumps({"email": k, "v": "NEW"}), TS + 2000)
                    for k in [*sqls, NUL]
                ],
            )
            wait_until(lambda: inbox_done(db), what="the newer inbox rows processed")
            drop_ndjson(
                folder,
                "old.ndjson",
                [{"email": k, "updated_at": TS + 1000, "v": "OLD"} for k in [*files, NUL]],
            )
            wait_until(lambda: filed(db, "old.ndjson"), what="old.ndjson filed")
            insert(
                db,
                [
                    ("contacts", k, "upsert", orjson.dumps({"email": k, "v": "OLD"}), TS + 1000)
                    for k in [*sqls, NUL]
                ]
                + [("con\x00tacts", "x@x.com", "upsert", '{"email": "x@x.com"}', TS)],
            )
            wait_until(lambda: inbox_done(db), what="the older inbox rows processed")
            wanted = {*files, *sqls}
            wait_until(
                lambda: not query(db, "SELECT 1 FROM outbox") and len(emulator.contacts) == 18,
                what="every key delivered",
            )
            assert daemon.process is not None and daemon.process.poll() is None
            assert daemon.stop() == 0
        finally:
            daemon.close()
    # The store holds each key exactly, at its newer version; no key was cut at a NUL.
    records = {
        bytes(k).decode(): orjson.loads(b)
        for k, b in query(db, "SELECT CAST(key AS BLOB), body FROM records")
    }
    assert set(records) == wanted
    assert all(body["v"] == "NEW" for body in records.values())
    # The provider got every key, at its newer version; delivered names each exactly.
    assert {k: c["v"] for k, c in emulator.contacts.items()} == dict.fromkeys(wanted, "NEW")
    delivered = {bytes(k).decode() for (k,) in query(db, "SELECT CAST(key AS BLOB) FROM delivered")}
    assert delivered == wanted
    # The NUL key was refused at each door, with the reason.
    for name in ("new.ndjson", "old.ndjson"):
        receipt = orjson.loads((folder / ".quarantine" / f"{name}.error.json").read_bytes())
        assert receipt["rejected"] == 1 and receipt["applied"] == len(KEYS) * (name == "new.ndjson")
        (error,) = receipt["errors"]
        assert error["index"] == len(KEYS) and "U+0000" in error["reason"], error
    rejected = query(
        db, "SELECT CAST(collection AS BLOB), reason FROM inbox WHERE status = 'rejected'"
    )
    assert len(rejected) == 3
    assert all("U+0000" in reason for _, reason in rejected), rejected
    assert bytes(rejected[-1][0]) == b"con\x00tacts" and rejected[-1][1].startswith("collection")
    # `why` finds each key as given, and shows the older version losing.
    for key in ("file-line\nbreak@x.com", "sql-emoji\U0001f600@x.com", "file-ctl\x01@x.com"):
        report = why(tmp_path, key)
        assert report["key"] == key and report["current"]["updated_at"] == TS + 2000
        assert [v["updated_at"] for v in report["versions"]] == [TS + 2000, TS + 1000]


def test_a_lone_surrogate_in_a_key_is_refused_at_both_doors(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    folder = tmp_path / "drop/contacts"
    text = config_text(tmp_path, "http://127.0.0.1:9").split('providers = ["crm"]')[0]
    daemon = DaemonProcess(tmp_path, text)
    try:
        daemon.start()
        folder.mkdir(parents=True)
        (folder / ".k.ndjson").write_bytes(
            b'{"email": "lone\\ud800@x.com", "updated_at": %d}\n'
            b'{"email": "pair\\ud83d\\ude00@x.com", "updated_at": %d}\n' % (TS, TS)
        )
        (folder / ".k.ndjson").rename(folder / "k.ndjson")
        wait_until(lambda: filed(db, "k.ndjson"), what="k.ndjson filed")
        raw = sqlite3.connect(db, timeout=10)
        raw.execute(
            "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES "
            f"('contacts', CAST(X'6CEDA080' AS TEXT), 'upsert', '{{}}', {TS}), "
            f"('contacts', 'sql-pair\U0001f600', 'upsert', '{{}}', {TS})"
        )
        raw.commit()
        raw.close()
        wait_until(lambda: inbox_done(db), what="the inbox rows processed")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    receipt = orjson.loads((folder / ".quarantine/k.ndjson.error.json").read_bytes())
    (error,) = receipt["errors"]
    assert error["index"] == 0 and "surrogate" in error["reason"]
    rows = query(db, "SELECT status, reason FROM inbox WHERE origin = 'sql' ORDER BY id")
    assert rows[0][0] == "rejected" and rows[0][1].startswith("key is not valid UTF-8")
    assert rows[1] == ("applied", None)
    keys = {k for (k,) in query(db, "SELECT key FROM records")}
    assert keys == {"pair\U0001f600@x.com", "sql-pair\U0001f600"}
