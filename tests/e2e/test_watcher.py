"""The drop-folder watcher against the daemon as a real subprocess: names that are not UTF-8
(the watch reports them as bytes, as any other), entries that cannot be quarantined, and a
drop folder removed and made again while the daemon runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.e2e.drop_support import contacts, drop_config, errors
from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e


def config_text(tmp_path: Path, *, rescan_s: float = 3600.0) -> str:
    # A rescan that never comes within a test: what is found, the watcher found.
    return drop_config(tmp_path, rescan_s=rescan_s)


def drop_raw(folder: bytes, name: bytes, content: bytes) -> None:
    """Write-then-rename a file whose name is bytes (not necessarily UTF-8)."""
    os.makedirs(folder, exist_ok=True)
    temporary = folder + b"/.incoming.part"
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    os.rename(temporary, folder + b"/" + name)


def named(daemon: DaemonProcess, event: str) -> list[dict[str, object]]:
    return [e for e in daemon.events() if e.get("event") == event]


def alive(daemon: DaemonProcess) -> bool:
    assert daemon.process is not None and daemon.process.poll() is None, "the daemon exited"
    return True


def files(db: Path) -> dict[tuple[str, str], str]:
    return {(c, n): s for c, n, s in query(db, "SELECT collection, name, status FROM files")}


def status_text(daemon: DaemonProcess) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "status",
            "--config",
            str(daemon.config_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def test_names_that_are_not_utf8_are_quarantined_escaped_and_never_stop_the_daemon(
    tmp_path: Path,
) -> None:
    db, drop = tmp_path / "store.db", tmp_path / "drop"
    contacts_folder = os.fsencode(drop / "contacts")
    daemon = DaemonProcess(tmp_path, config_text(tmp_path))
    try:
        daemon.start()
        drop_raw(contacts_folder, b"bad\xff.json", contacts(1, 500))
        envelope = orjson.dumps({"data": {"id": 7}, "createdAt": 1, "updatedAt": 1_700_000_000_002})
        drop_raw(os.fsencode(drop) + b"/caf\xe9", b"x.json", envelope)
        drop_raw(contacts_folder, b"good.json", contacts(2))
        wait_until(
            lambda: (
                alive(daemon) and len(files(db)) == 3 and "processing" not in files(db).values()
            ),
            what="all three filed",
        )
        assert files(db) == {
            ("contacts", "bad\\xff.json"): "quarantined",
            ("caf\\xe9", "x.json"): "done",
            ("contacts", "good.json"): "done",
        }
        # Moved unread, under its escaped name; the receipt says what to do.
        assert not os.path.lexists(contacts_folder + b"/bad\xff.json")
        quarantined = drop / "contacts/.quarantine/bad\\xff.json"
        assert quarantined.read_bytes() == contacts(1, 500)
        receipt = orjson.loads(quarantined.with_name("bad\\xff.json.error.json").read_bytes())
        assert receipt["file"] == "bad\\xff.json" and receipt["read"] is False
        assert "not UTF-8" in receipt["error"] and "rename it" in receipt["error"]
        # A collection folder so named gets its escaped name, and its files are ingested.
        assert not os.path.lexists(os.fsencode(drop) + b"/caf\xe9")
        assert (drop / "caf\\xe9/.done/x.json").is_file()
        assert named(daemon, "collection_folder_renamed")[0]["renamed"] == str(drop / "caf\\xe9")
        assert query(db, "SELECT collection, key FROM records ORDER BY key") == [
            ("caf\\xe9", "7"),
            ("contacts", "u0@example.com"),
            ("contacts", "u1@example.com"),
        ]
        # The watch took the names as any other: it never failed.
        assert not named(daemon, "watcher_restarted")
        status_text(daemon)  # answers, with such rows in the ledger
        assert errors(daemon) == []
        assert daemon.stop() == 0

        # Such a name waiting at start: no crash loop, and the files after it are ingested.
        drop_raw(contacts_folder, b"again\xfe\xfe.json", contacts(1, 700))
        daemon.start()
        drop_raw(contacts_folder, b"after.json", contacts(1, 800))
        wait_until(
            lambda: (
                alive(daemon)
                and files(db).get(("contacts", "after.json")) == "done"
                and files(db).get(("contacts", "again\\xfe\\xfe.json")) == "quarantined"
            ),
            what="the file after it ingested",
        )
        assert query(db, "SELECT 1 FROM records WHERE key = 'u800@example.com'") == [(1,)]
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_an_entry_that_cannot_be_moved_is_said_once_and_left_alone(tmp_path: Path) -> None:
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    (folder / ".quarantine").write_bytes(b"")  # a file where the quarantine folder goes
    os.mkfifo(folder / "pipe.json")
    daemon = DaemonProcess(tmp_path, config_text(tmp_path, rescan_s=0.2))
    try:
        daemon.start()
        said = daemon.wait_for("entry_left_in_place")
        assert said["file"] == "pipe.json" and "FIFO" in said["error"]
        assert "remove it from the drop folder" in said["error"]
        for n in range(3):  # meanwhile the rescans (every 0.2 s) find the FIFO again and again
            (folder / f"good{n}.json").write_bytes(contacts(1, n))
            wait_until(
                lambda: files(db).get(("contacts", f"good{n}.json")) == "done",  # noqa: B023
                what="a good file",
            )
        # Said once; no row, no error; the FIFO where it was.
        assert len(named(daemon, "entry_left_in_place")) == 1
        assert ("contacts", "pipe.json") not in files(db)
        assert (folder / "pipe.json").exists()
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_the_drop_folder_removed_and_made_again_is_watched_again(tmp_path: Path) -> None:
    db, drop = tmp_path / "store.db", tmp_path / "drop"
    daemon = DaemonProcess(tmp_path, config_text(tmp_path))
    try:
        daemon.start()
        (drop / "contacts").mkdir()
        (drop / "contacts/first.json").write_bytes(contacts(1))
        wait_until(lambda: files(db).get(("contacts", "first.json")) == "done", what="first")
        shutil.rmtree(drop)
        paused = daemon.wait_for("work_paused", condition="drop folder missing")
        assert str(drop) in paused["error"]
        assert "drop folder missing" in status_text(daemon)
        (drop / "contacts").mkdir(parents=True)
        (drop / "contacts/second.json").write_bytes(contacts(1, 10))
        daemon.wait_for("work_resumed", condition="drop folder missing")
        wait_until(lambda: files(db).get(("contacts", "second.json")) == "done", what="second")
        # The new folder is watched (not only looked at once): a third file is taken too.
        (drop / "contacts/third.json").write_bytes(contacts(1, 20))
        wait_until(lambda: files(db).get(("contacts", "third.json")) == "done", what="third")
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()
