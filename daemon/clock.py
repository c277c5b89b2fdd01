"""Wall-clock helpers shared by the daemon and the CLI (stdlib ``time`` only, cheap to import)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """The current time as epoch milliseconds UTC."""
    return int(time.time() * 1000)


def format_timestamp(ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with milliseconds, e.g. ``2017-05-02T10:45:12.798Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(ms // 1000)) + f"{ms % 1000:03d}Z"


def format_age(ms: int | None, now: int | None = None) -> str:
    """How long ago ``ms`` was, short and human: ``42s``, ``17m``, ``3.5h``; ``-`` for none."""
    if ms is None:
        return "-"
    seconds = max(0, (now_ms() if now is None else now) - ms) / 1000
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
