"""structlog set-up: readable console lines on a terminal, JSON lines otherwise.

Events are short snake_case names with key=value fields. The format follows the
output: a terminal gets structlog's console renderer (colours unless ``NO_COLOR``
is set, https://no-color.org), anything else one JSON object per line, so
``journalctl -o json`` and ``jq`` users can filter on ``event`` and ``provider``.
``--log-format json|console`` (or ``$DROPSYNC_LOG_FORMAT``) overrides the choice.

Under systemd (``$JOURNAL_STREAM`` names the output's device and inode) each line
starts with its syslog priority, ``<3>`` for an error as sd-daemon(3) describes,
which journald strips and stores as the entry's priority: ``journalctl -p err``
then shows exactly the errors. Every line is one line, whatever a value holds: a
line break inside a value is written as ``\\n``.
Every secret the daemon has read (``redact_in_logs``) is removed from every text
field of every line, exception text included, whatever logged it. A value that is
not Unicode text (a file name that is not UTF-8) is written escaped (``bad\\xff.json``,
see ``daemon.names``): no value can make a line fail to be written.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import orjson
import structlog
from dropsync.adapters.redact import Redactor

from ..names import shown

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


def _text(value: object) -> object:
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, list | tuple):
        return [_text(item) for item in value]
    if isinstance(value, dict):
        return {key: _text(item) for key, item in value.items()}
    if value is None or isinstance(value, bool | int | float):
        return value
    return shown(str(value))  # rendered as its text anyway (an exception, a path)


def _as_text(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Every value as Unicode text: a file name that is not UTF-8 is escaped, not an error."""
    return {key: _text(value) for key, value in event.items()}


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


FORMAT_ENV = "DROPSYNC_LOG_FORMAT"
FORMATS = ("json", "console")
# sd-daemon(3) priorities of structlog's levels.
_PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2}


def _journal_stream(out: TextIO | _CurrentStream) -> bool:
    """True when ``out`` is the stream systemd connected to the journal (``$JOURNAL_STREAM``)."""
    named = os.environ.get("JOURNAL_STREAM", "")
    if not named:
        return False
    stream = getattr(sys, out.name) if isinstance(out, _CurrentStream) else out
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return named == f"{info.st_dev}:{info.st_ino}"


class _OneLine:
    """Wraps a renderer: the rendered line, line breaks escaped, priority prefixed if asked."""

    def __init__(self, renderer: structlog.typing.Processor, *, priority: bool) -> None:
        self.renderer = renderer
        self.priority = priority

    def __call__(self, logger: object, method: str, event: structlog.typing.EventDict) -> str:
        level = str(event.get("level", method))
        text = str(self.renderer(logger, method, event))
        text = text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
        if self.priority:
            return f"<{_PRIORITIES.get(level, 6)}>{text}"
        return text


def log_format(out: TextIO | _CurrentStream) -> str:
    """``json`` or ``console``: ``$DROPSYNC_LOG_FORMAT`` if set, else console on a terminal."""
    chosen = os.environ.get(FORMAT_ENV, "")
    if chosen in FORMATS:
        return chosen
    try:
        return "console" if out.isatty() else "json"
    except (OSError, ValueError):
        return "json"


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
    processors += [structlog.processors.format_exc_info, _secret_filter, _as_text]
    renderer: structlog.typing.Processor
    if log_format(out) == "console":
        renderer = structlog.dev.ConsoleRenderer(
            colors=not os.environ.get("NO_COLOR") and out.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    processors.append(_OneLine(renderer, priority=_journal_stream(out)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(out),  # type: ignore[arg-type]  # one write per line
        cache_logger_on_first_use=False,
    )
