"""What the running daemon is waiting for, kept in its runtime state file.

A ``PauseBoard`` is the daemon's ``PauseListener``: the store and the drop-folder
ingest tell it when work pauses (``store busy``: another program holds the store's
write lock; ``disk full``) and resumes. It logs each pause once when it starts
(``work_paused``, a warning) and once when it ends (``work_resumed``), and writes the
current pauses, the pid and a heartbeat into ``<store>.runtime.json`` (see
``daemon.runstate``), which ``dropsync status`` shows.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import anyio
import structlog
from dropsync.daemon.clock import now_ms
from dropsync.daemon.runstate import HEARTBEAT_S, RuntimeFile
from dropsync.store.handle import store_condition

log = structlog.get_logger(__name__)

DISK_FULL = "disk full"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def file_condition(exc: BaseException) -> str | None:
    """``disk full`` for an OSError saying so (ENOSPC, EDQUOT), else the store's condition."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return DISK_FULL
    return store_condition(exc)


class PauseBoard:
    """Current pauses, logged and written to the runtime state file."""

    def __init__(self, runtime: RuntimeFile) -> None:
        self.runtime = runtime
        self.state = "starting"
        self.started_at = now_ms()
        self.pauses: dict[tuple[str, str], dict[str, Any]] = {}
        self._write_failed = False

    def paused(self, work: str, condition: str, detail: str, retry_in_s: float) -> None:
        """Record (and on its first time, log) that ``work`` waits on ``condition``."""
        now = now_ms()
        current = self.pauses.get((work, condition))
        if current is None:
            log.warning("work_paused", work=work, condition=condition, error=detail)
            current = self.pauses[(work, condition)] = {
                "work": work,
                "condition": condition,
                "since": now,
                "attempts": 0,
            }
        current["detail"] = detail
        current["attempts"] += 1
        current["retry_at"] = now + int(retry_in_s * 1000)
        self.write()

    def resumed(self, work: str, condition: str) -> None:
        """``work`` got through: forget the pause."""
        pause = self.pauses.pop((work, condition), None)
        if pause is not None:
            log.info(
                "work_resumed",
                work=work,
                condition=condition,
                paused_s=round((now_ms() - pause["since"]) / 1000, 1),
                attempts=pause["attempts"],
            )
            self.write()

    def set_state(self, state: str) -> None:
        """``starting``, ``running``, ``stopping`` or ``stopped``."""
        self.state = state
        self.write()

    def snapshot(self) -> dict[str, Any]:
        """What goes into the runtime state file."""
        return {
            "format": 1,
            "pid": os.getpid(),
            "state": self.state,
            "started_at": self.started_at,
            "heartbeat_at": now_ms(),
            "heartbeat_s": HEARTBEAT_S,
            "pauses": sorted(self.pauses.values(), key=lambda p: (p["since"], p["work"])),
        }

    def write(self) -> None:
        """Write the runtime state file now (a failure is logged once, then retried)."""
        try:
            self.runtime.write(self.snapshot())
        except OSError as exc:
            if not self._write_failed:
                log.warning("runtime_file_unwritable", path=str(self.runtime.path), error=str(exc))
            self._write_failed = True
            return
        if self._write_failed:
            log.info("runtime_file_writable", path=str(self.runtime.path))
        self._write_failed = False

    async def heartbeat(self) -> None:
        """Rewrite the state every HEARTBEAT_S seconds until cancelled."""
        while True:
            self.write()
            await anyio.sleep(HEARTBEAT_S)

    def close(self) -> None:
        """Record that the daemon stopped, and close the file."""
        self.pauses.clear()
        self.set_state("stopped")
        self.runtime.close()
