"""Names and places that become paths, against the daemon as a subprocess: a provider name
that would make its spool folder somewhere else, and a store inside the drop folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.e2e.drop_support import contacts
from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e


def refused(daemon: DaemonProcess) -> str:
    """Start the daemon, which must exit 2 before it is ready; the error that ended it."""
    daemon.spawn()
    assert daemon.process is not None
    try:
        code = daemon.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("started: " + daemon.log_path.read_text()[-2000:]) from None
    output = daemon.log_path.read_text()
    assert code == 2, output
    [fatal] = [e for e in daemon.events() if e.get("event") == "fatal_error"]
    return str(fatal["error"])


def test_a_churn_provider_named_dot_dot_is_refused_and_nothing_beside_the_store_goes(
    tmp_path: Path,
) -> None:
    home = tmp_path / "state"
    (home / "drop/users").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    config = f"""
[store]
path = "{home / "store.db"}"
[drop]
path = "{home / "drop"}"
[collections.users]
key = "data.id"
timestamp = "updatedAt"
providers = [".."]
[providers.".."]
kind = "churn"
base_url = "http://127.0.0.1:9"
secret_env = "HOME"
brand_id = 15
"""
    for _ in range(2):  # the second start was the one that removed the store's folder
        daemon = DaemonProcess(tmp_path, config)
        try:
            output = refused(daemon)
        finally:
            daemon.close()
        assert 'providers."..": 1 to 64 of A-Z a-z 0-9 _ . -' in output
    assert (home / "notes.txt").read_text() == "mine" and (home / "drop/users").is_dir()


def store_config(tmp_path: Path, store: Path, drop: Path | None = None) -> str:
    return f"""
[store]
path = "{store}"
[drop]
path = "{drop or tmp_path / "drop"}"
settle_ms = 20
[collections.contacts]
key = "email"
timestamp = "updated_at"
"""


@pytest.mark.parametrize(
    "place", ["drop/contacts/x.db", "drop/x.db", "drop/contacts/.done/x.db", "link/x.db"]
)
def test_a_store_inside_the_drop_folder_is_refused_naming_store_path(
    tmp_path: Path, place: str
) -> None:
    drop = tmp_path / "drop"
    (drop / "contacts").mkdir(parents=True)
    (tmp_path / "link").symlink_to(drop / "contacts")  # the same folder by another name
    store = tmp_path / place
    daemon = DaemonProcess(tmp_path, store_config(tmp_path, store))
    try:
        output = refused(daemon)
    finally:
        daemon.close()
    assert "store.path: the store would be" in output and "inside the drop folder" in output
    assert not store.exists() and not (drop / "contacts/.quarantine").exists()
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "check-config",
            "--config",
            str(daemon.config_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 2 and "store.path" in check.stderr


def test_a_drop_folder_inside_the_stores_spool_is_refused_naming_drop_path(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s.db"
    daemon = DaemonProcess(
        tmp_path, store_config(tmp_path, store, drop=tmp_path / ".s.db.spool/drop")
    )
    try:
        output = refused(daemon)
    finally:
        daemon.close()
    assert "drop.path: the drop folder" in output and "spool folder" in output


def test_a_collection_folder_that_is_a_link_is_never_read_nor_emptied(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.json").write_bytes(contacts(2))
    drop = tmp_path / "drop"
    (drop / "contacts").mkdir(parents=True)
    (drop / "linked").symlink_to(outside)
    daemon = DaemonProcess(tmp_path, store_config(tmp_path, tmp_path / "s.db"))
    try:
        daemon.start()
        (drop / "contacts/b.json").write_bytes(contacts(1, 10))
        wait_until(lambda: query(tmp_path / "s.db", "SELECT 1 FROM files WHERE status = 'done'"))
        assert sorted(os.listdir(outside)) == ["a.json"]
        assert orjson.loads((outside / "a.json").read_bytes())[0]["email"] == "u0@example.com"
        assert query(tmp_path / "s.db", "SELECT collection, name FROM files") == [
            ("contacts", "b.json")
        ]
        assert daemon.stop() == 0
    finally:
        daemon.close()
