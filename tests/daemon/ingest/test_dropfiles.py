"""The drop folder's file-system side, and the runtime state file, on real folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest
from dropsync.daemon.ingest import dropfiles
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.daemon.ingest.watcher import candidate_files
from dropsync.daemon.process import runstate
from dropsync.store.handle import Store

from tests.daemon.ingest.test_ingestor import make_config


def test_a_folder_that_cannot_be_listed_is_skipped_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root, permissions cannot make listing fail: the error is injected at os.scandir.
    (tmp_path / "locked").mkdir()
    (tmp_path / "open").mkdir()
    (tmp_path / "open/a.json").write_bytes(b"{}")
    real = os.scandir

    def scandir(path: str | Path) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert candidate_files(tmp_path) == [tmp_path / "open/a.json"]
    assert dropfiles.list_entries(tmp_path / "locked") == []
    assert dropfiles.list_entries(tmp_path / "open/a.json") == []  # not a folder
    assert dropfiles.list_entries(tmp_path / "missing") == []


def test_rename_noreplace_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        dropfiles.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "b"
    dropfiles.rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "a"


def test_lock_file_opens_only_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    for name, words in (("fifo", "FIFO"), ("link", "symbolic link")):
        with pytest.raises(dropfiles.Unreadable, match=words):
            dropfiles.lock_file(tmp_path / name)
    (tmp_path / "f").write_text("x")
    fd = dropfiles.lock_file(tmp_path / "f")
    assert fd is not None
    assert dropfiles.lock_file(tmp_path / "f") is None  # held: by this process, even
    assert dropfiles.is_locked(tmp_path / "f")
    os.close(fd)
    assert not dropfiles.is_locked(tmp_path / "f")


def test_runtime_state_round_trips_and_a_torn_write_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    writer = runstate.RuntimeFile(store)
    state = {
        "format": 1,
        "pid": 7,
        "state": "running",
        "heartbeat_at": 1000,
        "heartbeat_s": 5.0,
        "pauses": [{"work": "store", "condition": "disk full", "since": 900, "detail": "x" * 9999}],
    }
    writer.write(state)
    assert os.path.getsize(runstate.runtime_path(store)) == runstate.SIZE
    read = runstate.read_runtime(store)
    assert read is not None and read["pauses"][0]["condition"] == "disk full"
    assert len(read["pauses"][0]["detail"]) <= 300
    assert runstate.describe(read, 2000)[0].startswith("daemon (pid 7): disk full: store paused")
    assert "no heartbeat" in runstate.describe(read, 60_000)[0]
    # Half of a newer write over the older one: the check tells, the reader does not trust it.
    newer = runstate.encode({**state, "heartbeat_at": 2000, "pid": 1234567})
    older = runstate_bytes(store)
    torn = newer[:40] + older[40:]
    assert runstate.decode(torn) is None
    writer.close()


def runstate_bytes(store: Path) -> bytes:
    return Path(runstate.runtime_path(store)).read_bytes()


@pytest.mark.anyio
async def test_a_device_node_is_quarantined_unread(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    try:  # a character device with /dev/null's numbers: reading it would give nothing
        os.mknod(folder / "dev.json", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(folder / "dev.json")
    assert report is not None and report.status == "quarantined"
    moved = folder / ".quarantine/dev.json"
    assert stat.S_ISCHR(os.lstat(moved).st_mode)  # the node itself, moved
    receipt = orjson.loads((folder / ".quarantine/dev.json.error.json").read_bytes())
    assert "a character device" in receipt["error"] and receipt["read"] is False


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("a" * 250 + ".json", 0),
        ("a" * 250 + ".json", 12),
        ("字" * 85, 0),
        ("字" * 83 + ".ndjson", 3),
        ("é" * 120 + ".json", 1),  # 2-byte characters
        ("😀" * 63 + ".json", 0),  # 4-byte characters
        ("x" * 200 + "." + "e" * 100, 0),  # an "extension" too long to be one
    ],
)
def test_a_long_name_is_fitted_whole_characters_its_extension_kept(name: str, number: int) -> None:
    limit = 255 - len(dropfiles.RECEIPT_SUFFIX)
    fitted = dropfiles.fitted(name, number, limit)
    assert len(fitted.encode()) <= limit
    suffix = os.path.splitext(name)[1]
    if len(suffix) <= dropfiles.MAX_EXTENSION:
        assert fitted.endswith(("-" + str(number) if number else "") + suffix)
        assert name.startswith(fitted.split("~")[0])  # the start of the name, whole characters
    assert "~" in fitted
    # Long names that differ only past the cut stay apart; a name that fits is kept.
    assert dropfiles.fitted(name[:-6] + "Z" + name[-5:], number, limit) != fitted
    assert dropfiles.fitted("short.json", number, limit) == (
        f"short-{number}.json" if number else "short.json"
    )


def test_free_name_leaves_room_for_the_receipt(tmp_path: Path) -> None:
    name = "b" * 250 + ".json"
    for folder in (".processing", ".done", ".quarantine"):
        (tmp_path / folder).mkdir()
    taken = dropfiles.free_name(tmp_path, name)
    assert len((taken + dropfiles.RECEIPT_SUFFIX).encode()) <= 255
    (tmp_path / ".done" / taken).write_text("")
    again = dropfiles.free_name(tmp_path, name)
    assert again != taken and again.endswith("-1.json")
    (tmp_path / ".quarantine" / (again + dropfiles.RECEIPT_SUFFIX)).write_text("")
    assert dropfiles.free_name(tmp_path, name).endswith("-2.json")


@pytest.mark.anyio
async def test_a_long_name_that_is_not_utf8_is_quarantined_under_a_name_that_fits(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    raw = b"\xff" * 250 + b".json"  # shown as \xff: four times as long
    dropped = Path(os.fsdecode(os.fsencode(folder) + b"/" + raw))
    dropped.write_bytes(b"[]")
    async with await Store.open(config.store_path) as store:
        report = await Ingestor(store, config).ingest_dropped(dropped)
    assert report is not None and report.status == "quarantined"
    assert report.name == "\\xff" * 250 + ".json"  # the ledger's name: as dropped, shown
    [moved, receipt] = sorted(os.listdir(folder / ".quarantine"))
    assert receipt == moved + dropfiles.RECEIPT_SUFFIX and len(receipt.encode()) <= 255
    assert moved.startswith("\\xff") and moved.endswith(".json")


def test_a_long_folder_name_that_is_not_utf8_is_renamed_to_one_that_fits(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/" + b"\xfe" * 255
    os.mkdir(raw)
    renamed = dropfiles.rename_to_text(Path(os.fsdecode(raw)))
    assert renamed.is_dir() and len(renamed.name.encode()) <= 255
    assert renamed.name.startswith("\\xfe")


def test_a_receipt_gets_the_mode_a_new_file_would_get(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        dropfiles.write_receipt(tmp_path / "r.error.json", b"{}")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "r.error.json").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["plain", "r.error.json"]  # no temporary left
