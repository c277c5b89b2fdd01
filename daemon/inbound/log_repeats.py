"""Log lines of one kind that may come in floods, summarised: a count per interval.

Whoever can reach the listener's port can make it refuse requests as fast as it can send
them; one warning per refused request would let them fill the journal. ``Repeats`` logs
the first ``burst`` events of a kind (an event name and a key the caller chooses, such as
the refusal's reason) in an interval one by one, then only counts them, and at the end of
the interval logs one line of that event with ``repeats`` (how many were not logged one by
one since) and ``interval_s``. A kind that goes quiet for a whole interval starts afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

INTERVAL_S = 60.0
BURST = 3


@dataclass
class _Kind:
    started: float  # when this kind's interval began
    logged: int = 0  # events logged one by one in this interval
    repeats: int = 0  # events counted, not logged, since the last line
    level: str = "warning"
    fields: dict[str, Any] = field(default_factory=dict)  # the last counted event's fields
    timer: asyncio.TimerHandle | None = None


class Repeats:
    """A summarising front to a structlog logger (see the module's docstring)."""

    def __init__(
        self,
        logger: Any,
        *,
        burst: int = BURST,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self.kinds: dict[tuple[str, Hashable], _Kind] = {}

    def warning(self, event: str, key: Hashable, **fields: Any) -> None:
        """Log ``event`` at warning level, or count it (see the module's docstring)."""
        self._emit("warning", event, key, fields)

    def error(self, event: str, key: Hashable, **fields: Any) -> None:
        """Log ``event`` at error level, or count it (see the module's docstring)."""
        self._emit("error", event, key, fields)

    def flush(self) -> None:
        """Log every count not logged yet (when the listener stops)."""
        for name in list(self.kinds):
            self._summarise(name)
        self.kinds.clear()

    def _emit(self, level: str, event: str, key: Hashable, fields: dict[str, Any]) -> None:
        name = (event, key)
        now = self.clock()
        kind = self.kinds.get(name)
        if kind is not None and now - kind.started >= self.interval_s:
            self._summarise(name)  # its timer did not run (no event loop)
            kind = None
        if kind is None:
            if len(self.kinds) >= 1000:  # a bound on the keys callers make from requests
                self.flush()
            kind = self.kinds[name] = _Kind(started=now)
        if kind.logged < self.burst:
            kind.logged += 1
            getattr(self.logger, level)(event, **fields)
            return
        kind.repeats += 1
        kind.level, kind.fields = level, fields
        if kind.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            delay = max(0.0, kind.started + self.interval_s - now)
            kind.timer = loop.call_later(delay, self._interval_ended, name)

    def _interval_ended(self, name: tuple[str, Hashable]) -> None:
        kind = self.kinds.get(name)
        if kind is None:
            return
        kind.timer = None
        had = kind.repeats
        self._summarise(name)
        if had:
            # Still flooding: the next interval is counted from now, without a new burst.
            self.kinds[name] = _Kind(started=self.clock(), logged=self.burst)
        else:
            del self.kinds[name]

    def _summarise(self, name: tuple[str, Hashable]) -> None:
        kind = self.kinds.pop(name, None)
        if kind is None:
            return
        if kind.timer is not None:
            kind.timer.cancel()
        if kind.repeats:
            getattr(self.logger, kind.level)(
                name[0], **kind.fields, repeats=kind.repeats, interval_s=self.interval_s
            )
