"""structlog set-up: JSON lines when stdout is not a terminal, readable console otherwise.

Events are short snake_case names with key=value fields. Under journald each line
is one JSON object, so ``journalctl -o json`` users can filter on ``event`` and
``provider``.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=str).decode()


class _CurrentStream:
    """Writes to whatever ``sys.<name>`` is at the time (tests swap them)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        stream: TextIO = getattr(sys, self.name)
        return stream.write(text)

    def flush(self) -> None:
        stream: TextIO = getattr(sys, self.name)
        stream.flush()

    def isatty(self) -> bool:
        stream: TextIO = getattr(sys, self.name)
        return stream.isatty()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for the process (safe to call again on reload).

    ``stream`` defaults to the process's stdout; ``sys.stderr`` (for one-shot
    commands) is followed even when it is replaced later.
    """
    out: TextIO | _CurrentStream
    if stream is None or stream is sys.stdout:
        out = _CurrentStream("stdout")
    elif stream is sys.stderr:
        out = _CurrentStream("stderr")
    else:
        out = stream
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if out.isatty():
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
