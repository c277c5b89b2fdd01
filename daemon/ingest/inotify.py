"""Linux inotify in the event loop: what changed in a folder, the moment it changed.

The drop-folder watcher and the inbox's watch of the store's write-ahead log wait on an
``Inotify`` descriptor: the event loop wakes only when the kernel has something to
report, so an idle daemon spends nothing on watching, and a change is seen without a
polling step (watchfiles' watcher looks at its queue every ``step`` ms and holds changes
for ``debounce`` ms; on a 100 ms step that was most of a dropped file's way to its
provider). The standard library has no inotify, so its three calls are made through
ctypes; names come as bytes (a name that is not UTF-8 is an ordinary event here).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000  # the kernel's queue was full: events were lost
IN_IGNORED = 0x00008000  # the watch is gone (its folder removed, or the watch removed)
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_READ_SIZE = 64 * 1024


class Event(NamedTuple):
    """One inotify event: the watch it came from, what happened, and the entry's name."""

    wd: int
    mask: int
    name: bytes  # empty for an event of the watched folder itself


class _Libc:
    """The three inotify calls of the C library."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


_libc: _Libc | None = None


def _calls() -> _Libc:
    global _libc  # noqa: PLW0603 -- loaded once, on first use
    if _libc is None:
        _libc = _Libc()
    return _libc


def _error(path: Path | None = None) -> OSError:
    code = ctypes.get_errno()
    if path is None:
        return OSError(code, os.strerror(code))
    return OSError(code, os.strerror(code), str(path))


def parse_events(data: bytes) -> list[Event]:
    """The events in what one ``read`` of an inotify descriptor returned."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = data[offset : offset + length].rstrip(b"\0")
        offset += length
        events.append(Event(wd, mask, name))
    return events


async def wait_readable(fd: int) -> None:
    """Return once ``fd`` can be read without blocking (the asyncio event loop's reader)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class Inotify:
    """An inotify descriptor and its watches; OSError (errno set) when the kernel refuses."""

    def __init__(self) -> None:
        fd = _calls().init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _error()
        self.fd: int | None = fd

    def add(self, path: Path, mask: int) -> int:
        """Watch ``path`` for ``mask``; returns the watch descriptor (the same one again for
        a folder already watched: the kernel watches the inode, whatever its name)."""
        wd = _calls().add_watch(self._fd(), os.fsencode(path), mask)
        if wd < 0:
            raise _error(path)
        return int(wd)

    def remove(self, wd: int) -> None:
        """Stop a watch (one the kernel already ended is no error)."""
        _calls().rm_watch(self._fd(), wd)

    def read(self) -> list[Event]:
        """Every event waiting now (none: an empty list); never blocks."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self._fd(), _READ_SIZE)
            except BlockingIOError:
                return events
            if not data:
                return events
            events += parse_events(data)

    async def wait(self) -> None:
        """Return once there are events to read."""
        await wait_readable(self._fd())

    def close(self) -> None:
        """Close the descriptor (every watch ends with it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _fd(self) -> int:
        if self.fd is None:
            raise ValueError("the inotify descriptor is closed")
        return self.fd

    def __enter__(self) -> Inotify:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
