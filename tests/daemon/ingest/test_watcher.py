"""The drop-folder watcher in process: what it holds while many files wait."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.ingest import watcher as watcher_module
from dropsync.daemon.ingest.ingestor import IngestReport
from dropsync.daemon.ingest.watcher import DropWatcher
from structlog.testing import capture_logs

from tests.daemon.ingest.test_ingestor import make_config


async def _never(path: Path) -> IngestReport | None:
    raise AssertionError("not called")


@pytest.mark.anyio  # the watcher is made in the daemon's event loop
async def test_a_look_at_a_folder_of_many_files_holds_only_what_the_queue_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20,000 files waiting, a queue of 100: the look keeps the 100 oldest, not a list of all
    # (100,000 files at once cost 124 MB of peak RSS that way, kept by the process after).
    monkeypatch.setattr(watcher_module, "QUEUE_FILES", 100)
    config = make_config(tmp_path, users={"key": "data.id", "timestamp": "updatedAt"})
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    count = 20_000
    for i in range(count):
        path = folder / f"u{i:05d}.json"
        path.write_bytes(b"{}")
        # The oldest are the last written: the look orders by age, not by name.
        os.utime(path, ns=(0, (count - i) * 1_000_000_000))
    (folder / "late.json.part").write_bytes(b"{}")  # ignored until renamed
    watcher = DropWatcher(config, _never)
    tracemalloc.start()
    try:
        watcher._look_everywhere()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    queued = []
    while True:
        try:
            queued.append(watcher._receive.receive_nowait())
        except Exception:
            break
    assert queued == [folder / f"u{i:05d}.json" for i in range(count - 1, count - 101, -1)]
    assert len(watcher._queued) == 100
    # A list of every name with its age is about 24 MB here; the 100 oldest, well under 1.
    assert peak < 2_000_000, f"{peak / 1e6:.1f} MB at the peak of one look"


@pytest.mark.anyio
async def test_files_left_out_of_a_full_queue_are_taken_once_it_is_half_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No rescan within the test: what the full queue left in the folder is looked for again
    # once the ingestor has taken half of the queue, not at the next rescan.
    monkeypatch.setattr(watcher_module, "QUEUE_FILES", 10)
    config = make_config(tmp_path, users={"key": "data.id", "timestamp": "updatedAt"})
    config = replace(config, rescan_s=3600.0)
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    names = [f"u{i:02d}.json" for i in range(35)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(b"{}")
        os.utime(folder / name, ns=(0, (i + 1) * 1_000_000_000))
    taken: list[str] = []
    most_queued = 0
    all_taken = anyio.Event()

    async def ingest(path: Path) -> IngestReport | None:
        nonlocal most_queued
        most_queued = max(most_queued, len(watcher._queued))
        taken.append(path.name)
        path.unlink()
        if len(taken) == len(names):
            all_taken.set()
        return None

    watcher = DropWatcher(config, ingest)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            await all_taken.wait()
            tg.cancel_scope.cancel()
    assert taken == names  # oldest first
    assert most_queued <= 10


async def _taking(
    watcher: DropWatcher, until: anyio.Event, act: Callable[[], Awaitable[None]]
) -> None:
    """Run the watcher, do ``act`` once it is ready, and stop once ``until`` is set."""
    with anyio.fail_after(60):  # bounds a hang only
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            await watcher.ready.wait()
            await act()
            await until.wait()
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_file_renamed_in_is_taken_at_once_and_one_settling_holds_up_nothing(
    tmp_path: Path,
) -> None:
    # A minute to settle: a file written in place waits that long; a file renamed in is
    # whole (write-then-rename, the documented way to drop) and goes without waiting, even
    # while the file written in place before it settles.
    config = replace(
        make_config(tmp_path, users={"key": "data.id", "timestamp": "updatedAt"}),
        settle_ms=60_000,
        rescan_s=3600.0,
    )
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    taken: list[str] = []
    renamed_taken = anyio.Event()

    async def ingest(path: Path) -> IngestReport | None:
        taken.append(path.name)
        if path.name == "renamed.json":
            renamed_taken.set()
        return None

    async def drop() -> None:
        (folder / "in-place.json").write_bytes(b"[")  # still being written
        (folder / ".renamed.json").write_bytes(b"{}")
        os.rename(folder / ".renamed.json", folder / "renamed.json")

    await _taking(DropWatcher(config, ingest), renamed_taken, drop)
    assert taken == ["renamed.json"]


@pytest.mark.anyio
async def test_a_file_written_slowly_in_place_is_taken_whole_once_it_stopped_changing(
    tmp_path: Path,
) -> None:
    # No rename: each write comes well within settle_ms of the one before, so the file is
    # only taken after the last one, whole, and once.
    config = replace(
        make_config(tmp_path, users={"key": "data.id", "timestamp": "updatedAt"}),
        settle_ms=1000,
        rescan_s=3600.0,
    )
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    parts = [b"[", *(b'{"data":{"id":%d},"updatedAt":1},' % i for i in range(8)), b"{}]"]
    seen: list[bytes] = []
    taken = anyio.Event()

    async def ingest(path: Path) -> IngestReport | None:
        seen.append(path.read_bytes())
        taken.set()
        return None

    async def write_slowly() -> None:
        with (folder / "slow.json").open("wb") as out:
            for part in parts:
                out.write(part)
                out.flush()
                await anyio.sleep(0.05)

    await _taking(DropWatcher(config, ingest), taken, write_slowly)
    assert seen == [b"".join(parts)]


@pytest.mark.anyio
async def test_events_lost_to_a_full_kernel_queue_are_made_up_by_a_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More renames at once than the kernel queues events for (fs.inotify.max_queued_events,
    # 16384 by default), while the event loop is busy: the queue overflows, and the watcher
    # looks at the folder instead (no rescan within the test; a queue with room for all, so
    # no look for files left out of it either).
    monkeypatch.setattr(watcher_module, "QUEUE_FILES", 100_000)
    queued_events = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    count = queued_events + 500
    config = replace(
        make_config(tmp_path, users={"key": "data.id", "timestamp": "updatedAt"}),
        rescan_s=3600.0,
    )
    folder = config.drop_path / "users"
    folder.mkdir(parents=True)
    staging = tmp_path / "staging"
    staging.mkdir()
    for i in range(count):
        (staging / f"u{i:05d}.json").write_bytes(b"{}")
    taken: set[str] = set()
    all_taken = anyio.Event()

    async def ingest(path: Path) -> IngestReport | None:
        taken.add(path.name)
        path.unlink()
        if len(taken) == count:
            all_taken.set()
        return None

    async def drop_all() -> None:
        await anyio.sleep(0.1)  # the first look at the empty folder is over
        for i in range(count):  # without yielding to the loop: the kernel queues them all
            os.rename(staging / f"u{i:05d}.json", folder / f"u{i:05d}.json")

    await _taking(DropWatcher(config, ingest), all_taken, drop_all)
    assert len(taken) == count


@pytest.mark.anyio
async def test_a_collection_folder_renamed_is_watched_under_its_new_name(tmp_path: Path) -> None:
    # The kernel watches the folder, not its name: after the rename its files are known by
    # the new name, those in it are looked at, and a file renamed in later is seen at once.
    config = replace(
        make_config(tmp_path, users={"key": "data.id", "timestamp": "updatedAt"}),
        rescan_s=3600.0,
        settle_ms=0,
    )
    old, new = config.drop_path / "old", config.drop_path / "users"
    old.mkdir(parents=True)
    taken: list[Path] = []
    both = anyio.Event()

    async def ingest(path: Path) -> IngestReport | None:
        if not path.exists():
            return None  # queued under the old name: gone from there (the ingestor's None)
        taken.append(path)
        path.unlink()
        if len(taken) == 2:
            both.set()
        return None

    async def rename_then_drop() -> None:
        await anyio.sleep(0.1)  # the watch of "old" is in place
        (tmp_path / "before.json").write_bytes(b"{}")
        os.rename(tmp_path / "before.json", old / "before.json")
        os.rename(old, new)
        await anyio.sleep(0.1)
        (tmp_path / "after.json").write_bytes(b"{}")
        os.rename(tmp_path / "after.json", new / "after.json")

    await _taking(DropWatcher(config, ingest), both, rename_then_drop)
    assert sorted(taken) == [new / "after.json", new / "before.json"]


def test_a_link_to_a_folder_in_the_drop_folder_is_told_once_and_not_followed(
    tmp_path: Path,
) -> None:
    # A link is not a collection folder (its files are never read); whoever made one is told
    # why nothing happens, once, and again if it is removed and made again.
    config = make_config(tmp_path, users={"key": "data.id", "timestamp": "updatedAt"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.json").write_bytes(b"{}")
    config.drop_path.mkdir(parents=True)
    link = config.drop_path / "users"
    link.symlink_to(elsewhere)
    (config.drop_path / "file-link").symlink_to(elsewhere / "a.json")  # not to a folder
    watcher = DropWatcher(config, _never)
    with capture_logs() as logs:
        for _ in range(2):
            watcher._tell_linked_folders()
            watcher._look_everywhere()
        link.unlink()
        watcher._tell_linked_folders()
        link.symlink_to(elsewhere)
        watcher._tell_linked_folders()
    told = [entry for entry in logs if entry["event"] == "collection_folder_is_link"]
    assert [(entry["folder"], entry["target"]) for entry in told] == [
        (str(link), str(elsewhere)),
        (str(link), str(elsewhere)),
    ]
    assert "not ingested" in told[0]["error"]
    assert not watcher._queued  # nothing where it points was queued
    assert (elsewhere / "a.json").exists()
