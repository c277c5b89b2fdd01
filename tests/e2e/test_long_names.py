"""Long file names against the daemon as a subprocess: every file is filed, its receipt
written, its documents applied; the ledger keeps the name as dropped."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from tests.e2e.drop_support import drop_config, errors
from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e

NAME_MAX = 255
RECEIPT = ".error.json"


def drop(folder: Path, name: str, documents: object) -> None:
    """Write under a hidden name (a long name has no room for ``.tmp``), then rename."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".incoming").write_bytes(orjson.dumps(documents))
    os.rename(folder / ".incoming", folder / name)


def names_in(folder: Path) -> list[str]:
    """The names in ``folder``, each checked to be whole UTF-8 (never cut inside a character)."""
    return sorted(raw.decode("utf-8") for raw in os.listdir(os.fsencode(folder)))


def settled(db: Path, count: int) -> bool:
    rows = query(db, "SELECT status FROM files")
    return len(rows) == count and all(status != "processing" for (status,) in rows)


def good(key: str) -> dict[str, object]:
    return {"email": key, "updated_at": 1_700_000_000_000}


BAD = {"email": "bad@x", "updated_at": "not a time"}


def test_long_names_are_filed_with_their_receipts_and_never_wedge(tmp_path: Path) -> None:
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    rejected = "r" * 245 + ".json"  # 250 bytes: its receipt would be 261
    longest = "m" * 250 + ".json"  # 255 bytes, dropped twice: the second would be "-1"
    cjk = "字" * 85  # 255 bytes, no extension: rejected unread, with a receipt
    cjk_json = "字" * 83 + ".json"  # 254 bytes, dropped twice, each with a bad document
    assert [len(n.encode()) for n in (rejected, longest, cjk, cjk_json)] == [250, 255, 255, 254]
    daemon = DaemonProcess(tmp_path, drop_config(tmp_path, rescan_s=0.2))
    try:
        daemon.start()
        drop(folder, rejected, [good("a@x"), BAD])
        wait_until(lambda: settled(db, 1), what="the rejected file filed")
        drop(folder, longest, [good("b@x")])
        wait_until(lambda: settled(db, 2), what="the longest name filed")
        drop(folder, longest, [good("c@x")])
        wait_until(lambda: settled(db, 3), what="the longest name filed again")
        drop(folder, cjk, [good("d@x")])
        wait_until(lambda: settled(db, 4), what="the CJK name filed")
        drop(folder, cjk_json, [good("e@x"), BAD])
        wait_until(lambda: settled(db, 5), what="the CJK .json filed")
        drop(folder, cjk_json, [good("f@x"), BAD])
        wait_until(lambda: settled(db, 6), what="the CJK .json filed again")
        assert errors(daemon) == []
        assert [e for e in daemon.events() if e.get("event") == "ingest_failed"] == []
        assert daemon.stop() == 0
    finally:
        daemon.close()
    rows = query(db, "SELECT name, status, path FROM files ORDER BY id")
    # The ledger keeps each name as dropped.
    assert [(name, status) for name, status, _ in rows] == [
        (rejected, "quarantined"),
        (longest, "done"),
        (longest, "done"),
        (cjk, "quarantined"),
        (cjk_json, "quarantined"),
        (cjk_json, "quarantined"),
    ]
    # Every document of every file was applied, but the rejected ones.
    assert query(db, "SELECT key FROM records ORDER BY key") == [
        (k,) for k in ("a@x", "b@x", "c@x", "e@x", "f@x")
    ]
    filed = {Path(path).name for _, _, path in rows}
    assert len(filed) == 6  # six files, six names
    done, quarantine = names_in(folder / ".done"), names_in(folder / ".quarantine")
    assert set(done) | {n for n in quarantine if not n.endswith(RECEIPT)} == filed
    for name in [*done, *quarantine]:
        assert len(name.encode()) <= NAME_MAX
    for name in quarantine:
        if not name.endswith(RECEIPT):
            assert name + RECEIPT in quarantine  # each with its receipt
            receipt = orjson.loads((folder / ".quarantine" / (name + RECEIPT)).read_bytes())
            assert receipt["file"] in (rejected, cjk, cjk_json)  # the name as dropped
    # A shortened name keeps its extension and the start of the name.
    assert all(n.endswith(".json") and n.startswith("m" * 100) for n in done)
    files = [n for n in quarantine if not n.endswith(RECEIPT)]
    assert len([n for n in files if n.startswith("字") and n.endswith(".json")]) == 2
    assert names_in(folder / ".processing") == []
