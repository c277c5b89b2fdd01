"""The inotify watch the drop-folder watcher and the inbox wait on, on real folders."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.ingest.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVED_TO,
    Event,
    Inotify,
    parse_events,
)

pytestmark = pytest.mark.anyio
WATCHED = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF


async def next_events(notify: Inotify) -> list[Event]:
    with anyio.fail_after(30):  # bounds a hang only
        await notify.wait()
    return notify.read()


async def test_a_rename_a_write_in_place_and_a_folder_are_reported_with_their_names(
    tmp_path: Path,
) -> None:
    with Inotify() as notify:
        wd = notify.add(tmp_path, WATCHED)
        assert notify.read() == []  # nothing yet, and reading does not block
        (tmp_path / ".x.part").write_bytes(b"{}")
        os.rename(tmp_path / ".x.part", tmp_path / "x.json")
        (tmp_path / "sub").mkdir()
        events: list[Event] = []
        while not any(e.name == b"sub" for e in events):
            events += await next_events(notify)
        assert [(e.wd, e.mask, e.name) for e in events] == [
            (wd, IN_CREATE, b".x.part"),
            (wd, IN_CLOSE_WRITE, b".x.part"),
            (wd, IN_MOVED_TO, b"x.json"),
            (wd, IN_CREATE | IN_ISDIR, b"sub"),
        ]


async def test_a_name_that_is_not_utf8_is_an_ordinary_event(tmp_path: Path) -> None:
    with Inotify() as notify:
        notify.add(tmp_path, WATCHED)
        os.close(os.open(os.fsencode(tmp_path) + b"/bad\xff.json", os.O_CREAT | os.O_WRONLY))
        events = await next_events(notify)
        assert events[0].name == b"bad\xff.json" and events[0].mask == IN_CREATE


async def test_the_watched_folder_removed_ends_its_watch(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    with Inotify() as notify:
        wd = notify.add(folder, WATCHED)
        assert notify.add(folder, WATCHED) == wd  # the same folder: the same watch
        folder.rmdir()
        masks: list[int] = []
        while IN_IGNORED not in masks:
            masks += [e.mask for e in await next_events(notify) if e.wd == wd]
        assert IN_DELETE_SELF in masks


async def test_a_folder_that_is_not_there_is_refused_as_missing(tmp_path: Path) -> None:
    with Inotify() as notify, pytest.raises(FileNotFoundError):
        notify.add(tmp_path / "gone", WATCHED)


async def test_a_wait_is_cancelled_cleanly_and_the_descriptor_closed_once(tmp_path: Path) -> None:
    notify = Inotify()
    notify.add(tmp_path, WATCHED)
    with anyio.move_on_after(0.05):
        await notify.wait()  # nothing happens: cancelled by the timeout
    (tmp_path / "a.json").write_bytes(b"")
    assert (await next_events(notify))[0].name == b"a.json"  # the loop's reader was removed
    notify.close()
    notify.close()
    with pytest.raises(ValueError, match="closed"):
        notify.read()


def test_events_are_read_from_the_kernels_layout() -> None:
    # struct inotify_event: wd, mask, cookie, len, then the name padded with NULs.
    data = (
        struct.pack("iIII", 1, IN_CREATE, 0, 16)
        + b"a.json".ljust(16, b"\0")
        + struct.pack("iIII", 2, IN_IGNORED, 0, 0)
    )
    assert parse_events(data) == [Event(1, IN_CREATE, b"a.json"), Event(2, IN_IGNORED, b"")]
