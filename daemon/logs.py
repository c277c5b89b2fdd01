"""structlog set-up: JSON lines when stdout is not a terminal, readable console otherwise.

Events are short snake_case names with key=value fields. Under journald each line
is one JSON object, so ``journalctl -o json`` users can filter on ``event`` and
``provider``. Every secret the daemon has read (``redact_in_logs``) is removed from
every text field of every line, exception text included, whatever logged it.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog
from dropsync.adapters.redact import Redactor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _SecretFilter:
    """The log pipeline's secret filter: a second net behind the adapters' own."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.redact = Redactor()

    def add(self, values: list[str]) -> None:
        if not self.secrets.issuperset(values):
            self.secrets.update(values)
            self.redact = Redactor(self.secrets)

    def scrub(self, value: object) -> object:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return [self.scrub(item) for item in value]
        if isinstance(value, dict):
            return {key: self.scrub(item) for key, item in value.items()}
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.redact(str(value))  # rendered as its text anyway (an exception, a path)

    def __call__(
        self, logger: object, method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        if not self.redact:
            return event
        return {key: self.scrub(value) for key, value in event.items()}


_secret_filter = _SecretFilter()


def redact_in_logs(values: list[str]) -> None:
    """Remove these secret values from every log line from now on."""
    _secret_filter.add(values)


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
    processors += [structlog.processors.format_exc_info, _secret_filter]
    if out.isatty():
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=_dumps))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
