"""What the running daemon is waiting for, kept in its runtime state file.

A ``PauseBoard`` is the daemon's ``PauseListener``: the store and the drop-folder
ingest tell it when work pauses (``store busy``: another program holds the store's
write lock; ``disk full``) and resumes. It logs each pause once when it starts
(``work_paused``, a warning) and once when it ends (``work_resumed``), and writes the
current pauses, the pid and a heartbeat into ``<store>.runtime.json`` (see
``daemon.process.runstate``), which ``dropsync status`` shows, and a reload the daemon refused
(it runs on its previous config until a reload succeeds). ``on_change`` is told when
the pauses, the state or the refusal change (systemd's ``STATUS=`` follows), and
``not_ready`` says why the daemon cannot work now (``GET /readyz``).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from dropsync.store.handle import store_condition

from ..clock import now_ms
from .runstate import HEARTBEAT_S, RuntimeFile

log = structlog.get_logger(__name__)

DISK_FULL = "disk full"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# Unconfigured providers named in the runtime file (a provider name is up to 64 characters:
# 20 of them keep it well within its size); the others are counted.
UNCONFIGURED_LISTED = 20


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
        self.reload_refused: dict[str, Any] | None = None
        # Providers with a state row in the store that the running config does not name.
        self.unconfigured: list[str] = []
        self.on_change: Callable[[], None] | None = None
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
        if current["attempts"] == 1:
            self._changed()

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
            self._changed()

    def set_state(self, state: str) -> None:
        """``starting``, ``running``, ``stopping`` or ``stopped``."""
        self.state = state
        self.write()
        self._changed()

    def refused_reload(self, error: str | None) -> None:
        """A reload was refused with ``error`` (None: a reload succeeded, forget any refusal)."""
        self.reload_refused = None if error is None else {"at": now_ms(), "error": error}
        self.write()
        self._changed()

    def providers_unconfigured(self, names: list[str]) -> None:
        """The providers the store knows and the running config does not (status shows
        them as not configured: their entries wait for a provider of that name)."""
        if names != self.unconfigured:
            self.unconfigured = names
            self.write()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def not_ready(self) -> list[str]:
        """Why the daemon cannot do its work now (empty: it can): starting or stopping, and
        each pause (``store busy: ingest paused``; the detail, which names paths, stays in
        the runtime file). A refused reload is not one: the daemon works on its previous
        config."""
        reasons = [] if self.state == "running" else [self.state]
        for pause in sorted(self.pauses.values(), key=lambda p: (p["since"], p["work"])):
            reasons.append(f"{pause['condition']}: {pause['work']} paused")
        return reasons

    def status_text(self) -> str:
        """The pauses and a refused reload, for systemd's one-line ``STATUS=`` (empty: none).

        Pauses are grouped by condition, e.g. ``store busy: ingest, inbox paused since
        14:02:11``.
        """
        by_condition: dict[str, list[dict[str, Any]]] = {}
        for pause in sorted(self.pauses.values(), key=lambda p: (p["since"], p["work"])):
            by_condition.setdefault(pause["condition"], []).append(pause)
        parts = []
        for condition, pauses in by_condition.items():
            works = ", ".join(dict.fromkeys(p["work"] for p in pauses))
            since = time.strftime("%H:%M:%S", time.localtime(pauses[0]["since"] / 1000))
            parts.append(f"{condition}: {works} paused since {since}")
        if self.reload_refused is not None:
            parts.append(f"reload refused: {self.reload_refused['error']}")
        return "; ".join(parts)

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
            **({"reload_refused": self.reload_refused} if self.reload_refused else {}),
            **(
                {
                    "unconfigured": self.unconfigured[:UNCONFIGURED_LISTED],
                    "unconfigured_not_listed": max(0, len(self.unconfigured) - UNCONFIGURED_LISTED),
                }
                if self.unconfigured
                else {}
            ),
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
