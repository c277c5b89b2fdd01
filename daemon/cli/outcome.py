"""How a command ends: its exit code, and every error as one line an operator can act on.

* An error the user can act on (config, usage, store, the daemon's own errors, a
  store SQLite cannot read) is its message: ``dropsync: ...`` on stderr for
  one-shot commands. Exit 2 for config and usage errors, 1 for the rest.
* Anything else (a defect) is a ``fatal_error`` event: one JSON line at level
  ``error`` (readable console output on a terminal) with the exception's type,
  message and the frames it went through, never a multi-line traceback, never
  the values of local variables. Exit 1.
* Every secret value the process has read is masked in all of these.
* The daemon commands (``run``, ``demo``: ``LOG_STREAM = "stdout"``) write every
  error that ends them as a ``fatal_error`` event in their log stream, so
  ``jq 'select(.level == "error")'`` over their output finds it.
"""

from __future__ import annotations

import sqlite3
import sys

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

TYPE_CHECKING = False  # typing's, without importing typing (status starts fast)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


def run_reporting_errors(
    name: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """Run one command; any error becomes a one-line report and an exit code."""
    code = EXIT_OK
    try:
        code = run(args)
        sys.stdout.flush()  # a reader that went away is found here, not at exit
        return code
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        # `dropsync status | head`: the reader has all it wanted; say nothing (a command
        # that had finished keeps its exit code: `status --check | head -1`).
        silence_stdout()
        return code
    except Exception as raised:
        exc = sole_exception(raised)
        code, message = _known(exc)
        stream = _log_stream(name)
        if message is not None and stream == "stderr":
            print(f"dropsync: {mask_secrets(message)}", file=sys.stderr)
        else:
            _log_fatal(name, exc, message, code, stream)
        return code


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one member, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _known(exc: BaseException) -> tuple[int, str | None]:
    """(exit code, message) of an error the user can act on; (1, None) for a defect."""
    # Imported here, when an error is reported: ``status`` starts without them.
    from dropsync.store.errors import StoreError

    from ..errors import ConfigError, DropsyncError, UsageError

    if isinstance(exc, ConfigError | UsageError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, StoreError | DropsyncError):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        from dropsync.store.diagnosis import describe_database_error

        return EXIT_FAILURE, describe_database_error(exc)
    return EXIT_FAILURE, None


def mask_secrets(text: str) -> str:
    """``text`` without any secret value this process has read (the last line of defence)."""
    secrets = sys.modules.get("dropsync.daemon.process.secrets")
    if secrets is None:  # no secret was ever read in this process
        return text
    from dropsync.adapters.redact import Redactor

    return Redactor(secrets.secrets_read()).text(text)


def _log_stream(name: str) -> str:
    from .app import load_command

    return str(getattr(load_command(name), "LOG_STREAM", "stderr"))


def frames(exc: BaseException) -> list[str]:
    """Where ``exc`` went through, innermost last: ``file:line in function`` (no values)."""
    import traceback

    return [
        f"{f.filename}:{f.lineno} in {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename != __file__  # where it was caught, not where it went through
    ]


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``; every member of an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(sole_exception(member)) for member in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _log_fatal(name: str, exc: BaseException, message: str | None, code: int, stream: str) -> None:
    import structlog

    from ..process.logs import configure_logging

    if not structlog.is_configured():
        configure_logging("info", sys.stdout if stream == "stdout" else sys.stderr)
    fields: dict[str, object] = {"command": name, "exit_code": code}
    if message is not None:
        fields["error"] = mask_secrets(message)
    else:
        fields["error"] = mask_secrets(describe(exc))
        fields["exception"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
        fields["traceback"] = frames(exc)
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            fields["cause"] = mask_secrets(describe(cause))
    structlog.get_logger("dropsync.daemon.cli").error("fatal_error", **fields)
