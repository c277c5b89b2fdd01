"""The drop folder against the daemon as a real subprocess: one owner per file, folders that
come and go, entries that are not regular files, and ``dropsync ingest`` beside the daemon."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.store.handle import Store

from tests.e2e.drop_support import contacts, drop_config, errors
from tests.support import DaemonProcess, StoreLockHolder, query, wait_until

pytestmark = pytest.mark.e2e


def config_text(tmp_path: Path, *, rescan_s: float = 30.0, batch: int = 5000) -> str:
    return drop_config(tmp_path, rescan_s=rescan_s, batch=batch)


def settled(db: Path, drop: Path) -> bool:
    """Nothing waits in a collection folder or .processing/, and every row is finished."""
    waiting = [
        p
        for folder in drop.iterdir()
        if folder.is_dir()
        for p in [*folder.glob("*.json"), *(folder / ".processing").glob("*")]
    ]
    return not waiting and query(db, "SELECT 1 FROM files WHERE status = 'processing'") == []


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropsync.daemon.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_recovery_at_start_and_the_watcher_never_share_a_file(tmp_path: Path) -> None:
    db, drop = tmp_path / "store.db", tmp_path / "drop"
    config = config_text(tmp_path, batch=20) + "".join(
        f'[collections.{name}]\nkey = "email"\ntimestamp = "updated_at"\n' for name in "ab"
    )
    daemon = DaemonProcess(tmp_path, config)
    dropped = 0
    try:
        for start in range(3):
            # A backlog at start: files waiting in b/ (the watcher takes them at once), and
            # files a killed claim left in a/.processing/ (recovery's, which takes a while).
            base = 100_000 * start
            for n in range(2):
                (drop / "b").mkdir(parents=True, exist_ok=True)
                (drop / f"b/r{start}-{n}.json").write_bytes(contacts(1500, base + 10_000 * n))
            (drop / "a/.processing").mkdir(parents=True, exist_ok=True)
            for n in range(2):
                orphan = drop / f"a/.processing/k{start}-{n}.json"
                orphan.write_bytes(contacts(1500, base + 50_000 + 10_000 * n))
            dropped += 4
            daemon.start()
            wait_until(lambda: settled(db, drop), what="backlog filed")
            assert daemon.stop() == 0
            assert errors(daemon) == []
        rows = query(db, "SELECT name, status FROM files ORDER BY name")
        assert len(rows) == dropped  # one row per file
        assert {status for _, status in rows} == {"done"}
        assert query(db, "SELECT status, files FROM files_by_status WHERE files > 0") == [
            ("done", dropped)
        ]
        assert query(db, "SELECT COUNT(*) FROM inbox WHERE status = 'duplicate'") == [(0,)]
        assert query(db, "SELECT SUM(docs_applied), SUM(docs_unchanged) FROM files") == [
            (1500 * dropped, 0)
        ]
    finally:
        daemon.close()


def test_collection_folders_that_come_and_go_never_stop_the_daemon(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    daemon = DaemonProcess(tmp_path, config_text(tmp_path, rescan_s=0.1))
    stop = threading.Event()

    def churn() -> None:
        flicker, plain = drop / "x", drop / "y"
        while not stop.is_set():
            for _ in range(50):
                try:
                    flicker.mkdir()
                    (flicker / "f.json").write_bytes(b"{}")
                    (flicker / "f.json").unlink()
                    flicker.rmdir()
                    plain.write_bytes(b"")  # a file where a folder was a moment ago
                    plain.unlink()
                    plain.mkdir()
                    plain.rmdir()
                except OSError:
                    pass

    try:
        daemon.start()
        thread = threading.Thread(target=churn)
        thread.start()
        try:
            # Long enough for many rescans and watcher events to meet a vanishing folder.
            for _ in range(3):
                daemon.wait_for("daemon_ready")
                wait_until(lambda: daemon.process is not None and daemon.process.poll() is None)
                threading.Event().wait(1.0)
        finally:
            stop.set()
            thread.join()
        (drop / "contacts").mkdir(exist_ok=True)
        (drop / "contacts/after.json").write_bytes(contacts(3))
        wait_until(
            lambda: query(tmp_path / "store.db", "SELECT 1 FROM files WHERE status = 'done'")
        )
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        stop.set()
        daemon.close()


def test_links_fifos_sockets_and_folders_are_quarantined_unread(tmp_path: Path) -> None:
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    outside = tmp_path / "secret.json"
    outside.write_bytes(contacts(2, 900))
    (folder / "link.json").symlink_to(outside)
    (folder / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    os.mkfifo(folder / "pipe.json")
    (folder / "dir.json").mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "sock.json"))
    (folder / "good.json").write_bytes(contacts(2))
    daemon = DaemonProcess(tmp_path, config_text(tmp_path))
    try:
        daemon.start()
        wait_until(
            lambda: query(db, "SELECT COUNT(*) FROM files WHERE status != 'processing'") == [(6,)],
            what="every entry filed",
        )
        rows = dict(query(db, "SELECT name, status FROM files"))
        assert rows == {
            "good.json": "done",
            "link.json": "quarantined",
            "dangling.json": "quarantined",
            "pipe.json": "quarantined",
            "dir.json": "quarantined",
            "sock.json": "quarantined",
        }
        quarantine = folder / ".quarantine"
        assert (quarantine / "link.json").is_symlink()  # the link itself was moved
        assert os.readlink(quarantine / "link.json") == str(outside)
        receipt = orjson.loads((quarantine / "link.json.error.json").read_bytes())
        assert "symbolic link" in receipt["error"] and receipt["read"] is False
        assert "FIFO" in orjson.loads((quarantine / "pipe.json.error.json").read_bytes())["error"]
        assert (quarantine / "dir.json").is_dir()
        # Nothing outside the drop folder was read.
        assert query(db, "SELECT key FROM records ORDER BY key") == [
            ("u0@example.com",),
            ("u1@example.com",),
        ]
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        listener.close()
        daemon.close()


def test_ingest_beside_the_daemon_gets_its_own_row_and_says_what_the_daemon_took(
    tmp_path: Path,
) -> None:
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    content = contacts(20_000)
    daemon = DaemonProcess(tmp_path, config_text(tmp_path, batch=100))
    try:
        daemon.start()
        (folder / "a.json.tmp").write_bytes(content)
        (folder / "a.json.tmp").rename(folder / "a.json")
        wait_until(
            lambda: query(db, "SELECT 1 FROM files WHERE status = 'processing' AND docs_seen > 0"),
            what="the daemon is ingesting a.json",
        )
        # The same content, ingested by the command while the daemon works on a.json.
        (folder / "b.json.tmp").write_bytes(content)
        (folder / "b.json.tmp").rename(folder / "b.json")
        result = cli(daemon.config_path, "ingest", str(folder / "b.json"))
        assert result.returncode == 0, result.stderr
        wait_until(lambda: settled(db, tmp_path / "drop"), what="both filed")
        rows = query(db, "SELECT id, name, status, duplicate_of, path FROM files ORDER BY id")
        assert [(name, status) for _, name, status, _, _ in rows] == [
            ("a.json", "done"),
            ("b.json", "done"),
        ]
        assert rows[0][4] == str(folder / ".done/a.json")
        assert rows[1][4] == str(folder / ".done/b.json")
        counts = query(db, "SELECT docs_applied, docs_unchanged FROM files ORDER BY id")
        if rows[1][3] is None:
            # b hashed while a was still being ingested: b is ingested itself (a might yet
            # end without having applied all of it). Between them, each document once.
            assert [applied + unchanged for applied, unchanged in counts] == [20_000, 20_000]
            assert sum(applied for applied, _ in counts) == 20_000
        else:  # a was done first: b is its duplicate, nothing applied twice
            assert rows[1][3] == rows[0][0]
            assert counts == [(20_000, 0), (0, 0)]

        # A file the daemon took first: the command says so, and where it went.
        (folder / "c.json").write_bytes(contacts(1, 50_000))
        wait_until((folder / ".done/c.json").exists, what="c.json filed")
        result = cli(daemon.config_path, "ingest", str(folder / "c.json"))
        assert result.returncode == 0
        assert "taken by the running daemon" in result.stderr
        assert str(folder / ".done/c.json") in result.stderr
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()


def create_store(path: Path) -> None:
    """Create the store at ``path`` as ``dropsync run`` would."""

    async def create() -> None:
        async with await Store.open(path):
            pass

    anyio.run(create)


def test_two_ingests_of_the_same_path_at_once_never_share_a_row(tmp_path: Path) -> None:
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    config = tmp_path / "dropsync.toml"
    config.write_text(config_text(tmp_path))
    cli(config, "check-config")
    create_store(db)  # only `run` creates a store; `ingest` needs one
    for round_ in range(3):
        path = folder / f"same-{round_}.json"
        path.write_bytes(contacts(3000, 10_000 * round_))
        command = [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "ingest",
            str(path),
            "--config",
            str(config),
        ]
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        outputs = [first.communicate(timeout=60), second.communicate(timeout=60)]
        ingested = [out for out, _ in outputs if out.strip()]
        assert len(ingested) == 1, outputs  # one did it; the other said who had it
        assert first.returncode == 0 and second.returncode == 0, outputs
    assert query(db, "SELECT name, status FROM files ORDER BY name") == [
        ("same-0.json", "done"),
        ("same-1.json", "done"),
        ("same-2.json", "done"),
    ]


def test_ingest_of_a_file_in_the_daemons_own_folders_is_refused_and_adds_no_row(
    tmp_path: Path,
) -> None:
    """A file in a collection's ``.done/``, ``.quarantine/`` or ``.processing/`` is the
    daemon's (it has its row): ``dropsync ingest`` used to read it in place as a collection
    named ``.done`` (or ``.processing``), a second row for the file, quarantined."""
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    (folder / "ok.json").write_bytes(contacts(3))
    (folder / "bad.json").write_bytes(b"[{")
    daemon = DaemonProcess(tmp_path, config_text(tmp_path))
    try:
        daemon.start()
        wait_until(lambda: settled(db, tmp_path / "drop"), what="both filed")
        assert dict(query(db, "SELECT name, status FROM files")) == {
            "ok.json": "done",
            "bad.json": "quarantined",
        }
        link = tmp_path / "link.json"
        link.symlink_to(folder / ".done/ok.json")
        for path, extra in [
            (folder / ".done/ok.json", ()),
            (folder / ".done/ok.json", ("--collection", "contacts")),
            (folder / ".quarantine/bad.json", ()),
            (folder / ".quarantine/bad.json.error.json", ()),
            (link, ()),
        ]:
            result = cli(daemon.config_path, "ingest", str(path), *extra)
            assert result.returncode == 1, (path, result)
            assert result.stdout == "", (path, result.stdout)
            line = result.stderr.strip()
            assert len(line.splitlines()) == 1 and line.startswith("dropsync: "), line
            assert "not ingested" in line and str(folder) in line, line
        # A file still being written (its temporary name) is there: not "no such file".
        for name in ("part.json.tmp", "part.json.part", ".part.json"):
            (folder / name).write_bytes(b'[{"email": "w@example.com"')
            result = cli(daemon.config_path, "ingest", str(folder / name))
            assert result.returncode == 1, (name, result)
            line = result.stderr.strip()
            assert "not ingested" in line and "rename" in line, line
            assert "no such file" not in line, line
            (folder / name).unlink()  # it was there all along
        assert query(db, "SELECT COUNT(*) FROM files") == [(2,)]
        assert errors(daemon) == []
        assert daemon.stop() == 0

        # A file an interrupted ingest left in .processing/: the daemon's sweep finishes it.
        left = folder / ".processing/left.json"
        left.write_bytes(contacts(2, 100))
        result = cli(daemon.config_path, "ingest", str(left))
        assert result.returncode == 1, result
        assert "not ingested" in result.stderr and "recovery" in result.stderr, result.stderr
        assert query(db, "SELECT COUNT(*) FROM files") == [(2,)]
        daemon.start()
        wait_until(lambda: settled(db, tmp_path / "drop"), what="left.json filed")
        assert query(db, "SELECT collection, name, status FROM files WHERE id > 2") == [
            ("contacts", "left.json", "done")
        ]
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_ingest_in_place_again_after_a_kill_applies_the_rest_under_the_same_row(
    tmp_path: Path,
) -> None:
    """A ``dropsync ingest`` of a file outside the drop folder killed half-way left its row
    ``processing``; run again on the same file, the command took that dead row for a live
    ingest of the same content (its own lock on the file) and recorded the file as its
    duplicate: the documents after the kill were never applied, and the run said done."""
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    outside = tmp_path / "exports/people.ndjson"
    outside.parent.mkdir()
    count = 60_000
    outside.write_bytes(
        b"\n".join(
            orjson.dumps({"email": f"p{i}@example.com", "updated_at": 1_700_000_000_000 + i})
            for i in range(count)
        )
    )
    daemon = DaemonProcess(tmp_path, config_text(tmp_path, batch=200))
    try:
        daemon.start()
        command = [sys.executable, "-m", "dropsync.daemon.cli", "ingest", str(outside)]
        command += ["--collection", "contacts", "--config", str(daemon.config_path)]
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(
                lambda: query(db, "SELECT 1 FROM files WHERE docs_seen > 0"),
                what="the first run is under way",
            )
        finally:
            first.kill()
            first.communicate(timeout=30)
        [(seen,)] = query(db, "SELECT docs_seen FROM files")
        assert 0 < seen < count, seen
        result = cli(daemon.config_path, "ingest", str(outside), "--collection", "contacts")
        assert result.returncode == 0, result.stderr
        report = orjson.loads(result.stdout)
        assert report["status"] == "done" and report["duplicate_of"] is None, report
        assert query(db, "SELECT COUNT(*) FROM records WHERE key LIKE 'p%'") == [(count,)]
        assert query(db, "SELECT status, docs_seen FROM files") == [("done", count)]
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_ingest_in_place_cut_by_a_busy_store_says_so_in_one_line_and_resumes(
    tmp_path: Path,
) -> None:
    """Another program holding the store's write lock while ``dropsync ingest`` commits a
    batch of a file: the command ended with a ``fatal_error`` (an exception group of the
    store's ``StoreBusy`` and the parser's broken stream, with its frames), not the one line
    every other command gives for a busy store."""
    db, folder = tmp_path / "store.db", tmp_path / "drop/contacts"
    folder.mkdir(parents=True)
    outside = tmp_path / "exports/people.ndjson"
    outside.parent.mkdir()
    count = 300_000
    outside.write_bytes(
        b"\n".join(
            orjson.dumps({"email": f"p{i}@example.com", "updated_at": 1_700_000_000_000 + i})
            for i in range(count)
        )
    )
    daemon = DaemonProcess(tmp_path, config_text(tmp_path, batch=100))
    try:
        daemon.start()
        command = [sys.executable, "-m", "dropsync.daemon.cli", "ingest", str(outside)]
        command += ["--collection", "contacts", "--config", str(daemon.config_path)]
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: query(db, "SELECT 1 FROM files WHERE docs_seen > 0"),
                what="the first run is under way",
            )
            holder = StoreLockHolder(db)
            try:
                _, err = first.communicate(timeout=120)
            finally:
                holder.release()
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 1, err
        assert err.splitlines()[-1].startswith(f"dropsync: store {db} is busy"), err
        assert "fatal_error" not in err, err
        result = cli(daemon.config_path, "ingest", str(outside), "--collection", "contacts")
        assert result.returncode == 0, result.stderr
        assert query(db, "SELECT status, docs_seen FROM files") == [("done", count)]
        assert query(db, "SELECT COUNT(*) FROM records WHERE key LIKE 'p%'") == [(count,)]
        assert errors(daemon) == []
        assert daemon.stop() == 0
    finally:
        daemon.close()
