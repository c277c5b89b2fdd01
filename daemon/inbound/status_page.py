"""``GET /`` on the callback listener: a read-only status page for a person to look at.

What ``dropsync status`` says, for a browser: per provider its state, pending entries and
the oldest one's age, deliveries per hour over the last 24 h (a chart), its newest dead
letters' reasons; the inbox and the drop files, the newest quarantined ones; what the
daemon waits for (store busy, disk full, drop folder missing, the listener's address),
from its runtime file as ``status`` reads it.

It reads the store as ``status`` does: a read-only connection of its own (never the
daemon's writer, so never its lock), the same indexed queries (``store.queries``) and
those of ``store.activity``, in one short read transaction, in a worker thread. One read
at a time, and its page is served again for ``REUSE_S``: a flood of requests costs one
read a second or so. It shows no key, no record body, no path, no user name and no
integration error log (``status`` and ``dead-letters list`` on the box show those; dead
letters are read without their keys); what it shows of the store (reasons, errors) is
passed once more through a redactor of the listener's secrets. The HTML is built by
``daemon.inbound.status_html``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from dropsync.adapters.redact import Redactor
from dropsync.store.activity import (
    HOUR_MS,
    HourCount,
    deliveries_by_hour,
    read_snapshot,
    recent_dead_letters,
)
from dropsync.store.queries import status_summary
from dropsync.store.readonly import open_readonly
from starlette.requests import Request
from starlette.responses import Response

from ..clock import now_ms
from ..process.runstate import read_runtime
from .status_html import CSP, REASON_CHARS, render

if TYPE_CHECKING:
    from .listener import Listener

HOURS = 24
DEAD_LETTERS_SHOWN = 5
REFRESH_S = 15
REUSE_S = 1.0
READ_TIMEOUT_S = 10.0

HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class PageData:
    """Everything one page shows, read at ``now`` (epoch ms)."""

    now: int
    start: int  # the chart's first hour (epoch ms, local hour boundary)
    summary: dict[str, Any] | None = None  # store.queries.status_summary; None: unreadable
    error: str | None = None  # why the store could not be read
    hours: list[HourCount] = field(default_factory=list)
    dead_letters: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    runtime: dict[str, Any] | None = None  # the daemon's runtime file (daemon.process.runstate)
    retain_days: float = 0.0  # store.retain_days: finished deliveries older go
    refresh_s: int = REFRESH_S
    hours_shown: int = HOURS


def hour_start(ms: int) -> int:
    """The start of the local clock hour holding ``ms`` (epoch ms)."""
    local = time.localtime(ms // 1000)
    return ms - ms % 1000 - (local.tm_min * 60 + local.tm_sec) * 1000


def _text(raw: bytes) -> str:
    # A value another program wrote as bytes that are not UTF-8 is shown, not a 500.
    return raw.decode("utf-8", "replace")


def read_page(store_path: Path, now: int, retain_days: float) -> PageData:
    """Read what the page shows (in a worker thread): the runtime file, then the store in
    one read transaction. A store that cannot be read leaves ``summary`` None and says why
    in ``error`` (its type only: an error may name a path)."""
    data = PageData(
        now=now,
        start=hour_start(now) - (HOURS - 1) * HOUR_MS,
        runtime=read_runtime(store_path),
        retain_days=retain_days,
    )
    try:
        db = open_readonly(store_path)
    except Exception as exc:
        data.error = f"the store cannot be read ({type(exc).__name__})"
        return data
    try:
        db.text_factory = _text
        with read_snapshot(db):
            summary = status_summary(db)
            data.hours = deliveries_by_hour(db, start=data.start, hours=HOURS)
            data.dead_letters = {
                row["provider"]: recent_dead_letters(
                    db, row["provider"], limit=DEAD_LETTERS_SHOWN, reason_chars=REASON_CHARS
                )
                for row in summary["providers"]
                if row["dead_letters"]
            }
        data.summary = summary
    except Exception as exc:
        data.error = f"the store cannot be read ({type(exc).__name__})"
    finally:
        db.close()
    return data


class StatusPage:
    """The listener's ``GET /`` (see the module's docstring)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._lock = anyio.Lock()
        self._page: tuple[float, int, bytes] | None = None  # (when, status, body)

    async def serve(self, request: Request) -> Response:
        """The page: 200, or 503 (with the page, saying why) when the store cannot be read."""
        async with self._lock:
            page = self._page
            if page is None or anyio.current_time() - page[0] >= REUSE_S:
                status, body = await self._build()
                page = self._page = (anyio.current_time(), status, body)
        return Response(
            page[2], status_code=page[1], media_type="text/html; charset=utf-8", headers=HEADERS
        )

    async def _build(self) -> tuple[int, bytes]:
        listener = self.listener
        config = listener.config
        try:
            with anyio.fail_after(READ_TIMEOUT_S):
                # Abandoned on a timeout: the read ends by itself (and closes its connection).
                data = await anyio.to_thread.run_sync(
                    read_page,
                    listener.store.path,
                    now_ms(),
                    config.retain_days,
                    abandon_on_cancel=True,
                )
        except TimeoutError:
            data = PageData(now=now_ms(), start=0, error="the store did not answer in time")
        if data.error is not None:
            listener.repeats.warning("status_page_store_unavailable", data.error, error=data.error)
        redact = Redactor(
            value for provider in listener.providers.values() for value in provider.secrets.values()
        )
        html = render(data, redact)
        return (200 if data.summary is not None else 503), html.encode("utf-8", "replace")
