"""A progress bar for ``dropsync ingest`` on a terminal: bytes, documents per second, time left.

The ingest path itself knows nothing of it. Where the read of the file stands is asked
of the kernel (``/proc/<pid>/fdinfo``: the offset of the descriptor open on the file,
in this process or in the parser process it started), and how many documents are
committed is asked of the ``files`` ledger. A file is read twice: once to hash it
(``hashing``), then to parse it (``ingesting``). Where ``/proc`` is missing the bar
shows documents only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TextIO


def _processes() -> Iterator[int]:
    """This process and its children (the parser process)."""
    me = os.getpid()
    yield me
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return
    for task in tasks:
        try:
            with open(f"/proc/{me}/task/{task}/children", encoding="ascii") as handle:
                yield from (int(pid) for pid in handle.read().split())
        except OSError:
            continue


def read_position(names: tuple[str, ...]) -> int | None:
    """The offset of a descriptor open on one of ``names`` (real paths), if any is open."""
    for pid in _processes():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") not in names:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as handle:
                    for line in handle:
                        if line.startswith("pos:"):
                            return int(line.split()[1])
            except (OSError, ValueError):
                continue
    return None


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """One line on a terminal, redrawn in place (``update``), cleared by ``close``."""

    def __init__(self, path: Path, out: TextIO, *, width: int = 24) -> None:
        self.path = path
        self.out = out
        self.width = width
        self.size = path.stat().st_size if path.exists() else 0
        real = os.path.realpath(path)
        self.names = (real, os.path.join(os.path.dirname(real), ".processing", path.name))
        self.started = time.monotonic()
        self.phase = "hashing"
        self.last_position = 0
        self.phase_started = self.started

    def line(self, position: int | None, documents: int) -> str:
        """The text of the bar for this read position and document count."""
        now = time.monotonic()
        if position is not None:
            if position < self.last_position and self.phase == "hashing":
                self.phase, self.phase_started = "ingesting", now
            self.last_position = position
        elapsed = max(now - self.started, 1e-6)
        rate = documents / elapsed
        text = f"{self.path.name}: {self.phase}"
        if position is not None and self.size:
            done = min(position / self.size, 1.0)
            filled = int(done * self.width)
            text += f" [{'#' * filled}{'-' * (self.width - filled)}] {done:4.0%}"
            text += f" {_size(position)}/{_size(self.size)}"
            phase_elapsed = max(now - self.phase_started, 1e-6)
            if self.phase == "ingesting" and position:
                left = (self.size - position) / (position / phase_elapsed)
                text += f", {_clock(left)} left"
        text += f", {documents:,} documents ({rate:,.0f}/s)"
        return text

    def update(self, documents: int) -> None:
        """Redraw the line."""
        self.out.write("\r\x1b[K" + self.line(read_position(self.names), documents))
        self.out.flush()

    def close(self) -> None:
        """Clear the line (the command prints its report next)."""
        self.out.write("\r\x1b[K")
        self.out.flush()


async def show_progress(
    bar: ProgressBar, documents: Callable[[], Awaitable[int | None]], every_s: float = 0.2
) -> None:
    """Redraw ``bar`` every ``every_s`` until cancelled; ``documents`` counts what is committed."""
    import anyio

    try:
        while True:
            count = await documents()
            bar.update(int(count or 0))
            await anyio.sleep(every_s)
    finally:
        bar.close()
