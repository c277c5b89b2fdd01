"""The daemon's runtime state file: ``<store>.runtime.json``, beside the store.

The running daemon keeps it current: its pid, a heartbeat, what it is waiting for
(``store busy``, ``disk full``, with since when and why) and a reload it refused (it runs
on its previous config meanwhile). ``dropsync status`` reads it, because the store itself
may be what cannot be written then.

It must stay writable on a full disk, so it has a fixed size (``SIZE`` bytes, allocated
when the daemon starts) and is overwritten in place, never replaced: one line of JSON,
padded with spaces to the size. A reader may catch a write half done; the ``check``
field (CRC-32 of the line up to it) tells, and the reader reads again. Only the
standard library's lightest modules here (no pathlib, no typing): ``status`` imports this
and must start fast.
"""

from __future__ import annotations

import binascii
import os
import time

from ..simple_json import loads

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

SUFFIX = ".runtime.json"
SIZE = 4096
HEARTBEAT_S = 5.0
_CHECK = ',"check":"'
_MAX_DETAIL = 300


def runtime_path(store_path: str | os.PathLike[str]) -> str:
    """Where the daemon using ``store_path`` keeps its runtime state: ``<store>.runtime.json``."""
    return os.fspath(store_path) + SUFFIX


def encode(state: dict[str, Any]) -> bytes:
    """The file's content for ``state``: one JSON line with its check, padded to SIZE."""
    import json  # the daemon's side: status only reads (``loads``, without json)

    state = dict(state)
    refused = state.get("reload_refused")
    if isinstance(refused, dict):
        state["reload_refused"] = {**refused, "error": str(refused.get("error", ""))[:_MAX_DETAIL]}
    pauses = [
        {**p, "detail": str(p.get("detail", ""))[:_MAX_DETAIL]} for p in state.get("pauses", [])
    ]
    while True:
        state["pauses"] = pauses
        body = json.dumps(state, separators=(",", ":"), default=str)[:-1]
        line = f'{body}{_CHECK}{binascii.crc32(body.encode()):08x}"}}'.encode()
        if len(line) < SIZE or not pauses:
            break
        state["pauses_not_listed"] = int(state.get("pauses_not_listed", 0)) + 1
        pauses = pauses[:-1]
    if len(line) >= SIZE:
        raise ValueError("runtime state does not fit its file")
    return line + b" " * (SIZE - len(line) - 1) + b"\n"


def decode(data: bytes) -> dict[str, Any] | None:
    """The state in ``data``, or None if it is not a whole, checked state."""
    line = data.split(b"\n", 1)[0].rstrip(b" ").decode("utf-8", "replace")
    cut = line.rfind(_CHECK)
    if cut < 0:
        return None
    try:
        state = loads(line)
    except ValueError:
        return None
    if not isinstance(state, dict):
        return None
    body = line[:cut]
    if state.get("check") != f"{binascii.crc32(body.encode()):08x}":
        return None
    return state


def read_runtime(store_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The daemon's last written state for this store, or None if there is none."""
    path = runtime_path(store_path)
    for _ in range(5):
        try:
            with open(path, "rb") as handle:
                data = handle.read(SIZE)
        except OSError:
            return None
        state = decode(data)
        if state is not None:
            return state
        time.sleep(0.01)  # caught a write half done: read again
    return None


def is_fresh(state: dict[str, Any], now_ms: int) -> bool:
    """True if the heartbeat is recent enough for the state to describe a running daemon."""
    beat = state.get("heartbeat_at")
    every = state.get("heartbeat_s", HEARTBEAT_S)
    if not isinstance(beat, int) or not isinstance(every, int | float):
        return False
    return state.get("state") != "stopped" and now_ms - beat <= 3 * every * 1000


def describe(state: dict[str, Any] | None, now_ms: int) -> list[str]:
    """Lines for ``dropsync status``: what the daemon waits for, or that it went quiet."""
    if state is None or state.get("state") == "stopped":
        return []
    pid = state.get("pid")
    if not is_fresh(state, now_ms):
        beat = state.get("heartbeat_at")
        when = _clock(beat) if isinstance(beat, int) else "never"
        return [f"daemon (pid {pid}): no heartbeat since {when}: not running?"]
    lines = []
    refused = state.get("reload_refused")
    if isinstance(refused, dict):
        lines.append(
            f"daemon (pid {pid}): reload refused at {_clock(refused.get('at'))}, running on "
            f"its previous config: {refused.get('error')}"
        )
    for pause in state.get("pauses", []):
        retry_at = pause.get("retry_at")
        retry = (
            f", next try in {max(0, round((retry_at - now_ms) / 1000))} s"
            if isinstance(retry_at, int)
            else ""
        )
        lines.append(
            f"daemon (pid {pid}): {pause.get('condition')}: {pause.get('work')} paused since "
            f"{_clock(pause.get('since'))}{retry}: {pause.get('detail')}"
        )
    return lines


def _clock(ms: object) -> str:
    if not isinstance(ms, int):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


class RuntimeFile:
    """The writer's side: a file of SIZE bytes, allocated once, overwritten in place."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.path = runtime_path(store_path)
        self._fd: int | None = None

    def open(self) -> None:
        """Create (or reuse) and allocate the file; OSError if that cannot be done now."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        try:
            if os.fstat(fd).st_size < SIZE:
                os.posix_fallocate(fd, 0, SIZE)
                os.pwrite(fd, b" " * (SIZE - 1) + b"\n", 0)
                os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def write(self, state: dict[str, Any]) -> None:
        """Overwrite the file with ``state`` (OSError if it cannot be opened or written)."""
        self.open()
        assert self._fd is not None
        os.pwrite(self._fd, encode(state), 0)

    def close(self) -> None:
        """Close the file (it stays, with the last state written)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
